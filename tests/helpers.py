"""What many tests need and no fixture gives: waiting for another thread or process, stopping
one, reading the exchange's problem documents, and making long videos' vpdq values."""

import random
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exchange.problems import PROBLEM_CONTENT_TYPE
from hashx.media import vpdq_value


def stop(process: subprocess.Popen[Any], grace: float = 30) -> None:
    """Ask ``process`` to stop (SIGTERM); kill it if it has not within ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def eventually[T](
    check: Callable[[], T], *, timeout: float = 30, interval: float = 0.1, what: str = ""
) -> T:
    """Call ``check`` until it passes, and return what it returned.

    It passes by returning a truthy value. A falsy value or an AssertionError means "not yet"
    (so a check written as assertions ends with ``return True``); any other exception,
    ``pytest.fail`` included, ends the wait at once. Past ``timeout`` seconds it fails with an
    AssertionError naming ``what`` it waited for and what the last check gave or said.

    For what another thread or process does: it waits on the real monotonic clock, which
    time_machine does not move, so inside a time travel it still waits in real time."""
    deadline = time.monotonic() + timeout
    while True:
        error: AssertionError | None = None
        try:
            value = check()
        except AssertionError as raised:
            error = raised
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            if error is not None:
                last = f"the last check failed: {str(error) or 'AssertionError'}"
            else:
                last = f"the last check gave {value!r}"
            raise AssertionError(
                f"waited {timeout:g} s for {what or 'the condition'}; {last}"
            ) from error
        time.sleep(interval)


def assert_problem(response: Any, status: int, slug: str) -> Any:
    """``response`` is an RFC 9457 problem document of type ``slug``; returns its body."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE, response["Content-Type"]
    body = response.json()
    assert body["status"] == status, body
    assert body["type"].endswith(f"/problems/{slug}"), body
    assert body["title"] and body["detail"], body
    return body


def long_video(frames: int, seed: int) -> str:
    """A vpdq value of ``frames`` frames one second apart, each a random PDQ hash of quality
    100, spelled as python-threatexchange writes it (so canonical)."""
    rng = random.Random(seed)
    return vpdq_value([(f"{rng.getrandbits(256):064x}", 100, float(t)) for t in range(frames)])


def postgres_bin() -> Path:
    """The directory of the embedded PostgreSQL's programs (pg_ctl, pg_basebackup, psql, …), for
    tests that run a server of their own beside it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver only uses it for a lock.
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def every_page(member, path, limit):
    """The items of every page, following ``next``, and how many pages there were."""
    items, pages, url = [], 0, f"{path}?limit={limit}"
    while url:
        page = member.api.get(url).json()
        items += page["results"]
        pages += 1
        url = page["next"] and urlsplit(page["next"])._replace(scheme="", netloc="").geturl()
    return items, pages
