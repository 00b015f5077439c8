import functools

import numpy as np
import pytest
from django.db import connection

from signals.actions.merge import do_merge_batch
from signals.actions.neardup import do_link_batch
from signals.actions.sets import do_create_set, do_grant
from signals.actions.webhooks import do_cut_pages
from signals.matching.mih import parse_hex
from signals.models import Batch, SetEntry
from tests.conftest import REPO_ROOT
from tests.helpers import eventually

PDQ_DATA = REPO_ROOT.parent / "shared" / "data" / "pdq"
PDQ = [
    line.strip() for line in (PDQ_DATA / "haystack.txt").read_text().splitlines() if line.strip()
]


@functools.cache
def far_apart() -> list[str]:
    """The haystack less its near-duplicates (it holds clusters of them): hashes pairwise more
    than 64 bits apart, so a query finds exactly the neighbours a test gives it."""
    rows = parse_hex(PDQ)
    kept: list[int] = []
    for i in range(len(rows)):
        if all(int(np.bitwise_count(rows[i] ^ rows[j]).sum()) > 64 for j in kept):
            kept.append(i)
    return [PDQ[i] for i in kept]


@pytest.fixture
def fresh_index(settings):
    """The match index follows the feed before every answer (by default at most once a second)."""
    settings.HASHX_MATCH_REFRESH_MS = 0


@pytest.fixture
def csam_set(publisher):
    """A set owned by the publisher, granted to the subscriber for reading."""
    return do_create_set(
        publisher.org, {"slug": "acme-csam", "name": "Acme CSAM hashes", "distribution": "granted"}
    )


@pytest.fixture
def shared_set(csam_set, subscriber):
    do_grant(csam_set, subscriber.org, can_read=True, can_publish=True)
    return csam_set


def publish(member, slug, signals, **kwargs):
    return member.api.post(f"/api/v1/sets/{slug}/signals", {"signals": signals, **kwargs})


def merged(answer):
    """What the workers do after commit, done here and now: the merge, then near-duplicate
    linking. A worker that a test runs may be on the same batch (publishing queued it): its
    linker holds the batch, or waits for this test's transactions to end, so outside a test
    transaction this waits until the batch is linked, whoever links it."""
    batch_id = answer.json()["batch"]
    do_merge_batch(batch_id)
    if connection.in_atomic_block:
        return do_link_batch(batch_id)

    def linked():
        batch = do_link_batch(batch_id)
        assert not batch.link_ranges, f"batch {batch_id} still not linked"
        return batch

    return eventually(linked, interval=0.05)


# As after restoring a backup whose entry id sequence is behind the table: the next entry id the
# merge draws is taken.
REWIND_ENTRY_IDS = (
    "SELECT setval(pg_get_serial_sequence('signals_setentry', 'id'),"
    " (SELECT max(id) FROM signals_setentry), false)"
)


def pdq(n, **extra):
    return {"type": "pdq", "value": PDQ[n], **extra}


def entry(n):
    """The set entry of ``PDQ[n]`` (in the one set a test publishes it to)."""
    return SetEntry.objects.get(value=PDQ[n])


def cut(subscription_id):
    """The subscription's next page, cut now (what a dispatch does), or None."""
    return next(iter(do_cut_pages([subscription_id])), None)


__all__ = ["PDQ", "REWIND_ENTRY_IDS", "Batch", "cut", "entry", "merged", "pdq", "publish"]
