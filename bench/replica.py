"""Feed reads served by a read replica: a full NDJSON sync and a snapshot of one set through
HTTP, from gunicorn without and then with ``DATABASE_REPLICA_URL`` (a hot standby of the
bench's own embedded primary, made as tests/standby.py makes one), with the CPU time each
cluster's processes spent meanwhile: how much of a sync's database work the replica takes off
the primary, and what the door costs.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/replica.py

``BENCH_REPLICA_ENTRIES`` (default 200,000) entries in one set. CPU time is read from the
postmasters (their own, their live children's and their reaped children's, parallel workers
included), so it does not depend on how busy the shared machine is; the rates do.
"""

import os
import re
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench._common import bench_member, start_web  # noqa: E402
from bench.sync import fill, over_the_wire  # noqa: E402
from exchange.metrics import exposition  # noqa: E402
from hashx.auth import HashxAuth  # noqa: E402
from tests.helpers import eventually  # noqa: E402
from tests.standby import conninfo_of, one, standby_of  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_REPLICA_ENTRIES", "200000"))
HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


def cluster_cpu(data_directory: str) -> float:
    """CPU seconds of a cluster's processes so far: the postmaster's own, those of the children
    it reaped (backends and parallel workers that exited) and those of its live children."""
    pid = int((Path(data_directory) / "postmaster.pid").read_text().split("\n", 1)[0])
    postmaster = psutil.Process(pid)
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += child_times.user + child_times.system
    return total


def snapshot(base: str, key: Ed25519PrivateKey, slug: str) -> tuple[float, int]:
    """Seconds to receive a set's snapshot through HTTP, and the entries in it."""
    started = time.perf_counter()
    response = requests.get(
        f"{base}/api/v1/sets/{slug}/snapshot",
        headers={"Accept": "application/x-ndjson"},
        auth=HashxAuth(key),
        stream=True,
        timeout=3600,
    )
    response.raise_for_status()
    entries = sum(
        1 for line in response.iter_lines(chunk_size=1 << 16) if line.startswith(b'{"entry"')
    )
    return time.perf_counter() - started, entries


def replica_reads() -> dict[str, float]:
    """hashx_replica_reads_total by outcome, added up over every process of the run."""
    text = exposition().decode()
    return {
        outcome: float(value)
        for outcome, value in re.findall(
            r'^hashx_replica_reads_total\{outcome="(\w+)"\} (\S+)$', text, re.MULTILINE
        )
    }


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    fill(hash_set.pk, hash_set.owner_id, ENTRIES)
    primary = conninfo_of(connection.settings_dict)
    primary_data = one(primary, "SHOW data_directory")
    with standby_of(primary, f"hashx_bench_replica_{os.getpid()}") as standby:
        name = connection.settings_dict["NAME"]
        replica_url = f"postgresql://postgres@127.0.0.1:{standby.port}/{name}"
        eventually(
            lambda: one(standby.conninfo, HORIZON) >= one(primary, HORIZON),
            timeout=600,
            what="the replica to replay the bench's entries",
        )
        print(f"entries   {ENTRIES} random PDQ, one set; load average {os.getloadavg()[0]:.1f}")
        for label, env in (
            ("primary only", {}),
            ("replica", {"DATABASE_REPLICA_URL": replica_url}),
        ):
            web, base, _ = start_web(env)
            try:
                reads_before = replica_reads()
                cpu_before = (cluster_cpu(primary_data), cluster_cpu(str(standby.data)))
                sync_s, seen, _ = over_the_wire(base, key, hash_set.slug, parse=False)
                snap_s, in_snapshot = snapshot(base, key, hash_set.slug)
                cpu_after = (cluster_cpu(primary_data), cluster_cpu(str(standby.data)))
                reads_after = replica_reads()
            finally:
                web.terminate()
                web.wait()
            assert seen == in_snapshot == ENTRIES, (seen, in_snapshot)
            served = {
                outcome: int(count - reads_before.get(outcome, 0))
                for outcome, count in reads_after.items()
                if count > reads_before.get(outcome, 0)
            }
            print(
                f"{label:13} sync {ENTRIES / sync_s:8.0f} entries/s, snapshot"
                f" {ENTRIES / snap_s:8.0f} entries/s; CPU s of the primary's postgres"
                f" {cpu_after[0] - cpu_before[0]:6.2f}, of the replica's"
                f" {cpu_after[1] - cpu_before[1]:6.2f}; replica reads {served or 'none'}"
            )


if __name__ == "__main__":
    main()
