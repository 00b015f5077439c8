"""Typed readers for environment variables (healthchecks' envbool/envint habit).

Every reader raises ``ImproperlyConfigured`` naming the variable when its value is bad, so a
misconfigured deployment fails at start-up with a message an operator can act on.
"""

import ipaddress
import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_secret(name: str, default: str = "") -> str:
    """Read ``NAME`` or, when ``NAME_FILE`` is set, the stripped contents of that file."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc
        if not value:
            raise ImproperlyConfigured(f"{name}_FILE: {path} is empty")
        return value
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false, 1/0, yes/no or on/off, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> list[str]:
    """A comma-separated list of CIDR networks ("127.0.0.0/8,::1/128")."""
    networks = env_list(name, [])
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {network!r} is not an IP network") from None
    return networks


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = os.environ.get(name, default).strip().upper()
    if value not in choices:
        raise ImproperlyConfigured(
            f"{name}: expected one of {', '.join(sorted(choices))}, got {value!r}"
        )
    return value


def parse_public_url(name: str, raw: str) -> str:
    """Validate the public origin the exchange is reached at; returns it without a trailing '/'."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImproperlyConfigured(
            f"{name}: expected an http(s) origin like https://hashx.example.org, got {raw!r}"
        )
    if parts.query or parts.fragment:
        raise ImproperlyConfigured(f"{name}: must not carry a query or fragment, got {raw!r}")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ImproperlyConfigured(f"{name}: bad port in {raw!r}") from None
    return raw.strip().rstrip("/")


def parse_database_url(name: str, raw: str) -> dict[str, object]:
    """Turn ``postgres://user:pass@host:port/db?opt=v`` into a Django DATABASES entry.

    ``?host=/path`` selects a Unix socket directory, as libpq does.
    """
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"{name}: expected a postgres:// URL, got scheme {parts.scheme!r}"
        )
    options = dict(parse_qsl(parts.query))
    host = options.pop("host", None) or (unquote(parts.hostname) if parts.hostname else "")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name}: bad port in the URL") from None
    db_name = unquote(parts.path.lstrip("/"))
    if not db_name:
        raise ImproperlyConfigured(f"{name}: the URL names no database")
    options.setdefault("connect_timeout", "5")
    return {
        "ENGINE": "exchange.postgres",
        "NAME": db_name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(port or ""),
        "OPTIONS": options,
    }


def parse_redis_url(name: str, raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(
            f"{name}: expected a redis://, rediss:// or unix:// URL, got {raw!r}"
        )
    if parts.scheme == "unix" and not parts.path:
        raise ImproperlyConfigured(f"{name}: a unix:// URL needs a socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ImproperlyConfigured(f"{name}: the URL names no host")
    return raw.strip()


def celery_broker_url(redis_url: str) -> str:
    """The Redis of ``redis_url`` as kombu spells it: a Unix socket is ``redis+socket://`` (redis-py
    says ``unix://``), and its database number ``virtual_host`` (kombu ignores ``db`` there and
    used database 0, whatever ``REDIS_URL`` named: queues and the rest of Redis parted)."""
    if redis_url.startswith("unix://"):
        path, _, query = redis_url.removeprefix("unix://").partition("?")
        params = [("virtual_host" if k == "db" else k, v) for k, v in parse_qsl(query)]
        return "redis+socket://" + path + (f"?{urlencode(params)}" if params else "")
    return redis_url
