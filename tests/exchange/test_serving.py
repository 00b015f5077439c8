"""How the exchange serves HTTP, on a real gunicorn started exactly as `make run` starts it
(exchange/run.py, exchange/gunicorn_conf.py, exchange/gunicorn_worker.py): idle and slowloris
clients cost it a socket and nothing a request needs, a body may take long while it keeps
coming, and whatever is refused before Django is a problem document with a bounded detail."""

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from gunicorn.util import load_class

from exchange import gunicorn_conf, run
from exchange.embedded import free_port
from exchange.problems import MAX_DETAIL_CHARS, PROBLEM_CONTENT_TYPE
from hashx.auth import sign_headers
from signals.actions.sets import do_create_set
from tests.conftest import REPO_ROOT, db_url_for_subprocesses
from tests.helpers import eventually, stop

pytestmark = pytest.mark.django_db(transaction=True)

HEADER_TIMEOUT = 2
BODY_READ_TIMEOUT = 2
# "It answered at all", not a performance figure: far above an idle exchange's answer, far
# below the minutes a request held up behind blocked workers would wait.
PROMPTLY = 5
METRICS_TOKEN = "serving-test-metrics-token"


@dataclass
class Server:
    base: str
    port: int
    process: subprocess.Popen[bytes]
    var: Path

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PROMPTLY)

    def exchange(self, raw: bytes, timeout: float = PROMPTLY) -> tuple[int, dict[str, str], bytes]:
        """Send ``raw`` on a new connection; the status, headers and body of the answer."""
        with self.connect() as sock:
            sock.sendall(raw)
            return read_answer(sock, timeout)


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    sock.settimeout(timeout)
    answer = http.client.HTTPResponse(sock)
    try:
        answer.begin()
        headers = {name.lower(): value for name, value in answer.getheaders()}
        return answer.status, headers, answer.read()
    finally:
        answer.close()  # the socket stays open: HTTPResponse reads from a file made of it


def assert_raw_problem(answer: tuple[int, dict[str, str], bytes], status: int, slug: str) -> dict:
    code, headers, body = answer
    assert code == status, answer
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE, answer
    document = json.loads(body)
    assert document["status"] == status and document["type"].endswith(f"/problems/{slug}")
    assert 0 < len(document["detail"]) <= MAX_DETAIL_CHARS, document
    return document


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory) -> Iterator[Server]:
    """gunicorn with the web command of `make run`, on the test database, with short deadlines
    so that the tests can watch them pass."""
    port = free_port()
    var = tmp_path_factory.mktemp("serve")
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": db_url_for_subprocesses(),
        # Connections closed after each request: none may outlive the test database.
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": settings.REDIS_URL,
        "HASHX_PUBLIC_URL": base,
        "HASHX_VAR_DIR": str(var),
        "HASHX_MATCH_DIR": str(var / "match"),
        "HASHX_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "HASHX_BODY_READ_TIMEOUT_SECONDS": str(BODY_READ_TIMEOUT),
        "HASHX_BIND": "127.0.0.1",
        "HASHX_METRICS_TOKEN": METRICS_TOKEN,
        "LOG_LEVEL": "INFO",
    }
    for name in ("WEB_CONCURRENCY", "HASHX_WEB_THREADS"):
        env.pop(name, None)  # the defaults of `make run`
    (web,) = [child for child in run.children(port) if child.name == "web"]
    log = var / "web.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            web.argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    served = Server(base, port, process, var)

    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            return requests.get(base + "/healthz", timeout=PROMPTLY).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        eventually(up, timeout=60, what="gunicorn answering /healthz")
        yield served
    finally:  # a server that never answered is stopped too
        stop(process)


def signed(member, server: Server, method: str, path: str, body: bytes | None = None) -> dict:
    return sign_headers(member.private_key, method, server.base + path, body)


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- idle and slow clients --------------------------------------------------------------------


class Slowloris(threading.Thread):
    """A client that sends a head one byte at a time and never finishes it."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.sock = server.connect()
        self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self.stop = threading.Event()
        self.cut = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stop.wait(0.2) and time.monotonic() < deadline:
            try:
                self.sock.sendall(b"X")
            except OSError:
                self.cut.set()
                return


def is_closed(sock: socket.socket) -> bool:
    """Whether the exchange closed ``sock`` (whatever it said first)."""
    sock.settimeout(0.05)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def test_idle_and_slowloris_clients_hold_up_no_request_and_are_cut_after_the_header_deadline(
    server, publisher
):
    idle = [server.connect() for _ in range(24)]
    slow = [Slowloris(server) for _ in range(20)]
    for client in slow:
        client.start()
    try:
        time.sleep(0.5)  # every one of them connected and waiting
        assert requests.get(server.base + "/healthz", timeout=PROMPTLY).json() == {"status": "ok"}
        headers = signed(publisher, server, "GET", "/api/v1/sets")
        sets = requests.get(server.base + "/api/v1/sets", headers=headers, timeout=PROMPTLY)
        assert sets.status_code == 200, sets.text

        for sock in idle:
            eventually(lambda s=sock: is_closed(s), timeout=HEADER_TIMEOUT + 5, what="idle cut")
        for client in slow:
            eventually(
                lambda c=client: c.cut.is_set() or is_closed(c.sock),
                timeout=HEADER_TIMEOUT + 5,
                what="slowloris cut",
            )
    finally:
        for client in slow:
            client.stop.set()
            client.sock.close()
        for sock in idle:
            sock.close()


def test_a_head_that_stops_halfway_is_answered_408_when_its_deadline_passes(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: ")
        assert_raw_problem(read_answer(sock, HEADER_TIMEOUT + 5), 408, "request-timeout")


def test_a_kept_alive_connection_waits_for_its_next_head_without_a_thread(server):
    with server.connect() as sock:
        sock.sendall(raw_request("GET", "/healthz", {}))
        assert read_answer(sock, PROMPTLY)[0] == 200
        # The next request, pipelined halfway behind a whole one: both are answered.
        sock.sendall(raw_request("GET", "/healthz", {}) + b"GET /healthz HTTP/1.1\r\nHo")
        assert read_answer(sock, PROMPTLY)[0] == 200
        sock.sendall(b"st: 127.0.0.1\r\n\r\n")
        assert read_answer(sock, PROMPTLY)[0] == 200


def test_a_kept_alive_connection_is_closed_after_its_last_request_so_clients_spread(server):
    """A connection stays with the worker that accepted it: after REQUESTS_PER_CONNECTION
    answers it is closed (said in the last answer), and the client comes back through accept,
    where the least busy worker takes it."""
    last = gunicorn_conf.REQUESTS_PER_CONNECTION
    with server.connect() as sock:
        for _ in range(last - 1):
            sock.sendall(raw_request("GET", "/healthz", {}))
            status, headers, _ = read_answer(sock, PROMPTLY)
            assert status == 200 and headers.get("connection", "").lower() != "close"
        sock.sendall(raw_request("GET", "/healthz", {}))
        status, headers, _ = read_answer(sock, PROMPTLY)
        assert status == 200 and headers["connection"].lower() == "close"
        assert is_closed(sock)


def test_an_upload_may_take_longer_than_any_deadline_while_it_keeps_sending(server, publisher):
    do_create_set(publisher.org, {"slug": "slow-upload", "name": "Slow upload"})
    lines = [json.dumps({"type": "md5", "value": f"{n:032x}"}) for n in range(2000)]
    body = ("\n".join(lines) + "\n").encode()
    path = "/api/v1/sets/slow-upload/signals"
    headers = {
        "Content-Type": "application/x-ndjson",
        **sign_headers(
            publisher.private_key, "POST", server.base + path, digest=hashlib.sha256(body).digest()
        ),
    }
    pieces = 8  # sent over about 4 s: twice either deadline, never a pause as long as one
    size = len(body) // pieces + 1
    with server.connect() as sock:
        sock.sendall(raw_request("POST", path, {**headers, "Content-Length": str(len(body))}))
        for start in range(0, len(body), size):
            time.sleep(0.5)
            sock.sendall(body[start : start + size])
        status, _, answer = read_answer(sock, PROMPTLY)
    assert status == 202, answer
    assert json.loads(answer)["accepted"] == 2000


def test_a_body_that_stops_arriving_is_a_408_problem_after_the_read_deadline(server, publisher):
    body = json.dumps({"signals": [{"type": "md5", "value": "0" * 32}]}).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **signed(publisher, server, "POST", "/api/v1/match", body),
    }
    with server.connect() as sock:
        sock.sendall(raw_request("POST", "/api/v1/match", headers) + body[:5])
        assert_raw_problem(read_answer(sock, BODY_READ_TIMEOUT + 5), 408, "request-timeout")


@pytest.mark.parametrize(
    ("whose", "slug"), [("nobody's", "key-unknown"), ("forged", "signature-invalid")]
)
def test_a_request_no_member_signed_is_refused_without_waiting_for_its_body(
    server, publisher, whose, slug
):
    """Its body is announced long and never sent: only a member's body is waited for."""
    stranger = Ed25519PrivateKey.generate()
    key_id = publisher.key.key_id if whose == "forged" else None
    body = json.dumps({"signals": [{"type": "md5", "value": "0" * 32}]}).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": "100000",
        **sign_headers(stranger, "POST", server.base + "/api/v1/match", body, key_id=key_id),
    }
    with server.connect() as sock:
        sock.sendall(raw_request("POST", "/api/v1/match", headers) + body[:5])
        assert_raw_problem(read_answer(sock, PROMPTLY), 401, slug)


def test_the_control_socket_is_this_exchanges_own_not_one_per_user(server):
    """Under the exchange's var directory, not ~/.gunicorn/gunicorn.ctl, where a second
    exchange on the host would unlink the first one's."""
    control = server.var / "gunicorn.ctl"
    eventually(control.is_socket, timeout=10, what=f"gunicorn's control socket at {control}")


# -- errors before Django are problem documents ------------------------------------------------


GET = b"GET /healthz HTTP/1.1\r\n"
HOST = b"Host: 127.0.0.1\r\n"
LARGE, BAD = "header-fields-too-large", "bad-request"
REFUSED = {
    "long-uri": (raw_request("GET", "/" + "a" * 5000, {}), 414, "uri-too-long"),
    "long-field": (GET + HOST + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431, LARGE),
    "many-fields": (GET + HOST + b"X-Many: v\r\n" * 150 + b"\r\n", 431, LARGE),
    # 84 kB of fields, each within the limit, and no end in sight.
    "endless-head": (GET + (b"X-Long: " + b"v" * 7000 + b"\r\n") * 12, 431, LARGE),
    "bad-request-line": (b"HELLO THERE\r\n\r\n", 400, BAD),
    "bad-header-name": (GET + HOST + b"Bad Name: x\r\n\r\n", 400, BAD),
    "bare-lf": (b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n", 400, BAD),
    "bad-version": (b"GET /healthz HTTP/7.3\r\n" + HOST + b"\r\n", 400, BAD),
    "unknown-coding": (raw_request("POST", "/healthz", {"Transfer-Encoding": "gzip"}), 400, BAD),
    "bad-length": (raw_request("POST", "/healthz", {"Content-Length": "1, 2"}), 400, BAD),
    "bad-host": (GET + b"Host: evil.example\r\n\r\n", 400, BAD),
    "long-host": (GET + b"Host: " + b"h" * 5000 + b"\r\n\r\n", 400, BAD),
    "no-page": (raw_request("GET", "/nowhere/" + "x" * 3000, {}), 404, "not-found"),
}


@pytest.mark.parametrize(("raw", "status", "slug"), REFUSED.values(), ids=REFUSED.keys())
def test_what_is_refused_before_a_view_is_a_bounded_problem_document(server, raw, status, slug):
    assert_raw_problem(server.exchange(raw), status, slug)


def frozen_by_worker(server: Server, when: str) -> dict[int, int]:
    """What each worker logged it froze out of garbage collection ``when``."""
    pattern = re.compile(
        rf"Worker (\d+) froze (\d+) long-lived objects out of garbage collection {when}"
    )
    return {
        int(pid): int(count) for pid, count in pattern.findall((server.var / "web.log").read_text())
    }


def test_each_worker_freezes_what_it_keeps_out_of_garbage_collection(server):
    """Loaded, and again after its first requests: a full collection then walks only what
    requests made since, not Django, numba and the index (seconds of pauses a minute)."""
    workers = 2  # `make run`'s default
    loaded = frozen_by_worker(server, "once the application was loaded")
    assert len(loaded) == workers and min(loaded.values()) > 10_000, loaded
    session = requests.Session()
    for _ in range(50):  # at most 5,000 requests; each connection closes after 20
        if len(frozen_by_worker(server, "after 200 requests")) == workers:
            break
        for _ in range(100):
            assert session.get(server.base + "/healthz", timeout=PROMPTLY).status_code == 200
    warmed = frozen_by_worker(server, "after 200 requests")
    assert warmed.keys() == loaded.keys(), (loaded, warmed)
    assert all(warmed[pid] >= loaded[pid] for pid in loaded), (loaded, warmed)
    metrics = requests.get(
        server.base + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=PROMPTLY,
    )
    assert metrics.status_code == 200, metrics.text
    pauses = re.findall(
        r'^hashx_gc_pause_seconds_count\{generation="(\d)"\} (\S+)$', metrics.text, re.M
    )
    assert dict(pauses).get("0") and float(dict(pauses)["0"]) > 0, pauses


def test_gunicorn_builds_no_access_line_beside_the_exchanges_request_log():
    logger_class = load_class(gunicorn_conf.logger_class)
    logger = object.__new__(logger_class)  # no logging set-up in this process

    def built(*args: object) -> dict:
        raise AssertionError("gunicorn built an access log line")

    logger.atoms = built
    assert not logger.access_log_enabled
    logger.access(None, None, {}, timedelta(0))
