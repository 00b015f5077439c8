"""One pooled Redis client per process (per URL: tests switch REDIS_URL), with short
timeouts so that a Redis outage fails a request fast instead of hanging it."""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


def redis_client() -> redis.Redis:
    return _client(settings.REDIS_URL)
