"""Real images: hashed with pdqhash (the client's media extra), published, matched. Edits,
resizes, re-encodes and slight crops match their originals within 31; unrelated images do not.
And the CLI: `hashx hash` spells values as python-threatexchange does, `hashx match` hashes
files locally and prints what matched."""

import io
import pathlib
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_file

from hashx.media import pdq_of_image
from tests.cli import hashx
from tests.signals.conftest import PDQ_DATA, merged, publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_index")]


BRIDGE = sorted((PDQ_DATA / "bridge-mods").glob("*.jpg"))
rng = np.random.default_rng(42)


def pdq_of(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    value = pdq_of_image(buffer)  # type: ignore[arg-type]
    assert value is not None
    return value[0]


def scene(size=320) -> Image.Image:
    """A random picture: a gradient under a few large soft shapes (like a photo, most of its
    energy at low frequencies, which is what PDQ looks at)."""
    x = np.linspace(0, 1, size)
    base = np.outer(x, rng.uniform(0, 255, 3))[:, None, :] * np.ones((1, size, 1))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 60, 2))
        w, h = (int(v) for v in rng.integers(60, size // 2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    return image.filter(ImageFilter.GaussianBlur(4))


def variants(image: Image.Image) -> list[Image.Image]:
    w, h = image.size
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=50)
    buffer.seek(0)
    return [
        image.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.LANCZOS),
        Image.open(buffer).convert("RGB"),
        # PDQ is sensitive to crops (it hashes the whole frame): 1% off two edges.
        image.crop((0, 0, w - w // 100, h - h // 100)),
    ]


def matched(member, values):
    answer = member.api.post(
        "/api/v1/match", {"signals": [{"type": "pdq", "value": v} for v in values]}
    )
    assert answer.status_code == 200, answer.content
    return [{(m["value"], m["distance"]) for m in r["matches"]} for r in answer.json()["results"]]


def test_every_edit_of_the_bridge_photo_matches_the_original(publisher, subscriber, shared_set):
    original = pdq_of_image(BRIDGE[0])
    assert BRIDGE[0].name == "aaa-orig.jpg" and original is not None
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": original[0]}]))
    edits = [pdq_of_image(path) for path in BRIDGE[1:]]
    assert len(edits) == 11
    for path, found in zip(BRIDGE[1:], matched(subscriber, [e[0] for e in edits]), strict=True):
        assert [value for value, _ in found] == [original[0]], path.name


def test_resized_reencoded_and_cropped_copies_match_their_originals_and_unrelated_do_not(
    publisher, subscriber, shared_set
):
    originals = [scene() for _ in range(200)]
    hashes = [pdq_of(image) for image in originals]
    assert len(set(hashes)) == len(hashes)
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": v} for v in hashes]))
    copies, expected = [], []
    for image, value in zip(originals, hashes, strict=True):
        for copy in variants(image):
            copies.append(pdq_of(copy))
            expected.append(value)
    found = matched(subscriber, copies)
    misses = [n for n, (want, got) in enumerate(zip(expected, found, strict=True))
              if want not in {v for v, _ in got}]  # fmt: skip
    assert misses == []
    unrelated = matched(subscriber, [pdq_of(scene()) for _ in range(100)])
    assert [f for f in unrelated if f] == []


def test_the_cli_hashes_like_threatexchange_and_matches_files_locally_hashed(
    exchange_url, publisher, subscriber, shared_set, tmp_path
):
    out = hashx("hash", str(BRIDGE[0])).stdout.splitlines()
    # The file's name as a comment line, then threatexchange's "<type> <value>" lines.
    assert out[0] == f"# {BRIDGE[0]}"
    assert out[1] == f"pdq {pdq_from_file(pathlib.Path(BRIDGE[0]))[0]}"
    assert [line.split()[0] for line in out[1:]] == ["pdq", "md5", "sha256"]
    merged(publish(publisher, "acme-csam", [{"type": "pdq", "value": out[1].split()[1]}]))
    key = subscriber.key_file(tmp_path / "key.pem")
    text = hashx("match", str(BRIDGE[3]), url=exchange_url, key=key).stdout
    assert re.search(rf"^{re.escape(str(BRIDGE[3]))}\s+pdq\s+acme-csam\s", text, re.M), text
    assert "1 of 1 source matched (3 signals" in text
    hashes = tmp_path / "hashes.txt"
    hashes.write_text("\n".join(out) + "\n")
    text = hashx("match", "--hashes", str(hashes), url=exchange_url, key=key).stdout
    # The hash on line 2 of the file (line 1 names the image) matched at distance 0.
    assert re.search(rf"^{re.escape(str(hashes))} line 2\s+pdq\s+acme-csam\s+\d+\s+0\s", text, re.M)
