"""Quotas as Redis token buckets: one Lua script, one round trip per check.

A bucket holds up to ``limit`` tokens and refills at ``limit / window`` tokens a second: 10
requests a second is a bucket of 10 refilled 10 a second; 100,000 signals a day a bucket of
100,000 refilled over 24 hours. A check takes ``cost`` tokens if at least ``minimum`` are there
(``minimum`` = ``cost``: all or nothing; a streamed upload whose size is known only once read
checks ``minimum`` = 1, ``cost`` = 0, and is charged afterwards with ``minimum`` = -inf, which
may leave the bucket in debt until it refills). Refused, it says how long until the tokens are
there (``Retry-After``). Clock: the caller's, read once (``time.time()``), passed to the script.

Answers carry the IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers):
``RateLimit-Policy: "requests";q=10;w=1`` and ``RateLimit: "requests";r=9;t=1``.
"""

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.http import HttpRequest

from exchange import metrics
from exchange.kv import redis_client
from exchange.problems import Problem

_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local minimum = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local allowed = 0
if tokens >= minimum then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return {allowed, tostring(tokens)}
"""

_UNBOUNDED = -1e18


@dataclass(frozen=True)
class Quota:
    """``limit`` units per ``window`` seconds, named in the headers and in the metrics."""

    name: str
    limit: int
    window: int

    @property
    def rate(self) -> float:
        return self.limit / self.window


@dataclass(frozen=True)
class Decision:
    quota: Quota
    allowed: bool
    tokens: float
    minimum: float

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens))

    @property
    def retry_after(self) -> int:
        """Seconds until ``minimum`` tokens are there (0 when allowed)."""
        if self.allowed:
            return 0
        return max(1, math.ceil((self.minimum - self.tokens) / self.quota.rate))

    @property
    def reset(self) -> int:
        """Seconds until the bucket is full again."""
        return max(0, math.ceil((self.quota.limit - self.tokens) / self.quota.rate))


def _key(quota: Quota, owner: object) -> str:
    return f"hashx:bucket:{quota.name}:{owner}"


def take(
    quota: Quota,
    owner: object,
    cost: float = 1,
    *,
    minimum: float | None = None,
    request: HttpRequest | None = None,
) -> Decision:
    """Take ``cost`` tokens from ``owner``'s bucket if at least ``minimum`` (default ``cost``)
    are there. The decision is kept on ``request`` for the response's RateLimit headers."""
    need = cost if minimum is None else minimum
    allowed, tokens = redis_client().eval(
        _BUCKET, 1, _key(quota, owner), quota.limit, repr(quota.rate), repr(time.time()), cost,
        repr(need),
    )  # fmt: skip
    decision = Decision(quota, bool(int(allowed)), float(tokens), need)
    if request is not None:
        decisions = getattr(request, "hashx_ratelimits", None)
        if decisions is None:
            decisions = []
            request.hashx_ratelimits = decisions  # type: ignore[attr-defined]
        decisions[:] = [d for d in decisions if d.quota.name != quota.name] + [decision]
    return decision


def charge(quota: Quota, owner: object, cost: float) -> Decision:
    """Count ``cost`` units already used, whatever is left (the bucket may go into debt)."""
    return take(quota, owner, cost, minimum=_UNBOUNDED)


def reset(quota_name: str, owner: object) -> None:
    """Fill ``owner``'s bucket again (staff changing a quota start it afresh)."""
    redis_client().delete(f"hashx:bucket:{quota_name}:{owner}")


def refuse_unless_allowed(decision: Decision, what: str) -> None:
    """429 ``rate-limited`` with Retry-After and the RateLimit headers when refused."""
    if decision.allowed:
        return
    metrics.RATE_LIMITED.labels(decision.quota.name).inc()
    quota = decision.quota
    if decision.minimum > quota.limit:
        detail = (
            f"This request needs {int(decision.minimum)} {what}, more than your whole quota of "
            f"{quota.limit} per {quota.window} s: send it in smaller parts."
        )
    else:
        detail = (
            f"Your organisation's quota of {quota.limit} {what} per {quota.window} s is used "
            f"up; retry in {decision.retry_after} s."
        )
    headers = {"Retry-After": str(decision.retry_after), **ratelimit_headers([decision])}
    raise Problem("rate-limited", detail, headers=headers, quota=quota.name)


def ratelimit_headers(decisions: Iterable[Decision]) -> dict[str, str]:
    decisions = list(decisions)
    if not decisions:
        return {}
    return {
        "RateLimit-Policy": ", ".join(
            f'"{d.quota.name}";q={d.quota.limit};w={d.quota.window}' for d in decisions
        ),
        "RateLimit": ", ".join(f'"{d.quota.name}";r={d.remaining};t={d.reset}' for d in decisions),
    }
