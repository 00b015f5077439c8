"""RFC 9421 request-signature authentication for DRF (DESIGN.md "Request authentication").

Order of checks, each refusal a 401 problem naming its reason: signature headers present and
well-formed, exactly one signature tagged ``hashx``; it covers ``@method``, ``@target-uri`` and,
with a body, ``content-digest``; ``alg`` (if given) is ``ed25519``; ``created`` within the
allowed skew; the key is known, not revoked or past ``not_after``; its organisation is active;
the Ed25519 signature verifies over a signature base whose ``@target-uri`` is rebuilt from
``HASHX_PUBLIC_URL`` (never from Host); only then is the body read, and the Content-Digest
must match it (a streamed body: as the view reads it); and only then is the nonce spent (Redis
``SET NX EX``), so nobody can burn another member's nonces.

Keys and organisations come from this process's cache (``members.keycache``); the round trip
that spends the nonce also reads the access generation (``exchange.generation``), and a key
cached before a change to keys or organisations is read again and checked again before the
request passes.
"""

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import cryptography.exceptions
import http_sf
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from http_message_signatures import HTTPMessageVerifier, InvalidSignature, algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from http_message_signatures.resolvers import HTTPSignatureKeyResolver
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from exchange.generation import GENERATION
from exchange.kv import redis_client
from exchange.problems import Problem, echo
from hashx.auth import PLAIN_METHOD, PLAIN_TARGET
from members.keycache import CachedKey, keys
from members.models import Organisation, SigningKey
from members.principal import MemberPrincipal

TAG = "hashx"
# Bodies of these types are streamed by their views, never read whole by authentication.
STREAMED_TYPES = {"application/x-ndjson", "text/csv", "text/plain"}
ALGORITHM = "ed25519"
REQUIRED = ("@method", "@target-uri")
_NONCE = re.compile(r"^[A-Za-z0-9._~+/=-]{8,128}$")
# last_used_at is written at most this often per key (and process).
_LAST_USED_RESOLUTION = timedelta(minutes=1)
# key pk -> when this process last wrote last_used_at.
_touched: dict[int, datetime] = {}


@dataclass
class _Message:
    """The request as the signature library reads it. ``url`` is rebuilt from the public URL:
    what the member signed is the exchange's address, not whatever Host a proxy passed on."""

    method: str
    url: str
    headers: Any


def _target_uri(request: HttpRequest) -> str:
    """The ``@target-uri`` the exchange verifies: its public URL, whatever Host was reached."""
    return settings.HASHX_PUBLIC_URL + request.get_full_path()


def _message(request: HttpRequest, components: list[str]) -> _Message:
    """Only the header fields the library reads: the signature's own and those it covers (it
    would copy every header of the request, twice, to find them)."""
    url = _target_uri(request)
    names = ["Signature-Input", "Signature", *(c for c in components if not c.startswith("@"))]
    headers = {name: request.headers[name] for name in names if name in request.headers}
    return _Message(request.method or "GET", url, headers)


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, public: Ed25519PublicKey) -> None:
        self.key_id, self.public = key_id, public

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        return self.public if key_id == self.key_id else None


# The two fields as every hashx client writes them (one member; components and parameters
# that need no escaping), read by pattern into what http_sf makes of them: http_sf's general
# parser cost as much as the Ed25519 check. Anything else is http_sf's to read (or refuse);
# tests/members/test_signature_fields.py holds the two to the same answers.
_SF_KEY = r"[a-z][a-z0-9_.*-]*"
_PLAIN_INPUT = re.compile(
    rf'({_SF_KEY})=\(((?:"[a-z0-9@-]+"(?: "[a-z0-9@-]+")*)?)\)'
    rf'((?:;{_SF_KEY}=(?:-?[0-9]{{1,15}}|"[\x20\x21\x23-\x5b\x5d-\x7e]*"))*)'
)
_PLAIN_PARAM = re.compile(rf';({_SF_KEY})=(?:(-?[0-9]{{1,15}})|"([^"]*)")')
_PLAIN_VALUE = re.compile(rf"({_SF_KEY})=:([A-Za-z0-9+/]*={{0,2}}):")


def plain_dictionary(name: str, value: str) -> dict[str, Any] | None:
    """``Signature-Input`` or ``Signature`` (``name``) as http_sf parses it, when ``value``
    is written as a hashx client writes it; None for anything else."""
    if name == "Signature":
        match = _PLAIN_VALUE.fullmatch(value)
        if match is None or len(match[2]) % 4:
            return None
        try:
            return {match[1]: (base64.b64decode(match[2], validate=True), {})}
        except ValueError:
            return None
    match = _PLAIN_INPUT.fullmatch(value)
    if match is None:
        return None
    components: list[tuple[str, dict[str, Any]]] = (
        [(c[1:-1], {}) for c in match[2].split(" ")] if match[2] else []
    )
    params: dict[str, Any] = {}
    for key, number, string in _PLAIN_PARAM.findall(match[3]):
        params[key] = int(number) if number else string
    return {match[1]: (components, params)}


def _parse_dictionary(request: HttpRequest, name: str) -> dict[str, Any]:
    value = request.headers[name]
    plain = plain_dictionary(name, value)
    if plain is not None:
        return plain
    try:
        parsed = cast(dict[str, Any], http_sf.parse(value.encode(), tltype="dictionary"))
    except Exception:  # http_sf raises ValueError and others on malformed input
        raise Problem(
            "signature-malformed", f"{name} is not a valid structured field dictionary"
        ) from None
    return parsed


@dataclass(frozen=True)
class _Signature:
    """The one signature tagged ``hashx``: what it covers, its parameters and its value, and
    whether it is the only signature of the request (``alone``: one label in both fields)."""

    components: list[str]
    params: dict[str, Any]
    value: Any
    alone: bool


def _select(request: HttpRequest) -> _Signature | None:
    """The one signature tagged ``hashx``, or None when the request carries no signature."""
    has_input, has_signature = "Signature-Input" in request.headers, "Signature" in request.headers
    if not has_input and not has_signature:
        return None
    if not (has_input and has_signature):
        raise Problem("signature-malformed", "Signature-Input and Signature must come together")
    inputs = _parse_dictionary(request, "Signature-Input")
    signatures = _parse_dictionary(request, "Signature")
    ours = []
    for label, (members, params) in inputs.items():
        if isinstance(params, dict) and params.get("tag") == TAG:
            ours.append((label, members, params))
    if not ours:
        raise Problem("signature-missing", f'No signature tagged "{TAG}" in Signature-Input')
    if len(ours) > 1:
        raise Problem("signature-malformed", f'More than one signature is tagged "{TAG}"')
    label, members, params = ours[0]
    if label not in signatures or not isinstance(members, list):
        raise Problem(
            "signature-malformed", f'Signature "{label}" has no value or no component list'
        )
    components = []
    for item in members:
        value, item_params = item
        if not isinstance(value, str) or item_params:
            raise Problem("signature-malformed", "Covered components must be plain strings")
        components.append(value)
    alone = len(inputs) == 1 and inputs.keys() == signatures.keys()
    return _Signature(components, params, signatures[label][0], alone)


def _check_parameters(
    components: list[str], params: dict[str, Any], has_body: bool
) -> tuple[str, str]:
    wanted = [*REQUIRED, "content-digest"] if has_body else list(REQUIRED)
    missing = [c for c in wanted if c not in components]
    if missing:
        raise Problem(
            "signature-incomplete",
            f"The signature must cover {', '.join(wanted)}; missing {', '.join(missing)}",
        )
    alg = params.get("alg")
    if alg is not None and alg != ALGORITHM:
        raise Problem(
            "algorithm-unsupported",
            f'alg "{echo(alg)}" is not accepted; members sign with "{ALGORITHM}"',
        )
    key_id, nonce, created = params.get("keyid"), params.get("nonce"), params.get("created")
    if not isinstance(key_id, str) or not key_id:
        raise Problem("signature-malformed", 'The signature has no "keyid"')
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        raise Problem(
            "signature-malformed", 'The signature needs a "nonce" of 8 to 128 token characters'
        )
    if type(created) is not int:
        raise Problem("signature-malformed", 'The signature needs an integer "created"')
    now = timezone.now().timestamp()
    skew = settings.HASHX_SIGNATURE_MAX_SKEW_SECONDS
    if created > now + skew:
        raise Problem(
            "signature-future",
            f"created is {int(created - now)} s ahead of the exchange's clock (max {skew} s)",
        )
    if created < now - skew:
        raise Problem("signature-stale", f"created is {int(now - created)} s old (max {skew} s)")
    expires = params.get("expires")
    if expires is not None and (type(expires) is not int or expires < now):
        raise Problem("signature-stale", "The signature has expired")
    return key_id, nonce


def _find_key(key_id: str, *, reload: bool = False) -> CachedKey:
    try:
        return keys.get(key_id, reload=reload)
    except SigningKey.DoesNotExist:
        raise Problem(
            "key-unknown", f"No key {echo(key_id)} is registered with this exchange"
        ) from None
    except redis.RedisError:
        raise Problem(
            "replay-check-unavailable", "Cannot check the nonce now; retry shortly"
        ) from None


def _check_key(key: SigningKey) -> None:
    if key.state == SigningKey.State.REVOKED:
        raise Problem("key-revoked", f"Key {key.key_id} was revoked")
    if key.not_after is not None and key.not_after <= timezone.now():
        raise Problem("key-expired", f"Key {key.key_id} retired at {key.not_after.isoformat()}")
    status = key.organisation.status
    if status == Organisation.Status.SUSPENDED:
        raise Problem(
            "organisation-suspended", f"Organisation {key.organisation.slug} is suspended"
        )
    if status != Organisation.Status.ACTIVE:
        raise Problem(
            "organisation-pending", f"Organisation {key.organisation.slug} is not yet approved"
        )


def _expected_digest(request: HttpRequest) -> bytes:
    header = request.headers.get("Content-Digest")
    if header is None:
        raise Problem("digest-mismatch", "A request with a body needs a Content-Digest (sha-256)")
    try:
        digests = cast(dict[str, Any], http_sf.parse(header.encode(), tltype="dictionary"))
    except Exception:
        raise Problem("digest-mismatch", "Content-Digest is not a valid structured field") from None
    given = digests.get("sha-256", (None,))[0]
    if not isinstance(given, bytes):
        raise Problem("digest-mismatch", "Content-Digest must carry a sha-256 member")
    return given


def check_digest(expected: bytes, actual: bytes) -> None:
    if not hmac.compare_digest(expected, actual):
        raise Problem("digest-mismatch", "The body does not match its Content-Digest")


def _check_digest(request: HttpRequest, body: bytes) -> None:
    if not body and "Content-Digest" not in request.headers:
        return
    check_digest(_expected_digest(request), hashlib.sha256(body).digest())


def _check_signature(
    request: HttpRequest, signature: _Signature, key_id: str, public: Ed25519PublicKey
) -> None:
    base = _plain_signature_base(request, signature)
    try:
        if base is not None and type(signature.value) is bytes:
            public.verify(signature.value, base)
            return
        verifier = HTTPMessageVerifier(
            signature_algorithm=algorithms.ED25519, key_resolver=_OneKey(key_id, public)
        )
        # Time was checked above with the exchange's own window.
        verifier.max_clock_skew = timedelta(seconds=settings.HASHX_SIGNATURE_MAX_SKEW_SECONDS)
        # No require_components: _check_parameters has required them of this very signature
        # (the one tagged hashx in the same header), and the library would parse every
        # component identifier twice more to check again.
        verifier.verify(_message(request, signature.components), max_age=None, expect_tag=TAG)
    except (
        InvalidSignature,
        HTTPMessageSignaturesException,
        cryptography.exceptions.InvalidSignature,
    ):
        raise Problem(
            "signature-invalid",
            _why_not_verified(request),
            verified_target_uri=_target_uri(request),
        ) from None


# What a signature of every hashx client looks like, whose signature base is built here rather
# than by the library (which parses both header fields again, resolves each component through
# its general machinery and costed three times the Ed25519 check itself): the only signature of
# the request, over @method, @target-uri and header fields, with the library's parameters of
# the library's types, and a @target-uri the library would rebuild unchanged (http(s), a plain
# host and port, RFC 3986 path and query characters; no user info, IPv6 literal or fragment).
# Anything else is verified by the library, which decides as it always did.
_PARAM_TYPES = {"alg": str, "created": int, "expires": int, "keyid": str, "nonce": str, "tag": str}
_PLAIN_FIELD = re.compile(r"[a-z0-9-]+")


def _plain_signature_base(request: HttpRequest, signature: _Signature) -> bytes | None:
    """The RFC 9421 signature base of a plain hashx signature, byte for byte the library's
    (tests/members/test_signature_base.py holds it to that), or None for any other."""
    method, url = request.method or "", _target_uri(request)
    if (
        not signature.alone
        or not PLAIN_METHOD.fullmatch(method)
        or not PLAIN_TARGET.fullmatch(url)
        or any(type(v) is not _PARAM_TYPES.get(k) for k, v in signature.params.items())
        or len(set(signature.components)) != len(signature.components)
    ):
        return None
    lines = []
    for component in signature.components:
        if component == "@method":
            value = method
        elif component == "@target-uri":
            value = url
        elif _PLAIN_FIELD.fullmatch(component) and component in request.headers:
            # As the library reads a field: trimmed of spaces and tabs, printable ASCII.
            value = request.headers[component].strip(" \t")
            if not value.isascii() or not value.replace("\t", " ").isprintable():
                return None
        else:
            return None
        lines.append(f'"{component}": {value}')
    # Serialised as RFC 8941 does (components and keys need no escaping here; strings were
    # parsed from the field, so they are printable ASCII already).
    covered = " ".join(f'"{component}"' for component in signature.components)
    params = "".join(
        f";{name}={value}" if type(value) is int else f";{name}={_sf_string(value)}"
        for name, value in signature.params.items()
    )
    lines.append(f'"@signature-params": ({covered}){params}')
    return "\n".join(lines).encode()


def _sf_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _why_not_verified(request: HttpRequest) -> str:
    """What the exchange verified against, and the usual cause when it shows: a client signs the
    URL it was given, the exchange rebuilds ``@target-uri`` from its public URL, so a client
    that reached it by another name (``localhost`` for ``127.0.0.1``) signed something else."""
    url = _target_uri(request)
    public = urlsplit(settings.HASHX_PUBLIC_URL)
    reached = request.headers.get("Host", "")
    hint = (
        f" You reached it as {echo(reached)}: if you signed for that address, use"
        f" {settings.HASHX_PUBLIC_URL} as your base URL (HASHX_URL) instead."
        if reached and reached.lower() != public.netloc.lower()
        else " Sign for exactly this URL, with the key named by keyid."
    )
    return (
        f"The signature does not verify for {request.method} {echo(url, 200)}: the exchange"
        f" verifies @target-uri against its public URL (HASHX_PUBLIC_URL ="
        f" {settings.HASHX_PUBLIC_URL}).{hint}"
    )


def _spend_nonce(key_id: str, nonce: str) -> tuple[bool, bytes | None]:
    """Spend the nonce (``SET NX EX``) and read the access generation, in one round trip:
    whether the nonce was fresh, and the generation."""
    ttl = 2 * settings.HASHX_SIGNATURE_MAX_SKEW_SECONDS + 60
    token = hashlib.sha256(nonce.encode()).hexdigest()[:32]
    pipe = redis_client().pipeline(transaction=False)
    pipe.set(f"hashx:nonce:{key_id}:{token}", "1", nx=True, ex=ttl)
    pipe.get(GENERATION)
    try:
        fresh, generation = pipe.execute()
    except redis.RedisError:
        raise Problem(
            "replay-check-unavailable", "Cannot check the nonce now; retry shortly"
        ) from None
    return bool(fresh), generation


def _touch(key: SigningKey) -> None:
    now = timezone.now()
    last = max(filter(None, (key.last_used_at, _touched.get(key.pk))), default=None)
    if last is None or now - last >= _LAST_USED_RESOLUTION:
        # Read from this process's cache, last_used_at may be older than the row's: remember
        # what this process wrote, and write only over a stamp that is old enough (of
        # concurrent requests in the same minute, in any process, one writes).
        _touched[key.pk] = now
        SigningKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - _LAST_USED_RESOLUTION),
            pk=key.pk,
        ).update(last_used_at=now)
        key.last_used_at = now


class SignatureAuthentication(BaseAuthentication):
    """Authenticates members and peer exchanges by their Ed25519 request signatures."""

    def authenticate(self, request: Request) -> tuple[MemberPrincipal, SigningKey] | None:
        django_request: HttpRequest = request._request
        selected = _select(django_request)
        if selected is None:
            return None
        length = int(django_request.META.get("CONTENT_LENGTH") or 0)
        key_id, nonce = _check_parameters(selected.components, selected.params, has_body=length > 0)
        cached = _find_key(key_id)
        try:
            _check_key(cached.key)
        except Problem:
            if not cached.from_cache:
                raise
            # A refusal is decided on the key as it is now, never on a cached copy: the
            # organisation may have been reactivated since.
            cached = _find_key(key_id, reload=True)
            _check_key(cached.key)
        # The signature covers the Content-Digest header, so it is checked before any of the
        # body is read: nobody waits on the body of a request that is not a member's (trickled,
        # it would hold one of the threads that serve requests).
        _check_signature(django_request, selected, key_id, cached.public)
        streamed_digest = None
        if django_request.content_type in STREAMED_TYPES and length > 0:
            # Streamed uploads are never read whole: the signed Content-Digest is checked by
            # the view as it reads (DigestReader), and a mismatch undoes everything it staged.
            streamed_digest = _expected_digest(django_request)
        else:
            _check_digest(django_request, django_request.body)
        fresh, generation = _spend_nonce(key_id, nonce)
        try:
            confirmed = keys.confirm(cached, generation)
        except SigningKey.DoesNotExist:
            raise Problem(
                "key-unknown", f"No key {echo(key_id)} is registered with this exchange"
            ) from None
        if confirmed is not cached:
            # The key was cached before a change to keys or organisations: decide again on the
            # key as it is now (same key id, same public key: the signature stands).
            _check_key(confirmed.key)
        if not fresh:
            raise Problem("nonce-replayed", "This nonce was already used with this key")
        key = confirmed.key
        # Set visibility may be read from memory for this organisation, as of this generation.
        key.organisation.access_generation = confirmed.generation
        _touch(key)
        return MemberPrincipal(key.organisation, key, streamed_digest), key

    def authenticate_header(self, request: Request) -> str:
        return 'Signature realm="hashx"'
