import hashlib

import pytest

from signals.actions.sets import do_create_set, do_grant
from tests.signals.conftest import PDQ, merged, publish


def mixed(n: int) -> list[dict[str, object]]:
    """``n`` signals of every type TAXII maps to a STIX SCO or a custom hash key."""
    kinds = [
        ("pdq", lambda i: PDQ[i]),
        ("md5", lambda i: hashlib.md5(f"f{i}".encode()).hexdigest()),  # noqa: S324
        ("sha1", lambda i: hashlib.sha1(f"f{i}".encode()).hexdigest()),  # noqa: S324
        ("sha256", lambda i: hashlib.sha256(f"f{i}".encode()).hexdigest()),
        ("url", lambda i: f"https://abuse.example/{i}/it's"),
        ("domain", lambda i: f"host{i}.abuse.example"),
    ]
    return [
        {"type": kinds[i % len(kinds)][0], "value": kinds[i % len(kinds)][1](i), "labels": ["csam"]}
        for i in range(n)
    ]


@pytest.fixture
def shared(publisher, subscriber):
    """The publisher's set, readable by the subscriber, holding 25 signals of mixed types."""
    hash_set = do_create_set(
        publisher.org,
        {
            "slug": "acme-csam",
            "name": "Acme CSAM hashes",
            "distribution": "granted",
            "tlp": "green",
        },
    )
    do_grant(hash_set, subscriber.org, can_read=True, can_publish=False)
    merged(publish(publisher, "acme-csam", mixed(25)))
    return hash_set


@pytest.fixture
def token_of():
    """A feed token of ``member`` for ``sets``, made through the signed API; its secret."""

    def make(member, sets, **extra):
        answer = member.api.post("/api/v1/feed-tokens", {"name": "partner", "sets": sets, **extra})
        assert answer.status_code == 201, answer.content
        return answer.json()["token"]

    return make
