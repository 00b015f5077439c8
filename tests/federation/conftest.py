import secrets

import pytest

from exchange.actions.identity import get_identity
from federation.actions.pull import ensure_mirror
from federation.models import MirroredSet, Peer
from signals.actions.merge import do_merge_batch
from signals.actions.sets import do_create_set
from tests.conftest import Member

OTHER = "hx-00000000-0000-4000-8000-00000000000b"
THIRD = "hx-00000000-0000-4000-8000-00000000000c"


def md5s(count: int) -> list[str]:
    return [secrets.token_hex(16) for _ in range(count)]


def publish(member: Member, slug: str, values: list[str]) -> None:
    answer = member.api.post(
        f"/api/v1/sets/{slug}/signals", {"signals": [{"type": "md5", "value": v} for v in values]}
    )
    assert answer.status_code == 202, answer.content
    do_merge_batch(answer.json()["batch"])


def change(value: str, *, path: list[str], hops: int = 1, state: str = "active", **extra):
    """A change as a peer's feed serves it (``signals.feed.reads``), last passed through
    ``path[-1]``."""
    return {
        "entry": 7, "set": "their-set", "type": "md5", "value": value, "state": state,
        "labels": [], "contributors": 1, "opinions": {"positive": 0, "negative": 0,
        "investigation_seed": 0}, "disputed": False, "first_seen": "2026-01-02T03:04:05Z",
        "updated": "2026-01-02T03:04:05Z", "expires_at": None, "near_duplicate_of": None,
        "hops_left": hops, "path": path, "origin": None, **extra,
    }  # fmt: skip


@pytest.fixture
def own_id(db: None) -> str:
    return get_identity().exchange_id


@pytest.fixture
def peer_link(peer: Member) -> Peer:
    """The link to the ``peer`` organisation's exchange (``OTHER``), as add_peer leaves it."""
    peer.org.exchange_id = OTHER
    peer.org.save(update_fields=["exchange_id"])
    return Peer.objects.create(
        name="eu", url="http://127.0.0.1:9", exchange_id=OTHER, organisation=peer.org,
        key_id=peer.key.key_id, public_key=bytes(peer.key.public_key),
    )  # fmt: skip


@pytest.fixture
def mirror(peer_link: Peer) -> MirroredSet:
    return ensure_mirror(
        peer_link, {"slug": "their-set", "name": "Theirs", "tlp": "green",
                    "distribution": "federated", "attribution": "named"},
        [OTHER],
    )  # fmt: skip


@pytest.fixture
def federated(publisher: Member):
    return do_create_set(
        publisher.org,
        {"slug": "fed", "name": "Federated", "tlp": "green", "distribution": "federated",
         "federation_hops": 2},
    )  # fmt: skip
