"""CPU time of the merge, which a shared machine's wall clock cannot give: a batch of new PDQ
values merged in process (one part) into an entries table filled to 1,000,000 rows (of
another set), then the
same values again (all duplicates), ``BENCH_MERGE_ROUNDS`` times.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/merge_cpu.py

``BENCH_MERGE_SIGNALS`` (default 200000) values a batch. Printed per batch: the CPU seconds of
the Postgres backend that ran it (from /proc: the embedded server runs on this machine), of
this process, and the wall-clock seconds.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench._common import bench_member, random_pdq  # noqa: E402
from signals.actions.merge import do_merge_batch  # noqa: E402
from signals.actions.publish import Source, do_publish  # noqa: E402
from signals.models import Batch, HashSet  # noqa: E402

SIGNALS = int(os.environ.get("BENCH_MERGE_SIGNALS", "200000"))
ROUNDS = int(os.environ.get("BENCH_MERGE_ROUNDS", "3"))
TABLE = 1_000_000


def backend_seconds(pid: int) -> float:
    """User and system CPU seconds of the process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    call_command("migrate", verbosity=0)
    settings.HASHX_MERGE_PARTS = 1  # one part: the merge on this connection's backend
    _, hash_set = bench_member()
    filler, _ = HashSet.objects.get_or_create(
        slug="bench-merge-filler", defaults={"name": "Filler", "owner": hash_set.owner}
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM signals_setentry WHERE hash_set_id = %s", [filler.pk])
        missing = TABLE - cursor.fetchone()[0]
        if missing > 0:
            cursor.execute(
                "INSERT INTO signals_setentry (hash_set_id, type, value, state, labels,"
                " contributor_count, contributor_names, positive_count, negative_count,"
                " investigation_count, first_seen, updated_at)"
                " SELECT %s, 'pdq', encode(sha256(('x' || i)::bytea), 'hex'), 'active', '{}',"
                " 0, '{}', 0, 0, 0, now(), now() FROM generate_series(1, %s) i"
                " ON CONFLICT DO NOTHING",
                [filler.pk, missing],
            )
        cursor.execute("VACUUM ANALYZE signals_setentry")
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    rng = np.random.default_rng()
    for round_ in range(ROUNDS):
        values = random_pdq(rng, SIGNALS)
        for kind in ("new", "duplicates"):
            items = ((n, {"type": "pdq", "value": v}) for n, v in enumerate(values, start=1))
            batch, _ = do_publish(hash_set, hash_set.owner, Source("line", items), queue=False)
            backend, own, wall = backend_seconds(pid), time.process_time(), time.perf_counter()
            do_merge_batch(str(batch.pk))
            backend = backend_seconds(pid) - backend
            own, wall = time.process_time() - own, time.perf_counter() - wall
            assert Batch.objects.get(pk=batch.pk).state == Batch.State.DONE
            print(f"round {round_} {kind:10s} {SIGNALS} lines: postgres cpu {backend:6.2f} s,"
                  f" python cpu {own:5.2f} s, wall {wall:6.2f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
