"""One pooled Redis client per process (per URL: tests switch REDIS_URL), with short
timeouts so that a Redis outage fails a request fast instead of hanging it."""

from functools import lru_cache

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

# Seconds to connect, and to wait for an answer. A request that needs a Redis that is down
# gives up after two attempts of each (the second on a fresh connection: one pooled before a
# restart of Redis is broken) and answers 503; redis-py's own default, ten retries with
# backoff, would hold it for seconds.
CONNECT_TIMEOUT = 1
READ_TIMEOUT = 2


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=READ_TIMEOUT,
        retry=Retry(NoBackoff(), 1),
    )


def redis_client() -> redis.Redis:
    return _client(settings.REDIS_URL)
