"""A bounded load test: 50 concurrent clients of mixed signed reads and writes against gunicorn
started as ``make run`` starts it (the command is read from exchange/run.py), first alone and
then beside 20 idle sockets held open; for each phase, requests/s, p50/p95/p99 latency and
errors by kind, and where the cores went: the CPU ms per answered request of this client, of the
gunicorn workers, of the embedded Postgres (every backend) and of Redis, and how many cores
they kept busy (on a shared machine, less than the machine has).

    .venv/bin/python -m exchange.embedded --var var/bench -- .venv/bin/python bench/load.py

The mix: half ``GET /api/v1/changes`` (a page of 100), a quarter ``POST /api/v1/match`` (10 PDQ
queries, half near indexed hashes), a quarter ``POST /api/v1/sets/{slug}/signals`` (5 new PDQ
hashes as JSON). Only gunicorn runs (no Celery worker: the published batches wait staged).
Loopback only. Each phase lasts ``BENCH_LOAD_SECONDS`` (default 30), each request at most
``BENCH_LOAD_TIMEOUT`` (default 10 s: past it, it counts as an error); ``BENCH_LOAD_CLIENTS``
(default 50), ``BENCH_LOAD_IDLE`` (default 20). The client is one asyncio loop speaking
HTTP/1.1 (keep-alive when the server keeps the connection) with requests signed before the
clock starts, so that its own work weighs little on the measure; it shares the machine with the
server all the same.
"""

import asyncio
import itertools
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench._common import bench_member, cpu_seconds, fill_pdq, random_pdq, start_web  # noqa: E402
from hashx.auth import sign_headers  # noqa: E402

SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "30"))
TIMEOUT = float(os.environ.get("BENCH_LOAD_TIMEOUT", "10"))
CLIENTS = int(os.environ.get("BENCH_LOAD_CLIENTS", "50"))
IDLE = int(os.environ.get("BENCH_LOAD_IDLE", "20"))
ENTRIES = 10_000
EXPECTED = {"GET": 200, "match": 200, "publish": 202}
# Requests signed ahead per second of the run: more than the server answers today.
POOL_RATE = 400
rng = np.random.default_rng(3)


@dataclass
class Request:
    kind: str
    raw: bytes


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    # CPU seconds each process group used during the phase (bench._common.cpu_seconds).
    cpu: dict[str, float] = field(default_factory=dict)

    def ok(self, kind: str, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)


class Requests:
    """Signed requests of the mix, made ahead of use (signing is the client's costliest work)."""

    def __init__(self, base: str, key: Ed25519PrivateKey, slug: str, indexed: list[str]):
        self.base, self.key, self.slug, self.indexed = base, key, slug, indexed
        self.host = urlsplit(base).netloc

    def make(self) -> Request:
        draw = rng.random()
        if draw < 0.5:
            return self._raw("GET", "GET", f"/api/v1/changes?sets={self.slug}&limit=100")
        if draw < 0.75:
            near = [
                v[:-1] + ("0" if v[-1] != "0" else "1")
                for v in (self.indexed[i] for i in rng.choice(len(self.indexed), 5))
            ]
            queries = [{"type": "pdq", "value": v} for v in near + random_pdq(rng, 5)]
            return self._raw("match", "POST", "/api/v1/match", {"signals": queries})
        signals = [{"type": "pdq", "value": v} for v in random_pdq(rng, 5)]
        return self._raw(
            "publish", "POST", f"/api/v1/sets/{self.slug}/signals", {"signals": signals}
        )

    def _raw(self, kind: str, method: str, path: str, payload: object = None) -> Request:
        body = b"" if payload is None else orjson.dumps(payload)
        headers = sign_headers(self.key, method, self.base + path, body or None)
        if body:
            headers |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        return Request(kind, ("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def pool(self, count: int) -> Iterator[Request]:
        """``count`` requests signed now, then more signed as they are asked for."""
        return itertools.chain([self.make() for _ in range(count)], iter(self.make, None))


class Connection:
    """One client's HTTP/1.1 connection, opened again whenever the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def send(self, raw: bytes) -> int:
        reused = self.streams is not None
        try:
            return await self._send(raw)
        except (ConnectionError, asyncio.IncompleteReadError, EmptyAnswer):
            self.close()
            if not reused:
                raise
            return await self._send(raw)  # the server had closed the kept connection

    async def _send(self, raw: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(raw)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise EmptyAnswer
        status = int(status_line.split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
        else:
            await reader.read()
            self.close()
        if headers.get("connection") == "close" or status_line.startswith(b"HTTP/1.0"):
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


class EmptyAnswer(Exception):
    pass


async def client(
    host: str, port: int, requests: Iterator[Request], until: float, tally: Tally
) -> None:
    connection = Connection(host, port)
    while time.monotonic() < until:
        request = next(requests)
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(connection.send(request.raw), TIMEOUT)
        except TimeoutError:
            connection.close()
            tally.errors[f"{request.kind} timeout"] += 1
            continue
        except (OSError, asyncio.IncompleteReadError, EmptyAnswer) as exc:
            connection.close()
            tally.errors[f"{request.kind} {type(exc).__name__}"] += 1
            await asyncio.sleep(0.05)
            continue
        if status != EXPECTED[request.kind]:
            tally.errors[f"{request.kind} HTTP {status}"] += 1
        else:
            tally.ok(request.kind, time.perf_counter() - started)
    connection.close()


async def phase(
    base: str, requests: Iterator[Request], idle: int, web_pid: int, seconds: float = SECONDS
) -> tuple[Tally, float]:
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    held = [socket.create_connection((host, port), timeout=5) for _ in range(idle)]
    tally = Tally()
    cpu_before = cpu_seconds(web_pid)
    started = time.monotonic()
    try:
        await asyncio.gather(
            *(client(host, port, requests, started + seconds, tally) for _ in range(CLIENTS))
        )
    finally:
        for sock in held:
            sock.close()
    elapsed = time.monotonic() - started
    cpu_after = cpu_seconds(web_pid)
    tally.cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return tally, elapsed


def report(label: str, tally: Tally, seconds: float) -> None:
    every = [s for kind in tally.latencies.values() for s in kind]
    errors = sum(tally.errors.values())
    print(f"{label}: {len(every) / seconds:.0f} requests/s answered right over {seconds:.0f} s,"
          f" {errors} errors")  # fmt: skip
    rows = [("all", every), *sorted(tally.latencies.items())]
    for kind, latencies in rows:
        if latencies:
            p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
            print(f"  {kind:<8} {len(latencies):>7} answered  p50 {p50:7.1f} ms"
                  f"  p95 {p95:7.1f} ms  p99 {p99:7.1f} ms")  # fmt: skip
    for kind, count in tally.errors.most_common():
        print(f"  error: {kind} x {count}")
    if every:
        # Where the cores went: CPU ms per answered request of each process group, and the
        # cores they kept busy on average (the machine's are shared with whatever else runs).
        shares = "  ".join(
            f"{name} {used / len(every) * 1000:.2f}" for name, used in tally.cpu.items()
        )
        busy = sum(tally.cpu.values()) / seconds
        print(f"  CPU ms per request: {shares}; {busy:.2f} cores busy (of {os.cpu_count()})")


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    started = time.perf_counter()
    indexed = fill_pdq(hash_set, rng, ENTRIES)
    print(f"{ENTRIES} PDQ entries published and merged in {time.perf_counter() - started:.1f} s")
    web, base, _ = start_web(as_run=True)
    try:
        requests = Requests(base, key, hash_set.slug, indexed)
        # Every worker opens the match index and warms its connections before the clock runs.
        asyncio.run(phase(base, requests.pool(0), 0, web.pid, seconds=3))
        started = time.perf_counter()
        pool = requests.pool(int(SECONDS * 2 * POOL_RATE))
        print(f"warmed up; signed the requests in {time.perf_counter() - started:.1f} s")
        for label, idle in [("alone", 0), (f"beside {IDLE} idle sockets", IDLE)]:
            tally, seconds = asyncio.run(phase(base, pool, idle, web.pid))
            report(f"{CLIENTS} clients {label}", tally, seconds)
    finally:
        web.terminate()
        web.wait()


if __name__ == "__main__":
    main()
