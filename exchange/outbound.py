"""HTTP requests to addresses members give us (webhook endpoints), made safe.

A member-supplied URL must not turn the exchange into a proxy into its own network: the host
must resolve only to public addresses (not loopback, private, link-local, CGNAT, reserved or
multicast ones) unless ``HASHX_OUTBOUND_ALLOWED_NETWORKS`` admits them, and cloud metadata
addresses are refused always. The check runs when the URL is registered and again at every
send, and the request connects to the very address that was checked, so a DNS answer that
changes in between (rebinding) gains nothing. Redirects are never followed. A connection that
ended with a whole answer is kept open a few seconds for the next request to the same checked
address (``_Kept``). Requests are coroutines (``send``), many at once on one event loop per
thread (``run``): a thread and ``http.client`` per request cost several times the CPU.
"""

import asyncio
import contextlib
import functools
import ipaddress
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Coroutine
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


# In ASCII, every space and control character (what str.isspace() or a code below 32 says).
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20]")


def check_url(url: str) -> SplitResult:
    """The URL's parts if its form is acceptable (scheme, host, no credentials)."""
    if not url.isascii() or _SPACE_OR_CONTROL.search(url):
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
    refusal = _refusal(address, tuple(settings.HASHX_OUTBOUND_ALLOWED_NETWORKS))
    if refusal:
        raise Refused(refusal)


@functools.lru_cache(maxsize=4096)
def _refusal(address: IPAddress, allowed: tuple[str, ...]) -> str:
    """Why ``address`` may not be called with ``allowed`` admitted, or "" if it may: a function
    of the two alone, so remembered (a fan-out checks the same few addresses at every send)."""
    address = carried_ipv4(address) or address
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_global and not address.is_multicast:
        return ""
    if any(address in ipaddress.ip_network(n, strict=False) for n in allowed):
        return ""
    return f"{address} is {_kind(address)} address, not a public one"


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


class Incomplete(Exception):
    """An answer cut short or malformed: not an answer at all, whatever its status line said."""


def _socket_timeout() -> float:
    return float(settings.HASHX_WEBHOOK_TIMEOUT_SECONDS)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates checked against the system's authorities, and the host name against them."""
    return ssl.create_default_context()


class _Connection(asyncio.Protocol):
    """One connection to a checked address, as the bytes of the answers it brings (``recv``)
    and of the requests it takes (``send``): plain TCP, or TLS (certificate and host name
    checked) run by an ``ssl.SSLObject`` over it, so that an answer closed by a bare hang-up is
    told from one closed by TLS's close. Each connect, read and write gives up after the socket
    timeout; the whole request's deadline is its caller's to keep."""

    _HIGH_WATER = 1 << 18  # bytes come in faster than they are read: stop reading the socket

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._incoming = bytearray()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None  # while the send buffer is full
        self._tls: ssl.SSLObject | None = None
        self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()

    @classmethod
    async def open(cls, address: str, port: int, tls_host: str | None) -> "_Connection":
        loop = asyncio.get_running_loop()
        async with _within(_socket_timeout()):
            _, connection = await loop.create_connection(cls, address, port)
        try:
            if tls_host is not None:
                await connection._handshake(tls_host)
        except BaseException:  # a cut at the deadline too: the socket is not left behind
            connection.close()
            raise
        return connection

    # What asyncio calls as the socket's events come.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._incoming += data
        if len(self._incoming) > self._HIGH_WATER and self._transport is not None:
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self._ended = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # What a request calls.

    async def _raw(self) -> bytes:
        """The bytes come in, once there are some; b"" once the peer has ended."""
        while not self._incoming and not self._ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with _within(_socket_timeout()):
                    await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._incoming)
        self._incoming.clear()
        if self._transport is not None and not self._ended:
            self._transport.resume_reading()
        return data

    async def _feed(self) -> None:
        """Hand what came in to TLS (an end without TLS's close makes it raise SSLEOFError)."""
        assert self._tls is not None
        data = await self._raw()
        if data:
            self._tls_in.write(data)
        elif not self._tls_in.eof:
            self._tls_in.write_eof()

    def _flush(self) -> None:
        if self._transport is not None and (out := self._tls_out.read()):
            self._transport.write(out)

    async def _handshake(self, tls_host: str) -> None:
        self._tls = _tls_context().wrap_bio(self._tls_in, self._tls_out, server_hostname=tls_host)
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                await self._feed()
        self._flush()

    async def recv(self) -> bytes:
        """The next bytes of the answer; b"" at a clean end: the peer's close (over TLS, its
        close_notify: a bare hang-up raises ``ssl.SSLEOFError``)."""
        if self._tls is None:
            return await self._raw()
        while True:
            try:
                return self._tls.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                await self._feed()
            except ssl.SSLZeroReturnError:
                return b""

    async def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        if self._tls is not None:
            self._tls.write(data)
            data = self._tls_out.read()
        self._transport.write(data)
        if self._writable is not None:
            async with _within(_socket_timeout()):
                await self._writable

    def idle(self) -> bool:
        """Open, and nothing came since its last answer: a peer that closed the connection, or
        sent what no request asked for, did send something (seen here, or still in the
        socket)."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._incoming or self._ended:
            return False
        if self._tls is not None and (self._tls.pending() or self._tls_in.pending):
            return False
        try:
            return not select.select([transport.get_extra_info("socket")], [], [], 0)[0]
        except (OSError, ValueError, TypeError):
            return False

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


@contextlib.asynccontextmanager
async def _within(seconds: float) -> AsyncIterator[None]:
    """A socket timeout: the step (connect, one read, one write) gives up after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise TimeoutError(f"timed out after {seconds:g} s") from None


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Reader:
    """An answer's bytes, a line or a few at a time."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._buffer = bytearray()

    async def line(self) -> bytes:
        """One line with its ending, or what came before the stream ended without one."""
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > _MAX_LINE:
                raise Incomplete(f"a line longer than {_MAX_LINE} bytes")
            data = await self._connection.recv()
            if not data:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            self._buffer += data
        if end >= _MAX_LINE:
            raise Incomplete(f"a line longer than {_MAX_LINE} bytes")
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line

    async def some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes; b"" once the stream has ended."""
        if not self._buffer:
            data = await self._connection.recv()
            if not data:
                return b""
            self._buffer += data
        chunk = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        return chunk

    def drained(self) -> bool:
        """Whether nothing is left past the answer (a receiver that sent more is not used
        again)."""
        return not self._buffer


def _ends(line: bytes) -> bool:
    return line in (b"\r\n", b"\n")


async def _header_section(reader: _Reader) -> dict[str, str]:
    """Header lines up to the blank line that ends them, by lower-case name (a repeated one's
    values joined by commas, as HTTP combines them)."""
    headers: dict[str, str] = {}
    name = ""
    for _ in range(_MAX_HEADERS + 1):
        line = await reader.line()
        if _ends(line):
            return headers
        if not line.endswith(b"\n"):
            raise Incomplete("the answer ended before its header section did")
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t"):  # an obsolete folded line: the last header goes on
            if name:
                headers[name] += " " + text.strip()
            continue
        field_name, colon, value = text.partition(":")
        if not colon:
            continue  # not a header line; ignored, as http.client's parser did
        name = field_name.strip().lower()
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
    raise Incomplete(f"more than {_MAX_HEADERS} header lines")


async def _status(reader: _Reader) -> tuple[str, int]:
    line = await reader.line()
    if not line:
        raise Incomplete("the connection ended without an answer")
    if not line.endswith(b"\n"):
        raise Incomplete("the answer ended in its status line")
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise Incomplete(f"not an HTTP status line: {line[:50]!r}")
    if rest[3:4] not in ("", " "):
        raise Incomplete(f"not an HTTP status line: {line[:50]!r}")
    return version, int(code)


async def _answer(reader: _Reader) -> tuple[Answer, bool]:
    """The answer read whole (the first ``EXCERPT_CHARS`` bytes of its body kept), and whether
    the connection may carry another request."""
    version, status = await _status(reader)
    headers = await _header_section(reader)
    while status == 100:  # "continue", then the answer
        version, status = await _status(reader)
        headers = await _header_section(reader)
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    length: int | None = None
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    elif not chunked and "content-length" in headers:
        value = headers["content-length"]
        if not (value.isascii() and value.isdigit()):
            raise Incomplete(f"Content-Length: {value[:50]!r}")
        length = int(value)
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        reused = "keep-alive" in connection or "keep-alive" in headers
    else:
        reused = "close" not in connection
    kept = bytearray()
    if chunked:
        await _chunks(reader, kept)
    elif length is not None:
        left = length
        while left:
            chunk = await reader.some(min(left, 65536))
            if not chunk:
                raise Incomplete(f"the body ended {left} bytes short of its Content-Length")
            left -= len(chunk)
            kept += chunk[: EXCERPT_CHARS - len(kept)]
    else:  # the body ends where the connection does: cleanly, or it is not whole
        reused = False
        while chunk := await reader.some(65536):
            kept += chunk[: EXCERPT_CHARS - len(kept)]
    excerpt = _storable(bytes(kept).decode("utf-8", "replace"))
    return Answer(status, headers, excerpt), reused and reader.drained()


async def _chunks(reader: _Reader, kept: bytearray) -> None:
    """A chunked body, to its last chunk and the blank line after its trailer."""
    while True:
        line = await reader.line()
        size = line.split(b";", 1)[0].strip()
        if (
            not line.endswith(b"\n")
            or not size
            or any(c not in b"0123456789abcdefABCDEF" for c in size)
        ):
            raise Incomplete("the chunked body was cut off or malformed")
        left = int(size, 16)
        if not left:
            break
        while left:
            chunk = await reader.some(left)
            if not chunk:
                raise Incomplete("the chunked body was cut off")
            left -= len(chunk)
            kept += chunk[: EXCERPT_CHARS - len(kept)]
        if not _ends(await reader.line()):
            raise Incomplete("a chunk did not end with its line break")
    for _ in range(_MAX_HEADERS + 1):  # the trailer
        line = await reader.line()
        if _ends(line):
            return
        if not line.endswith(b"\n"):
            raise Incomplete("the chunked body ended before its final blank line")
    raise Incomplete(f"more than {_MAX_HEADERS} trailer lines")


def _request(path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    fields = {"Host": host, "Accept-Encoding": "identity", **headers}
    fields["Content-Length"] = str(len(body))
    lines = [f"POST {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    head = "\r\n".join(lines)
    if "\n" in head.replace("\r\n", "") or "\r" in head.replace("\r\n", ""):
        raise ValueError("a header name or value holds a line break")
    return (head + "\r\n\r\n").encode("latin-1") + body


class _Kept:
    """Connections kept open after a whole answer, by the address (checked), port and TLS host
    they reach, for the next request there: a fan-out to many subscriptions of one receiver, or
    one subscription's pages one after another, skip the connect and the TLS handshake. Kept
    ``KEEP_SECONDS`` at most (under the idle timeout of common servers: one that closes first is
    seen closed and not used), ``KEEP_PER_DESTINATION`` per destination. One per event loop:
    a connection belongs to the loop that opened it."""

    KEEP_SECONDS = 4.0
    KEEP_PER_DESTINATION = 64

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int, str | None], list[tuple[float, _Connection]]] = {}
        self._swept = 0.0

    def take(self, key: tuple[str, int, str | None]) -> _Connection | None:
        now = time.monotonic()
        kept = self._kept.get(key)
        while kept:
            since, connection = kept.pop()
            if now - since < self.KEEP_SECONDS and connection.idle():
                return connection
            connection.close()
        return None

    def give(self, key: tuple[str, int, str | None], connection: _Connection) -> None:
        now = time.monotonic()
        kept = self._kept.setdefault(key, [])
        kept.append((now, connection))
        if len(kept) > self.KEEP_PER_DESTINATION:
            kept.pop(0)[1].close()
        if now - self._swept > self.KEEP_SECONDS:  # close what no request came back for
            self._swept = now
            for each, here in list(self._kept.items()):
                for since, old in here:
                    if now - since >= self.KEEP_SECONDS:
                        old.close()
                here[:] = [(t, c) for t, c in here if now - t < self.KEEP_SECONDS]
                if not here:
                    del self._kept[each]


class _Loop(threading.local):
    """This thread's event loop and the connections kept on it; a forked child (a worker's
    pool process) makes its own, as the parent's belong to the parent."""

    pid = 0
    loop: asyncio.AbstractEventLoop
    kept: _Kept

    def here(self) -> asyncio.AbstractEventLoop:
        if self.pid != os.getpid():
            self.pid, self.loop, self.kept = os.getpid(), asyncio.new_event_loop(), _Kept()
        return self.loop


_loop = _Loop()


def run[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` (``send``s, gathered) to its end on this thread's event loop, where
    the connections kept from earlier requests are."""
    return _loop.here().run_until_complete(coroutine)


def _storable(text: str) -> str:
    """``text`` without NUL characters, which a Postgres text column refuses: what a receiver
    answers is recorded, and must not make recording the attempt fail (the delivery would be
    sent again when its lease ran out, every time)."""
    return text.replace("\x00", "\ufffd")


async def send(url: str, body: bytes, headers: dict[str, str], *, deadline: float) -> Answer:
    """POST ``body`` to ``url`` after checking it; no redirects, and only a short excerpt of the
    answer is kept. An answer counts only whole and well formed: a status line, a header section
    ended by its blank line, and the body read to its end (Content-Length, last chunk, or a
    clean close). Bounded time: each connect, read and write by
    ``HASHX_WEBHOOK_TIMEOUT_SECONDS``, and everything together (name lookup, connect, TLS
    handshake, sending, status line, headers and body) by ``deadline`` seconds: past it the
    connection is cut and ``SendFailed`` raised, however much of the answer had come. Many run
    at once on one event loop (``run``), over the connections it keeps."""
    started = time.monotonic()
    parts = check_url(url)
    address = str((await _resolve(parts, deadline))[0])
    # A lookup in this thread cannot be interrupted, but what it took comes off the time left.
    left = deadline - (time.monotonic() - started)
    if left <= 0:
        raise SendFailed(f"no complete answer within {deadline:g} s (the name lookup took it)")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    tls_host = (parts.hostname or "") if https else None
    # Only a connection to the very address just checked is used again.
    key = (address, port, tls_host)
    kept = _loop.kept if _loop.pid == os.getpid() and _loop.loop is _running() else _Kept()
    connection = kept.take(key)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = _request(path, parts.netloc, headers, body)
    reused = False
    try:
        async with asyncio.timeout(left) as cut:
            if connection is None:
                connection = await _Connection.open(address, port, tls_host)
            await connection.send(request)
            answer, reused = await _answer(_Reader(connection))
            return answer
    except (OSError, Incomplete) as exc:  # TimeoutError, ssl.SSLError and the like are OSErrors
        if cut.expired():
            raise SendFailed(f"no complete answer within {deadline:g} s") from None
        raise SendFailed(_storable(f"{type(exc).__name__}: {exc}")[:EXCERPT_CHARS]) from None
    finally:
        if connection is not None:
            if reused:
                kept.give(key, connection)
            else:
                connection.close()


def _running() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _resolve(parts: SplitResult, deadline: float) -> list[IPAddress]:
    """``resolve``: at once for an address (nothing to look up), else in a thread of the
    loop's, given up at ``deadline`` (a lookup cannot be interrupted; its thread finishes
    alone)."""
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        try:
            async with asyncio.timeout(deadline):
                return await _running().run_in_executor(None, resolve, parts)
        except TimeoutError:
            raise SendFailed(
                f"no complete answer within {deadline:g} s (the name lookup took it)"
            ) from None
    return resolve(parts)


def post(url: str, body: bytes, headers: dict[str, str], *, deadline: float) -> Answer:
    """``send`` one request from code that does not run an event loop."""
    return run(send(url, body, headers, deadline=deadline))
