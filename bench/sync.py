"""Full sync throughput: a million entries pulled through the NDJSON change feed into the
``hashx`` client, against the raw ceiling of ``COPY (SELECT …) TO STDOUT`` of the same rows.

    make bench              (BENCH_SYNC_ENTRIES=200000 for a shorter run)

Over the wire = from the signed GET until the client has parsed every line (gunicorn, one sync
worker; the client in this process). Into the local store = ``hashx.store.sync`` into SQLite,
from nothing. Prints entries/s for each and the ratio of the wire figure to the ceiling.
"""

import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench._common import bench_member, start_web  # noqa: E402
from hashx import Client  # noqa: E402
from hashx.auth import HashxAuth  # noqa: E402
from hashx.store import LocalStore, sync  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_SYNC_ENTRIES", "1000000"))


def fill(hash_set_id: int, org_id: int, count: int) -> None:
    """``count`` random PDQ entries with one contribution each, written in bulk by SQL (the
    ingest bench measures publishing; this one measures reading)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH entries AS (
                INSERT INTO signals_setentry (hash_set_id, type, value, state, labels,
                    contributor_count, contributor_names, positive_count, negative_count,
                    investigation_count, first_seen, updated_at)
                SELECT %(set)s, 'pdq', md5(random()::text) || md5(random()::text), 'active',
                    ARRAY['csam'], 1,
                    ARRAY[(SELECT slug FROM members_organisation WHERE id = %(org)s)],
                    0, 0, 0, now(), now()
                FROM generate_series(1, %(count)s)
                ON CONFLICT DO NOTHING
                RETURNING id
            )
            INSERT INTO signals_contribution (entry_id, organisation_id, labels, first_seen,
                last_seen)
            SELECT id, %(org)s, ARRAY['csam'], now(), now() FROM entries
            """,
            {"count": count, "set": hash_set_id, "org": org_id},
        )
        # What autovacuum would do after a bulk load; the planner needs the row counts.
        cursor.execute("ANALYZE signals_setentry, signals_contribution")


class Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.bytes += len(data)
        return len(data)


def ceiling(hash_set_id: int) -> tuple[float, int]:
    """The same rows as the feed serves, straight out of Postgres as text."""
    sink = Sink()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        query = cursor.mogrify(
            "COPY (SELECT e.id, e.hash_set_id, e.type, e.value, e.state, e.labels,"
            " e.contributor_count, e.positive_count, e.negative_count, e.investigation_count,"
            " e.first_seen, e.updated_at, e.expires_at, e.position_xid, e.position_seq"
            " FROM signals_setentry e"
            " WHERE e.hash_set_id = %s ORDER BY e.position_xid, e.position_seq) TO STDOUT",
            [hash_set_id],
        )
        cursor.copy_expert(query.decode(), sink)
    return ENTRIES / (time.perf_counter() - started), sink.bytes


def over_the_wire(
    base: str, key: Ed25519PrivateKey, slug: str, *, parse: bool
) -> tuple[float, int, int]:
    """Seconds to stream every line (and parse it, with ``parse``); entries; bytes received."""
    started = time.perf_counter()
    response = requests.get(
        f"{base}/api/v1/changes",
        params={"sets": slug},
        headers={"Accept": "application/x-ndjson"},
        auth=HashxAuth(key),
        stream=True,
        timeout=3600,
    )
    response.raise_for_status()
    entries = received = 0
    for line in response.iter_lines(chunk_size=1 << 16):
        received += len(line) + 1
        if line.startswith(b'{"entry"'):
            if parse:
                json.loads(line)
            entries += 1
    return time.perf_counter() - started, entries, received


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    started = time.perf_counter()
    fill(hash_set.pk, hash_set.owner_id, ENTRIES)
    filled = time.perf_counter() - started

    web, base, _ = start_web()
    store_dir = Path(tempfile.mkdtemp())
    try:
        lines_s, seen, received = over_the_wire(base, key, hash_set.slug, parse=False)
        assert seen == ENTRIES, seen
        wire_s, seen, received = over_the_wire(base, key, hash_set.slug, parse=True)
        assert seen == ENTRIES, seen
        store = LocalStore(store_dir)
        started = time.perf_counter()
        applied, _ = sync(Client(base, key, timeout=3600), store, [hash_set.slug])
        store_s = time.perf_counter() - started
        assert applied == ENTRIES and store.count() == ENTRIES, (applied, store.count())
        store.close()
    finally:
        web.terminate()
        web.wait()
        for path in store_dir.iterdir():
            path.unlink()
        store_dir.rmdir()

    ceiling_rate, ceiling_bytes = ceiling(hash_set.pk)
    wire_rate = ENTRIES / wire_s
    print(
        f"entries                         {ENTRIES} random PDQ, one set (filled in {filled:.1f} s)"
    )
    print(
        f"over the wire, NDJSON lines     {ENTRIES / lines_s:10.0f} entries/s  ({lines_s:.1f} s,"
        f" {received / lines_s / 2**20:.0f} MiB/s)"
    )
    print(
        f"over the wire, NDJSON, parsed   {wire_rate:10.0f} entries/s  ({wire_s:.1f} s,"
        f" {received / wire_s / 2**20:.0f} MiB/s)"
    )
    print(f"into the local store (SQLite)   {ENTRIES / store_s:10.0f} entries/s  ({store_s:.1f} s)")
    print(
        f"COPY (SELECT …) TO STDOUT       {ceiling_rate:10.0f} entries/s"
        f"  ({ceiling_bytes / 2**20:.0f} MiB)"
    )
    print(f"ratio, lines / ceiling          {ENTRIES / lines_s / ceiling_rate:10.2f}")
    print(f"ratio, parsed / ceiling         {wire_rate / ceiling_rate:10.2f}")


if __name__ == "__main__":
    main()
