"""The exchange's gunicorn worker (exchange/gunicorn_conf.py names it): gunicorn's threaded
worker, except that each request's head is read by the worker's event loop, and that what
gunicorn refuses itself is answered with a problem document.

- An idle or slow client costs a file descriptor, never a thread: a connection reaches the
  thread pool only once its whole head has arrived. A head that has not arrived within
  ``HEADER_TIMEOUT_SECONDS`` of the connection (or of the previous answer on a kept-alive one)
  is cut: with a 408 if part of it came, silently if nothing did (a slowloris trickling bytes
  gains nothing by them). A head larger than ``MAX_HEAD_BYTES`` answers 431.
- A body is read by the request's thread with a deadline per read, never per request
  (``BODY_READ_TIMEOUT_SECONDS``): an upload of millions of signals takes minutes and is fine as
  long as it keeps sending; one that stalls is answered 408 (exchange/middleware.py).
- gunicorn's own answers to what it cannot parse (400, 414, 431, …) are problem documents with
  bounded details, like every other error of the exchange (exchange/problems.py).
- What the worker keeps for its whole life (Django, the URL map, numba's compiled kernels, the
  mapped index: some 220,000 objects) is moved out of the cyclic garbage collector's reach
  (``gc.freeze``) once the application is loaded and again after its first requests, which
  import and build the rest lazily. Otherwise every full collection walked all of it while
  holding the GIL: 110 to 130 ms of CPU in which none of the worker's threads answered, a few times
  a minute under load (measured with ``gc.callbacks`` and ``time.thread_time``).

TLS is a proxy's job here: the head is read as plain bytes.
"""

import errno
import gc
import itertools
import json
import os
import resource
import selectors
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from functools import partial
from http import HTTPStatus
from socket import socket
from typing import Any

from gunicorn import util
from gunicorn.config import Config
from gunicorn.errors import ConfigError
from gunicorn.glogging import Logger
from gunicorn.http.errors import (
    ConfigurationProblem,
    ExpectationFailed,
    ForbiddenProxyRequest,
    InvalidResponseHeader,
    InvalidResponseHeaderName,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
)
from gunicorn.workers.gthread import TConn, ThreadWorker

from exchange import gunicorn_conf
from exchange.metrics import GC_PAUSE_SECONDS
from exchange.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPES, echo, problem_body

_RECV_BYTES = 64 * 1024
# Requests after which a worker has built what it keeps (lazy imports, caches, the index's
# maps) and freezes it out of the garbage collector's walks.
_FREEZE_AFTER_REQUESTS = 200
# Out of file descriptors: stop accepting for this long rather than spin on the listener.
_ACCEPT_PAUSE_SECONDS = 1.0
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

# What gunicorn refuses, most specific first; any other ParseException is a bad request.
_REFUSALS: list[tuple[type[Exception], str]] = [
    (LimitRequestLine, "uri-too-long"),
    (LimitRequestHeaders, "header-fields-too-large"),
    (ExpectationFailed, "expectation-failed"),
    (ForbiddenProxyRequest, "forbidden"),
    (ParseException, "bad-request"),
]


def problem_bytes(slug: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer carrying a problem document; the connection closes after it."""
    body = json.dumps(problem_body(slug, detail)).encode()
    status = PROBLEM_TYPES[slug][0]
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _refusal(exc: BaseException) -> str | None:
    """The problem type of a request gunicorn could not parse; None for the server's own fault
    (a bad header from the application, a configuration problem, anything unexpected)."""
    if isinstance(exc, (InvalidResponseHeader, InvalidResponseHeaderName, ConfigurationProblem)):
        return None
    return next((slug for cls, slug in _REFUSALS if isinstance(exc, cls)), None)


def freeze_long_lived(log: Logger, when: str) -> None:
    """Collect what is garbage now, then keep every object that is left out of later
    collections (they live as long as the process): a full collection then walks only what
    requests made since."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "Worker %d froze %d long-lived objects out of garbage collection %s",
        os.getpid(),
        frozen,
        when,
    )


# Collections' pauses, until a request thread reports them: the hook runs inside a collection,
# which may start while that thread holds the metrics' lock (writing another metric), so it
# must not take a lock itself; deque.append takes none.
_PAUSES: deque[tuple[int, float]] = deque(maxlen=10_000)


def _time_collections() -> Callable[[str, dict[str, int]], None]:
    """A ``gc.callbacks`` hook: each collection's pause (the GIL is held throughout, so no
    thread of the worker answers meanwhile), for ``_report_pauses``."""
    started = 0.0

    def hook(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            _PAUSES.append((info["generation"], time.perf_counter() - started))

    return hook


def _report_pauses() -> None:
    """The pauses timed so far into ``hashx_gc_pause_seconds``."""
    while _PAUSES:
        generation, seconds = _PAUSES.popleft()
        GC_PAUSE_SECONDS.labels(generation=str(generation)).observe(seconds)


class _Connection(TConn):
    """A client connection, with the head bytes the event loop has read so far."""

    def __init__(self, cfg: Config, sock: socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.head = bytearray()
        self.deadline = 0.0
        self.served = 0  # requests answered on this connection

    def init(self) -> None:
        """In the request's thread, before parsing: the parser gets the head the event loop
        read, and every later read (the body) or write waits at most the body read deadline."""
        super().init()
        self.sock.settimeout(gunicorn_conf.BODY_READ_TIMEOUT_SECONDS)
        if self.head:
            self.parser.unreader.unread(bytes(self.head))
            self.head = bytearray()


class ExchangeLogger(Logger):
    """gunicorn's logger (gunicorn_conf.logger_class) without its access log: the exchange's
    request log (exchange/observe.py) has a line per request with more in it, and gunicorn
    built each access line only for no handler to write it."""

    @property
    def access_log_enabled(self) -> bool:
        return False


class ExchangeWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections whose head is still arriving, oldest (so first to expire) first.
        self.heads: dict[_Connection, None] = {}
        self.accept_paused_until = 0.0
        self.requests_handled = itertools.count(1)  # next() is atomic under the GIL

    @classmethod
    def check_config(cls, cfg: Config, log: Logger) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise ConfigError("the exchange's worker serves plain HTTP: terminate TLS in a proxy")

    def init_process(self) -> None:
        # Each waiting client holds a descriptor: let worker_connections of them fit.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard and hard != resource.RLIM_INFINITY:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        freeze_long_lived(self.log, "once the application was loaded")
        gc.callbacks.append(_time_collections())

    # -- the head, read by the event loop ------------------------------------------------------

    def accept(self, listener: socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                self.log.warning("Cannot accept a connection: %s; pausing", exc)
                self.accept_paused_until = time.monotonic() + _ACCEPT_PAUSE_SECONDS
                self.set_accept_enabled(False)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.await_head(_Connection(self.cfg, sock, client, listener.getsockname()))

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and time.monotonic() >= self.accept_paused_until)

    def on_client_socket_readable(self, conn: _Connection, client: socket) -> None:
        """A kept-alive connection has more to say: its next head, read like the first."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.await_head(conn)

    def finish_request(self, conn: _Connection, fs: Future[Any]) -> None:
        # A client that sent its next request behind the last one: what the parser read ahead
        # is the start of that head, which must arrive whole like any other.
        kept = not fs.cancelled() and fs.exception() is None and fs.result() is True
        if kept and self.alive and conn.parser is not None:
            ahead = conn.parser.unreader.take_buffered()
            if ahead:
                conn.head = bytearray(ahead)
                self.await_head(conn)
                return
        super().finish_request(conn, fs)

    def await_head(self, conn: _Connection) -> None:
        conn.deadline = time.monotonic() + gunicorn_conf.HEADER_TIMEOUT_SECONDS
        if self.head_done(conn):
            return
        conn.sock.setblocking(False)
        self.heads[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.read_head, conn))

    def read_head(self, conn: _Connection, sock: socket) -> None:
        try:
            data = sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self.leave_heads(conn)
            self.close(conn)
            return
        conn.head += data
        self.head_done(conn)

    def head_done(self, conn: _Connection) -> bool:
        """Hand a complete head to a thread, or refuse one that cannot be; False to wait on."""
        head, line_limit = conn.head, self.cfg.limit_request_line
        # A bare LF, or a request line past its limit, is refused by gunicorn's parser without
        # reading further: let it say so.
        ready = (
            b"\r\n\r\n" in head
            or head.count(b"\n") != head.count(b"\r\n")
            or (line_limit > 0 and len(head) > line_limit + 2 and b"\r\n" not in head)
        )
        too_large = len(head) > gunicorn_conf.MAX_HEAD_BYTES
        if not ready and not too_large:
            return False
        if conn in self.heads:
            self.leave_heads(conn)
        if ready:
            conn.data_ready = True
            self.enqueue_req(conn)
        else:
            limit = gunicorn_conf.MAX_HEAD_BYTES
            self.refuse(conn, "header-fields-too-large", f"The head exceeds {limit} bytes.")
        return True

    def leave_heads(self, conn: _Connection) -> None:
        del self.heads[conn]
        self.poller.unregister(conn.sock)

    def murder_pending(self) -> None:
        """Called by the loop on every turn: cut the heads past their deadline and, once the
        worker is stopping, the connections that have sent nothing."""
        super().murder_pending()
        now = time.monotonic()
        cut = []
        for conn in self.heads:
            if conn.deadline > now:
                if self.alive:
                    break  # the rest came later, so expire later
                if conn.head:
                    continue
            cut.append(conn)
        for conn in cut:
            self.leave_heads(conn)
            if conn.head:
                timeout = gunicorn_conf.HEADER_TIMEOUT_SECONDS
                self.refuse(conn, "request-timeout", f"The head did not arrive within {timeout} s.")
            else:
                self.close(conn)

    def refuse(self, conn: _Connection, slug: str, detail: str) -> None:
        self.log.info("Refused a request from %s: %s", conn.client, detail)
        with suppress(OSError):  # the client is gone: nothing left to tell it
            conn.sock.send(problem_bytes(slug, detail))
        self.close(conn)

    def close(self, conn: _Connection) -> None:
        self.nr_conns -= 1
        conn.close()

    # -- in the request's thread ---------------------------------------------------------------

    def handle_request(self, req: Any, conn: _Connection) -> Any:
        # Kept-alive connections stay with the worker that accepted them, and a burst of new
        # ones lands mostly on one worker: the last request of each connection answers
        # "Connection: close", so that busy clients come back through accept, where the least
        # busy worker is the quickest to take them.
        conn.served += 1
        if next(self.requests_handled) == _FREEZE_AFTER_REQUESTS:
            freeze_long_lived(self.log, f"after {_FREEZE_AFTER_REQUESTS} requests")
        if conn.served >= gunicorn_conf.REQUESTS_PER_CONNECTION:
            req.force_close()
        try:
            return super().handle_request(req, conn)
        finally:
            _report_pauses()

    def _keepalive_after(self, conn: _Connection, keepalive: bool) -> bool:
        # The answer is sent; a rest of body that cannot be read past (a malformed chunk, a
        # client gone quiet) only means the connection closes, never a second answer.
        try:
            return bool(super()._keepalive_after(conn, keepalive))
        except (ParseException, OSError):
            return False

    def handle_error(self, req: Any, client: socket, addr: Any, exc: BaseException) -> None:
        """gunicorn's error answer, as a problem document."""
        slug = _refusal(exc)
        if slug is None:
            self.log.exception("Error handling request")
            slug, detail = "server-error", "The exchange failed to answer; the error is logged."
        else:
            detail = echo(exc, 200)
            self.log.warning("Invalid request from %s: %s", (addr or ("",))[0], detail)
        try:
            util.write_nonblock(client, problem_bytes(slug, detail))
        except Exception:  # the client is gone: nothing left to tell it
            self.log.debug("Failed to send an error answer.")
