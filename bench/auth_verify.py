"""Cost of request-signature verification, measured end to end over HTTP.

    make bench

Starts gunicorn (one sync worker) beside the embedded services, registers a member, then
sends the same number of requests, one at a time over a kept-alive connection, to unsigned
GET /healthz (the baseline: routing, middleware, JSON) and to signed GET /api/v1/whoami (plus
signature parsing, key lookup, Content-Digest, Ed25519 verification, nonce SET NX in Redis),
the two taking turns in ``BENCH_AUTH_ROUNDS`` rounds (default 5), each kind's best round
counted.
The client signs each request too (a fresh nonce each time); that cost is printed apart.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.core.management import call_command  # noqa: E402

from exchange.embedded import free_port  # noqa: E402
from hashx.auth import HashxAuth, sign_headers  # noqa: E402
from hashx.keys import raw_public_bytes  # noqa: E402
from members.actions.keys import do_add_key  # noqa: E402
from members.actions.organisations import do_create_organisation  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_AUTH_REQUESTS", "2000"))
# The two kinds take turns, in this many rounds of REQUESTS / ROUNDS each, and each kind's best
# round counts: on a shared machine, one phase after the other measured whatever else ran then.
ROUNDS = int(os.environ.get("BENCH_AUTH_ROUNDS", "5"))


def rate(session: requests.Session, url: str, auth: HashxAuth | None, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        session.get(url, auth=auth).raise_for_status()
    return count / (time.perf_counter() - started)


def best_rates(session: requests.Session, base: str, auth: HashxAuth) -> tuple[float, float]:
    """Requests/s of unsigned /healthz and signed whoami: each kind's best of ROUNDS turns."""
    kinds = {"unsigned": (f"{base}/healthz", None), "signed": (f"{base}/api/v1/whoami", auth)}
    for url, signer in kinds.values():
        rate(session, url, signer, 50)  # warm up
    best = dict.fromkeys(kinds, 0.0)
    for _ in range(ROUNDS):
        for kind, (url, signer) in kinds.items():
            best[kind] = max(best[kind], rate(session, url, signer, REQUESTS // ROUNDS))
    return best["unsigned"], best["signed"]


def breakdown(key: Ed25519PrivateKey) -> dict[str, float]:
    """Where the verification time goes, step by step, without HTTP in the way."""
    from django.conf import settings
    from django.test import RequestFactory

    from members import auth
    from members.keycache import keys

    url = settings.HASHX_PUBLIC_URL + "/api/v1/whoami"
    factory = RequestFactory()
    requests_ = [
        factory.get("/api/v1/whoami", headers=sign_headers(key, "GET", url))
        for _ in range(REQUESTS)
    ]
    signature = auth._select(requests_[0])
    assert signature is not None
    key_id = signature.params["keyid"]
    public = keys.get(key_id, reload=True).public
    steps = {
        "parse and check parameters": lambda r: auth._select(r),
        "key lookup, database": lambda r: keys.get(key_id, reload=True),
        "key lookup, process cache": lambda r: keys.get(key_id),
        "Ed25519 / RFC 9421 verify": lambda r: auth._check_signature(r, signature, key_id, public),
        "nonce + generation (Redis)": lambda r: auth._spend_nonce(key_id, uuid.uuid4().hex),
    }
    result = {}
    for name, step in steps.items():
        started = time.perf_counter()
        for request in requests_:
            step(request)
        result[name] = (time.perf_counter() - started) / REQUESTS * 1000
    return result


def main() -> None:
    call_command("migrate", verbosity=0)
    key = Ed25519PrivateKey.generate()
    org = do_create_organisation(f"bench-{uuid.uuid4().hex[:8]}", "Bench", active=True)
    do_add_key(org, raw_public_bytes(key.public_key()))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HASHX_PUBLIC_URL": base, "LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "gunicorn", "exchange.wsgi:application"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"]
    server = subprocess.Popen(argv, cwd=ROOT, env=env)
    try:
        session = requests.Session()
        deadline = time.monotonic() + 30
        while True:
            try:
                session.get(f"{base}/healthz").raise_for_status()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        unsigned, signed = best_rates(session, base, HashxAuth(key))
    finally:
        server.terminate()
        server.wait()

    started = time.perf_counter()
    for _ in range(REQUESTS):
        sign_headers(key, "GET", f"{base}/api/v1/whoami")
    client_signing = REQUESTS / (time.perf_counter() - started)
    steps = breakdown(key)

    print(
        f"requests per endpoint          {REQUESTS} in {ROUNDS} alternating rounds, the best"
        " counted (1 gunicorn sync worker, 1 client)"
    )
    print(f"unsigned GET /healthz          {unsigned:8.0f} req/s  ({1000 / unsigned:.2f} ms each)")
    print(f"signed GET /api/v1/whoami      {signed:8.0f} req/s  ({1000 / signed:.2f} ms each)")
    print(f"ratio signed / unsigned        {signed / unsigned:8.2f}")
    added = 1000 / signed - 1000 / unsigned
    print(f"added per signed request       {added:8.2f} ms (client signing included)")
    print(f"client signing alone           {client_signing:8.0f} signatures/s")
    print("server steps, in process (ms per request):")
    for name, ms in steps.items():
        print(f"  {name:<28} {ms:8.3f}")


if __name__ == "__main__":
    main()
