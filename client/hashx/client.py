"""A typed client for the exchange's member API. Every call is signed; errors raise
``HashxError`` carrying the server's problem document."""

import random
import time
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hashx.auth import HashxAuth
from hashx.errors import HashxError
from hashx.keys import b64url, key_id_of, possession_statement, public_jwk, raw_public_bytes

_RETRY_STATUSES = {429, 502, 503, 504}


class Client:
    """``Client("https://hashx.example.org", key)``: ``key`` is the member's Ed25519 private key."""

    def __init__(
        self,
        base_url: str,
        key: Ed25519PrivateKey,
        *,
        timeout: float = 30,
        retries: int = 3,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = HashxAuth(key)
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()

    # -- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Any:
        """Send a signed request; GETs are retried with back-off on 429/5xx and connection
        errors (each try is signed afresh: a nonce is good once)."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        attempts = self.retries + 1 if method == "GET" else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session.request(
                    method, url, json=json, params=params, auth=self.auth, timeout=self.timeout
                )
            except requests.ConnectionError:
                if last:
                    raise
            else:
                if response.status_code not in _RETRY_STATUSES or last:
                    return self._answer(response)
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    time.sleep(min(int(retry_after), 60))
                    continue
            time.sleep(min(2**attempt, 30) * (0.5 + random.random()))  # noqa: S311 - jitter
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

    # -- identity and keys -------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/whoami")

    def keys(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/v1/keys")["keys"]

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

    # -- audit -------------------------------------------------------------------------------

    def audit_events(self, **filters: str) -> dict[str, Any]:
        return self.request("GET", "/api/v1/audit/events", params=filters)

    def audit_checkpoint(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/audit/checkpoint")
