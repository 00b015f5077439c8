"""A typed client for the exchange's member API. Every call is signed; errors raise
``HashxError`` carrying the server's problem document."""

import json as jsonlib
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hashx.auth import DigestedFile, HashxAuth
from hashx.errors import HashxError
from hashx.keys import b64url, key_id_of, possession_statement, public_jwk, raw_public_bytes

_RETRY_STATUSES = {429, 502, 503, 504}
_IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
# Idempotent calls whose repeat also answers as the first did (a repeated DELETE answers 404).
_REPEATABLE = _IDEMPOTENT - {"DELETE"}


def _in_flight(response: requests.Response) -> bool:
    """A 409 that says a request with the same Idempotency-Key is still being carried out."""
    try:
        problem = response.json()
    except ValueError:
        return False
    kind = problem.get("type", "") if isinstance(problem, dict) else ""
    return isinstance(kind, str) and kind.endswith("/idempotency-key-in-flight")


def _retry_after(value: str) -> float | None:
    """Seconds to wait from a Retry-After header (delay seconds or an HTTP date)."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())  # noqa: UP017 - Python 3.10


class Client:
    """``Client("https://hashx.example.org", key)``: ``key`` is the member's Ed25519 private key."""

    def __init__(
        self,
        base_url: str,
        key: Ed25519PrivateKey,
        *,
        timeout: float = 30,
        retries: int = 3,
        max_wait: float = 60,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = HashxAuth(key)
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.session = session or requests.Session()

    # -- transport ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a signed request and return its JSON answer; an error answer raises
        ``HashxError`` with the server's problem document. Retries as ``send`` does."""
        return self._answer(
            self.send(method, path, json=json, params=params, data=data, headers=headers)
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send a signed request, each try signed afresh (a nonce is good once). A 429 is
        retried for any call (the exchange did nothing); 502/503/504 and connection errors only
        for idempotent calls: GET, HEAD, PUT, DELETE, and POSTs with an ``Idempotency-Key``;
        answers that did not come in time for those but DELETE. A POST with an
        ``Idempotency-Key`` that finds the first request with that key still in flight (409
        ``idempotency-key-in-flight``: an earlier try whose answer was lost is still uploading)
        is sent again once it has been answered, which then replays its answer. Waits
        ``Retry-After`` when the answer gives one, else backs off exponentially with jitter."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        keyed = bool((headers or {}).get("Idempotency-Key"))
        idempotent = method in _IDEMPOTENT or keyed
        repeatable = method in _REPEATABLE or keyed
        attempts = self.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            if isinstance(data, DigestedFile):
                data.rewind()
            try:
                response = self.session.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    data=data,
                    headers=headers,
                    auth=self.auth,
                    timeout=self.timeout,
                    stream=stream,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                # No answer in time: the request went out and may have been carried out, so
                # only a call whose repeat answers as the first is sent again (a DELETE
                # repeated answers 404: the first one did delete).
                answered_late = isinstance(exc, requests.ReadTimeout)
                if last or not idempotent or (answered_late and not repeatable):
                    raise
                wait = None
            else:
                status = response.status_code
                retry = (
                    status == 429
                    or (status in _RETRY_STATUSES and idempotent)
                    or (keyed and status == 409 and _in_flight(response))
                )
                if not retry or last:
                    return response
                wait = _retry_after(response.headers.get("Retry-After", ""))
                response.close()
            if wait is None:
                wait = min(2**attempt, 30) * (0.5 + random.random())  # noqa: S311 - jitter
            time.sleep(min(wait, self.max_wait))
        raise AssertionError("unreachable")

    @staticmethod
    def _answer(response: requests.Response) -> Any:
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason, "detail": response.text[:500]}
            raise HashxError(response.status_code, problem if isinstance(problem, dict) else {})
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    PAGE = 500

    def all_pages(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paged list (``results``), following each page's ``next`` to the
        end, ``PAGE`` items at a time."""
        items: list[dict[str, Any]] = []
        page = self.request("GET", path, params={**(params or {}), "limit": self.PAGE})
        while True:
            items.extend(page["results"])
            if not page.get("next"):
                return items
            page = self.request("GET", page["next"])

    # -- identity and keys -------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/whoami")

    def keys(self) -> list[dict[str, Any]]:
        """Every key of your organisation, oldest first (all pages)."""
        return self.all_pages("/api/v1/keys")

    def add_key(
        self, new_key: Ed25519PrivateKey, *, label: str = "", read_only: bool = False
    ) -> dict[str, Any]:
        """Register ``new_key`` for the caller's organisation, proving possession of it."""
        me = self.whoami()
        challenge = self.request("POST", "/api/v1/keys/challenge")["challenge"]
        key_id = key_id_of(new_key)
        proof = new_key.sign(possession_statement(challenge, me["organisation"]["slug"], key_id))
        body = {
            "public_key": public_jwk(raw_public_bytes(new_key.public_key())),
            "label": label,
            "read_only": read_only,
            "challenge": challenge,
            "proof": b64url(proof),
        }
        return self.request("POST", "/api/v1/keys", json=body)

    def revoke_key(self, key_id: str, reason: str) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/keys/{key_id}/revoke", json={"reason": reason})

    def retire_key(self, key_id: str, not_after: str) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/keys/{key_id}/retire", json={"not_after": not_after})

    # -- sets, publishing, feedback ---------------------------------------------------------

    def sets(self) -> list[dict[str, Any]]:
        """Every set you may read, by slug (all pages)."""
        return self.all_pages("/api/v1/sets")

    def get_set(self, slug: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/sets/{slug}")

    def create_set(self, slug: str, name: str, **fields: Any) -> dict[str, Any]:
        return self.request("POST", "/api/v1/sets", json={"slug": slug, "name": name, **fields})

    def grant(
        self, slug: str, organisation: str, *, can_read: bool = True, can_publish: bool = False
    ) -> dict[str, Any]:
        body = {"can_read": can_read, "can_publish": can_publish}
        return self.request("PUT", f"/api/v1/sets/{slug}/grants/{organisation}", json=body)

    def revoke_grant(self, slug: str, organisation: str) -> None:
        """Take back an organisation's grant on a set you own."""
        self.request("DELETE", f"/api/v1/sets/{slug}/grants/{organisation}")

    def update_set(self, slug: str, **changes: Any) -> dict[str, Any]:
        """Change a set you own (PATCH): any of name, description, signal_types, tlp,
        attribution, distribution, pdq_threshold."""
        return self.request("PATCH", f"/api/v1/sets/{slug}", json=changes)

    def publish(
        self,
        slug: str,
        signals: list[dict[str, Any]],
        *,
        atomic: bool = False,
        idempotency_key: str = "",
    ) -> dict[str, Any]:
        """Publish up to 10,000 signals as JSON; returns the batch answer (202)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = {"signals": signals, "atomic": atomic}
        return self.request("POST", f"/api/v1/sets/{slug}/signals", json=body, headers=headers)

    def publish_file(
        self,
        slug: str,
        path: str,
        content_type: str,
        *,
        atomic: bool = False,
        idempotency_key: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Stream a file of any size (NDJSON, CSV or ``<type> <value>`` lines) into a set."""
        body = DigestedFile(path, progress)
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        params = {"atomic": "true"} if atomic else None
        try:
            return self.request(
                "POST", f"/api/v1/sets/{slug}/signals", data=body, headers=headers, params=params
            )
        finally:
            body.close()

    def batch(self, batch_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/batches/{batch_id}")

    def batches(
        self, *, set_slug: str = "", state: str = "", limit: int = 50, cursor: str = ""
    ) -> dict[str, Any]:
        """One page of your organisation's batches, newest first: ``results``, and ``next``
        (the URL of the next page, or None; pass it as ``cursor``)."""
        if cursor:
            return self.request("GET", cursor)
        params = {k: v for k, v in {"set": set_slug, "state": state}.items() if v}
        return self.request("GET", "/api/v1/batches", params={**params, "limit": limit})

    def wait_for_batch(
        self,
        batch_id: str,
        *,
        progress: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll a batch until it is merged (or failed); ``TimeoutError`` after ``timeout``
        seconds (the batch goes on merging: ask again later)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            report = self.batch(batch_id)
            if progress is not None:
                progress(report)
            if report["state"] in ("done", "failed"):
                return report
            if deadline is not None and time.monotonic() + poll > deadline:
                raise TimeoutError(
                    f"batch {batch_id} is still {report['state']} after {timeout:g} s"
                    f" ({report['merged']:,} of {report['accepted']:,} lines merged)"
                )
            time.sleep(poll)

    def retract(self, slug: str, signals: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/sets/{slug}/retractions", json={"signals": signals})

    def opinions(self, slug: str, opinions: list[dict[str, Any]]) -> dict[str, Any]:
        """Each opinion: type and value (or entry), category, optional tags."""
        return self.request("POST", f"/api/v1/sets/{slug}/opinions", json={"signals": opinions})

    # -- change feed ------------------------------------------------------------------------

    def changes(
        self, *, sets: list[str] | None = None, cursor: str = "", limit: int = 1000
    ) -> dict[str, Any]:
        """One page of changes after ``cursor``: ``{"changes": [...], "cursor": …, "more": …}``."""
        params: dict[str, Any] = {"limit": limit}
        if sets:
            params["sets"] = ",".join(sets)
        if cursor:
            params["cursor"] = cursor
        return self.request("GET", "/api/v1/changes", params=params)

    def iter_changes(
        self, *, sets: list[str] | None = None, cursor: str = "", limit: int = 1000
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Every change after ``cursor`` to the end, each with the cursor to resume after it."""
        while True:
            page = self.changes(sets=sets, cursor=cursor, limit=limit)
            for change in page["changes"]:
                yield change, page["cursor"]
            cursor = page["cursor"]
            if not page["more"]:
                return

    def _stream(self, path: str, params: dict[str, Any], *, raw: bool = False) -> Iterator[Any]:
        """The lines of an NDJSON answer, parsed; with ``raw``, change records come as their
        JSON text (for a store that parses them itself) and only cursor lines are parsed. One
        cut short (no ``"end"`` line) raises ``requests.ConnectionError``."""
        response = self.send(
            "GET", path, params=params, headers={"Accept": "application/x-ndjson"}, stream=True
        )
        with response:
            if response.status_code >= 400:
                self._answer(response)
            for line in response.iter_lines(chunk_size=1 << 16):
                if not line:
                    continue
                if raw and line.startswith(b'{"entry":'):
                    yield line.decode()
                    continue
                item = jsonlib.loads(line)
                if raw and "entry" in item:
                    yield line.decode()
                    continue
                yield item
                if item.get("end"):
                    return
        raise requests.ConnectionError(f"the answer to {path} ended before its last cursor")

    def stream_changes(
        self, *, sets: list[str] | None = None, cursor: str = "", raw: bool = False
    ) -> Iterator[Any]:
        """Every change after ``cursor`` in one NDJSON response: change records, a
        ``{"cursor": …}`` checkpoint after each server page, and a last
        ``{"cursor": …, "end": true}``. Raises ``HashxError`` (410: start from snapshots).
        ``raw``: change records as JSON text, cursor lines parsed."""
        params: dict[str, Any] = {}
        if sets:
            params["sets"] = ",".join(sets)
        if cursor:
            params["cursor"] = cursor
        return self._stream("/api/v1/changes", params, raw=raw)

    def snapshot(self, slug: str, *, raw: bool = False) -> Iterator[Any]:
        """Every active entry of a set from one consistent snapshot, streamed; the last item is
        ``{"cursor": …, "end": True}``: follow ``changes`` from that cursor."""
        return self._stream(f"/api/v1/sets/{slug}/snapshot", {}, raw=raw)

    # -- subscriptions (webhooks) ------------------------------------------------------------

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription of your organisation, oldest first (all pages)."""
        return self.all_pages("/api/v1/subscriptions")

    def subscribe(self, url: str, sets: list[str], **fields: Any) -> dict[str, Any]:
        """``fields``: signal_types, labels, description, cursor (default: from now), active."""
        return self.request(
            "POST", "/api/v1/subscriptions", json={"url": url, "sets": sets, **fields}
        )

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/subscriptions/{subscription_id}")

    def update_subscription(self, subscription_id: str, **changes: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v1/subscriptions/{subscription_id}", json=changes)

    def delete_subscription(self, subscription_id: str) -> None:
        self.request("DELETE", f"/api/v1/subscriptions/{subscription_id}")

    def deliveries(self, subscription_id: str, *, limit: int = 50) -> dict[str, Any]:
        return self.request(
            "GET", f"/api/v1/subscriptions/{subscription_id}/deliveries", params={"limit": limit}
        )

    def redeliver(
        self, subscription_id: str, *, cursor: str = "", delivery: str = ""
    ) -> dict[str, Any]:
        body = {k: v for k, v in {"cursor": cursor, "delivery": delivery}.items() if v}
        return self.request("POST", f"/api/v1/subscriptions/{subscription_id}/redeliver", json=body)

    # -- feed tokens (read-only, for partner systems: TAXII, MISP, scheduled pulls) ----------

    def feed_tokens(self) -> list[dict[str, Any]]:
        """Your organisation's feed tokens (never their secrets), oldest first."""
        return self.all_pages("/api/v1/feed-tokens")

    def create_feed_token(
        self, name: str, sets: list[str], *, expires_at: str | None = None
    ) -> dict[str, Any]:
        """A read-only token for the feed endpoints of ``sets``; its ``token`` (the secret) is
        in this answer only."""
        body: dict[str, Any] = {"name": name, "sets": sets}
        if expires_at:
            body["expires_at"] = expires_at
        return self.request("POST", "/api/v1/feed-tokens", json=body)

    def revoke_feed_token(self, token_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/feed-tokens/{token_id}")

    def exchange_keys(self) -> list[dict[str, Any]]:
        """The exchange's public keys (JWKs) from /.well-known/hashx: they verify webhooks."""
        return exchange_keys(self.base_url, session=self.session, timeout=self.timeout)

    # -- matching ----------------------------------------------------------------------------

    MATCH_BATCH = 10_000

    def match(
        self,
        signals: list[dict[str, Any]],
        *,
        sets: list[str] | None = None,
        max_distance: int | None = None,
    ) -> dict[str, Any]:
        """Which entries you may read match each signal (``type``, ``value``; ``pdq`` within
        Hamming distance, ``vpdq`` frame by frame). Sent 10,000 at a time; returns
        ``{"results": [...], "position": …}`` with one result per signal, in order, and the
        oldest index position among the answers.
        ``sets`` and ``max_distance`` apply to signals that do not give their own."""
        results: list[dict[str, Any]] = []
        positions: list[str] = []
        for start in range(0, len(signals), self.MATCH_BATCH):
            queries = []
            for item in signals[start : start + self.MATCH_BATCH]:
                query = dict(item)
                if sets:
                    query.setdefault("sets", sets)
                if max_distance is not None and query.get("type") in ("pdq", "vpdq"):
                    query.setdefault("max_distance", max_distance)
                queries.append(query)
            answer = self.request("POST", "/api/v1/match", json={"signals": queries})
            results.extend(answer["results"])
            if answer.get("position"):
                positions.append(answer["position"])
        return {"results": results, "position": positions[0] if positions else None}

    # -- audit -------------------------------------------------------------------------------

    def audit_events(self, **filters: str) -> dict[str, Any]:
        return self.request("GET", "/api/v1/audit/events", params=filters)

    def audit_checkpoint(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/audit/checkpoint")


def exchange_keys(
    base_url: str, *, session: requests.Session | None = None, timeout: float = 30
) -> list[dict[str, Any]]:
    """An exchange's public keys (JWKs) from its /.well-known/hashx, no key needed; HashxError
    when the answer is an error or not an exchange's."""
    url = f"{base_url.rstrip('/')}/.well-known/hashx"
    response = (session or requests).get(url, timeout=timeout)
    try:
        keys = Client._answer(response)["jwks"]["keys"]
    except (ValueError, KeyError, TypeError):
        keys = None
    if not isinstance(keys, list):
        detail = f"{url} does not publish an exchange's keys"
        raise HashxError(response.status_code, {"title": "Not an exchange", "detail": detail})
    return keys
