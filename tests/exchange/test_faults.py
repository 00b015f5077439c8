"""Faults injected for real, and the exchange recovering without a person: a worker killed with
SIGKILL in the middle of a merge or of near-duplicate linking, Redis killed, PostgreSQL killed and
started again, and `make run` restarting the embedded services it started. Each ends with exact
counts and the audit chain verified; while a service is down the API answers 503 problem
documents with Retry-After, never a 500 and never late.

What is killed here is private to this module: a PostgreSQL and a Redis of its own
(``exchange.embedded`` under a temporary directory), with their own gunicorn, workers and beat,
so the rest of the suite, beside the services `make test` started, never notices.
"""

import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import psycopg2
import pytest
import redis
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from exchange.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from exchange.health import HEARTBEAT_PREFIX
from exchange.problems import PROBLEM_CONTENT_TYPE
from hashx.auth import HashxAuth
from hashx.keys import raw_public_bytes
from signals.actions.merge import STAGING_LOST
from tests.conftest import REPO_ROOT
from tests.exchange.test_run import Launcher
from tests.helpers import eventually, stop
from tests.signals.test_match import FAR, near

pytestmark = [pytest.mark.faults, pytest.mark.worker]

# How long any request may take to be answered, a service down or not: the connect timeouts
# (PostgreSQL 5 s, Redis 1 s, twice) and then some.
ANSWER_WITHIN = 15
# How long this module's gunicorn waits for a frozen PostgreSQL (HASHX_DATABASE_TIMEOUT_SECONDS).
DATABASE_TIMEOUT = 2
# The promise of issue 17 for a worker killed mid-merge: the batch is finished within this.
RESUMED_WITHIN = 30


class PrivateExchange:
    """PostgreSQL, Redis and gunicorn of this module's own, one member with a real key, and
    workers and beat started on demand; every process is stopped at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.postgres = EmbeddedPostgres(base)
        self.redis = EmbeddedRedis(base)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.auth = HashxAuth(Ed25519PrivateKey.generate())
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "REDIS_", "HASHX_"))
        }
        env.update(
            DATABASE_URL=self.postgres.start(),
            REDIS_URL=self.redis.start(),
            HASHX_VAR_DIR=str(self.base),
            HASHX_PUBLIC_URL=self.url,
            HASHX_WORKER_HEARTBEAT_SECONDS="1",
            HASHX_DATABASE_TIMEOUT_SECONDS=str(DATABASE_TIMEOUT),
        )
        self.env = env
        self.manage("migrate", "--verbosity", "0")
        self.manage("init_exchange")
        public = self.base / "acme.pub"
        public.write_text(base64.b64encode(raw_public_bytes(self.auth.key.public_key())).decode())
        self.manage(
            "create_member", "acme", "--name", "Acme", "--public-key", str(public), "--active"
        )
        port = self.url.rsplit(":", 1)[1]
        self.spawn("web", [sys.executable, "-m", "gunicorn", "exchange.wsgi:application",
                           "--bind", f"127.0.0.1:{port}", "--workers", "1"])  # fmt: skip
        eventually(self.serving, timeout=60, what="gunicorn serving")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.redis.stop()
        if self.postgres.alive():
            self.postgres.stop()

    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.base / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, cwd=REPO_ROOT, env={**self.env, **env}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=self.env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def worker(self, name: str, module: list[str] | None = None) -> subprocess.Popen[bytes]:
        """A Celery worker (``module``: another entry point, e.g. the stalling worker), ready."""
        hostname = f"{name}@faults"
        options = ["--loglevel", "INFO", "--concurrency", "1", "--hostname", hostname,
                   "--without-mingle", "--without-gossip"]  # fmt: skip
        entry = module or ["-m", "celery", "-A", "exchange", "worker"]
        process = self.spawn(name, [sys.executable, *entry, *options])

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"worker {name} exited:\n{self.log(name)[-3000:]}")
            return self.heartbeat(hostname)

        eventually(ready, timeout=60, what=f"worker {name} ready")
        return process

    def beat(self) -> subprocess.Popen[bytes]:
        return self.spawn("beat", [sys.executable, "-m", "celery", "-A", "exchange", "beat",
                                   "--loglevel", "INFO", "--pidfile", ""])  # fmt: skip

    def heartbeat(self, hostname: str) -> bool:
        client = redis.Redis.from_url(self.redis.url, socket_connect_timeout=1)
        try:
            return bool(client.exists(HEARTBEAT_PREFIX + hostname))
        except redis.RedisError:
            return False
        finally:
            client.close()

    def serving(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(headers or {})
        if data is not None:
            headers["Content-Type"] = "application/json"
        return requests.request(
            method, self.url + path, data=data, headers=headers, auth=self.auth,
            timeout=ANSWER_WITHIN,
        )  # fmt: skip

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg2.connect(self.postgres.url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        conn.close()
        return rows

    def new_set(self, slug: str) -> None:
        answer = self.call("POST", "/api/v1/sets", {"slug": slug, "name": slug})
        assert answer.status_code == 201, answer.text

    def publish(self, slug: str, values: list[str], idempotency_key: str = "") -> str:
        signals = [{"type": "pdq", "value": v} for v in values]
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self.call("POST", f"/api/v1/sets/{slug}/signals", {"signals": signals}, headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["batch"])

    def batch(self, batch_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/api/v1/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def merged(self, batch_id: str, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any]:
            batch = self.batch(batch_id)
            assert batch["state"] == "done", batch
            return batch

        return eventually(done, timeout=timeout, interval=0.25, what=f"batch {batch_id} merged")

    def assert_exact(self, slug: str, batches: dict[str, int]) -> None:
        """Each batch merged once, with ``batches[id]`` new entries; the set holds exactly their
        sum, each with one contribution; nothing left staged; the audit chain whole and sealed."""
        for batch_id, new in batches.items():
            batch = self.batch(batch_id)
            assert (batch["state"], batch["new"], batch["duplicate"]) == ("done", new, 0), batch
            merged = self.sql(
                "SELECT count(*) FROM audit_auditevent WHERE action = 'signals.batch.merged'"
                " AND object_id = %s",
                batch_id,
            )
            assert merged == [(1,)], f"batch {batch_id} audited as merged {merged[0][0]} times"
        counts = self.sql(
            "SELECT count(*), coalesce(sum(e.contributor_count), 0)"
            " FROM signals_setentry e JOIN signals_hashset s ON s.id = e.hash_set_id"
            " WHERE s.slug = %s",
            slug,
        )
        total = sum(batches.values())
        assert counts == [(total, total)]
        assert self.sql("SELECT count(*) FROM signals_stagedsignal") == [(0,)]
        assert self.sql("SELECT count(*) FROM signals_stagedbatch") == [(0,)]

        def verified() -> bool:
            report = self.manage("verify_audit")
            assert "audit log OK" in report and " 0 awaiting the sealer" in report, report
            return True

        eventually(verified, interval=1, what="the audit chain verified and sealed")


@contextmanager
def private_dir() -> Iterator[Path]:
    """A directory for services of a test's own, under the suite's var directory rather than
    pytest's temporary ones: another pytest session on the machine deletes all but the newest
    three of those, data directories of running services included."""
    path = Path(tempfile.mkdtemp(prefix="faults-", dir=settings.VAR_DIR))
    try:
        yield path
    finally:
        # What a failed test left running from it (a launcher killed before it stopped its
        # services, say): its processes name the directory.
        for process in psutil.process_iter(["cmdline"]):
            if str(path) in " ".join(process.info["cmdline"] or []):
                with suppress(psutil.Error):
                    process.kill()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def private() -> Iterator[PrivateExchange]:
    with private_dir() as base:
        private = PrivateExchange(base)
        try:
            private.start()
            yield private
        finally:
            private.stop()


@pytest.fixture
def stopped_after(private: PrivateExchange) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Workers and beat a test starts, stopped when it ends (the next test starts its own)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


def assert_unavailable(answer: requests.Response, slug: str = "service-unavailable") -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text[:500])
    assert answer.headers["Content-Type"] == PROBLEM_CONTENT_TYPE, answer.headers
    assert int(answer.headers["Retry-After"]) > 0
    body = answer.json()
    assert body["status"] == 503 and body["type"].endswith(f"/problems/{slug}"), body
    assert len(answer.content) < 2000, "details are bounded"


def kill_postgres(private: PrivateExchange) -> None:
    pgdata = private.base / "postgres"
    pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not private.postgres.alive(), timeout=10, what="PostgreSQL gone")


def test_while_postgres_is_down_requests_answer_503_and_all_is_well_once_it_is_back(
    private, stopped_after
):
    private.new_set("pg-outage")
    stopped_after.append(private.worker("pg-worker"))
    first = private.publish("pg-outage", FAR[0:10])
    private.merged(first)

    kill_postgres(private)
    # Authentication reads the key, views read sets and batches, publishing writes: each finds
    # the database gone, and says so with a 503 (the pooled connection first, a refused
    # reconnection after).
    for _ in range(2):
        assert_unavailable(private.call("GET", "/api/v1/sets/pg-outage"))
    assert_unavailable(private.call("GET", f"/api/v1/batches/{first}"))
    assert_unavailable(private.call("POST", "/api/v1/sets/pg-outage/signals", {"signals": []}))
    assert_unavailable(private.call("GET", "/api/v1/changes?sets=pg-outage"))
    assert_unavailable(requests.get(private.url + "/readyz", timeout=ANSWER_WITHIN), "not-ready")

    private.postgres.restart()
    eventually(
        lambda: private.call("GET", "/api/v1/sets/pg-outage").status_code == 200,
        what="the API back once PostgreSQL is",
    )
    second = private.publish("pg-outage", FAR[10:15])
    private.merged(second)
    private.assert_exact("pg-outage", {first: 10, second: 5})


def test_a_batch_whose_staged_lines_postgres_lost_in_a_crash_fails_and_is_published_again(
    private, stopped_after
):
    private.new_set("pg-crash")
    # No worker yet: the batch is staged, not merged, when PostgreSQL crashes.
    lost = private.publish("pg-crash", FAR[15:20], idempotency_key="crash-1")
    kill_postgres(private)
    private.postgres.restart()  # crash recovery: UNLOGGED staging comes back empty
    eventually(
        lambda: private.call("GET", "/api/v1/sets/pg-crash").status_code == 200,
        what="the API back once PostgreSQL is",
    )
    stopped_after.append(private.worker("crash-worker"))

    def failed() -> dict[str, Any]:
        batch = private.batch(lost)
        assert batch["state"] == "failed", batch
        return batch

    assert eventually(failed, what=f"batch {lost} failed")["error"] == STAGING_LOST
    # The same request with the same key: published anew, not answered with the lost batch.
    again = private.publish("pg-crash", FAR[15:20], idempotency_key="crash-1")
    assert again != lost
    private.merged(again)
    private.assert_exact("pg-crash", {again: 5})


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """A service stopped with SIGSTOP, its process and every child (PostgreSQL's backends): the
    kernel still accepts and acknowledges, nothing answers. Always thawed with SIGCONT, whatever
    the test did."""
    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    try:
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        yield
    finally:
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)


def backends(private: PrivateExchange) -> set[int]:
    """The client backends of the exchange's database but the one asking."""
    rows = private.sql(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    return {pid for (pid,) in rows}


def test_while_postgres_is_frozen_requests_answer_503_and_a_new_connection_serves_after(private):
    private.new_set("pg-frozen")
    assert private.call("GET", "/api/v1/sets/pg-frozen").status_code == 200
    # gunicorn's one worker keeps its connection between requests.
    before = backends(private)
    assert len(before) == 1, before

    with frozen(service_pid(private.base, "postgres")):
        # The kept connection's call is cut after DATABASE_TIMEOUT; a new one finds the server
        # silent too (connect_timeout): each answers 503 rather than wait (ANSWER_WITHIN).
        assert_unavailable(private.call("GET", "/api/v1/sets/pg-frozen"))
        assert_unavailable(private.call("GET", "/api/v1/sets/pg-frozen"))

    answer = private.call("GET", "/api/v1/sets/pg-frozen")
    assert answer.status_code == 200, answer.text
    # The connection that was cut was discarded, not used again: its backend found it closed.
    eventually(lambda: not backends(private) & before, what="the cut connection's backend gone")


def test_a_stream_left_while_postgres_is_frozen_frees_the_worker(private, stopped_after):
    # More than the hand-over, the sockets and the server's buffers hold between them: the
    # COPY is still running when its reader leaves.
    private.new_set("pg-frozen-stream")
    stopped_after.append(private.worker("stream-worker"))
    batches = [
        private.publish("pg-frozen-stream", [secrets.token_hex(32) for _ in range(10_000)])
        for _ in range(15)
    ]
    for batch in batches:
        private.merged(batch)
    stream = requests.get(
        private.url + "/api/v1/sets/pg-frozen-stream/snapshot", auth=private.auth, stream=True,
        timeout=ANSWER_WITHIN,
    )  # fmt: skip
    assert stream.status_code == 200, stream.text[:500]
    # Kept: a generator of requests' collected half-read closes the connection at once.
    chunks = stream.iter_content(64 * 1024)
    assert next(chunks)
    time.sleep(0.5)  # the buffers fill: the server's thread waits on the client

    with frozen(service_pid(private.base, "postgres")):
        stream.close()
        # gunicorn's one sync worker cancels the COPY, which a frozen server never takes:
        # psycopg2's cancel() waited for the thaw holding the GIL, and every request with it.
        answer = requests.get(private.url + "/healthz", timeout=ANSWER_WITHIN)
        assert answer.status_code in (200, 503), answer.text

    answer = private.call("GET", "/api/v1/sets/pg-frozen-stream")
    assert answer.status_code == 200, answer.text


def test_while_redis_is_frozen_requests_answer_503_and_serve_again_once_it_thaws(private):
    private.new_set("redis-frozen")
    assert private.call("GET", "/api/v1/sets/redis-frozen").status_code == 200
    with frozen(service_pid(private.base, "redis")):
        # The pooled connection times out (socket_timeout), and so does a new one.
        assert_unavailable(
            private.call("GET", "/api/v1/sets/redis-frozen"), "replay-check-unavailable"
        )
    answer = private.call("GET", "/api/v1/sets/redis-frozen")
    assert answer.status_code == 200, answer.text


def test_while_redis_is_down_requests_answer_503_and_the_worker_reconnects_after(
    private, stopped_after
):
    private.new_set("redis-outage")
    worker = private.worker("redis-worker")
    stopped_after.append(worker)
    first = private.publish("redis-outage", FAR[20:30])
    private.merged(first)

    private.redis.process.kill()
    private.redis.process.wait()
    # Every signed request spends its nonce in Redis.
    assert_unavailable(private.call("GET", "/api/v1/sets/redis-outage"), "replay-check-unavailable")
    assert_unavailable(requests.get(private.url + "/readyz", timeout=ANSWER_WITHIN), "not-ready")
    # The worker lost its broker and keeps trying to reconnect, alive.
    eventually(
        lambda: len(re.findall("Cannot connect to", private.log("redis-worker"))) >= 2,
        what="the worker retrying its broker",
    )
    assert worker.poll() is None, private.log("redis-worker")[-3000:]
    # ... for as long as it takes: Celery's default gives up after 100 attempts (about 45
    # minutes), and the worker exits.
    limits = set(re.findall(r"Trying again in .*\(\d+/(\w+)\)", private.log("redis-worker")))
    assert limits == {"None"}, f"the worker announces it gives up after {limits} attempts"

    private.redis.restart()
    eventually(
        lambda: private.heartbeat("redis-worker@faults"),
        timeout=60,
        what="the worker's heartbeat once Redis is back",
    )
    second = private.publish("redis-outage", FAR[30:35])
    private.merged(second)
    assert worker.poll() is None
    private.assert_exact("redis-outage", {first: 10, second: 5})


def start_staller(
    private: PrivateExchange, stage: str, started: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], Path]:
    """A real worker that stalls inside ``stage`` (merge or link) and touches the returned mark
    file when it does, for the test to kill it with SIGKILL at exactly that point."""
    mark = private.base / f"{stage}.stalled"
    mark.unlink(missing_ok=True)
    staller = private.spawn(
        f"staller-{stage}",
        [sys.executable, "-m", "tests.exchange.stalling_worker", stage, "--pool", "solo",
         "--loglevel", "INFO", "--hostname", f"staller-{stage}@faults", "--without-mingle",
         "--without-gossip"],
        HASHX_STALL_MARK=str(mark),
    )  # fmt: skip
    started.append(staller)
    return staller, mark


def test_a_worker_killed_mid_merge_has_its_batch_finished_by_beat_within_30_s(
    private, stopped_after
):
    private.new_set("killed-merge")
    staller, mark = start_staller(private, "merge", stopped_after)
    batch_id = private.publish("killed-merge", FAR[40:70])
    eventually(mark.exists, timeout=60, what="the worker stalled mid-merge")
    # Part 0 committed; part 1 wrote its entries and holds its lock, uncommitted.
    assert private.batch(batch_id)["state"] == "merging"
    stopped_after.append(private.beat())
    stopped_after.append(private.worker("merge-rescuer"))

    staller.send_signal(signal.SIGKILL)
    staller.wait()
    private.merged(batch_id, timeout=RESUMED_WITHIN)
    private.assert_exact("killed-merge", {batch_id: 30})


def test_a_worker_killed_mid_link_has_its_batch_linked_by_beat_within_30_s(private, stopped_after):
    private.new_set("killed-link")
    staller, mark = start_staller(private, "link", stopped_after)
    # The set's first PDQ hashes are a bulk load, never searched; the next batch is.
    first = private.publish("killed-link", FAR[80:90])
    private.merged(first)
    variants = [near(FAR[80], 5), near(FAR[81], 7), FAR[90]]
    second = private.publish("killed-link", variants)
    eventually(mark.exists, timeout=60, what="the worker stalled mid-link")
    assert private.batch(second)["state"] == "done"
    stopped_after.append(private.beat())
    stopped_after.append(private.worker("link-rescuer"))

    staller.send_signal(signal.SIGKILL)
    staller.wait()

    def linked() -> bool:
        assert private.batch(second)["near_duplicates"] == 2
        return True

    eventually(linked, timeout=RESUMED_WITHIN, interval=0.25, what="the batch linked")
    links = private.sql(
        "SELECT e.value, n.value, e.near_duplicate_distance FROM signals_setentry e"
        " JOIN signals_setentry n ON n.id = e.near_duplicate_of_id"
        " ORDER BY e.near_duplicate_distance"
    )
    assert links == [(variants[0], FAR[80], 5), (variants[1], FAR[81], 7)]
    assert private.sql("SELECT link_ranges::text FROM signals_batch WHERE id = %s", second) == [
        ("[]",)
    ]
    private.assert_exact("killed-link", {first: 10, second: 3})


def service_pid(base: Path, name: str) -> int:
    if name == "postgres":
        return int((base / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])
    found = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "redis" in " ".join(p.info["cmdline"] or []) and str(base) in " ".join(p.info["cmdline"])
    ]
    assert len(found) == 1, found
    return found[0]


def test_make_run_restarts_the_embedded_redis_and_postgres_it_started():
    with private_dir() as base:
        launch_and_kill_services(base)


def launch_and_kill_services(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, free_port())
    try:
        launcher.wait_for(launcher.ready, "/readyz 200")
        for name in ("redis", "postgres"):
            os.kill(service_pid(tmp_path, name), signal.SIGKILL)
            launcher.wait_for(
                lambda n=name: f"!! embedded {n} stopped unexpectedly" in launcher.output,
                f"the report of embedded {name}'s death",
            )
            launcher.wait_for(
                lambda n=name: f"restarted embedded {n} at" in launcher.output,
                f"embedded {name} restarted",
            )
            launcher.wait_for(launcher.ready, f"/readyz 200 after {name}'s restart")
        launcher.process.send_signal(signal.SIGINT)
        assert launcher.process.wait(60) == 0, launcher.output[-3000:]
    finally:
        if launcher.process.poll() is None:
            launcher.process.kill()
