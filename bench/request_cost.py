"""CPU cost of one request through the exchange's whole WSGI stack, in process.

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/request_cost.py

Wall-clock rates move with whatever else runs on the machine; the CPU time a request costs the
process that serves it moves much less. This drives ``BENCH_COST_REQUESTS`` (default 500)
requests of each kind through ``exchange.wsgi.application`` (every middleware, DRF, the view,
the response body read to its end), in ``BENCH_COST_ROUNDS`` (default 5) rounds where the kinds
take turns, and prints the process CPU time (``time.process_time``) per request of each kind's
best round, and its ratio to unsigned ``GET /healthz``, the floor every request pays. The kinds:
signed ``GET /api/v1/whoami`` (authentication alone), signed ``GET /api/v1/changes`` (a page of
100 entries), a signed publish of 5 new PDQ hashes as JSON, a signed match of 10 PDQ queries
(half near indexed hashes), the mix of bench/load.py. Requests are signed before the clock
starts (signing is the client's work). Postgres and Redis run in processes of their own: the CPU
time of the Postgres backend serving the run (from /proc, when it runs on this host) and of Redis
(``INFO cpu``) is printed beside, per request, averaged over all rounds (counted in clock ticks:
coarser). ``BENCH_COST_PROFILE=whoami`` (or another kind) also prints where that kind's CPU time
goes (cProfile on process time, for each round: the top ``BENCH_COST_LINES`` functions, default
25, by ``BENCH_COST_SORT``, default own time).
"""

import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# One database connection for the whole run, so that its Postgres backend's CPU time adds up.
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "3600")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench._common import bench_member, fill_pdq, random_pdq  # noqa: E402
from exchange.kv import redis_client  # noqa: E402
from exchange.wsgi import application  # noqa: E402
from hashx.auth import sign_headers  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_COST_REQUESTS", "500"))
ROUNDS = int(os.environ.get("BENCH_COST_ROUNDS", "5"))
WARM_UP = 30
ENTRIES = 2_000
PROFILE = os.environ.get("BENCH_COST_PROFILE", "")
EXPECTED = {"healthz": 200, "whoami": 200, "changes": 200, "publish": 202, "match": 200}
rng = np.random.default_rng(5)


class Environs:
    """WSGI environs of signed requests, as gunicorn would hand them to the application."""

    def __init__(self, key: Ed25519PrivateKey, slug: str, indexed: list[str]) -> None:
        self.key, self.slug, self.indexed = key, slug, indexed
        self.base = settings.HASHX_PUBLIC_URL
        self.host = urlsplit(self.base).netloc

    def make(self, kind: str) -> dict[str, Any]:
        if kind == "healthz":
            return self._environ("GET", "/healthz", signed=False)
        if kind == "whoami":
            return self._environ("GET", "/api/v1/whoami")
        if kind == "changes":
            return self._environ("GET", f"/api/v1/changes?sets={self.slug}&limit=100")
        if kind == "publish":
            signals = [{"type": "pdq", "value": v} for v in random_pdq(rng, 5)]
            return self._environ("POST", f"/api/v1/sets/{self.slug}/signals", {"signals": signals})
        near = [
            v[:-1] + ("0" if v[-1] != "0" else "1")
            for v in (self.indexed[i] for i in rng.choice(len(self.indexed), 5))
        ]
        queries = [{"type": "pdq", "value": v} for v in near + random_pdq(rng, 5)]
        return self._environ("POST", "/api/v1/match", {"signals": queries})

    def _environ(
        self, method: str, target: str, payload: object = None, *, signed: bool = True
    ) -> dict[str, Any]:
        body = b"" if payload is None else orjson.dumps(payload)
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(urlsplit(self.base).port or 80),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": self.host,
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        if body:
            environ["CONTENT_TYPE"] = "application/json"
            environ["CONTENT_LENGTH"] = str(len(body))
        if signed:
            for name, value in sign_headers(
                self.key, method, self.base + target, body or None
            ).items():
                environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ


def serve(environ: dict[str, Any]) -> int:
    status: list[str] = []

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(line)

    response = application(environ, cast(Any, start_response))
    try:
        for _chunk in response:
            pass
    finally:
        close: Callable[[], None] | None = getattr(response, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0])


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def services_cpu(pid: int) -> tuple[float | None, float]:
    """CPU seconds so far of the Postgres backend ``pid`` (None when it is not on this host) and
    of Redis."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        postgres: float | None = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        postgres = None
    info = redis_client().info("cpu")
    return postgres, float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cost(environs: "Environs", kind: str, count: int) -> tuple[float, float]:
    """CPU ms and wall ms per request of ``kind``, over ``count`` requests."""
    batch = [environs.make(kind) for _ in range(count)]
    profiler = cProfile.Profile(time.process_time) if kind == PROFILE else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for environ in batch:
        status = serve(environ)
        if status != EXPECTED[kind]:
            raise SystemExit(f"{kind}: HTTP {status}")
    if profiler is not None:
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(os.environ.get("BENCH_COST_SORT", "tottime"))
        stats.print_stats(int(os.environ.get("BENCH_COST_LINES", "25")))
        print(out.getvalue())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / count * 1000, wall / count * 1000


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    indexed = fill_pdq(hash_set, rng, ENTRIES)
    environs = Environs(key, hash_set.slug, indexed)
    for kind in EXPECTED:
        for _ in range(WARM_UP):
            status = serve(environs.make(kind))
            assert status == EXPECTED[kind], f"{kind}: HTTP {status}"
    # Kinds take turns, round after round; each kind's figure is its best round (the one least
    # disturbed by whatever else ran on the machine). Postgres and Redis CPU time is coarser
    # (clock ticks): summed over every round.
    pid = backend_pid()
    best: dict[str, tuple[float, float]] = {}
    services: dict[str, list[float]] = {kind: [0.0, 0.0] for kind in EXPECTED}
    for _round in range(ROUNDS):
        for kind in EXPECTED:
            postgres_before, redis_before = services_cpu(pid)
            cpu_ms, wall_ms = cost(environs, kind, REQUESTS // ROUNDS)
            postgres_after, redis_after = services_cpu(pid)
            if postgres_before is not None and postgres_after is not None:
                services[kind][0] += postgres_after - postgres_before
            services[kind][1] += redis_after - redis_before
            if kind not in best or cpu_ms < best[kind][0]:
                best[kind] = (cpu_ms, wall_ms)
    same_backend = backend_pid() == pid and services_cpu(pid)[0] is not None
    floor = best["healthz"][0]
    print(
        f"{REQUESTS} requests per kind in {ROUNDS} rounds, in process, one thread. CPU ms per"
        " request: of this process (best round), of its Postgres backend and of Redis (all rounds)"
    )
    print(
        f"{'request':<34} {'CPU ms':>8} {'x healthz':>10} {'wall ms':>8}"
        f" {'Postgres':>9} {'Redis':>7}"
    )
    labels = {
        "healthz": "unsigned GET /healthz",
        "whoami": "signed GET /api/v1/whoami",
        "changes": "signed GET /api/v1/changes (100)",
        "publish": "signed publish, 5 PDQ (JSON)",
        "match": "signed match, 10 PDQ",
    }
    per = (REQUESTS // ROUNDS * ROUNDS) / 1000
    for kind, (cpu_ms, wall_ms) in best.items():
        postgres = f"{services[kind][0] / per:9.3f}" if same_backend else f"{'n/a':>9}"
        print(
            f"{labels[kind]:<34} {cpu_ms:8.3f} {cpu_ms / floor:10.2f} {wall_ms:8.3f}"
            f" {postgres} {services[kind][1] / per:7.3f}"
        )


if __name__ == "__main__":
    main()
