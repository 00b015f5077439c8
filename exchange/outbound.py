"""HTTP requests to addresses members give us (webhook endpoints), made safe.

A member-supplied URL must not turn the exchange into a proxy into its own network: the host
must resolve only to public addresses (not loopback, private, link-local, CGNAT, reserved or
multicast ones) unless ``HASHX_OUTBOUND_ALLOWED_NETWORKS`` admits them, and cloud metadata
addresses are refused always. The check runs when the URL is registered and again at every
send, and the request connects to the very address that was checked, so a DNS answer that
changes in between (rebinding) gains nothing. Redirects are never followed.
"""

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
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


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, with SNI and certificate checks for the URL's host."""

    def __init__(self, address: str, port: int, host: str, timeout: float) -> None:
        super().__init__(address, port, timeout=timeout, context=ssl.create_default_context())
        self._tls_host = host

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._tls_host)  # type: ignore[attr-defined]


def _storable(text: str) -> str:
    """``text`` without NUL characters, which a Postgres text column refuses: what a receiver
    answers is recorded, and must not make recording the attempt fail (the delivery would be
    sent again when its lease ran out, every time)."""
    return text.replace("\x00", "\ufffd")


def post(url: str, body: bytes, headers: dict[str, str], *, deadline: float) -> Answer:
    """POST ``body`` to ``url`` after checking it; no redirects, and only a short excerpt of the
    answer is kept. Bounded time: each socket operation by ``HASHX_WEBHOOK_TIMEOUT_SECONDS``,
    and the whole exchange, name lookup included, by ``deadline`` seconds (a receiver trickling
    its answer a byte at a time never trips the first): past it the connection is cut and
    ``SendFailed`` raised."""
    started = time.monotonic()
    parts = check_url(url)
    address = str(resolve(parts)[0])
    # A lookup cannot be interrupted, but what it took comes off the time left.
    left = deadline - (time.monotonic() - started)
    if left <= 0:
        raise SendFailed(f"no complete answer within {deadline:g} s (the name lookup took it)")
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    timeout = settings.HASHX_WEBHOOK_TIMEOUT_SECONDS
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(address, port, parts.hostname or "", timeout)
        if https
        else http.client.HTTPConnection(address, port, timeout=timeout)
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        if connection.sock is not None:
            # The plain socket's shutdown: the blocked read returns at once (the TLS layer's
            # own shutdown would tear its state down under the reading thread).
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection.sock, socket.SHUT_RDWR)

    timer = threading.Timer(left, cut)
    timer.start()
    try:
        connection.connect()
        # Cut while connecting, before there was a socket to shut (the connect, and a TLS
        # handshake as a whole, are bounded by the socket timeout).
        if expired.is_set():
            raise TimeoutError
        connection.request("POST", path, body=body, headers={**headers, "Host": parts.netloc})
        response = connection.getresponse()
        excerpt = _storable(response.read(EXCERPT_CHARS).decode("utf-8", "replace"))
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, excerpt)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise SendFailed(f"no complete answer within {deadline:g} s") from None
        raise SendFailed(_storable(f"{type(exc).__name__}: {exc}")[:EXCERPT_CHARS]) from None
    finally:
        timer.cancel()
        timer.join()
        connection.close()
