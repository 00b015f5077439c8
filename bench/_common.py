"""What the bench scripts share: a member with a key and a set, and a gunicorn serving the
exchange on a free loopback port. Import it after ``django.setup()``."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection

from exchange.embedded import free_port, var_dir
from exchange.kv import redis_client
from exchange.run import children
from hashx.keys import raw_public_bytes
from members.actions.keys import do_add_key
from members.actions.organisations import do_create_organisation
from signals.actions.merge import do_merge_batch
from signals.actions.publish import Source, do_publish
from signals.actions.sets import do_create_set
from signals.matching.mih import to_hex
from signals.models import Batch, HashSet

ROOT = Path(__file__).resolve().parent.parent


def start_web(
    extra_env: dict[str, str] | None = None, *, as_run: bool = False
) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """gunicorn serving the exchange on a free loopback port: one sync worker, or with
    ``as_run`` the command line ``make run`` starts (exchange/run.py: its workers, worker
    class and options, whatever they are today; its access log is discarded). Returns it once
    /healthz answers, its base URL, and the environment (with that URL as
    ``HASHX_PUBLIC_URL``) for other processes of the run."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HASHX_PUBLIC_URL": base, "LOG_LEVEL": "WARNING", **(extra_env or {})}
    if as_run:
        (child,) = [c for c in children(port) if c.name == "web"]
        argv = child.argv
    else:
        argv = [sys.executable, "-m", "gunicorn", "exchange.wsgi:application"]
        argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "3600"]
        argv += ["--log-level", "warning"]
    web = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL if as_run else None)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{base}/healthz", timeout=5).raise_for_status()
            return web, base, env
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer
            if time.monotonic() > deadline:
                web.terminate()
                raise
            time.sleep(0.2)


def bench_member() -> tuple[Ed25519PrivateKey, HashSet]:
    """A new signing key of an active organisation, and a set that organisation owns; named
    afresh so that runs against the same database never collide."""
    key = Ed25519PrivateKey.generate()
    org = do_create_organisation(f"bench-{uuid.uuid4().hex[:8]}", "Bench", active=True)
    do_add_key(org, raw_public_bytes(key.public_key()))
    hash_set = do_create_set(org, {"slug": f"bench-{uuid.uuid4().hex[:8]}", "name": "Bench"})
    return key, hash_set


def random_pdq(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` random PDQ hashes as hex."""
    return to_hex(rng.integers(0, 2**64, (count, 4), dtype=np.uint64))


def fill_pdq(hash_set: HashSet, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` random PDQ hashes published and merged into ``hash_set``; returns them. The
    database's statistics are then brought up to date, as autovacuum does within a minute or so
    on a running exchange: a bench's embedded cluster starts for one command and stops after it,
    so autovacuum never came round, and a load run's Postgres spent 3.4 ms of CPU a request on
    plans made without statistics against 1.4 ms with them (bench/load.py, 2026-12-04)."""
    values = random_pdq(rng, count)
    items = ((n, {"type": "pdq", "value": v}) for n, v in enumerate(values, start=1))
    do_publish(hash_set, hash_set.owner, Source("line", items), queue=False)
    for batch_id in Batch.objects.filter(hash_set=hash_set).values_list("pk", flat=True):
        do_merge_batch(str(batch_id))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return values


def cpu_seconds(web_pid: int) -> dict[str, float]:
    """CPU seconds so far (user and system) of this process (the client), of the web server
    ``web_pid`` and its workers, of the embedded Postgres cluster (every backend: None when
    Postgres runs elsewhere) and of Redis (``INFO cpu``): where a run's cores went."""
    client = psutil.Process().cpu_times()

    def tree(pid: int) -> float:
        # With what the processes' reaped children used: a Postgres backend (or a gunicorn
        # worker) that ended during a phase counts, where it would otherwise take its CPU time
        # away from the total and a phase could show less than nothing.
        total = 0.0
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass  # a worker that ended between the listing and the reading
        return total

    seconds = {"client": client.user + client.system, "web": tree(web_pid)}
    try:
        lock = (var_dir() / "postgres" / "postmaster.pid").read_text()
        seconds["postgres"] = tree(int(lock.split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    info = redis_client().info("cpu")
    seconds["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return seconds
