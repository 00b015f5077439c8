"""A bound on the client side of every PostgreSQL round trip (issue 17). A frozen server (its
processes stopped, a paused VM) still has its kernel acknowledge what is sent, so no TCP timeout
fires, and the server's own statement_timeout cannot fire in a stopped process: a call on a
kept connection would wait for ever, and the request with it.

Every psycopg2 call that waits for the server (execute, a fetch from a server-side cursor, COPY,
commit, rollback) is watched. When the server has not answered for ``bound`` seconds, a watchdog
thread shuts the connection's socket down: libpq fails the call ("server closed the connection
unexpectedly"), psycopg2 marks the connection closed, Django discards it (the next request
connects afresh, within libpq's connect_timeout), and the request answers 503 with Retry-After
(exchange/problems.py). What counts is silence, not a call's total: each row of a COPY stream
starts the count again (the server sends them as its 8 KiB output buffer fills), and time in
the COPY's own file (reading an upload from its client, writing rows towards a slow reader) is
the exchange's, never counted. A single statement that legitimately runs longer than the bound
without a row is cut as well: the bound is a query budget.

Off until a process turns it on: the web serves with HASHX_DATABASE_TIMEOUT_SECONDS, Celery
workers with HASHX_TASK_DATABASE_TIMEOUT_SECONDS; management commands (a migration may build an
index for minutes) and the test suite are not watched. settings.py installs the two classes below
as the connection and cursor factories of every database.
"""

import io
import logging
import math
import os
import socket
import threading
import time
from typing import Any

import psycopg2.extensions

logger = logging.getLogger(__name__)

_monotonic = time.monotonic
# How often the watchdog looks: a silent call is cut between `bound` and `bound` + TICK seconds.
TICK = 0.25


class _Watch:
    """One call waiting for the server: the connection's socket, the bound, and when the socket
    is cut."""

    __slots__ = ("bound", "deadline", "fd")

    def __init__(self, fd: int, bound: float) -> None:
        self.fd = fd
        self.bound = bound
        self.deadline = time.monotonic() + bound


_bound: float | None = None
_lock = threading.Lock()
_watched: set[_Watch] = set()
_watchdog: threading.Thread | None = None


def enable(seconds: float) -> None:
    """Watch every call of this process (and of the processes it forks) from now on; 0 turns
    watching off."""
    global _bound
    _bound = seconds or None


def _forked() -> None:
    # The child has no watchdog thread, the calls it inherited are its parent's, and the lock
    # may have been held by another of the parent's threads.
    global _lock, _watchdog
    _lock = threading.Lock()
    _watchdog = None
    _watched.clear()


os.register_at_fork(after_in_child=_forked)


def _run() -> None:
    while True:
        time.sleep(TICK)
        now = time.monotonic()
        with _lock:
            # Under the lock: a call leaves _watched under it too, so the socket of a watch
            # found here still belongs to its connection (its fd cannot have been reused).
            late = [watch for watch in _watched if watch.deadline <= now]
            for watch in late:
                _watched.discard(watch)
                cut(watch.fd)
        for watch in late:
            logger.warning(
                "PostgreSQL sent nothing for %s s: its connection is shut down and discarded",
                watch.bound,
            )


def cut(fd: int) -> None:
    """Shut the socket down for both directions: the call blocked on it in another thread wakes
    up to an end of file, as from a server that went away. Through a duplicate of the fd, so
    that only the connection's own close ever closes it."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed in the meantime: nothing left to cut


class _Watching:
    """``with _Watching(connection) as watch:`` around a call that waits for the server; the
    watch is None when watching is off."""

    __slots__ = ("connection", "watch")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.watch: _Watch | None = None

    def __enter__(self) -> _Watch | None:
        global _watchdog
        bound = _bound
        if bound is None or self.connection.closed:
            return None
        self.watch = _Watch(self.connection.fileno(), bound)
        with _lock:
            _watched.add(self.watch)
            if _watchdog is None:
                _watchdog = threading.Thread(target=_run, name="pgwatch", daemon=True)
                _watchdog.start()
        return self.watch

    def __exit__(self, *exc: object) -> None:
        if self.watch is not None:
            with _lock:
                _watched.discard(self.watch)


class _PausingFile:
    """A COPY's file as psycopg2 sees it: time spent in the real file's read or write (the
    exchange's own work, or its client's) does not count as the server's silence."""

    def __init__(self, file: Any, watch: _Watch) -> None:
        self.file = file
        self.watch = watch

    # Two flat copies rather than one helper: write is called once per row of a COPY out.
    def read(self, size: int | None = -1, /) -> Any:
        watch = self.watch
        watch.deadline = math.inf
        try:
            return self.file.read(size)
        finally:
            watch.deadline = _monotonic() + watch.bound

    def write(self, data: Any, /) -> Any:
        watch = self.watch
        watch.deadline = math.inf
        try:
            return self.file.write(data)
        finally:
            watch.deadline = _monotonic() + watch.bound


class _PausingTextFile(_PausingFile, io.TextIOBase):
    """psycopg2 writes COPY output as str into a text file, as bytes into any other."""


def _pausing(file: Any, watch: _Watch | None) -> Any:
    if watch is None:
        return file
    kind = _PausingTextFile if isinstance(file, io.TextIOBase) else _PausingFile
    return kind(file, watch)


class WatchedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection whose commit and rollback are watched."""

    def commit(self) -> None:
        with _Watching(self):
            super().commit()

    def rollback(self) -> None:
        with _Watching(self):
            super().rollback()


class WatchedCursor(psycopg2.extensions.cursor):
    """A psycopg2 cursor whose every call that waits for the server is watched: a named
    (server-side) cursor waits in its fetches and close too."""

    def execute(self, query: Any, vars: Any = None) -> None:
        with _Watching(self.connection):
            super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        with _Watching(self.connection):
            super().executemany(query, vars_list)

    def callproc(self, procname: Any, parameters: Any = None) -> Any:
        with _Watching(self.connection):
            return super().callproc(procname, parameters)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        with _Watching(self.connection) as watch:
            super().copy_expert(sql, _pausing(file, watch), size)

    def copy_from(self, file: Any, *args: Any, **kwargs: Any) -> None:
        with _Watching(self.connection) as watch:
            super().copy_from(_pausing(file, watch), *args, **kwargs)

    def copy_to(self, file: Any, *args: Any, **kwargs: Any) -> None:
        with _Watching(self.connection) as watch:
            super().copy_to(_pausing(file, watch), *args, **kwargs)

    def fetchone(self) -> Any:
        if self.name is None:
            return super().fetchone()
        with _Watching(self.connection):
            return super().fetchone()

    def fetchmany(self, size: int | None = None) -> Any:
        if self.name is None:
            return super().fetchmany(size) if size is not None else super().fetchmany()
        with _Watching(self.connection):
            return super().fetchmany(size) if size is not None else super().fetchmany()

    def fetchall(self) -> Any:
        if self.name is None:
            return super().fetchall()
        with _Watching(self.connection):
            return super().fetchall()

    def scroll(self, value: int, mode: str = "relative") -> None:
        if self.name is None:
            super().scroll(value, mode)
            return
        with _Watching(self.connection):
            super().scroll(value, mode)

    def __next__(self) -> Any:
        if self.name is None:
            return super().__next__()
        with _Watching(self.connection):
            return super().__next__()

    def close(self) -> None:
        if self.name is None:
            super().close()
            return
        with _Watching(self.connection):
            super().close()


# The factories of every connection (settings.py puts them in each database's OPTIONS).
FACTORIES = {"connection_factory": WatchedConnection, "cursor_factory": WatchedCursor}
