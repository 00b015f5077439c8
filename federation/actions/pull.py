"""The pull engine: for one peer, list the sets it lets this exchange read, then stream each
one's change feed from the mirror's cursor, signed with this exchange's key (RFC 9421, the
``hashx`` client's own signer), applying every checkpoint in one transaction with its cursor
(``federation.actions.apply``). A 410 resyncs that set from the peer's snapshot.

A failing peer backs off exponentially with jitter and never holds up another: each peer is
pulled under its own session advisory lock (a second pull of the same peer steps aside; the
lock goes with the connection of a killed process), and its failure is recorded on its row
(``last_error``) and in the audit log, both sides keeping a record of every pull.
"""

import gc
import logging
import random
import threading
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import requests
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actions import record
from exchange import generation
from exchange.actions.identity import get_identity, get_signing_key
from exchange.handover import Handover
from exchange.outbound import Refused, check_destination
from exchange.problems import Problem
from federation.actions.apply import (
    MAX_HOPS,
    Outcome,
    Refusal,
    Resync,
    check_page,
    do_apply_checked,
    do_withdraw_mirror,
)
from federation.actions.opinions import do_forward_opinions
from federation.actions.peering import do_follow_key, fetch_identity
from federation.actions.push import do_ensure_push
from federation.models import MirroredSet, Peer
from hashx.auth import HashxAuth
from signals.access import FEDERABLE_TLP
from signals.feed.locks import advisory_key
from signals.models import HashSet

# A feed line longer than this is no change this exchange would store: refused, skipped.
MAX_LINE_BYTES = 1 << 20
# Changes applied per transaction at most (the peer checkpoints every 5,000), and their bytes
# (it checkpoints every 8 MiB too: long values, such as hour-long videos).
MAX_PAGE = 20_000
MAX_PAGE_BYTES = 32 << 20
# A resync applies a snapshot in chunks of 5,000 lines, or fewer of this many bytes.
RESYNC_CHUNK_BYTES = 8 << 20
CONNECT_TIMEOUT, READ_TIMEOUT = 10, 60
BACKOFF_MAX_SECONDS = 3600
logger = logging.getLogger(__name__)


class PullFailed(Exception):
    """The pull of a peer could not go on; ``stop``: retrying cannot mend it (staff must)."""

    def __init__(self, message: str, *, stop: bool = False) -> None:
        super().__init__(message[:500])
        self.stop = stop


@dataclass
class Report:
    """What one pull of one peer did, per remote set."""

    peer: str
    skipped: str = ""
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused_sets: dict[str, str] = field(default_factory=dict)
    # Mirrors of sets the peer no longer serves: entries tombstoned here, per remote set.
    withdrawn: dict[str, int] = field(default_factory=dict)
    opinions_forwarded: int = 0
    push_error: str = ""
    error: str = ""

    @property
    def applied(self) -> int:
        return sum(s["applied"] for s in self.sets.values())


class _Remote:
    """Signed requests to one peer."""

    def __init__(self, peer: Peer) -> None:
        kid, key = get_signing_key()
        self.base = peer.url
        self.session = requests.Session()
        self.session.auth = HashxAuth(key, kid)

    def get(
        self, path: str, params: dict[str, str] | None = None, *, stream: bool = False
    ) -> requests.Response:
        try:
            response = self.session.get(
                f"{self.base}{path}",
                params=params or None,
                stream=stream,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                allow_redirects=False,
                headers={"Accept": "application/x-ndjson" if stream else "application/json"},
            )
        except requests.RequestException as exc:
            raise PullFailed(f"GET {path}: {type(exc).__name__}: {exc}") from None
        return response

    def send(self, method: str, path: str, body: dict[str, Any]) -> requests.Response:
        try:
            return self.session.request(
                method, f"{self.base}{path}", data=orjson.dumps(body), allow_redirects=False,
                headers={"Content-Type": "application/json"},
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )  # fmt: skip
        except requests.RequestException as exc:
            raise PullFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from None

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.send("POST", path, body)


def failure(response: requests.Response, what: str) -> PullFailed:
    """A peer's error answer as a PullFailed naming its problem document; refused credentials
    (401, 403) stop the peer: retrying cannot mend them."""
    try:
        problem = response.json()
        reason = f"{problem.get('title', '')}: {problem.get('detail', '')}"
    except ValueError:
        reason = response.text[:200]
    status = response.status_code
    return PullFailed(f"{what} answered {status} {reason}", stop=status in (401, 403))


def _check_key(peer: Peer) -> None:
    """The peer still presents the pinned key, or one its pinned key endorsed
    (``do_follow_key``); a key that changed without proof from the old one stops the peer
    (never followed silently)."""
    identity = fetch_identity(peer.url)
    if identity["exchange_id"] != peer.exchange_id:
        raise PullFailed(
            f"{peer.url} now names itself {identity['exchange_id']}, not {peer.exchange_id}",
            stop=True,
        )
    kid = do_follow_key(peer, identity)
    if kid != peer.key_id:
        raise PullFailed(
            f"the peer's key changed from {peer.fingerprint} to SHA256:{kid} without proof from"
            " the old key: pulls stopped; confirm the new fingerprint with its staff",
            stop=True,
        )


def remote_sets(remote: _Remote) -> list[dict[str, Any]]:
    """Every set the peer lets this exchange read (GET /api/v1/sets, every page)."""
    found: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "100"}
    while True:
        response = remote.get("/api/v1/sets", params)
        if response.status_code != 200:
            raise failure(response, "GET /api/v1/sets")
        try:
            page = response.json()
            found.extend(s for s in page["results"] if isinstance(s, dict))
        except (ValueError, KeyError, TypeError):
            raise PullFailed("GET /api/v1/sets: not a page of sets") from None
        following = page.get("next")
        if not following:
            return found
        params = dict(parse_qsl(urlsplit(str(following)).query))


def set_path(peer: Peer, remote: dict[str, Any]) -> list[str]:
    """The exchanges a listed set's content passed through, its origin first, the peer last."""
    origin = remote.get("origin")
    path = origin.get("path") if isinstance(origin, dict) else []
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        path = ["?"]
    return [*path, peer.exchange_id]


def _refusal(remote: dict[str, Any], path: list[str], own: str) -> str:
    """Why a listed set must not be mirrored ("" when it may): the serving side should not have
    listed it."""
    if own in path:
        return "its content passed through this exchange"
    if "?" in path or len(path) > MAX_HOPS:
        return "its origin path is malformed or longer than any hops allow"
    if remote.get("distribution") != HashSet.Distribution.FEDERATED:
        return f"distribution {remote.get('distribution')!r} is not federated"
    if remote.get("tlp") not in FEDERABLE_TLP:
        return f"TLP {remote.get('tlp')!r} may not leave its exchange"
    return ""


def root_set(remote: dict[str, Any], path: list[str]) -> str:
    """The listed set's slug at its exchange of origin (``path[0]``): its own slug when it is
    the peer's own, else what the peer names as its root ("" when it does not say)."""
    origin = remote.get("origin")
    if not isinstance(origin, dict):
        return str(remote["slug"])[:64]
    root = origin.get("root_set")
    if root is None and len(path) == 2:  # the peer pulls it from its origin: its slug there
        root = origin.get("set")
    return root[:64] if isinstance(root, str) else ""


def ensure_mirror(peer: Peer, remote: dict[str, Any], path: list[str]) -> MirroredSet:
    """The peer's set as a path into a local mirror, created on first sight. The mirror is one
    per origin set: reached already through another peer, the set gets a second path (its own
    cursor) into that mirror, so each value stays one entry here. A new mirror set (owned by
    the peer's organisation, federated, with the remote set's marking, attribution and types)
    changes what members may read: it renews the access generation (``exchange.generation``).
    Locks the origin set's name (two peers' pulls cannot make two mirrors of it)."""
    slug = str(remote["slug"])[:64]
    mirror = MirroredSet.objects.filter(peer=peer, remote_slug=slug).first()
    if mirror is not None:
        return mirror
    root = root_set(remote, path)
    with transaction.atomic():
        hash_set = None
        if root:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s)",
                    [advisory_key(f"federation.mirror:{path[0]}/{root}")],
                )
            hash_set = HashSet.objects.filter(origin_path__0=path[0], origin_root_set=root).first()
        if hash_set is None:
            hash_set = HashSet.objects.create(
                slug=f"{peer.name}--{slug}"[:64],
                name=f"{str(remote.get('name') or slug)[:150]} (from {peer.name})",
                owner_id=peer.organisation_id,
                tlp=remote["tlp"],
                attribution=remote.get("attribution") or HashSet.Attribution.ANONYMOUS,
                distribution=HashSet.Distribution.FEDERATED,
                signal_types=[t for t in remote.get("signal_types") or [] if isinstance(t, str)],
                origin_exchange=peer.exchange_id,
                origin_set=slug,
                origin_url=peer.url,
                origin_path=path,
                origin_root_set=root,
            )
            generation.invalidate_on_commit()
            action = "federation.mirror.created"
        else:
            action = "federation.mirror.path_added"
        mirror = MirroredSet.objects.create(peer=peer, remote_slug=slug, hash_set=hash_set)
        record(
            action,
            obj=mirror,
            details={"peer": peer.name, "remote_set": slug, "set": hash_set.slug,
                     "origin": f"{path[0]}/{root}", "path": path},
        )  # fmt: skip
    return mirror


def _lines(response: requests.Response) -> Iterator[bytes | None]:
    """The NDJSON lines of a streamed answer; None in place of a line past MAX_LINE_BYTES."""
    buffer = b""
    skipping = False
    for chunk in response.iter_content(1 << 16):
        buffer += chunk
        # Walk the lines by offset: cutting each off the front would copy the rest of the
        # buffer once per line.
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line, start = buffer[start:end], end + 1
            if skipping:
                skipping = False
            elif len(line) > MAX_LINE_BYTES:
                yield None
            elif line:
                yield line
        buffer = buffer[start:]
        if len(buffer) > MAX_LINE_BYTES:
            if not skipping:
                yield None
            buffer, skipping = b"", True
    if buffer and not skipping:
        yield buffer


def _parse(line: bytes | None) -> Any:
    """A feed line's JSON, or the ``Refusal`` that ``check_change`` counts it under."""
    if line is None:
        return Refusal("line longer than 1 MiB")
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return Refusal("not JSON")


def _is_checkpoint(item: Any) -> bool:
    return isinstance(item, dict) and "cursor" in item and set(item) <= {"cursor", "end"}


def _read_ahead[T](items: Iterator[T], depth: int = 2) -> Generator[T]:
    """``items``, produced by a thread of their own up to ``depth`` ahead of the consumer, so
    that reading, parsing and checking the peer's next page (Python, and the peer rendering it)
    overlap with the database applying this one. What the producer raises is raised here, in
    order; a consumer that stops early stops the producer at its next item (the caller closes
    the response it reads, which ends a read that waits)."""
    handover: Handover[T] = Handover(depth)

    def produce() -> None:
        try:
            for item in items:
                if not handover.put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            handover.finish(exc)
        else:
            handover.finish()

    threading.Thread(target=produce, name="federation-read-ahead", daemon=True).start()
    try:
        yield from handover
    finally:
        handover.stop()


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """No cyclic garbage collection meanwhile (reference counting still frees everything a pull
    drops: its pages hold no cycles). A page is 5,000 parsed changes, dicts and lists that the
    collector kept re-scanning: it took 3 of the 4.5 µs that parsing and keeping a change cost,
    measured on 100,000 feed lines."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _feed_pages(response: requests.Response, slug: str) -> Iterator[tuple[list[Any], str]]:
    """A streamed change feed cut at its checkpoints: each page of changes with the cursor that
    covers it, up to the end line."""
    page: list[Any] = []
    size = 0
    for line in _lines(response):
        item = _parse(line)
        if _is_checkpoint(item) and isinstance(item["cursor"], str):
            yield page, item["cursor"]
            if item.get("end"):
                return
            page, size = [], 0
        else:
            page.append(item)
            size += len(line) if line else 0
            if len(page) > MAX_PAGE:
                raise PullFailed(f"{slug}: no checkpoint in {MAX_PAGE} changes")
            if size > MAX_PAGE_BYTES:
                raise PullFailed(f"{slug}: no checkpoint in {MAX_PAGE_BYTES:,} bytes")
    raise PullFailed(f"{slug}: the feed stream ended before its end line")


def pull_set(remote: _Remote, peer: Peer, mirror: MirroredSet, own: str) -> Outcome:
    """The peer's feed of one set from the mirror's cursor to its end, each checkpoint applied
    with its cursor; a 410 resyncs from the snapshot. The next page is read and checked while
    this one is applied (``_read_ahead``)."""
    params = {"sets": mirror.remote_slug}
    if mirror.cursor:
        params["cursor"] = mirror.cursor
    response = remote.get("/api/v1/changes", params, stream=True)
    if response.status_code == 410:
        response.close()
        return resync_set(remote, peer, mirror, own)
    if response.status_code != 200:
        raise failure(response, f"GET /api/v1/changes?sets={mirror.remote_slug}")
    outcome = Outcome()
    checked = (
        (check_page(page, peer_exchange=peer.exchange_id, own_exchange=own), cursor)
        for page, cursor in _feed_pages(response, mirror.remote_slug)
    )
    with response, _no_cyclic_gc(), closing(_read_ahead(checked)) as pages:
        for page, cursor in pages:
            outcome.add(do_apply_checked(mirror, page, cursor, peer_exchange=peer.exchange_id))
    return outcome


def _snapshot_chunks(
    response: requests.Response, path: str
) -> Iterator[tuple[list[Any], str | None]]:
    """A streamed snapshot cut into chunks of 5,000 lines, or fewer that come to
    ``RESYNC_CHUNK_BYTES``; the last comes with the end line's cursor."""
    page: list[Any] = []
    size = 0
    for line in _lines(response):
        item = _parse(line)
        if _is_checkpoint(item) and item.get("end") and isinstance(item["cursor"], str):
            yield page, item["cursor"]
            return
        page.append(item)
        size += len(line) if line else 0
        if len(page) >= 5_000 or size >= RESYNC_CHUNK_BYTES:
            yield page, None
            page, size = [], 0
    raise PullFailed(f"{path}: the snapshot ended before its end line")


def resync_set(remote: _Remote, peer: Peer, mirror: MirroredSet, own: str) -> Outcome:
    """The set's snapshot, applied as a resync, chunk by chunk
    (``federation.actions.apply.Resync``), the next chunk read and checked while this one is
    applied."""
    path = f"/api/v1/sets/{mirror.remote_slug}/snapshot"
    response = remote.get(path, stream=True)
    if response.status_code != 200:
        raise failure(response, f"GET {path}")
    checked = (
        (check_page(chunk, peer_exchange=peer.exchange_id, own_exchange=own, active_only=True),
         end)
        for chunk, end in _snapshot_chunks(response, path)
    )  # fmt: skip
    with (
        response,
        _no_cyclic_gc(),
        Resync(mirror, peer_exchange=peer.exchange_id, own_exchange=own) as resync,
        closing(_read_ahead(checked)) as chunks,
    ):
        for chunk, end in chunks:
            resync.add_checked(chunk)
            if end is not None:
                return resync.finish(end)
    raise PullFailed(f"{path}: the snapshot ended before its end line")  # not reached


def backoff(failures: int) -> timedelta:
    """Exponential in the failures in a row, capped, with full jitter on the upper half."""
    base = min(settings.HASHX_FEDERATION_PULL_SECONDS * 2 ** min(failures, 16), BACKOFF_MAX_SECONDS)
    return timedelta(seconds=base * (0.5 + random.random() / 2))  # noqa: S311 - jitter


def do_pull_peer(peer_id: int, *, force: bool = False) -> Report | None:
    """Pull every set a peer lets this exchange read into its mirrors, unless another pull of
    it runs (None) or it is not due (``force`` pulls an active peer now). Audits the pull
    (``federation.pulled`` or ``federation.pull_failed``) and records its outcome on the peer:
    success resets the back-off; a failure backs off with jitter, and one that retrying cannot
    mend (refused credentials, a changed key) stops the peer until staff resume it."""
    peer = Peer.objects.select_related("organisation").filter(pk=peer_id).first()
    if peer is None:
        return None
    report = Report(peer.name)
    if peer.state != Peer.State.ACTIVE or (not force and peer.next_attempt_at > timezone.now()):
        report.skipped = peer.state if peer.state != Peer.State.ACTIVE else "not due"
        return report
    key = advisory_key(f"federation.pull:{peer.pk}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            report.skipped = "another pull of this peer is running"
            return report
    try:
        _pull(peer, report)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
    return report


def _pull(peer: Peer, report: Report) -> None:
    started = timezone.now()
    Peer.objects.filter(pk=peer.pk).update(last_attempt_at=started)
    own = get_identity().exchange_id
    try:
        try:
            check_destination(peer.url)
        except Refused as exc:
            raise PullFailed(f"{peer.url}: {exc}") from None
        try:
            _check_key(peer)
        except Problem as exc:  # the identity document could not be read
            raise PullFailed(f"{peer.url}/.well-known/hashx: {exc.detail}") from None
        remote = _Remote(peer)
        for remote_set in remote_sets(remote):
            slug = str(remote_set.get("slug", ""))
            path = set_path(peer, remote_set)
            reason = _refusal(remote_set, path, own)
            if reason:
                report.refused_sets[slug] = reason
                continue
            mirror = ensure_mirror(peer, remote_set, path)
            outcome = pull_set(remote, peer, mirror, own)
            report.sets[slug] = {
                "applied": outcome.applied, "new": outcome.new, "tombstoned": outcome.tombstoned,
                "refused": outcome.refused, "refusals": outcome.reasons, "cursor": mirror.cursor,
            }  # fmt: skip
        # A mirror the peer no longer serves keeps no stale entries: the listing is complete
        # (every page was read), so a set missing from it, or refused, is gone for this side.
        for mirror in MirroredSet.objects.filter(peer=peer).exclude(remote_slug__in=report.sets):
            why = report.refused_sets.get(mirror.remote_slug, "no longer listed by the peer")
            tombstoned = do_withdraw_mirror(mirror, why)
            if tombstoned:
                report.withdrawn[mirror.remote_slug] = tombstoned
        report.opinions_forwarded = do_forward_opinions(peer, remote.post, failure)
        try:
            report.push_error = do_ensure_push(peer, list(report.sets), own, remote.send)
        except PullFailed as exc:
            report.push_error = str(exc)
    except PullFailed as exc:
        report.error = str(exc)
        _failed(peer, exc, report)
        return
    except Exception as exc:
        # A bug or a lost database here must not stop the other peers' pulls: recorded on this
        # peer like any failure (and logged with its traceback for staff).
        logger.exception("pulling from peer %s failed", peer.name)
        report.error = f"internal error: {type(exc).__name__}: {exc}"
        _failed(peer, PullFailed(report.error), report)
        return
    with transaction.atomic():
        Peer.objects.filter(pk=peer.pk).update(
            failures=0, last_error="", last_success_at=started, last_applied=report.applied,
            next_attempt_at=started + timedelta(seconds=settings.HASHX_FEDERATION_PULL_SECONDS),
        )  # fmt: skip
        record("federation.pulled", obj=peer, details=_details(report))


def _failed(peer: Peer, exc: PullFailed, report: Report) -> None:
    with transaction.atomic():
        current = Peer.objects.select_for_update().get(pk=peer.pk)
        current.failures += 1
        current.last_error = str(exc)
        current.next_attempt_at = timezone.now() + backoff(current.failures)
        if exc.stop and current.state == Peer.State.ACTIVE:
            current.state = Peer.State.STOPPED
        current.save(update_fields=["failures", "last_error", "next_attempt_at", "state"])
        details = {**_details(report), "error": str(exc), "failures": current.failures,
                   "state": current.state}  # fmt: skip
        record("federation.pull_failed", obj=peer, details=details)


def _details(report: Report) -> dict[str, Any]:
    return {
        "peer": report.peer,
        "sets": report.sets,
        "refused_sets": report.refused_sets,
        "withdrawn": report.withdrawn,
        "opinions_forwarded": report.opinions_forwarded,
        "push_error": report.push_error,
    }


def due_peers() -> list[int]:
    """Active peers whose next pull is due, oldest due first."""
    return list(
        Peer.objects.filter(state=Peer.State.ACTIVE, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)
    )
