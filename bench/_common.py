"""What the bench scripts share: a gunicorn serving the exchange on a free loopback port."""

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from exchange.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


def start_web(
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """One sync gunicorn worker; returns it once /healthz answers, its base URL, and the
    environment (with that URL as ``HASHX_PUBLIC_URL``) for other processes of the run."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HASHX_PUBLIC_URL": base, "LOG_LEVEL": "WARNING", **(extra_env or {})}
    argv = [sys.executable, "-m", "gunicorn", "exchange.wsgi:application"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "3600"]
    web = subprocess.Popen([*argv, "--log-level", "warning"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{base}/healthz", timeout=5).raise_for_status()
            return web, base, env
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                web.terminate()
                raise
            time.sleep(0.2)
