"""``make run``: the whole exchange in one terminal.

Starts embedded PostgreSQL and Redis when ``DATABASE_URL`` / ``REDIS_URL`` are unset, runs
``manage.py bootstrap`` (migrate, static files, identity, superuser), then supervises three
children: web (gunicorn), worker (Celery) and beat (Celery beat). Their output is interleaved
with a name prefix. A child that exits on its own, or an embedded service it started that dies,
is reported and restarted with back-off (meanwhile the API answers 503 and the children
reconnect by themselves); Ctrl-C (or SIGTERM) stops all children, then the embedded services,
and leaves no process behind.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

from exchange import embedded

log = logging.getLogger("hashx.run")

_print_lock = threading.Lock()
_COLOURS = {"web": "36", "worker": "33", "beat": "35", "run": "32"}
_STOP_GRACE_SECONDS = 20
_MAX_BACKOFF_SECONDS = 30
# A child that ran this long before exiting gets its back-off reset.
_STABLE_SECONDS = 60


def say(name: str, line: str) -> None:
    prefix = f"{name:>6} |"
    if sys.stdout.isatty():
        prefix = f"\033[{_COLOURS.get(name, '0')}m{prefix}\033[0m"
    with _print_lock:
        sys.stdout.write(f"{prefix} {line.rstrip()}\n")
        sys.stdout.flush()


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        say(name, raw.decode("utf-8", "replace"))
    stream.close()


@dataclass
class Supervised:
    """Something the supervisor keeps running: it notices the end, restarts with back-off."""

    name: str
    started_at: float = field(default_factory=time.monotonic)
    failures: int = 0
    restart_at: float | None = None

    def ended(self) -> str | None:
        """None while it runs; else how it ended, for the report."""
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError


@dataclass
class Child(Supervised):
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)

    def ended(self) -> str | None:
        assert self.process is not None
        code = self.process.poll()
        return None if code is None else f"exited unexpectedly with code {code}"

    def start(self) -> None:
        # Own session: a terminal Ctrl-C reaches only the supervisor, which stops children in order.
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        assert self.process.stdout is not None
        self.pump = threading.Thread(
            target=_pump, args=(self.name, self.process.stdout), daemon=True
        )
        self.pump.start()
        say("run", f"started {self.name} (pid {self.process.pid})")


@dataclass
class EmbeddedService(Supervised):
    """An embedded PostgreSQL or Redis this launcher started: restarted at the same address, so
    the children's URLs stay right."""

    service: embedded.Service | None = None

    def ended(self) -> str | None:
        assert self.service is not None
        return None if self.service.alive() else "stopped unexpectedly"

    def start(self) -> None:
        assert self.service is not None
        self.service.restart()
        self.started_at = time.monotonic()
        self.restart_at = None
        say("run", f"restarted {self.name} at {self.service.url}")


def children(port: int) -> list[Child]:
    py = sys.executable
    bind = os.environ.get("HASHX_BIND", "127.0.0.1")
    return [
        # Served as compose and the image serve it (exchange/gunicorn_conf.py), on our port.
        Child("web", argv=[
            py, "-m", "gunicorn", "-c", "python:exchange.gunicorn_conf", "--bind", f"{bind}:{port}",
        ]),
        Child("worker", argv=[
            py, "-m", "celery", "-A", "exchange", "worker",
            "--loglevel", os.environ.get("LOG_LEVEL", "INFO"),
            "--concurrency", os.environ.get("HASHX_WORKER_CONCURRENCY", "2"),
            "--hostname", "worker@%h",
        ]),
        Child("beat", argv=[
            py, "-m", "celery", "-A", "exchange", "beat",
            "--loglevel", os.environ.get("LOG_LEVEL", "INFO"),
            "--pidfile", "",
        ]),
    ]  # fmt: skip


class Supervisor:
    def __init__(self, kids: list[Child]) -> None:
        self.kids = kids
        self.services: list[EmbeddedService] = []
        self.stopping = threading.Event()

    def guard(self, services: list[embedded.Service]) -> None:
        """Also restart these embedded services when they die (those this launcher started; a
        service it shares with another launcher is that one's to restart)."""
        self.services = [
            EmbeddedService(f"embedded {service.name}", service=service)
            for service in services
            if service.owned
        ]

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping.is_set():
            say("run", f"{signal.Signals(signum).name}: stopping web, worker and beat")
        self.stopping.set()

    def watch(self) -> None:
        for kid in self.kids:
            kid.start()
        while not self.stopping.wait(0.25):
            # Services first: a child restarted in the same round finds them back.
            for each in [*self.services, *self.kids]:
                self._look_after(each)

    def _look_after(self, each: Supervised) -> None:
        now = time.monotonic()
        if each.restart_at is not None:
            if now < each.restart_at:
                return
            try:
                each.start()
            except Exception as exc:
                self._back_off(each, f"could not be restarted ({exc})", now)
            return
        ended = each.ended()
        if ended is not None:
            if now - each.started_at > _STABLE_SECONDS:
                each.failures = 0
            self._back_off(each, ended, now)

    def _back_off(self, each: Supervised, what: str, now: float) -> None:
        each.failures += 1
        delay = min(2 ** (each.failures - 1), _MAX_BACKOFF_SECONDS)
        say("run", f"!! {each.name} {what}; restarting in {delay} s")
        each.restart_at = now + delay

    def stop_all(self) -> int:
        running = [k for k in self.kids if k.process is not None and k.process.poll() is None]
        for kid in running:
            assert kid.process is not None
            kid.process.terminate()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for kid in running:
            assert kid.process is not None
            try:
                kid.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say("run", f"{kid.name} did not stop within {_STOP_GRACE_SECONDS} s; killing it")
                os.killpg(kid.process.pid, signal.SIGKILL)
                kid.process.wait()
        for kid in self.kids:
            if kid.pump is not None:
                kid.pump.join(timeout=2)
        say("run", "web, worker and beat stopped")
        return 0


def port_taken(bind: str, port: int) -> str | None:
    """Why gunicorn could not listen on ``bind:port`` (another `make run`, another server), or
    None when it can. Checked before anything starts: a web child that cannot bind would only
    be restarted again and again."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gunicorn binds: SO_REUSEADDR, so a port in TIME_WAIT after a stop is not "taken".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="   run | %(message)s", stream=sys.stdout)
    port = int(os.environ.get("PORT", "8000"))
    bind = os.environ.get("HASHX_BIND", "127.0.0.1")
    taken = port_taken(bind, port)
    if taken is not None:
        say(
            "run",
            f"!! cannot serve on {bind}:{port}: {taken} (another `make run` or server uses"
            f" it?); stop it, or choose another port: PORT={port + 1} make run",
        )
        return 2
    base = embedded.var_dir()
    base.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(children(port))
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    with embedded.services(base) as started:
        for service in started:
            say("run", f"embedded {service.name} at {service.url}")
        supervisor.guard(started)
        say("run", "bootstrap: migrate, static files, identity, superuser")
        bootstrap = subprocess.run(
            [sys.executable, "manage.py", "bootstrap"], cwd=embedded.REPO_ROOT
        )
        if bootstrap.returncode != 0:
            say("run", f"!! bootstrap failed with code {bootstrap.returncode}; not starting")
            return bootstrap.returncode
        if supervisor.stopping.is_set():
            return 0
        public = os.environ.get("HASHX_PUBLIC_URL", f"http://127.0.0.1:{port}")
        say("run", f"serving {public}  (admin: {public}/admin/, API docs: {public}/api/v1/docs)")
        try:
            supervisor.watch()
        finally:
            code = supervisor.stop_all()
        if started:
            say("run", "stopping embedded services")
    return code


if __name__ == "__main__":
    sys.exit(main())
