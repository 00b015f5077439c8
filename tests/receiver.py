"""An HTTP server on loopback that records every request and answers from a script: a webhook
receiver (well-behaved, or hostile: ``HOSTILE``), or an exchange that is overloaded on cue
(tests/client/test_retries.py); over TLS with a certificate from an ``Authority``. ``Silent``
never answers at all."""

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b"ok"
    # Seconds between the bytes of the answer, written one at a time (from byte
    # ``trickle_from`` on): a receiver that keeps every read well within the socket timeout and
    # still takes for ever.
    trickle: float = 0.0
    trickle_from: int = 0
    # Close the connection without answering.
    hang_up: bool = False
    # Bytes written instead of a well-formed answer (a receiver that breaks HTTP, or frames its
    # body its own way: ``body`` then says what they carry), then
    # ``forever`` written again and again, every ``trickle`` seconds, until the exchange hangs
    # up (or a minute passes); then the connection is closed, or with ``hold`` kept open and
    # silent until the exchange hangs up (or a minute passes).
    raw: bytes | None = None
    forever: bytes = b""
    hold: bool = False
    # Over TLS, end a connection closed after ``raw`` with TLS's close (close_notify), or, with
    # False, with a bare hang-up that no TLS record announces.
    tls_close: bool = True

    def wire(self) -> bytes:
        """The bytes of this answer as written on the wire."""
        if self.raw is not None:
            return self.raw
        headers = {**self.headers, "Content-Length": str(len(self.body))}
        lines = [f"HTTP/1.1 {self.status} OK", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        return "\r\n".join(lines).encode() + self.body


_STATUS = b"HTTP/1.1 200 OK\r\n"
_CHUNKED = _STATUS + b"Transfer-Encoding: chunked\r\n\r\n"

# Answers that are not whole, well-formed HTTP answers however they start: a sender must count
# each a failed attempt, never a delivery.
HOSTILE = {
    "a trickled status line": Answer(
        raw=_STATUS + b"Content-Length: 2\r\n\r\nok", trickle=0.2, trickle_from=12
    ),
    "trickled headers": Answer(
        raw=_STATUS + b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
        trickle=0.2,
        trickle_from=len(_STATUS),
    ),
    "headers that never end": Answer(raw=_STATUS, forever=b"X-More: and more\r\n", trickle=0.05),
    "a status line, no headers, then a hang-up": Answer(raw=_STATUS),
    "a status line, then silence": Answer(raw=_STATUS, hold=True),
    "headers, then silence": Answer(raw=_STATUS + b"Content-Length: 2\r\n", hold=True),
    "a status line cut off": Answer(raw=b"HTTP/1.1 200 OK"),
    "a header line cut off": Answer(raw=_STATUS + b"Content-Le"),
    "a body that never ends": Answer(raw=_STATUS + b"\r\n", forever=b"ok ", trickle=0.05),
    "a chunked body that never ends": Answer(raw=_CHUNKED, forever=b"2\r\nok\r\n", trickle=0.05),
    "a body shorter than its Content-Length": Answer(raw=_STATUS + b"Content-Length: 10\r\n\r\nok"),
    "part of a body, then silence": Answer(
        raw=_STATUS + b"Content-Length: 10\r\n\r\nok", hold=True
    ),
    "a body ended by silence, not by closing": Answer(raw=_STATUS + b"\r\nok", hold=True),
    "a chunked body cut off": Answer(raw=_CHUNKED + b"5\r\nok"),
    "a chunked body without its last line": Answer(raw=_CHUNKED + b"2\r\nok\r\n0\r\n"),
    "a Content-Length that is no number": Answer(raw=_STATUS + b"Content-Length: two\r\n\r\nok"),
}

# Whole answers, each framed another way: each counts, and carries ``body``.
WELL_FORMED = {
    "a Content-Length body": Answer(body=b"ok"),
    "a body of 100 kB": Answer(body=b"ok" * 50_000),
    "no body": Answer(204, body=b""),
    "a chunked body with a trailer": Answer(
        raw=_CHUNKED + b"2\r\nok\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n", body=b"ok!"
    ),
    "a body ended by closing the connection": Answer(
        raw=_STATUS + b"\r\nall of it", body=b"all of it"
    ),
}


class Receiver:
    """``script`` answers requests in order, then ``otherwise`` (a 200); ``received`` keeps
    them all. With ``keep_alive`` it speaks HTTP/1.1 and keeps connections open between
    requests; ``connections`` counts those it accepted."""

    def __init__(self, *, keep_alive: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.connections = 0
        self.script: list[Answer] = []
        self.otherwise = Answer()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver.connections += 1

            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.otherwise
                    receiver.received.append(
                        Received(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                        )
                    )
                    receiver.arrived.notify_all()
                time.sleep(answer.delay)
                if answer.hang_up:
                    self.close_connection = True
                    return
                if answer.trickle or answer.raw is not None:
                    self.close_connection = True
                    with contextlib.suppress(OSError):  # the exchange may hang up first
                        self.misbehave(answer)
                        if isinstance(self.connection, ssl.SSLSocket) and answer.tls_close:
                            self.connection.unwrap()
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def misbehave(self, answer: Answer) -> None:
                wire = answer.wire()
                at = answer.trickle_from if answer.trickle else len(wire)
                self.wfile.write(wire[:at])
                for byte in wire[at:]:
                    time.sleep(answer.trickle)
                    self.wfile.write(bytes([byte]))
                until = time.monotonic() + 60
                while answer.forever and time.monotonic() < until:
                    self.wfile.write(answer.forever)
                    time.sleep(answer.trickle)
                if answer.hold:
                    self.connection.settimeout(60)
                    self.rfile.read(1)  # until the exchange hangs up

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Block until ``count`` requests arrived (AssertionError on timeout)."""
        with self.arrived:
            ok = self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            assert ok, f"{len(self.received)} of {count} webhook requests arrived in {timeout} s"
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Silent:
    """A listener on loopback that takes one connection and never says a word (a TLS server
    whose handshake never ends), until the other side hangs up or ``patience`` seconds pass;
    ``hung_up`` is set if the other side hung up first."""

    def __init__(self, patience: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(patience)
        self.hung_up = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(patience,), daemon=True)
        self.thread.start()

    def _serve(self, patience: float) -> None:
        until = time.monotonic() + patience
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            while (left := until - time.monotonic()) > 0:
                connection.settimeout(left)
                try:
                    if not connection.recv(65536):
                        self.hung_up.set()
                        return
                except TimeoutError:
                    return
                except OSError:  # reset
                    self.hung_up.set()
                    return

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.listener.getsockname()[1]}/hook"

    def __enter__(self) -> "Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join()


class Authority:
    """A certificate authority of the test's own: ``server`` makes a TLS server context with a
    certificate it issued for the given names, ``client`` a client context that trusts it (and
    checks host names) as the system's authorities are trusted in production."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test authority")])
        self._name = name
        self._cert = (
            self._builder(name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )  # fmt: skip
        self._dir = Path(tempfile.mkdtemp())

    def _builder(self, subject: x509.Name, public_key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def server(self, *names: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        cert = (
            self._builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]), key.public_key()
            )
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        chain = self._dir / f"{cert.serial_number}.pem"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        private = self._dir / f"{cert.serial_number}.key"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain, private)
        return context

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(
            cadata=self._cert.public_bytes(serialization.Encoding.PEM).decode()
        )
