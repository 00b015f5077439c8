"""The README's getting-started commands, as written, against a live exchange started as `make run`
starts it (``python -m exchange.run``: embedded PostgreSQL and Redis, bootstrap, gunicorn, a Celery
worker and beat).

The commands are read from README.md's ``sh`` code blocks in the getting-started sections, so the
README cannot drift from what works. A block the test cannot run is marked in the README source,
with the reason, by an HTML comment on the line before it:
``<!-- readme-test: skip: REASON -->``. The one change made to the commands: the exchange runs on a
free port, so ``http://127.0.0.1:8000`` becomes its address.
"""

import os
import re
import signal
import subprocess
from dataclasses import dataclass

import pytest

from exchange.embedded import free_port
from tests.conftest import REPO_ROOT
from tests.exchange.test_run import Launcher

README = REPO_ROOT / "README.md"
SECTIONS = ["The two commands", "Becoming a member: from a key to `whoami`", "Sets and publishing"]
SKIP = re.compile(r"^<!-- readme-test: skip: (?P<reason>.+?) -->$")
README_URL = "http://127.0.0.1:8000"


@dataclass
class Block:
    section: str
    code: str
    skipped: str | None


def getting_started_blocks(text: str) -> list[Block]:
    """The ``sh`` blocks of the getting-started sections, in README order."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    missing = [title for title in SECTIONS if title not in sections]
    assert not missing, f"README.md has no section {missing}: update SECTIONS in {__file__}"
    blocks = []
    for title in SECTIONS:
        lines = sections[title]
        index = 0
        while index < len(lines):
            if lines[index].strip() == "```sh":
                end = lines.index("```", index + 1)
                before = next(
                    (lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), ""
                )
                marked = SKIP.match(before)
                code = "\n".join(lines[index + 1 : end])
                blocks.append(Block(title, code, marked.group("reason") if marked else None))
                index = end
            index += 1
    return blocks


def test_the_getting_started_blocks_are_found_and_each_skip_gives_its_reason():
    blocks = getting_started_blocks(README.read_text())
    assert [b.section for b in blocks if b.skipped is None] == [
        "Becoming a member: from a key to `whoami`",
        *["Sets and publishing"] * 3,
    ]
    assert all(len(b.skipped) > 20 for b in blocks if b.skipped is not None)
    assert "make run" in next(b.code for b in blocks if b.skipped is not None)


def member_folder(tmp_path):
    """A folder where the commands run as in a checkout (``.venv/bin/hashx``, ``make manage``),
    whose key and data files stay out of the real checkout."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    for name in (".venv", "Makefile", "manage.py", "pyproject.toml", "client", "scripts"):
        (folder / name).symlink_to(REPO_ROOT / name)
    return folder


@pytest.mark.worker
def test_the_readme_getting_started_commands_work_as_written(tmp_path, exchange_var):
    blocks = [b for b in getting_started_blocks(README.read_text()) if b.skipped is None]
    var = exchange_var
    launcher = Launcher(var, free_port())
    try:
        launcher.wait_for(launcher.ready, "/readyz 200", timeout=240)
        script = "\n".join(["set -euxo pipefail", *(b.code for b in blocks)])
        script = script.replace(README_URL, launcher.base)
        # `make manage` finds the running exchange's services as it does beside `make run`.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "MAKEFLAGS", "MAKELEVEL"}
            and not k.startswith(("HASHX_", "XDG_"))
        }
        env.update(HASHX_VAR_DIR=str(var), HASHX_CONFIG=os.devnull)
        folder = member_folder(tmp_path)
        result = subprocess.run(
            ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        assert "Traceback" not in output, output[-6000:]

        assert "organisation: acme" in result.stdout
        # Both PDQ hashes and the MD5 merged; then one more MD5 from standard input.
        assert re.search(r"merged: 3 new", result.stdout), result.stdout
        assert re.search(r"standard input into acme-csam: batch \S+: 1 accepted", result.stdout)
        assert "1 of 1 source matched" in result.stdout
        assert "1 opinions recorded" in result.stdout
        assert "retracted 1, of which 1 are now tombstones" in result.stdout
        # Globex's copy: the two MD5s and the PDQ that was not retracted.
        assert "3 active entries of acme-csam in hashx-data/hashx.sqlite3" in result.stdout
        assert "globex may no longer read or publish acme-csam" in result.stdout
    finally:
        if launcher.process.poll() is None:
            launcher.process.send_signal(signal.SIGINT)
            try:
                launcher.process.wait(60)
            except subprocess.TimeoutExpired:
                launcher.process.kill()
