"""A long video (vPDQ, an hour of frames) published at one exchange, pulled by its peer: two
exchanges as real processes on loopback (``tests.federation.exchanges``). The peer stores it
unchanged, serves it to its own members and matches it, and a second pull changes nothing."""

import json
from collections.abc import Iterator

import pytest

from hashx.client import Client
from signals.types import MAX_VPDQ_FRAMES
from tests.federation.exchanges import Exchange, exchanges
from tests.helpers import long_video

pytestmark = pytest.mark.worker

TEN_MINUTES = long_video(600, seed=11)
AN_HOUR = long_video(MAX_VPDQ_FRAMES, seed=12)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exchange, Client, Client]]:
    """Exchanges A (merging what its member acme publishes) and B (its member globex), peered
    both ways; yields B and the two members."""
    tmp = tmp_path_factory.mktemp("federation")
    with exchanges(["a", "b"], tmp, workers={"a": "ingest,default"}) as found:
        acme, globex = found["a"].member("acme", tmp), found["b"].member("globex", tmp)
        Exchange.peer_all([(found["a"], found["b"]), (found["b"], found["a"])])
        yield found["b"], acme, globex


def test_a_long_video_is_mirrored_unchanged_by_a_peer_and_matched_there(pair) -> None:
    b, acme, globex = pair
    acme.create_set("videos", "Videos", tlp="green", distribution="federated")
    batch = acme.publish("videos", [{"type": "vpdq", "value": v} for v in (TEN_MINUTES, AN_HOUR)])
    assert acme.wait_for_batch(batch["batch"], poll=0.2, timeout=300)["state"] == "done"

    pulled = b.pull("a")

    assert "a/videos: 2 applied (2 new, 0 tombstones), 0 refused" in pulled.stdout, pulled.stdout
    stored = b.sql("SELECT value FROM signals_setentry WHERE type = 'vpdq'")
    assert sorted(value for (value,) in stored) == sorted([TEN_MINUTES, AN_HOUR])
    changes = globex.changes(sets=["a--videos"])["changes"]
    assert sorted(c["value"] for c in changes) == sorted([TEN_MINUTES, AN_HOUR])
    [found] = globex.match([{"type": "vpdq", "value": json.dumps(json.loads(AN_HOUR)[-600:])}])[
        "results"
    ]
    assert [(m["value"], m["compared_match_percent"]) for m in found["matches"]] == [
        (AN_HOUR, 16.67)
    ]
    again = b.pull("a")
    assert "a/videos: 0 applied (0 new, 0 tombstones), 0 refused" in again.stdout, again.stdout
