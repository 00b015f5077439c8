"""What each problem type means, for its page at ``/problems/<slug>`` (the ``type`` URI of every
problem document): what happened, the usual cause, how to fix it, and a request that gets it
right. One entry per slug of ``exchange.problems.PROBLEM_TYPES``; a test holds that every type
has one. ``{public_url}`` in an example stands for this exchange's public URL."""

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemDoc:
    happened: str
    cause: str
    fix: str
    example: str


_SIGNED = "hashx whoami    # the hashx client signs every request for you"
_SIGN_FIX = (
    "Sign with the hashx client (hashx.Client, hashx.HashxAuth for requests, or the hashx "
    "command), which covers exactly what the exchange asks for."
)

DOCS: dict[str, ProblemDoc] = {
    "validation": ProblemDoc(
        "A field of the request is missing, too long, of the wrong type or not an allowed value.",
        "A typo in a field name or value, a slug with capitals or spaces, a list over its bound.",
        "Read `errors`: each names the field (e.g. `signals.3.value`) and why; fix those fields.",
        'POST /api/v1/sets  {"slug": "acme-csam", "name": "Acme CSAM hashes"}',
    ),
    "malformed-request": ProblemDoc(
        "The body could not be parsed as the content type it was sent as.",
        "Invalid JSON (a trailing comma, single quotes), JSON nested deeper than 64 levels, or a "
        "Content-Type that does not match the body.",
        "Send valid JSON with `Content-Type: application/json` (or NDJSON / CSV to publish).",
        'POST /api/v1/match  Content-Type: application/json  {"signals": [{"type": "md5", '
        '"value": "…"}]}',
    ),
    "empty-body": ProblemDoc(
        "An operation that takes a body received none, or one without a Content-Length.",
        "A POST, PUT or PATCH sent with no body, or streamed with chunked transfer coding.",
        "Send `{}` where every field may be left out; send a Content-Length with every body.",
        "POST /api/v1/subscriptions/ID/redeliver  Content-Type: application/json  {}",
    ),
    "authentication-failed": ProblemDoc(
        "The request could not be authenticated.",
        "A signature the exchange could not use for a reason not covered by a narrower type.",
        _SIGN_FIX,
        _SIGNED,
    ),
    "signature-missing": ProblemDoc(
        "The request carries no signature tagged `hashx`, and this endpoint needs one.",
        "An unsigned request (curl, a browser) to a member endpoint.",
        "Sign every API request with your organisation's Ed25519 key (RFC 9421); the "
        "Accept-Signature header of the answer says what to cover. " + _SIGN_FIX,
        _SIGNED,
    ),
    "signature-malformed": ProblemDoc(
        "The Signature-Input or Signature header is not a valid structured field, or one of "
        "them is missing.",
        "A hand-built header, or a proxy that rewrote or dropped one of the two headers.",
        _SIGN_FIX + " Make sure proxies pass both headers unchanged.",
        _SIGNED,
    ),
    "signature-incomplete": ProblemDoc(
        "The signature does not cover every required component.",
        'A signer that covers only "@method", or leaves out "content-digest" on a request with '
        "a body.",
        'Cover "@method" "@target-uri" and, with a body, "content-digest" (RFC 9530, sha-256).',
        'Signature-Input: hashx=("@method" "@target-uri" "content-digest");created=…;'
        'keyid="…";nonce="…";alg="ed25519";tag="hashx"',
    ),
    "algorithm-unsupported": ProblemDoc(
        "The signature names an algorithm other than `ed25519`.",
        "A signer configured for RSA, ECDSA or HMAC.",
        'Sign with an Ed25519 key and `alg="ed25519"` (or leave `alg` out).',
        "hashx keygen --out acme.pem    # an Ed25519 key",
    ),
    "signature-stale": ProblemDoc(
        "The signature's `created` time is older than the exchange allows (300 s by default).",
        "A clock running behind, or a signed request kept and sent later.",
        "Sign each request just before sending it, and keep the clock in sync (NTP).",
        _SIGNED,
    ),
    "signature-future": ProblemDoc(
        "The signature's `created` time lies ahead of the exchange's clock by more than allowed.",
        "A clock running ahead.",
        "Keep the clock in sync (NTP); sign with the current time.",
        _SIGNED,
    ),
    "key-unknown": ProblemDoc(
        "No key with the signature's `keyid` is registered.",
        "The public key was never registered, or the request is signed with another key file "
        "than the one registered (HASHX_KEY names the wrong file).",
        "Register the public key (staff: admin or `manage.py create_member`/`add_key`), or sign "
        "with the key that is registered; `hashx keys list` shows your keys.",
        'make manage ARGS="add_key acme acme.pub.pem"   then   hashx whoami',
    ),
    "key-revoked": ProblemDoc(
        "The key that signed was revoked.",
        "The key was revoked by your organisation or by staff, e.g. after a suspected leak.",
        "Sign with another active key; add one with `hashx keys add NEW.pem` from a working key, "
        "or ask staff to register one.",
        "hashx --key new.pem whoami",
    ),
    "key-expired": ProblemDoc(
        "The key that signed was retiring and its `not_after` time has passed.",
        "A key rotation finished and this client still uses the old key.",
        "Sign with the key that replaced it.",
        "hashx --key new.pem whoami",
    ),
    "organisation-suspended": ProblemDoc(
        "The organisation that owns the key is suspended.",
        "Coalition staff suspended the organisation.",
        "Contact the coalition's staff; requests work again once they reactivate it.",
        _SIGNED,
    ),
    "organisation-pending": ProblemDoc(
        "The organisation that owns the key is not approved yet.",
        "A new member that staff have not approved.",
        "Ask staff to approve it (admin, or `manage.py create_member … --active`).",
        "make manage ARGS=\"create_member acme --name 'Acme' --public-key acme.pub.pem --active\"",
    ),
    "digest-mismatch": ProblemDoc(
        "The body's SHA-256 does not match the signed Content-Digest header.",
        "The body changed after it was signed (a proxy re-encoded it, a retry sent other bytes).",
        "Compute Content-Digest (RFC 9530, sha-256) over exactly the bytes you send, then sign.",
        "Content-Digest: sha-256=:<base64 of SHA-256 of the body>:",
    ),
    "signature-invalid": ProblemDoc(
        "The Ed25519 signature does not verify over the request as the exchange rebuilt it.",
        "Most often the client signed another URL than the exchange's public URL: `@target-uri` "
        "is rebuilt from HASHX_PUBLIC_URL, so signing for http://localhost:8000 while the "
        "exchange's public URL is http://127.0.0.1:8000 fails (the detail names the URL the "
        "exchange verified against). Else: another key than `keyid`, or a changed method or "
        "query.",
        "Use exactly the exchange's public URL as the client's base URL (`api_root` at "
        "/.well-known/hashx shows it), and sign with the key named by `keyid`.",
        "HASHX_URL={public_url} hashx whoami",
    ),
    "nonce-replayed": ProblemDoc(
        "The signature's nonce was already used with this key.",
        "A signed request sent twice (a naive retry), or two requests signed with one nonce.",
        "Sign every try afresh with a new random nonce (the hashx client does).",
        _SIGNED,
    ),
    "replay-check-unavailable": ProblemDoc(
        "The exchange cannot check the nonce now (Redis is unreachable).",
        "Redis restarting or down.",
        "Retry after the Retry-After header's seconds; the hashx client does.",
        _SIGNED,
    ),
    "key-read-only": ProblemDoc(
        "A read-only key signed a request that changes something.",
        "A key registered with `read_only` used for publishing or administration.",
        "Sign writes with a key that is not read-only.",
        "hashx --key publisher.pem publish --set acme-csam hashes.ndjson",
    ),
    "not-federable": ProblemDoc(
        "A set was to be federated (shared with peer exchanges) under a TLP marking that may not "
        "leave this exchange.",
        "`distribution: federated` asked of, or kept for, a set marked TLP:AMBER, TLP:AMBER+STRICT "
        "or TLP:RED: only TLP:CLEAR and TLP:GREEN sets ever leave an exchange.",
        "Mark the set TLP:GREEN or TLP:CLEAR if its content may travel to other exchanges, or keep "
        "its distribution `granted` or `coalition`.",
        'PATCH /api/v1/sets/acme-csam  {"distribution": "federated", "tlp": "green"}',
    ),
    "token-unknown": ProblemDoc(
        "The bearer token (or HTTP Basic password) is not a feed token this exchange issued.",
        "A token copied incompletely, one from another exchange, or a member key's text sent "
        "as a token.",
        "Create a feed token with `hashx token create NAME --sets SLUG` and send the whole "
        "secret it prints once (it starts with `hxft_`).",
        "GET /taxii2/  Authorization: Bearer hxft_…",
    ),
    "token-revoked": ProblemDoc(
        "The feed token was revoked, by its organisation or by staff.",
        "A token thought leaked, or one retired after the partner system that used it moved.",
        "Create a new token (`hashx token create`) and put it in the partner system's settings.",
        "hashx token create opencti --sets acme-csam",
    ),
    "token-expired": ProblemDoc(
        "The feed token's `expires_at` has passed (90 days after creation unless chosen).",
        "A token created for a trial, or one nobody renewed.",
        "Create a new token, with a later `expires_at` if the partner needs it for longer.",
        "hashx token create misp --sets acme-csam --expires-at 2027-06-30T00:00:00Z",
    ),
    "token-not-accepted": ProblemDoc(
        "A feed token was sent to an endpoint that does not take one, or with a write.",
        "Feed tokens only read the feeds (TAXII, the MISP feed, GET changes and snapshots); "
        "everything else needs a request signed with a member key.",
        "Sign the request with your organisation's key (the hashx client does), or read a feed "
        "endpoint with the token.",
        "GET /api/v1/changes?sets=acme-csam  Authorization: Bearer hxft_…",
    ),
    "forbidden": ProblemDoc(
        "You may not do this, although you may see the object.",
        "Publishing to a set you may only read, or changing a set you do not own.",
        "Ask the set's owner for the right (`hashx sets grant SLUG ORG --publish`).",
        "hashx sets grant acme-csam globex --publish    # run by the owner",
    ),
    "not-found": ProblemDoc(
        "Nothing is there, or nothing you may see: sets you may not read answer 404, not 403.",
        "A typo in a slug or id, an endpoint that does not exist, or a set not shared with you.",
        "List what you may see (`hashx sets list`), or ask the owner to grant you the set.",
        "GET /api/v1/sets",
    ),
    "method-not-allowed": ProblemDoc(
        "The endpoint exists but not with this HTTP method.",
        "A GET where a POST is needed, or the other way round.",
        "See /api/v1/docs for the methods each endpoint takes.",
        "POST /api/v1/sets/acme-csam/signals",
    ),
    "not-acceptable": ProblemDoc(
        "The exchange cannot answer in a media type the Accept header allows.",
        "An Accept header naming only a type the endpoint does not produce.",
        "Accept `application/json` (or `application/x-ndjson` for the streamed feed).",
        "GET /api/v1/changes  Accept: application/x-ndjson",
    ),
    "conflict": ProblemDoc(
        "The request conflicts with the current state.",
        "Creating something that exists (a set slug already taken), or a change that the "
        "object's state does not allow.",
        "Choose another name, or read the object's state first.",
        "hashx sets create acme-csam-2 --name 'Acme CSAM hashes 2'",
    ),
    "idempotency-key-in-flight": ProblemDoc(
        "A request with this Idempotency-Key is still being processed.",
        "A retry sent while the first try is still running.",
        "Wait and retry with the same key: once the first finishes, the retry replays its answer.",
        "POST /api/v1/sets/acme-csam/signals  Idempotency-Key: upload-2026-12-04",
    ),
    "cursor-expired": ProblemDoc(
        "The cursor is older than the exchange's tombstone retention (90 days by default).",
        "A copy not synced for longer than the retention.",
        "Start again from each set's snapshot (`hashx sync` does it by itself).",
        "GET /api/v1/sets/acme-csam/snapshot",
    ),
    "proof-of-possession-failed": ProblemDoc(
        "The new key's proof does not verify.",
        "The proof was made with another key than the one being added, or over another challenge.",
        "Use `hashx keys add NEW.pem`, which fetches a challenge and proves possession for you.",
        "hashx keys add new.pem --label rotation-2026",
    ),
    "payload-too-large": ProblemDoc(
        "The body is over the exchange's limit (10 MiB by default), or a JSON list holds more "
        "than 10,000 items.",
        "A large publish or match sent as one JSON document.",
        "Stream large publishes as NDJSON, CSV or text (any size); split large matches.",
        "hashx publish --set acme-csam big.ndjson    # streamed, any size",
    ),
    "unsupported-media-type": ProblemDoc(
        "The body's Content-Type is not one this endpoint reads.",
        "A missing Content-Type, or form encoding.",
        "Send `application/json`; to publish, also `application/x-ndjson`, `text/csv` or "
        "`text/plain`.",
        "POST /api/v1/sets/acme-csam/signals  Content-Type: application/x-ndjson",
    ),
    "idempotency-key-mismatch": ProblemDoc(
        "This Idempotency-Key was used before for a different request.",
        "One key reused for another set, content type, `atomic` flag or body.",
        "Use a new key for every distinct upload; reuse a key only to retry the same one.",
        "hashx publish --set acme-csam --idempotency-key upload-2 hashes.ndjson",
    ),
    "rate-limited": ProblemDoc(
        "Too many requests in a short time.",
        "A tight loop, or many clients sharing one key.",
        "Wait the Retry-After header's seconds, then retry (the hashx client does).",
        _SIGNED,
    ),
    "bad-request": ProblemDoc(
        "The HTTP request was refused before it reached the API.",
        "A malformed request line or header, an unknown transfer coding, or a Host the exchange "
        "does not serve (see ALLOWED_HOSTS).",
        "Send well-formed HTTP/1.1 to the exchange's own host name.",
        "GET {public_url}/healthz",
    ),
    "request-timeout": ProblemDoc(
        "The request's head, or its body, stopped arriving.",
        "A slow or stalled network, or a client that opened a connection and sent nothing.",
        "Send the whole head at once and do not pause a body's upload for long.",
        "GET /healthz",
    ),
    "uri-too-long": ProblemDoc(
        "The request line is longer than 4,094 bytes.",
        "Too many set slugs or filters in the query string.",
        "Send fewer parameters per request (at most 100 sets), or use a POST body where one "
        "exists.",
        "GET /api/v1/changes?sets=acme-csam,globex-terror",
    ),
    "expectation-failed": ProblemDoc(
        "The Expect header asks for something other than `100-continue`.",
        "A client sending an unusual Expect header.",
        "Drop the Expect header, or send `Expect: 100-continue`.",
        "POST /api/v1/sets/acme-csam/signals  Expect: 100-continue",
    ),
    "header-fields-too-large": ProblemDoc(
        "A header field is over 8,190 bytes, there are more than 100, or the head is over 64 KiB.",
        "Huge cookies or tokens, or a proxy adding many headers.",
        "Send fewer and shorter header fields.",
        _SIGNED,
    ),
    "server-error": ProblemDoc(
        "The exchange failed to answer; the error is logged with the request id.",
        "A bug in the exchange.",
        "Retry later; if it persists, tell the coalition's staff the X-Request-ID of the answer.",
        "GET /readyz",
    ),
    "not-ready": ProblemDoc(
        "The exchange is up but something it needs is not (the detail names it).",
        "PostgreSQL or Redis down, or no Celery worker running.",
        "Staff: start what `failed` names (`make run` starts everything).",
        "GET /readyz",
    ),
    "service-unavailable": ProblemDoc(
        "A service the exchange depends on (PostgreSQL or Redis) is unavailable just now.",
        "A database or Redis restart, or a network fault.",
        "Retry after the Retry-After header's seconds; the hashx client does.",
        _SIGNED,
    ),
}


def doc_for(slug: str, title: str) -> ProblemDoc:
    """The page's text; a type not described yet still gets a page, never an error."""
    return DOCS.get(slug) or ProblemDoc(
        f"{title}.",
        "The answer's `detail` names the cause for the request at hand.",
        "See the API documentation at /api/v1/docs.",
        "GET /api/v1/docs",
    )
