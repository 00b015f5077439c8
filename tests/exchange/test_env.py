"""The settings readers refuse bad values by naming the variable."""

import json
import os
import subprocess
import sys

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from kombu import Connection
from kombu.transport import redis as kombu_redis

from exchange import env
from tests.conftest import REPO_ROOT


def test_it_reads_booleans_and_refuses_nonsense(monkeypatch):
    monkeypatch.setenv("DEBUG", "yes")
    assert env.env_bool("DEBUG") is True
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        env.env_bool("DEBUG")


def test_it_refuses_a_port_that_is_not_a_number(monkeypatch):
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ImproperlyConfigured, match="PORT: expected an integer"):
        env.env_int("PORT", 8000, minimum=1)


def test_it_reads_a_secret_from_its_file(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert env.env_secret("SECRET_KEY") == "s3cret"
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FILE"):
        env.env_secret("SECRET_KEY")


def test_it_parses_a_database_url_with_a_socket_directory():
    db = env.parse_database_url("DATABASE_URL", "postgresql://postgres:@/hashx?host=/var/run/pg")
    assert (db["NAME"], db["HOST"], db["USER"]) == ("hashx", "/var/run/pg", "postgres")
    db = env.parse_database_url(
        "DATABASE_URL", "postgres://u:p%40ss@db.internal:6543/x?sslmode=require"
    )
    assert (db["HOST"], db["PORT"], db["PASSWORD"]) == ("db.internal", "6543", "p@ss")
    assert db["OPTIONS"] == {"sslmode": "require", "connect_timeout": "5"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://localhost/x"),
        ("DATABASE_URL", "postgres://localhost"),
        ("REDIS_URL", "http://localhost:6379"),
        ("HASHX_PUBLIC_URL", "ftp://exchange.example"),
        ("HASHX_PUBLIC_URL", "https://exchange.example/?q=1"),
    ],
)
def test_it_refuses_a_bad_url_by_name(name, value):
    parse = {
        "DATABASE_URL": env.parse_database_url,
        "REDIS_URL": env.parse_redis_url,
        "HASHX_PUBLIC_URL": env.parse_public_url,
    }[name]
    with pytest.raises(ImproperlyConfigured, match=name):
        parse(name, value)


def test_kombu_gets_the_socket_spelling_of_a_unix_redis_url():
    assert env.celery_broker_url("unix:///tmp/r.sock") == "redis+socket:///tmp/r.sock"
    assert env.celery_broker_url("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize(
    ("url", "db"), [("unix:///tmp/r.sock?db=3", 3), ("unix:///tmp/r.sock", 0), ("redis://h/5", 5)]
)
def test_celery_queues_in_the_redis_database_the_rest_of_the_exchange_uses(url, db):
    # kombu ignores db= on a socket URL: it queued in database 0 while REDIS_URL named 3.
    connection = Connection(env.celery_broker_url(url))
    channel = kombu_redis.Channel.__new__(kombu_redis.Channel)
    channel.connection = connection.transport
    assert channel._connparams()["db"] == db
    assert redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db", 0) == db


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "perhaps"),
        ("LOG_LEVEL", "LOUD"),
        ("DATABASE_URL", "sqlite:///x.db"),
        ("PORT", "-1"),
        ("HASHX_MERGE_PARTS", "3"),
        ("DATABASE_REPLICA_URL", "mysql://replica/hashx"),
        ("HASHX_REPLICA_RETRY_SECONDS", "-5"),
        ("HASHX_DATABASE_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_the_exchange_refuses_to_start_with_a_bad_setting(name, value):
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT,
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.strip().splitlines()[-1]


def test_a_replica_url_configures_the_replica_database_and_none_leaves_it_out():
    show = (
        "import django, json; django.setup(); from django.conf import settings;"
        " print(json.dumps(settings.DATABASES.get('replica'), default=repr))"
    )

    def replica(**env: str) -> object:
        environ = {k: v for k, v in os.environ.items() if k != "DATABASE_REPLICA_URL"}
        result = subprocess.run(
            [sys.executable, "-c", show],
            cwd=REPO_ROOT, env={**environ, **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    assert replica() is None
    db = replica(DATABASE_REPLICA_URL="postgres://hashx:pw@replica:5432/hashx")
    assert isinstance(db, dict)
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"]) == ("replica", "5432", "hashx", "hashx")
    # A test run against it reads the test database itself (never one it would create).
    assert db["TEST"]["MIRROR"] == "default"
