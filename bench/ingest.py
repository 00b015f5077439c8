"""Ingest throughput: a million new PDQ hashes through the API, end to end, against the raw
ceiling of binary COPY into a scratch table with the same unique index.

    make bench              (BENCH_INGEST_SIGNALS=200000 for a shorter run)

End to end = from the first byte of the signed NDJSON upload (gunicorn, one sync worker) until
the batch is merged and every entry positioned by a Celery worker (one process, the ingest
queue). Then the same million again: all duplicates. Prints signals/s and the ratio to the
ceiling for both. Last, near-duplicates of a tenth of them (``BENCH_INGEST_VARIANTS``), until
merged and linked to their originals by the task that follows the merge (default queue).
"""

import hashlib
import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench._common import bench_member, start_web  # noqa: E402
from hashx.auth import sign_headers  # noqa: E402
from hashx.keys import b64url, raw_public_bytes  # noqa: E402
from signals.models import SetEntry  # noqa: E402

SIGNALS = int(os.environ.get("BENCH_INGEST_SIGNALS", "1000000"))
# Then near-duplicates of that many of them (4 bits flipped): merged, and linked to their
# originals by the task that follows the merge.
VARIANTS = int(os.environ.get("BENCH_INGEST_VARIANTS", str(SIGNALS // 10)))


def variant(value: str) -> str:
    """``value`` with 4 of its 256 bits flipped (within any set's PDQ threshold)."""
    bits = int(value, 16)
    for bit in secrets.SystemRandom().sample(range(256), 4):
        bits ^= 1 << bit
    return f"{bits:064x}"


def binary_copy(values: list[str]) -> bytes:
    """PostgreSQL binary COPY of (type, value) rows."""
    out = [b"PGCOPY\n\xff\r\n\x00", struct.pack("!ii", 0, 0)]
    pdq = b"pdq"
    for value in values:
        raw = value.encode()
        out.append(struct.pack("!hi", 2, 3) + pdq + struct.pack("!i", len(raw)) + raw)
    out.append(struct.pack("!h", -1))
    return b"".join(out)


def ceiling(values: list[str]) -> tuple[float, float]:
    """Binary COPY into a scratch table of (type, value) rows with one unique (type, value)
    index (issue 20's ceiling): new values; then the same values again through COPY + INSERT …
    ON CONFLICT DO NOTHING."""
    import io

    data = binary_copy(values)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_scratch, bench_again")
        # Byte-order collation, as the entries' values have.
        cursor.execute(
            "CREATE TABLE bench_scratch (id bigserial PRIMARY KEY,"
            ' type varchar(32) COLLATE "C", value text COLLATE "C")'
        )
        cursor.execute("CREATE UNIQUE INDEX ON bench_scratch (type, value)")
        started = time.perf_counter()
        cursor.copy_expert(
            "COPY bench_scratch (type, value) FROM STDIN WITH (FORMAT binary)", io.BytesIO(data)
        )
        new = len(values) / (time.perf_counter() - started)
        cursor.execute(
            'CREATE TEMP TABLE bench_again (type varchar(32) COLLATE "C", value text COLLATE "C")'
        )
        started = time.perf_counter()
        cursor.copy_expert("COPY bench_again FROM STDIN WITH (FORMAT binary)", io.BytesIO(data))
        cursor.execute(
            "INSERT INTO bench_scratch (type, value)"
            " SELECT type, value FROM bench_again ON CONFLICT DO NOTHING"
        )
        again = len(values) / (time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_scratch, bench_again")
    return new, again


def upload(
    base: str, key: Ed25519PrivateKey, slug: str, path: Path, *, linked: bool = False
) -> tuple[float, float, dict]:
    """Seconds until the 202 (read, validated, staged) and until merged (``linked``: and its
    near-duplicates linked), and the batch report."""
    digest = hashlib.sha256()
    with path.open("rb") as body:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            digest.update(chunk)
    url = f"{base}/api/v1/sets/{slug}/signals"
    headers = sign_headers(key, "POST", url, None, digest=digest.digest())
    headers["Content-Type"] = "application/x-ndjson"
    started = time.perf_counter()
    with path.open("rb") as body:
        answer = requests.post(url, data=body, headers=headers, timeout=3600)
    answer.raise_for_status()
    staged = time.perf_counter() - started
    batch_url = f"{base}/api/v1/batches/{answer.json()['batch']}"
    while True:
        report = requests.get(
            batch_url, auth=None, headers=sign_headers(key, "GET", batch_url), timeout=60
        ).json()
        if report["state"] == "failed" or (
            report["state"] == "done" and not (linked and report["near_duplicates_pending"])
        ):
            return staged, time.perf_counter() - started, report
        time.sleep(0.2)


def main() -> None:
    call_command("migrate", verbosity=0)
    key, hash_set = bench_member()
    values = [secrets.token_hex(32) for _ in range(SIGNALS)]
    ndjson = Path(tempfile.mkstemp(suffix=".ndjson")[1])
    ndjson.write_text("".join(json.dumps({"type": "pdq", "value": v}) + "\n" for v in values))

    web, base, env = start_web()
    worker_argv = [sys.executable, "-m", "celery", "-A", "exchange", "worker"]
    worker_argv += ["-Q", "ingest,default"]  # default: near-duplicate linking
    worker_argv += ["--concurrency", "1", "--pool", "solo", "--hostname", f"bench-{os.getpid()}@%h"]
    worker = subprocess.Popen([*worker_argv, "--loglevel", "WARNING"], cwd=ROOT, env=env)
    try:
        new_staged, new_s, new_report = upload(base, key, hash_set.slug, ndjson)
        assert new_report["new"] == SIGNALS, new_report
        positioned = SetEntry.objects.filter(hash_set=hash_set).count()
        assert positioned == SIGNALS
        again_staged, again_s, again_report = upload(base, key, hash_set.slug, ndjson)
        assert again_report["duplicate"] == SIGNALS, again_report
        ndjson.write_text(
            "".join(
                json.dumps({"type": "pdq", "value": variant(v)}) + "\n" for v in values[:VARIANTS]
            )
        )
        _, near_s, near_report = upload(base, key, hash_set.slug, ndjson, linked=True)
        assert (near_report["new"], near_report["near_duplicates"]) == (VARIANTS, VARIANTS), (
            near_report
        )
    finally:
        web.terminate()
        worker.terminate()
        web.wait()
        worker.wait()
        ndjson.unlink()

    ceiling_new, ceiling_again = ceiling(values)
    print(f"signals                         {SIGNALS} random PDQ hashes ({SIGNALS * 80 >> 20} MiB)")
    print(f"end to end, new                 {SIGNALS / new_s:10.0f} signals/s  ({new_s:.1f} s)")
    print(f"  of which upload, checks, COPY {new_staged:10.1f} s; merge {new_s - new_staged:.1f} s")
    print(f"binary COPY ceiling, new        {ceiling_new:10.0f} signals/s")
    print(f"ratio, new                      {SIGNALS / new_s / ceiling_new:10.2f}")
    print(f"end to end, all duplicates      {SIGNALS / again_s:10.0f} signals/s  ({again_s:.1f} s)")
    merge_again = again_s - again_staged
    print(f"  of which upload, checks, COPY {again_staged:10.1f} s; merge {merge_again:.1f} s")
    print(f"COPY + ON CONFLICT ceiling      {ceiling_again:10.0f} signals/s")
    print(f"ratio, duplicates               {SIGNALS / again_s / ceiling_again:10.2f}")
    print(f"near-duplicates, merged+linked  {VARIANTS / near_s:10.0f} signals/s  ({near_s:.1f} s"
          f" for {VARIANTS} variants of existing entries, all {near_report['near_duplicates']}"
          " linked)")  # fmt: skip
    print(f"(key id {b64url(raw_public_bytes(key.public_key()))[:8]}…, set {hash_set.slug})")


if __name__ == "__main__":
    main()
