"""Starting the exchange for the first time: `make run` on a port already taken says so and exits
instead of restarting its web process in a loop; `make manage` with no exchange running is one
clear line; the Makefile says what it installs, and installs for `make run` only what it needs."""

import os
import socket
import subprocess
import sys

from exchange.embedded import free_port
from tests.conftest import REPO_ROOT


def without_services(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    # As `make test` runs it, the suite is inside a make: a nested one would say "make[1]".
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    return {**env, **extra}


def test_make_run_on_a_taken_port_says_so_and_exits_before_starting_anything(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        env = without_services(HASHX_VAR_DIR=str(tmp_path), PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", "exchange.run"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=120, env=env,
        )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot serve on 127.0.0.1:{port}: Address already in use" in result.stdout
    assert f"PORT={port + 1} make run" in result.stdout
    assert "started web" not in result.stdout and "Traceback" not in result.stderr
    assert not (tmp_path / "postgres").exists()  # nothing was started, nothing to stop


def test_make_manage_with_no_exchange_running_is_one_line(tmp_path):
    result = subprocess.run(
        ["make", "--no-print-directory", "manage", "ARGS=check"], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120,
        env=without_services(HASHX_VAR_DIR=str(tmp_path)),
    )  # fmt: skip
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make:")]
    assert ours == [
        f"manage.py: DATABASE_URL is not set and no embedded service is running under {tmp_path}."
        " Set DATABASE_URL, or run through `make run` / `python -m exchange.embedded -- COMMAND`."
    ]


def test_manage_with_a_stale_state_file_names_the_unreachable_database(tmp_path):
    """`make run` killed hard leaves embedded.json naming services that are gone."""
    (tmp_path / "embedded.json").write_text(
        f'{{"DATABASE_URL": "postgresql://postgres:@/hashx?host={tmp_path}",'
        f' "REDIS_URL": "unix://{tmp_path}/redis.sock?db=0"}}'
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=120, env=without_services(HASHX_VAR_DIR=str(tmp_path)),
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("manage.py: cannot reach PostgreSQL (connection to server")
    assert result.stderr.rstrip().endswith("is `make run` running, or DATABASE_URL right?")


def test_the_first_make_run_says_what_it_installs_and_only_the_runtime():
    # -n: print what would run, as if pyproject.toml had just changed (-W), running nothing.
    planned = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "run"], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=60, env=without_services(),
    ).stdout  # fmt: skip
    assert 'echo "== installing what the exchange needs into .venv' in planned
    assert "pip install --quiet -e ./client -e ." in planned
    assert ".[dev]" not in planned  # pytest, ruff, mypy are for `make test`, not `make run`
