"""Videos (vPDQ): made with ffmpeg from a test pattern and from a real photo, hashed by the
client (``hashx.media.vpdq_of_video``: the vpdq package when installed, else ffmpeg's frames
through pdqhash), published, matched frame by frame in the shared PDQ index. Re-encoded, scaled,
cropped and trimmed copies match their original with both shares in the answer; unrelated
videos do not; the same video published twice is one entry; an image query never meets a
video's frames."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hashx.media import _frames_by_ffmpeg, vpdq_of_video, vpdq_value
from signals.models import HashSet, SetEntry
from signals.types import canonicalise, vpdq_frames
from tests.cli import hashx
from tests.signals.conftest import PDQ_DATA, merged, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_index")]

PHOTO = PDQ_DATA / "bridge-mods" / "aaa-orig.jpg"
# .ci/run installs Debian's ffmpeg where it is missing; without it these tests fail.
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"

X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """12 s of a slow zoom into the bridge photo, its copies, and two unrelated videos."""
    folder = tmp_path_factory.mktemp("videos")
    made = {name: folder / f"{name}.mp4" for name in (
        "photo", "reencoded", "scaled", "cropped", "trimmed", "pattern", "pattern_copy", "fractal"
    )}  # fmt: skip
    zoom = "scale=640:-2,zoompan=z='1+0.004*on':d=1:s=320x240:fps=25"
    ffmpeg("-loop", "1", "-i", str(PHOTO), "-vf", zoom, "-t", "12", *X264, str(made["photo"]))
    ffmpeg("-i", str(made["photo"]), "-c:v", "libx264", "-crf", "40", str(made["reencoded"]))
    ffmpeg("-i", str(made["photo"]), "-vf", "scale=160:120", str(made["scaled"]))
    ffmpeg("-i", str(made["photo"]), "-vf", "crop=iw*0.99:ih*0.99:0:0", str(made["cropped"]))
    ffmpeg("-ss", "4", "-i", str(made["photo"]), "-t", "5", str(made["trimmed"]))
    pattern = "testsrc=duration=16:size=320x240:rate=25"
    ffmpeg("-f", "lavfi", "-i", pattern, *X264, str(made["pattern"]))
    ffmpeg("-i", str(made["pattern"]), "-c:v", "libx264", "-crf", "18", str(made["pattern_copy"]))
    fractal = "mandelbrot=size=320x240:rate=25"
    ffmpeg("-f", "lavfi", "-i", fractal, "-t", "12", *X264, str(made["fractal"]))
    return made


@pytest.fixture(scope="module")
def signals(videos) -> dict[str, str]:
    return {name: vpdq_of_video(path) for name, path in videos.items()}


def match(member, values, **query):
    answer = member.api.post(
        "/api/v1/match", {"signals": [{"type": "vpdq", "value": v, **query} for v in values]}
    )
    assert answer.status_code == 200, answer.content
    return [r["matches"] for r in answer.json()["results"]]


def test_a_hashed_video_is_threatexchanges_vpdq_serialisation(signals):
    value = signals["photo"]
    # One frame a second, in python-threatexchange's spelling (its vpdq_to_json), so the
    # exchange's canonical form is the value itself.
    assert json.loads(value)[:2] == [f"{h},100,{t}" for h, t in
                                     ((json.loads(value)[0][:64], "0.0"),
                                      (json.loads(value)[1][:64], "1.0"))]  # fmt: skip
    assert canonicalise("vpdq", value) == value
    assert [f.timestamp for f in vpdq_frames(value)] == sorted(
        f.timestamp for f in vpdq_frames(value)
    )


def test_copies_match_the_original_and_unrelated_videos_do_not(
    publisher, subscriber, shared_set, signals
):
    answer = publish(publisher, "acme-csam", [
        {"type": "vpdq", "value": signals["photo"]},
        {"type": "vpdq", "value": signals["pattern"]},
    ])  # fmt: skip
    assert answer.status_code == 202, answer.content
    merged(answer)
    copies = ["reencoded", "scaled", "cropped", "trimmed"]
    found = match(subscriber, [signals[name] for name in copies])
    for name, matches in zip(copies, found, strict=True):
        assert [m["value"] for m in matches] == [signals["photo"]], name
        assert matches[0]["set"] == "acme-csam" and matches[0]["query_match_percent"] == 100.0
    # Every frame of a whole copy matched the original's; a 5 s cut matches 5 of its 12 frames.
    assert [m[0]["compared_match_percent"] for m in found] == [100.0, 100.0, 100.0, 41.67]
    # The test pattern, encoded again, matches itself; a fractal zoom matches neither.
    pattern, fractal = match(subscriber, [signals["pattern_copy"], signals["fractal"]])
    assert [m["value"] for m in pattern] == [signals["pattern"]]
    assert fractal == []


def test_the_sets_thresholds_decide(publisher, subscriber, shared_set, signals):
    merged(publish(publisher, "acme-csam", [{"type": "vpdq", "value": signals["photo"]}]))
    # The trimmed copy holds 42% of the original's frames: a set asking for half refuses it.
    answer = publisher.api.request(
        "PATCH", "/api/v1/sets/acme-csam", {"vpdq_compared_match_percent": 50}
    )
    assert answer.status_code == 200, answer.content
    assert HashSet.objects.get(slug="acme-csam").vpdq_compared_match_percent == 50
    trimmed, whole = match(subscriber, [signals["trimmed"], signals["reencoded"]])
    assert trimmed == [] and len(whole) == 1
    # A query of the original with frames of another video is below the 80% of query frames.
    frames = json.loads(signals["photo"])[:6] + json.loads(signals["fractal"])[6:]
    assert match(subscriber, [json.dumps(frames)]) == [[]]
    # The frame distance is the set's PDQ threshold: at distance 0 only the same frames match.
    assert match(subscriber, [signals["reencoded"]], max_distance=0) == [[]]


def test_the_same_video_twice_is_one_entry_and_images_never_meet_its_frames(
    publisher, subscriber, shared_set, signals
):
    merged(publish(publisher, "acme-csam", [{"type": "vpdq", "value": signals["photo"]}]))
    # Another spelling of the same frames (uppercase hex, another timestamp notation).
    frames = [f.split(",") for f in json.loads(signals["photo"])]
    respelled = json.dumps([f"{h.upper()},{q},{float(t):.6f}" for h, q, t in frames])
    merged(publish(subscriber, "acme-csam", [{"type": "vpdq", "value": respelled}]))
    entries = SetEntry.objects.filter(hash_set__slug="acme-csam", type="vpdq")
    assert entries.count() == 1 and entries.get().contributor_count == 2
    # A frame's PDQ hash looked up as an image finds nothing: frames are not images.
    answer = subscriber.api.post(
        "/api/v1/match", {"signals": [{"type": "pdq", "value": frames[0][0]}]}
    )
    assert answer.json()["results"][0]["matches"] == []
    # Retracting the video (both contributions) takes all its frames out of the index.
    entry = entries.get()
    assert match(subscriber, [signals["reencoded"]])[0][0]["entry"] == entry.pk
    for member in (publisher, subscriber):
        gone = member.api.post(
            "/api/v1/sets/acme-csam/retractions",
            {"signals": [{"type": "vpdq", "value": signals["photo"]}]},
        )
        assert gone.status_code in (200, 202), gone.content
        if gone.status_code == 202 and "batch" in gone.json():
            merged(gone)
    assert match(subscriber, [signals["reencoded"]]) == [[]]


def test_the_cli_hashes_and_matches_a_video(
    exchange_url, publisher, subscriber, shared_set, videos, tmp_path
):
    out = hashx("hash", str(videos["photo"])).stdout.splitlines()
    assert out[0] == f"# {videos['photo']}"
    kind, _, value = out[1].partition(" ")
    assert kind == "vpdq" and len(vpdq_frames(value)) == 12
    merged(publish(publisher, "acme-csam", [{"type": "vpdq", "value": value}]))
    key = subscriber.key_file(tmp_path / "key.pem")
    text = hashx("match", str(videos["scaled"]), url=exchange_url, key=key).stdout
    line = rf"^{re.escape(str(videos['scaled']))}\s+vpdq\s+acme-csam\s+\d+\s+\d+ \(100%/100%\)"
    assert re.search(line, text, re.M), text
    assert "1 of 1 source matched" in text
    # A video longer than an exchange takes (an hour and a second): hashed, and the member told.
    long = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=3601:size=64x48:rate=1", *X264, str(long))
    done = hashx("hash", str(long))
    assert len(json.loads(done.stdout.splitlines()[1].partition(" ")[2])) == 3601
    assert "3601 frames: an exchange takes at most 3600 (an hour at one frame a second)" in (
        done.stderr
    )


def test_a_reencoded_copy_published_later_is_linked_to_its_original(
    publisher, subscriber, shared_set, signals
):
    merged(publish(publisher, "acme-csam", [{"type": "vpdq", "value": signals["photo"]}]))
    batch = merged(publish(subscriber, "acme-csam", [
        {"type": "vpdq", "value": signals["reencoded"]},
        {"type": "vpdq", "value": signals["fractal"]},
    ]))  # fmt: skip
    entries = {e.value: e for e in SetEntry.objects.all()}
    original, copy = entries[signals["photo"]], entries[signals["reencoded"]]
    assert copy.near_duplicate_of_id == original.pk
    assert entries[signals["fractal"]].near_duplicate_of_id is None
    assert original.near_duplicate_of_id is None and batch.near_duplicates == 1


def test_frames_hashed_without_the_vpdq_package_match_those_hashed_with_it(
    publisher, subscriber, shared_set, signals, videos
):
    # Where the vpdq package is not installed the client hashes ffmpeg's frames with pdqhash:
    # what it sends must match what was hashed with the package, and the other way round.
    # It hashes the frames vpdq hashes (the first, then one a second), so the values agree.
    fallback = vpdq_value(_frames_by_ffmpeg(videos["photo"], 1.0))
    assert fallback == signals["photo"]
    assert vpdq_value(_frames_by_ffmpeg(videos["trimmed"], 1.0)) == signals["trimmed"]
    merged(publish(publisher, "acme-csam", [{"type": "vpdq", "value": signals["photo"]}]))
    [found] = match(subscriber, [fallback])
    assert [m["value"] for m in found] == [signals["photo"]]
    assert found[0]["query_match_percent"] == 100.0


def test_a_videos_frames_follow_the_feed_and_survive_compaction(
    publisher, subscriber, shared_set, signals, match_index_dir
):
    from signals.matching.index import Index, shared_index

    index = shared_index()
    index.view()  # a generation, empty, before the video comes
    merged(publish(publisher, "acme-csam", [{"type": "vpdq", "value": signals["photo"]}]))
    view = index.view()
    # 12 distinct frames, one entry, under the set's id negated: in the delta, no rebuild.
    assert len(view.added_entries) == 12 and len(set(view.added_entries.tolist())) == 1
    assert set(view.added_sets.tolist()) == {-shared_set.pk}
    generation = index.compact()
    assert generation is not None and len(generation.entries) == 12
    other = Index(match_index_dir).view()  # another process opens it, nothing to follow
    assert other.generation.name == generation.name and len(other.added_entries) == 0
    [[found]] = match(subscriber, [signals["scaled"]])
    assert found["compared_match_percent"] == 100.0
    publisher.api.post(
        "/api/v1/sets/acme-csam/retractions",
        {"signals": [{"type": "vpdq", "value": signals["photo"]}]},
    )
    assert index.view().dead == {found["entry"]}
    assert match(subscriber, [signals["scaled"]]) == [[]]
    assert len(index.compact().entries) == 0
