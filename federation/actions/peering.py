"""Peering: pinning another exchange by its key fingerprint, given out of band, and the
changes staff make to a peer link (pause, resume, remove). Every change is audited."""

import re
from datetime import timedelta
from typing import Any

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from exchange.actions.identity import get_identity, get_signing_key, key_change_statement
from exchange.outbound import Refused, check_destination
from exchange.problems import Problem
from federation.actions.apply import path_gone
from federation.models import MirroredSet, Peer
from hashx.keys import b64url_decode, jwk_thumbprint
from members.actions.keys import do_add_key, do_retire_key
from members.actions.organisations import do_change_status, do_create_organisation
from members.models import Organisation, SigningKey

_FINGERPRINT = re.compile(r"^SHA256:([A-Za-z0-9_-]{43})$")
# /.well-known/hashx is a small document; anything bigger is not one.
MAX_IDENTITY_BYTES = 256 * 1024
TIMEOUT_SECONDS = 10
# After a peer's key rotation, its old key still verifies this long (requests already signed).
KEY_OVERLAP = timedelta(hours=1)


def own_fingerprint() -> str:
    """This exchange's key fingerprint, to give to a peer out of band: ``SHA256:<thumbprint>``
    (the RFC 7638 thumbprint of its current Ed25519 key, as /.well-known/hashx publishes it)."""
    kid, _ = get_signing_key()
    return f"SHA256:{kid}"


def check_fingerprint(text: str) -> str:
    """The key thumbprint a ``SHA256:…`` fingerprint names; 400 for anything else."""
    match = _FINGERPRINT.match(text.strip())
    if match is None:
        raise Problem(
            "validation",
            "fingerprint: expected SHA256: and 43 base64url characters (what the other"
            " exchange's `manage.py peer_fingerprint` prints)",
        )
    return match.group(1)


def peer_url(url: str) -> str:
    """The peer's base URL, without a trailing slash; 400 when outbound calls may not go there
    (``exchange.outbound``: public https unless the allow-list settings admit it)."""
    url = url.strip().rstrip("/")
    try:
        check_destination(url)
    except Refused as exc:
        raise Problem("validation", f"url: {exc}") from None
    return url


def fetch_identity(url: str) -> dict[str, Any]:
    """The peer's /.well-known/hashx document (unsigned: the fingerprint is what vouches)."""
    try:
        response = requests.get(
            f"{url}/.well-known/hashx", timeout=TIMEOUT_SECONDS, allow_redirects=False
        )
    except requests.RequestException as exc:
        raise Problem("validation", f"url: {url} cannot be reached: {exc}") from None
    if response.status_code != 200 or len(response.content) > MAX_IDENTITY_BYTES:
        raise Problem("validation", f"url: {url}/.well-known/hashx answered {response.status_code}")
    try:
        identity = response.json()
        keys = identity["jwks"]["keys"]
        assert isinstance(identity["exchange_id"], str) and isinstance(keys, list) and keys
    except (ValueError, KeyError, TypeError, AssertionError):
        raise Problem("validation", f"url: {url} does not serve an exchange identity") from None
    return dict(identity)


def current_key(identity: dict[str, Any]) -> tuple[str, bytes]:
    """The (thumbprint, raw public key) an identity document names as current (its first key),
    the thumbprint computed here from the key itself, never taken from the document."""
    jwk = identity["jwks"]["keys"][0]
    try:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("not an Ed25519 key")
        public = b64url_decode(jwk["x"])
        if len(public) != 32:
            raise ValueError("not 32 bytes")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise Problem("validation", f"the peer's current key is not usable: {exc}") from None
    return jwk_thumbprint(public), public


def do_add_peer(name: str, url: str, fingerprint: str, *, actor: Any = None) -> Peer:
    """Pin the exchange at ``url`` if its current key matches ``fingerprint``, and create both
    sides of the link here: its organisation (kind peer, active, with that key: how it reads
    here) and the ``Peer`` this exchange pulls from. 400 on a mismatch (nothing is created),
    409 when the name, the exchange or the key is already known.

    One transaction: the organisation, its key, the peer and the audit events."""
    expected = check_fingerprint(fingerprint)
    url = peer_url(url)
    identity = fetch_identity(url)
    kid, public = current_key(identity)
    if kid != expected:
        raise Problem(
            "validation",
            f"fingerprint mismatch: {url} presents SHA256:{kid}, not {fingerprint.strip()};"
            " nothing was created. Check the fingerprint with the other exchange's staff.",
        )
    if identity["exchange_id"] == get_identity().exchange_id:
        raise Problem("validation", "url: that is this exchange itself")
    if Peer.objects.filter(exchange_id=identity["exchange_id"]).exists():
        raise Problem("conflict", f"The exchange {identity['exchange_id']} is already a peer")
    with transaction.atomic():
        org = do_create_organisation(
            name, str(identity.get("name") or name)[:200], kind=Organisation.Kind.PEER,
            active=True, actor=actor,
        )  # fmt: skip
        Organisation.objects.filter(pk=org.pk).update(exchange_id=identity["exchange_id"])
        do_add_key(org, public)
        peer = Peer.objects.create(
            name=name,
            url=url,
            exchange_id=identity["exchange_id"],
            organisation=org,
            key_id=kid,
            public_key=public,
        )
        record(
            "federation.peer.added",
            obj=peer,
            actor_user=actor,
            details={"name": name, "url": url, "exchange": peer.exchange_id,
                     "fingerprint": peer.fingerprint},
        )  # fmt: skip
    return peer


def do_set_peer_state(peer: Peer, state: str, *, actor: Any = None, reason: str = "") -> bool:
    """Pause, resume or stop pulling from a peer; returns whether it changed. Resuming clears
    the error and the back-off, so the next pull runs at once.

    Locks: a conditional UPDATE on the old state, so two staff acting at once change it once."""
    fields: dict[str, Any] = {"state": state}
    if state == Peer.State.ACTIVE:
        fields.update(failures=0, last_error="", next_attempt_at=timezone.now())
    elif reason:
        fields["last_error"] = reason[:500]
    with transaction.atomic():
        before = peer.state
        changed = Peer.objects.filter(pk=peer.pk).exclude(state=state).update(**fields)
        if changed:
            peer.refresh_from_db()
            record(
                f"federation.peer.{_VERB[state]}",
                obj=peer,
                actor_user=actor,
                details={"name": peer.name, "from": before, "to": state, "reason": reason},
            )
    return bool(changed)


_VERB: dict[str, str] = {
    Peer.State.ACTIVE: "resumed",
    Peer.State.PAUSED: "paused",
    Peer.State.STOPPED: "stopped",
}


def do_remove_peer(peer: Peer, *, drop_mirrors: bool, actor: Any = None, reason: str = "") -> int:
    """End the peering: the peer's organisation is suspended (it reads nothing here any more)
    and the link and cursors are deleted. Its mirror sets stay, read-only: with
    ``drop_mirrors`` their entries become tombstones (members' copies drop them at their next
    sync), otherwise they are kept as they were, frozen. Returns the entries dropped.

    One transaction; locks each mirror set as every writer of its entries does."""
    dropped = 0
    now = timezone.now()
    with transaction.atomic():
        mirrors = list(MirroredSet.objects.filter(peer=peer))
        if drop_mirrors:
            with connection.cursor() as cursor:
                for mirror in mirrors:
                    dropped += path_gone(cursor, mirror, peer.exchange_id, now)
        do_change_status(peer.organisation, "suspend", f"peering ended: {reason}", actor=actor)
        record(
            "federation.peer.removed",
            obj=peer,
            actor_user=actor,
            details={"name": peer.name, "exchange": peer.exchange_id, "reason": reason,
                     "mirrors": len(mirrors), "dropped": dropped, "kept": not drop_mirrors},
        )  # fmt: skip
        peer.delete()
    return dropped


def endorsed_next_key(peer: Peer, identity: dict[str, Any]) -> tuple[str, bytes] | None:
    """The next key the peer's identity announces, if its pinned key signed for it."""
    keys = {}
    for jwk in identity["jwks"]["keys"]:
        try:
            public = b64url_decode(jwk["x"])
            keys[jwk_thumbprint(public)] = public
        except (KeyError, TypeError, ValueError):
            continue
    pinned = Ed25519PublicKey.from_public_bytes(bytes(peer.public_key))
    for endorsement in identity.get("key_endorsements") or []:
        if not isinstance(endorsement, dict) or endorsement.get("by") != peer.key_id:
            continue
        kid = endorsement.get("kid")
        if kid not in keys or kid == peer.key_id:
            continue
        try:
            signature = b64url_decode(str(endorsement.get("signature", "")))
            pinned.verify(signature, key_change_statement(peer.exchange_id, kid))
        except (ValueError, InvalidSignature):
            continue
        return kid, keys[kid]
    return None


def do_follow_key(peer: Peer, identity: dict[str, Any]) -> str:
    """Follow a peer's key rotation, proved by its pinned key: an endorsed next key is added to
    the peer's organisation here (its requests signed with it verify from then on), and once it
    is the peer's current key it becomes the pinned one (the old key of the organisation
    retires). Returns the current key's thumbprint as the peer presents it; the caller stops
    the peer when that is neither pinned nor followed.

    One transaction; audited (``federation.peer.key_announced``, ``federation.peer.key_changed``).
    """
    kid, _ = current_key(identity)
    with transaction.atomic():
        endorsed = endorsed_next_key(peer, identity)
        if endorsed is not None and endorsed[0] != peer.next_key_id:
            peer.next_key_id, peer.next_public_key = endorsed
            if not SigningKey.objects.filter(key_id=peer.next_key_id).exists():
                do_add_key(peer.organisation, endorsed[1], label="next key, endorsed")
            Peer.objects.filter(pk=peer.pk).update(
                next_key_id=peer.next_key_id, next_public_key=peer.next_public_key
            )
            record("federation.peer.key_announced", obj=peer,
                   details={"name": peer.name, "next": f"SHA256:{peer.next_key_id}"})  # fmt: skip
        if kid != peer.key_id and kid == peer.next_key_id and peer.next_public_key:
            old = peer.key_id
            for key in SigningKey.objects.filter(key_id=old, state=SigningKey.State.ACTIVE):
                do_retire_key(key, timezone.now() + KEY_OVERLAP)
            peer.key_id, peer.public_key = kid, bytes(peer.next_public_key)
            peer.next_key_id, peer.next_public_key = "", None
            Peer.objects.filter(pk=peer.pk).update(
                key_id=peer.key_id, public_key=peer.public_key, next_key_id="",
                next_public_key=None,
            )  # fmt: skip
            record("federation.peer.key_changed", obj=peer,
                   details={"name": peer.name, "from": f"SHA256:{old}",
                            "to": f"SHA256:{kid}"})  # fmt: skip
    return kid
