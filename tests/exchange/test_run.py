"""`make run` end to end: the launcher starts embedded Postgres and Redis, bootstraps, serves,
restarts a crashed child, and on Ctrl-C leaves no process behind."""

import os
import re
import signal
import subprocess
import sys
import threading

import psutil
import pytest
import requests

from exchange.embedded import free_port
from tests.conftest import REPO_ROOT
from tests.helpers import eventually


class Launcher:
    def __init__(self, var_dir, port):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(HASHX_VAR_DIR=str(var_dir), PORT=str(port), WEB_CONCURRENCY="1",
                   HASHX_WORKER_CONCURRENCY="1", HASHX_WORKER_HEARTBEAT_SECONDS="1")  # fmt: skip
        env.pop("HASHX_ADMIN_PASSWORD", None)
        self.base = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exchange.run"], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, predicate, what, timeout=120):
        def done():
            if self.process.poll() is not None:
                code = self.process.returncode
                pytest.fail(f"launcher exited ({code}) waiting for {what}:\n{self.output[-4000:]}")
            assert predicate(), f"its output ends:\n{self.output[-4000:]}"
            return True

        eventually(done, timeout=timeout, interval=0.25, what=what)

    def get(self, path):
        return requests.get(self.base + path, timeout=10)

    def ready(self):
        try:
            return self.get("/readyz").status_code == 200
        except requests.ConnectionError:
            return False

    def child_pid(self, name):
        pids = re.findall(rf"started {name} \(pid (\d+)\)", self.output)
        return int(pids[-1]) if pids else None


def processes_using(path):
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append((proc.info["pid"], cmdline))
    return found


@pytest.mark.worker
def test_make_run_serves_recovers_and_stops_cleanly(exchange_var):
    launcher = Launcher(exchange_var, free_port())
    try:
        launcher.wait_for(launcher.ready, "/readyz 200")

        assert launcher.get("/healthz").json() == {"status": "ok"}
        assert launcher.get("/.well-known/hashx").json()["jwks"]["keys"]
        login = launcher.get("/admin/login/")
        assert login.status_code == 200
        stylesheet = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', login.text).group(1)
        assert "body" in launcher.get(stylesheet).text
        docs = launcher.get("/api/v1/docs")
        script = re.search(r'src="(/static/drf_spectacular_sidecar/[^"]+\.js)"', docs.text).group(1)
        assert launcher.get(script).status_code == 200

        credentials = exchange_var / "admin-credentials"
        assert credentials.stat().st_mode & 0o777 == 0o600
        password = credentials.read_text().split("password=")[1].strip()
        assert password in launcher.output and str(credentials) in launcher.output

        # A crashed child is reported and restarted, not silently ignored.
        worker_pid = launcher.child_pid("worker")
        os.killpg(worker_pid, signal.SIGKILL)
        launcher.wait_for(
            lambda: "worker exited unexpectedly" in launcher.output, "the crash report"
        )
        launcher.wait_for(lambda: launcher.child_pid("worker") != worker_pid, "the worker restart")
        launcher.wait_for(launcher.ready, "/readyz 200 after the restart")

        pids = [launcher.child_pid(n) for n in ("web", "worker", "beat")]
        launcher.process.send_signal(signal.SIGINT)
        assert launcher.process.wait(60) == 0, launcher.output[-3000:]
    finally:
        if launcher.process.poll() is None:
            launcher.process.kill()

    assert not [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]

    # Embedded Postgres and Redis were stopped too: nothing runs from the var directory.
    def none_left():
        assert processes_using(exchange_var) == []
        return True

    eventually(none_left, timeout=10, interval=0.2, what="no process running from var")
