"""HTTP requests to addresses members give us (webhook endpoints), made safe.

A member-supplied URL must not turn the exchange into a proxy into its own network: the host
must resolve only to public addresses (not loopback, private, link-local, CGNAT, reserved or
multicast ones) unless ``HASHX_OUTBOUND_ALLOWED_NETWORKS`` admits them, and cloud metadata
addresses are refused always. The check runs when the URL is registered and again at every
send, and the request connects to the very address that was checked, so a DNS answer that
changes in between (rebinding) gains nothing. Redirects are never followed. A connection that
ended with a whole answer is kept open a few seconds for the next request to the same checked
address (``_Kept``).
"""

import contextlib
import heapq
import http.client
import ipaddress
import itertools
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, OpenStack; AWS IPv6; Alibaba; ECS task metadata).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
EXCERPT_CHARS = 500


class Refused(Exception):
    """The URL or the address it resolves to may not be called; the message says why."""


class SendFailed(Exception):
    """No HTTP answer: connection refused, timeout, TLS failure, malformed response."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    excerpt: str


def check_url(url: str) -> SplitResult:
    """The URL's parts if its form is acceptable (scheme, host, no credentials)."""
    if not url.isascii() or any(char.isspace() or ord(char) < 32 for char in url):
        raise Refused(
            "the URL must be plain ASCII without spaces: percent-encode the path and give the"
            " host in its xn-- form"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise Refused(f"not a URL: {exc}") from None
    allowed = {"https", "http"} if settings.HASHX_WEBHOOK_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed:
        raise Refused(
            "the URL must use https"
            if parts.scheme == "http"
            else f"the URL must use {' or '.join(sorted(allowed))}"
        )
    if not parts.hostname:
        raise Refused("the URL has no host")
    if parts.username or parts.password:
        raise Refused("the URL may not carry a user name or password")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise Refused("the URL's port is not a number from 0 to 65535") from None
    return parts


# IPv6 prefixes whose low 32 bits are an IPv4 address a NAT64 gateway forwards to (RFC 6052
# well-known prefix, RFC 8215 local-use prefix).
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def carried_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped (``::ffff:a.b.c.d``), 6to4
    (``2002:a.b.c.d::``), NAT64 (``64:ff9b::a.b.c.d``) or IPv4-compatible (``::a.b.c.d``).
    Python calls several of these global whatever IPv4 address they carry."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64) or 1 < int(address) < 2**32:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def check_address(address: IPAddress) -> None:
    address = carried_ipv4(address) or address
    if address in METADATA_ADDRESSES:
        raise Refused(f"{address} is a cloud metadata address")
    if address.is_global and not address.is_multicast:
        return
    if any(address in ipaddress.ip_network(n, strict=False) for n in _allowed()):
        return
    raise Refused(f"{address} is {_kind(address)} address, not a public one")


def _allowed() -> list[str]:
    return list(settings.HASHX_OUTBOUND_ALLOWED_NETWORKS)


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "a loopback"
    if address.is_link_local:
        return "a link-local"
    if address.version == 4 and address in _CGNAT:
        return "a shared (CGNAT)"
    if address.is_multicast:
        return "a multicast"
    if address.is_unspecified:
        return "an unspecified"
    if address.is_private:
        return "a private"
    return "a reserved"


def resolve(parts: SplitResult) -> list[IPAddress]:
    """Every address the URL's host resolves to, each checked: one bad address refuses the
    whole host (an attacker could otherwise rotate answers)."""
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        check_address(address)
    return addresses


def check_destination(url: str) -> None:
    """Refused unless ``url`` may be called (form and every address)."""
    resolve(check_url(url))


class Incomplete(http.client.HTTPException):
    """An answer cut short or malformed: not an answer at all, whatever its status line said."""


class _LineWatch:
    """The response's stream, remembering the last line read: http.client takes the end of the
    stream for the blank line that ends a header section (or a chunked body's trailer), so a
    status line followed by a hang-up, or headers cut off mid-way, would pass as complete."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.last_line = b""

    def readline(self, limit: int = -1) -> bytes:
        self.last_line = self._stream.readline(limit)
        return self.last_line

    def ended_section(self) -> bool:
        return self.last_line in (b"\r\n", b"\n")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Response(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = self.watch = _LineWatch(self.fp)  # type: ignore[assignment]

    def begin(self) -> None:
        super().begin()
        if not self.watch.ended_section():
            raise Incomplete("the answer ended before its header section did")
        if self.length is None and not self.chunked and "content-length" in self.headers:
            raise Incomplete(f"Content-Length: {self.headers['content-length'][:50]!r}")

    def read_whole(self) -> bytes:
        """The body read to its end (its Content-Length, its last chunk, or a clean close),
        of which the first ``EXCERPT_CHARS`` bytes are kept."""
        kept = b""
        while chunk := self.read(65536):
            kept += chunk[: EXCERPT_CHARS - len(kept)]
        if self.length:  # http.client lets a short body pass for a whole one
            raise Incomplete(f"the body ended {self.length} bytes short of its Content-Length")
        if self.chunked and not self.watch.ended_section():
            raise Incomplete("the chunked body ended before its final blank line")
        return kept


class _Connection(http.client.HTTPConnection):
    """HTTP, or HTTPS with SNI and certificate checks for ``tls_host``, to an address already
    checked, that ``cut()`` ends at any step: connecting, the TLS handshake, sending, or
    reading any part of the answer. A socket timeout bounds each read or write, not their
    sum: a peer that trickles a byte at a time (a handshake, a status line, headers that never
    end, a body that never ends) trips none of them, so the caller cuts at its deadline."""

    response_class = _Response

    def __init__(self, address: str, port: int, tls_host: str | None) -> None:
        super().__init__(address, port)
        self._tls_host = tls_host
        self._deadline = 0.0  # on the monotonic clock
        self._lock = threading.Lock()
        self.expired = threading.Event()

    def arm(self, deadline: float) -> None:
        """Set the deadline of the next request (a kept connection serves several)."""
        self._deadline = deadline
        self.expired.clear()
        if self.sock is not None:
            self.sock.settimeout(
                min(settings.HASHX_WEBHOOK_TIMEOUT_SECONDS, max(self.left(), 0.001))
            )

    def dropped(self) -> bool:
        """Whether the peer closed the kept connection (or sent what no request asked for)."""
        try:
            return self.sock is None or bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def left(self) -> float:
        return self._deadline - time.monotonic()

    def connect(self) -> None:
        timeout = min(settings.HASHX_WEBHOOK_TIMEOUT_SECONDS, max(self.left(), 0.001))
        sock = socket.create_connection((self.host, self.port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._expose(sock)
        if self._tls_host is not None:
            # No handshake while wrapping: it runs on a socket cut() can already reach.
            self._expose(
                ssl.create_default_context().wrap_socket(
                    sock,
                    server_hostname=self._tls_host,
                    do_handshake_on_connect=False,
                    # A close-delimited body must end with the TLS close, not a bare hang-up.
                    suppress_ragged_eofs=False,
                )
            )
            assert isinstance(self.sock, ssl.SSLSocket)
            self.sock.do_handshake()

    def _expose(self, sock: socket.socket) -> None:
        with self._lock:
            self.sock = sock
            if self.expired.is_set():
                raise TimeoutError

    def cut(self) -> None:
        with self._lock:
            self.expired.set()
            if self.sock is not None:
                # The plain socket's shutdown: the blocked read returns at once (the TLS
                # layer's own shutdown would tear its state down under the reading thread).
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class _Kept:
    """Connections kept open after a whole answer, by the address (checked), port and TLS host
    they reach, for the next request there: a fan-out to many subscriptions of one receiver, or
    one subscription's pages one after another, skip the connect and the TLS handshake. Kept
    ``KEEP_SECONDS`` at most (under the idle timeout of common servers: one that closes first is
    seen closed and not used), ``KEEP_PER_DESTINATION`` per destination."""

    KEEP_SECONDS = 4.0
    KEEP_PER_DESTINATION = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, int, str | None], list[tuple[float, _Connection]]] = {}
        self._swept = 0.0

    def take(self, key: tuple[str, int, str | None]) -> "_Connection | None":
        now = time.monotonic()
        while True:
            with self._lock:
                kept = self._kept.get(key)
                if not kept:
                    return None
                since, connection = kept.pop()
            if now - since < self.KEEP_SECONDS and not connection.dropped():
                return connection
            connection.close()

    def give(self, key: tuple[str, int, str | None], connection: "_Connection") -> None:
        now = time.monotonic()
        with self._lock:
            kept = self._kept.setdefault(key, [])
            kept.append((now, connection))
            if len(kept) > self.KEEP_PER_DESTINATION:
                kept.pop(0)[1].close()
            if now - self._swept > self.KEEP_SECONDS:  # close what no request came back for
                self._swept = now
                for each, here in list(self._kept.items()):
                    for since, connection in here:
                        if now - since >= self.KEEP_SECONDS:
                            connection.close()
                    here[:] = [(t, c) for t, c in here if now - t < self.KEEP_SECONDS]
                    if not here:
                        del self._kept[each]


_kept = _Kept()


class _Deadlines:
    """One thread that cuts each request's connection at its deadline (a timer thread per
    request cost more than the request itself on a fan-out to a nearby receiver)."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, _Connection]] = []  # a heap
        self._pending: set[int] = set()  # the numbers in the heap
        self._forgotten: set[int] = set()  # of those, the ones not to cut
        self._numbers = itertools.count()
        self._pid = 0

    def watch(self, deadline: float, connection: _Connection) -> int:
        """Cut ``connection`` at ``deadline`` (monotonic clock) unless ``forget`` comes first."""
        with self._wake:
            if self._pid != os.getpid():  # first use, or a forked child: it has no thread
                self._pid, self._due = os.getpid(), []
                self._pending, self._forgotten = set(), set()
                threading.Thread(target=self._run, name="outbound-deadlines", daemon=True).start()
            number = next(self._numbers)
            heapq.heappush(self._due, (deadline, number, connection))
            self._pending.add(number)
            self._wake.notify()
            return number

    def forget(self, number: int) -> None:
        with self._wake:
            if number in self._pending:  # not cut already (nor remembered for ever)
                self._forgotten.add(number)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._due and (self._due[0][1] in self._forgotten or self._due[0][0] <= now):
                    _, number, connection = heapq.heappop(self._due)
                    self._pending.discard(number)
                    if number in self._forgotten:
                        self._forgotten.discard(number)
                    else:
                        connection.cut()
                self._wake.wait(self._due[0][0] - now if self._due else None)


_deadlines = _Deadlines()


def _storable(text: str) -> str:
    """``text`` without NUL characters, which a Postgres text column refuses: what a receiver
    answers is recorded, and must not make recording the attempt fail (the delivery would be
    sent again when its lease ran out, every time)."""
    return text.replace("\x00", "\ufffd")


def post(url: str, body: bytes, headers: dict[str, str], *, deadline: float) -> Answer:
    """POST ``body`` to ``url`` after checking it; no redirects, and only a short excerpt of the
    answer is kept. An answer counts only whole and well formed: a status line, a header section
    ended by its blank line, and the body read to its end (Content-Length, last chunk, or a
    clean close). Bounded time: each socket operation by ``HASHX_WEBHOOK_TIMEOUT_SECONDS``, and
    everything together (name lookup, connect, TLS handshake, sending, status line, headers and
    body) by ``deadline`` seconds: past it the connection is cut and ``SendFailed`` raised,
    however much of the answer had come."""
    started = time.monotonic()
    parts = check_url(url)
    address = str(resolve(parts)[0])
    # A lookup cannot be interrupted, but what it took comes off the time left.
    left = deadline - (time.monotonic() - started)
    if left <= 0:
        raise SendFailed(f"no complete answer within {deadline:g} s (the name lookup took it)")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    tls_host = (parts.hostname or "") if https else None
    # Only a connection to the very address just checked is used again.
    key = (address, port, tls_host)
    connection = _kept.take(key) or _Connection(address, port, tls_host)
    connection.arm(started + deadline)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    watch = _deadlines.watch(started + deadline, connection)
    keep = False
    try:
        if connection.sock is None:
            connection.connect()
        connection.request("POST", path, body=body, headers={**headers, "Host": parts.netloc})
        response = connection.getresponse()
        assert isinstance(response, _Response)
        excerpt = _storable(response.read_whole().decode("utf-8", "replace"))
        if connection.expired.is_set():  # the cut may have ended the answer where it was
            raise TimeoutError
        keep = not response.will_close
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, excerpt)
    except (OSError, http.client.HTTPException) as exc:
        # A socket timeout near the deadline is the deadline too: the same message either way.
        if connection.expired.is_set() or connection.left() <= 0:
            raise SendFailed(f"no complete answer within {deadline:g} s") from None
        raise SendFailed(_storable(f"{type(exc).__name__}: {exc}")[:EXCERPT_CHARS]) from None
    finally:
        _deadlines.forget(watch)  # once it returns, no cut can come
        if keep and not connection.expired.is_set():
            _kept.give(key, connection)
        else:
            connection.close()
