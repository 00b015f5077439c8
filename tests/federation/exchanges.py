"""Whole exchanges as real processes on loopback, for the federation tests and bench: each with
its own database (on the test PostgreSQL) and its own Redis database number, served by gunicorn
exactly as `make run` serves it, driven by `manage.py` commands run as subprocesses."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange import run
from exchange.embedded import free_port
from hashx.client import Client
from hashx.keys import public_pem, raw_public_bytes
from signals.models import entry_lookup
from signals.types import SIGNAL_TYPES
from tests.helpers import eventually, stop

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _database_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def _redis_url(base: str, db: int) -> str:
    if base.startswith("unix://"):
        path, _, query = base.partition("?")
        kept = [p for p in query.split("&") if p and not p.startswith("db=")]
        return f"{path}?{'&'.join([*kept, f'db={db}'])}"
    return urlunsplit(urlsplit(base)._replace(path=f"/{db}"))


@contextmanager
def databases(names: list[str]) -> Iterator[dict[str, str]]:
    """A migrated database per name on the server of ``DATABASE_URL`` (migrated once, then
    copied from that template); all dropped at the end. Yields their URLs by name."""
    server = os.environ["DATABASE_URL"]
    suffix = secrets.token_hex(4)
    template = f"fed_template_{suffix}"
    made = [template]

    def admin(sql: str) -> None:
        connection = psycopg2.connect(server)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    try:
        admin(f'CREATE DATABASE "{template}"')
        env = {**os.environ, "DATABASE_URL": _database_url(server, template)}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        urls = {}
        for name in names:
            database = f"fed_{name}_{suffix}"
            admin(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
            made.append(database)
            urls[name] = _database_url(server, database)
        yield urls
    finally:
        for database in made:
            admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@dataclass
class Exchange:
    """One exchange: its gunicorn (and, when asked, a Celery worker), its database and Redis."""

    name: str
    database_url: str
    redis_url: str
    var: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _fingerprint: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "DATABASE_CONN_MAX_AGE": "0",
            "REDIS_URL": self.redis_url,
            "HASHX_PUBLIC_URL": self.base,
            "HASHX_EXCHANGE_NAME": f"Exchange {self.name.upper()}",
            "HASHX_VAR_DIR": str(self.var),
            "HASHX_MATCH_DIR": str(self.var / "match"),
            "HASHX_BIND": "127.0.0.1",
            "WEB_CONCURRENCY": "1",
            "HASHX_MERGE_PARTS": "1",
            # The peers listen on loopback, over plain HTTP.
            "HASHX_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
            "HASHX_WEBHOOK_ALLOW_HTTP": "true",
            "HASHX_WORKER_HEARTBEAT_SECONDS": "1",
        }

    def start(self, *, worker: str = "") -> None:
        """gunicorn, and a Celery worker on the ``worker`` queues if named."""
        self.var.mkdir(parents=True, exist_ok=True)
        redis.Redis.from_url(self.redis_url).flushdb()
        (web,) = [child for child in run.children(self.port) if child.name == "web"]
        self._spawn("web", web.argv)
        if worker:
            self.start_worker(worker)

    def wait_up(self) -> None:
        def up() -> bool:
            for process in self.processes:
                assert process.poll() is None, self.log("web")[-3000:]
            try:
                return requests.get(self.base + "/healthz", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                return False  # not listening yet, or a busy machine still importing Django

        eventually(up, timeout=90, what=f"exchange {self.name} answering /healthz")

    def start_worker(self, queues: str) -> None:
        self._spawn("worker", [
            sys.executable, "-m", "celery", "-A", "exchange", "worker", "--loglevel", "INFO",
            "--concurrency", "1", "--pool", "solo", "--hostname", f"{self.name}@fed",
            "--without-mingle", "--without-gossip", "-Q", queues,
        ])  # fmt: skip

    def _spawn(self, what: str, argv: list[str]) -> None:
        with (self.var / f"{what}.log").open("ab") as log:
            self.processes.append(
                subprocess.Popen(
                    argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            )

    def log(self, what: str) -> str:
        return (self.var / f"{what}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes:
            stop(process)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``manage.py ARGS`` against this exchange, as a subprocess."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=self.env,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
        return done

    def popen_manage(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.var / "manage.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        connection = psycopg2.connect(self.database_url)
        try:
            with connection, connection.cursor() as cursor:
                cursor.execute(query, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def member(self, slug: str, tmp: Path) -> Client:
        """A new active member organisation with a key, and a ``hashx`` client signing as it."""
        key = Ed25519PrivateKey.generate()
        pem = tmp / f"{self.name}-{slug}.pub"
        pem.write_text(public_pem(raw_public_bytes(key.public_key())))
        self.manage("create_member", slug, "--name", slug.title(), "--active",
                    "--public-key", str(pem))  # fmt: skip
        return Client(self.base, key, retries=0)

    def fingerprint(self) -> str:
        if not self._fingerprint:
            self._fingerprint = self.manage("peer_fingerprint").stdout.strip()
        return self._fingerprint

    @staticmethod
    def peer_all(pairs: list[tuple["Exchange", "Exchange"]]) -> None:
        """``peer_with`` for each (exchange, other) pair, the commands run side by side."""
        with ThreadPoolExecutor() as pool:
            list(pool.map(Exchange.fingerprint, {o.name: o for _, o in pairs}.values()))
            list(pool.map(lambda pair: pair[0].peer_with(pair[1]), pairs))

    def peer_with(self, other: "Exchange") -> None:
        """``add_peer`` here for ``other``, with the fingerprint its own command printed."""
        self.manage("add_peer", other.name, other.base, "--fingerprint", other.fingerprint())

    def pull(self, peer: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.manage("pull_peers", peer, check=check)

    def active_entries(self, values: list[str]) -> dict[str, int]:
        """Active entries holding each of ``values``, in all sets (absent: none). Probed through
        the (type, key) prefix of the entries' unique index: by value alone, Postgres read every
        entry (a second a probe at a million, which bench/federation.py took for push-assist
        lag)."""
        rows = self.sql(
            "SELECT e.value, count(*) FROM unnest(%s::text[]) AS v(value)"
            " CROSS JOIN unnest(%s::text[]) AS t(type)"
            f" JOIN signals_setentry e ON {entry_lookup('e', 't.type', 'v.value')}"
            " WHERE e.state = 'active' GROUP BY e.value",
            [values, list(SIGNAL_TYPES)],
        )
        return dict(rows)


@contextmanager
def exchanges(
    names: list[str], tmp: Path, *, workers: dict[str, str] | None = None
) -> Iterator[dict[str, Exchange]]:
    """Exchanges by name, each running on its own database and Redis database number;
    ``workers``: the queues of a Celery worker, by the name of the exchange that runs one."""
    with databases(names) as urls:
        base_redis = os.environ["REDIS_URL"]
        started: dict[str, Exchange] = {}
        try:
            for number, name in enumerate(names, start=11):
                exchange = Exchange(name, urls[name], _redis_url(base_redis, number), tmp / name)
                started[name] = exchange
                exchange.start(worker=(workers or {}).get(name, ""))
            for exchange in started.values():
                exchange.wait_up()
            yield started
        finally:
            for exchange in started.values():
                exchange.stop()
