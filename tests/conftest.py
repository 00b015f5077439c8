"""Shared fixtures: a DRF client and real Celery worker processes against the test database.

The suite runs beside real PostgreSQL and Redis: `make test` starts embedded ones under
var/test unless DATABASE_URL / REDIS_URL name real services.
"""

import json as jsonlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test import Client
from rest_framework.test import APIClient

from exchange.health import HEARTBEAT_PREFIX
from hashx.auth import sign_headers
from hashx.keys import key_id_of, raw_public_bytes, write_private_key
from members.actions.keys import do_add_key
from members.actions.organisations import do_create_organisation
from members.models import Organisation, SigningKey
from tests.helpers import eventually, stop

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def exchange_var() -> Iterator[Path]:
    """A var directory for an exchange a test starts with its own embedded PostgreSQL, outside
    pytest's temporary tree: as root, the embedded PostgreSQL runs as the ``pgserver`` user, and
    a pytest session starting beside this one resets that tree's base to mode 0700, locking the
    server out of its own data. Removed afterwards."""
    base = REPO_ROOT / "var"
    base.mkdir(exist_ok=True)
    var = Path(tempfile.mkdtemp(prefix="exchange-", dir=base))
    yield var
    shutil.rmtree(var, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    # Tests do not run collectstatic: serve static files unhashed, as DEBUG does.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> None:
    """Let transactional tests reset the append-only audit tables of the throw-away test
    database (see audit migration 0002); every other statement stays refused."""
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        name = connection.settings_dict["NAME"]
        cursor.execute(f"ALTER DATABASE \"{name}\" SET hashx.audit_allow_truncate = 'on'")
        cursor.execute("SET hashx.audit_allow_truncate = 'on'")


@pytest.fixture(autouse=True)
def match_index_dir(settings: Any, tmp_path: Path) -> Path:
    """Each test its own PDQ index generations (they describe one database's entries)."""
    settings.HASHX_MATCH_DIR = tmp_path / "match"
    return settings.HASHX_MATCH_DIR


@pytest.fixture
def exchange_url(live_server: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A live exchange over HTTP whose public URL (what signatures cover) is its real one. Its
    request threads close their database connections as they finish (CONN_MAX_AGE 0): kept
    open, they would outlive their threads and hold the test database when it is dropped."""
    monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "CONN_MAX_AGE", 0)
    settings.HASHX_PUBLIC_URL = live_server.url
    return str(live_server.url)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def db_url_for_subprocesses() -> str:
    """DATABASE_URL with the database pytest-django created (test_…) in place of the real one."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{settings.DATABASES['default']['NAME']}"))


@dataclass
class WorkerProcess:
    """A real `celery worker` subprocess; `stop()` shuts it down warmly (as SIGTERM does)."""

    hostname: str
    redis_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def heartbeat_present(self) -> bool:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
        try:
            return bool(client.exists(HEARTBEAT_PREFIX + self.hostname))
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            log = self.log_path.read_text()[-3000:]
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{log}")
            assert self.heartbeat_present(), f"no heartbeat yet; the log ends:\n{log}"
            return True

        eventually(ready, timeout=timeout, what=f"worker {self.hostname} ready")

    def stop(self) -> None:
        stop(self.process)


@pytest.fixture(scope="session")
def start_worker(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a Celery worker on the test database (and a given Redis); stopped at the
    end of the session if the test did not stop it."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(
        name: str = "test", redis_url: str | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        redis_url = redis_url or settings.REDIS_URL
        hostname = f"{name}-{len(started)}@pytest"
        env = {
            **os.environ,
            "DATABASE_URL": db_url_for_subprocesses(),
            "REDIS_URL": redis_url,
            "HASHX_WORKER_HEARTBEAT_SECONDS": "1",
            "HASHX_MATCH_DIR": str(logs / f"match-{hostname}"),
            **(env or {}),
        }
        log_path = logs / f"{hostname}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "exchange", "worker", "--loglevel", "INFO",
                 "--concurrency", "1", "--pool", "solo", "--hostname", hostname, "--without-mingle",
                 "--without-gossip"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        worker = WorkerProcess(hostname, redis_url, process, log_path)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def celery_worker(start_worker: Callable[..., WorkerProcess]) -> Iterator[WorkerProcess]:
    """A real worker for one test, stopped (warmly: it finishes its task) before the test's
    database is reset, so no worker ever runs beside a test that did not ask for one."""
    worker = start_worker("worker")
    yield worker
    worker.stop()


class SignedClient:
    """A DRF test client that signs every request exactly as the `hashx` client does (it uses
    the client's own signing code), over the exchange's public URL."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.key_id = key_id_of(key)
        self.client = APIClient()

    def signed_headers(
        self, method: str, path: str, body: bytes | None, **overrides: Any
    ) -> dict[str, str]:
        return sign_headers(self.key, method, settings.HASHX_PUBLIC_URL + path, body, **overrides)

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
        **extra: Any,
    ) -> Any:
        if json is not None:
            body = jsonlib.dumps(json).encode()
        all_headers = self.signed_headers(method, path, body) if sign else {}
        all_headers.update(headers or {})
        return self.client.generic(
            method,
            path,
            data=body or b"",  # type: ignore[arg-type]  # bytes are sent as they are
            content_type="application/json",
            headers=all_headers,
            **extra,
        )

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json, **kwargs)


@dataclass
class Member:
    """One of the cast: an organisation with a real Ed25519 key and a client signing with it."""

    org: Organisation
    private_key: Ed25519PrivateKey
    key: SigningKey
    api: SignedClient

    def add_key(self, *, read_only: bool = False) -> "Member":
        """Another key of the same organisation, as a Member of its own."""
        private = Ed25519PrivateKey.generate()
        key = do_add_key(self.org, raw_public_bytes(private.public_key()), read_only=read_only)
        return Member(self.org, private, key, SignedClient(private))

    def key_file(self, path: Path) -> Path:
        """The private key as a PEM file at ``path`` (mode 0600), for the CLI."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_key(path, self.private_key)
        return path


def make_member(
    slug: str, *, kind: str = "member", active: bool = True, read_only: bool = False
) -> Member:
    org = do_create_organisation(slug, slug.replace("-", " ").title(), kind=kind, active=active)
    private = Ed25519PrivateKey.generate()
    key = do_add_key(org, raw_public_bytes(private.public_key()), read_only=read_only)
    return Member(org, private, key, SignedClient(private))


@pytest.fixture
def publisher(db: None) -> Member:
    """A member company that publishes (and owns) sets."""
    return make_member("acme-video")


@pytest.fixture
def subscriber(db: None) -> Member:
    """A member company that reads what others publish."""
    return make_member("globex-social")


@pytest.fixture
def outsider(db: None) -> Member:
    """An active member with no business with the publisher's things."""
    return make_member("initech-forums")


@pytest.fixture
def peer(db: None) -> Member:
    """Another coalition's exchange."""
    return make_member("eu-exchange", kind="peer")


@pytest.fixture
def applicant(db: None) -> Member:
    """An organisation that applied to join and is not approved yet (pending)."""
    return make_member("newcomer", active=False)


@pytest.fixture
def staff(db: None, client: Client) -> Client:
    """Coalition staff: the Django test client logged in to admin as a superuser (``.user``)."""
    user = User.objects.create_superuser("staff", password="a long admin passphrase")
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


@pytest.fixture
def loopback_allowed(settings: Any) -> None:
    """Outbound calls (webhooks) may go to this machine, over plain HTTP: where the tests'
    receivers listen."""
    settings.HASHX_OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    settings.HASHX_WEBHOOK_ALLOW_HTTP = True
