"""RFC 9421 request signing for ``requests``, exactly as the exchange verifies it.

Covered components: ``"@method" "@target-uri"`` and, whenever the request has a body,
``"content-digest"`` (RFC 9530, sha-256). Parameters: ``created``, ``keyid`` (the key's RFC 7638
thumbprint), ``nonce`` (random, single use), ``alg="ed25519"``, ``tag="hashx"``.
"""

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from hashx.keys import key_id_of

TAG = "hashx"
LABEL = "hashx"

# A request whose signature base is built here rather than by the library (whose general
# machinery cost eight times the Ed25519 signature itself): a plain method, and a URL the
# library signs as it is spelled (http(s), a plain host and port, RFC 3986 path and query
# characters; no user info, IPv6 literal or fragment). The exchange verifies such signatures
# with the same pattern (members/auth.py). Anything else is signed by the library.
PLAIN_METHOD = re.compile(r"[A-Z]+")
PLAIN_TARGET = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?/(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*"
)
# Parameter strings that need no escaping as RFC 8941 strings (key ids, nonces).
_PLAIN_STRING = re.compile(r"[A-Za-z0-9._~+/=-]*")


@dataclass
class _Message:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def sign_headers(
    key: Ed25519PrivateKey,
    method: str,
    url: str,
    body: bytes | None = None,
    *,
    key_id: str | None = None,
    nonce: str | None = None,
    created: int | None = None,
    headers: Mapping[str, str] | None = None,
    digest: bytes | None = None,
) -> dict[str, str]:
    """The ``Signature-Input``, ``Signature`` and (with a body) ``Content-Digest`` headers for
    a request to ``url`` (absolute, as the exchange's public URL spells it). For a body
    streamed from a file, pass its SHA-256 as ``digest`` instead of the body."""
    key_id = key_id or key_id_of(key)
    method = method.upper()
    nonce = nonce or secrets.token_urlsafe(18)
    if body and digest is None:
        digest = hashlib.sha256(body).digest()
    when = int(created if created is not None else time.time())
    if (
        PLAIN_METHOD.fullmatch(method)
        and PLAIN_TARGET.fullmatch(url)
        and _PLAIN_STRING.fullmatch(key_id)
        and _PLAIN_STRING.fullmatch(nonce)
    ):
        return _plain_signature(key, method, url, key_id, nonce, when, digest)
    return _library_signature(key, method, url, key_id, nonce, when, digest, headers)


def _plain_signature(
    key: Ed25519PrivateKey,
    method: str,
    url: str,
    key_id: str,
    nonce: str,
    created: int,
    digest: bytes | None,
) -> dict[str, str]:
    """The headers the library makes for a plain request (tests/client/test_signing.py holds
    them to the library's, byte for byte: Ed25519 signatures are deterministic)."""
    headers, lines, covered = {}, [f'"@method": {method}', f'"@target-uri": {url}'], ""
    if digest is not None:
        headers["Content-Digest"] = f"sha-256=:{base64.b64encode(digest).decode()}:"
        lines.append(f'"content-digest": {headers["Content-Digest"]}')
        covered = ' "content-digest"'
    params = (
        f'("@method" "@target-uri"{covered});created={created};keyid="{key_id}"'
        f';alg="ed25519";nonce="{nonce}";tag="{TAG}"'
    )
    lines.append(f'"@signature-params": {params}')
    signature = key.sign("\n".join(lines).encode())
    headers["Signature-Input"] = f"{LABEL}={params}"
    headers["Signature"] = f"{LABEL}=:{base64.b64encode(signature).decode()}:"
    return headers


def _library_signature(
    key: Ed25519PrivateKey,
    method: str,
    url: str,
    key_id: str,
    nonce: str,
    created: int,
    digest: bytes | None,
    headers: Mapping[str, str] | None,
) -> dict[str, str]:
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: key}),
    )
    message = _Message(method, url, dict(headers or {}))
    covered = ["@method", "@target-uri"]
    if digest is not None:
        message.headers["Content-Digest"] = f"sha-256=:{base64.b64encode(digest).decode()}:"
        covered.append("content-digest")
    signer.sign(
        message,
        key_id=key_id,
        created=datetime.fromtimestamp(
            created,
            timezone.utc,  # noqa: UP017 - the client supports Python 3.10 (no datetime.UTC)
        ),
        nonce=nonce,
        label=LABEL,
        tag=TAG,
        covered_component_ids=covered,
        use_existing_digest=digest is not None,
    )
    wanted = {"signature-input", "signature", "content-digest"}
    return {name: value for name, value in message.headers.items() if name.lower() in wanted}


class HashxAuth(requests.auth.AuthBase):
    """``requests`` auth that signs every request with an Ed25519 member key."""

    def __init__(self, key: Ed25519PrivateKey, key_id: str | None = None) -> None:
        self.key = key
        self.key_id = key_id or key_id_of(key)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body
        assert request.method is not None and request.url is not None
        if isinstance(body, DigestedFile):
            headers = sign_headers(
                self.key, request.method, request.url, key_id=self.key_id, digest=body.digest
            )
        else:
            if isinstance(body, str):
                body = body.encode()
            if body is not None and not isinstance(body, bytes):
                raise TypeError("HashxAuth signs bytes, str or DigestedFile bodies")
            headers = sign_headers(self.key, request.method, request.url, body, key_id=self.key_id)
        request.headers.update(headers)
        return request


class DigestedFile:
    """A file to upload as a stream: hashed once up front (the signature covers its SHA-256
    Content-Digest), then read in chunks by ``requests``; ``progress(bytes_sent)`` is called
    as it goes."""

    def __init__(self, path: str, progress: Callable[[int], None] | None = None) -> None:
        self.file = open(path, "rb")  # noqa: SIM115, PTH123 - closed by close(), after the upload
        sha = hashlib.sha256()
        for chunk in iter(lambda: self.file.read(1 << 20), b""):
            sha.update(chunk)
        self.digest = sha.digest()
        self.size = self.file.tell()
        self.file.seek(0)
        self.sent = 0
        self.progress = progress

    def __len__(self) -> int:
        return self.size

    def read(self, size: int = -1) -> bytes:
        chunk = self.file.read(size)
        self.sent += len(chunk)
        if self.progress is not None:
            self.progress(self.sent)
        return chunk

    def rewind(self) -> None:
        """Back to the start, to send the file again (a retried upload)."""
        self.file.seek(0)
        self.sent = 0

    def close(self) -> None:
        self.file.close()
