"""TAXII 2.1 paging throughput: every entry of a set paged through ``…/objects/`` (limit
10,000, following ``next``), as STIX 2.1 indicators parsed by the client, beside the NDJSON
sync of the same set measured in the same run (the ceiling TAXII is compared with).

    make bench              (BENCH_TAXII_ENTRIES=50000 for a shorter run)

Both over the wire from one gunicorn sync worker, signed requests, the client in this process
parsing every object / line. Goal: TAXII at least 0.3x the NDJSON rate.
"""

import os
import sys
import time
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django  # noqa: E402

django.setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from django.core.management import call_command  # noqa: E402

from bench._common import bench_member, start_web  # noqa: E402
from bench.sync import fill, over_the_wire  # noqa: E402
from exchange.actions.identity import do_ensure_identity  # noqa: E402
from hashx.auth import HashxAuth  # noqa: E402
from taxii.stix import collection_id  # noqa: E402

ENTRIES = int(os.environ.get("BENCH_TAXII_ENTRIES", "1000000"))
PAGE = 10_000


def through_taxii(base: str, key: Ed25519PrivateKey, url: str) -> tuple[float, int, int]:
    """Seconds to page every object; objects; pages."""
    session = requests.Session()
    session.auth = HashxAuth(key)
    session.headers["Accept"] = "application/taxii+json;version=2.1"
    started = time.perf_counter()
    objects = pages = 0
    params: dict[str, str | int] = {"limit": PAGE}
    while True:
        response = session.get(url, params=params, timeout=3600)
        response.raise_for_status()
        envelope = orjson.loads(response.content)
        objects += len(envelope.get("objects", []))
        pages += 1
        if not envelope["more"]:
            return time.perf_counter() - started, objects, pages
        params["next"] = envelope["next"]


def main() -> None:
    call_command("migrate", verbosity=0)
    exchange = do_ensure_identity().exchange_id
    key, hash_set = bench_member()
    started = time.perf_counter()
    fill(hash_set.pk, hash_set.owner_id, ENTRIES)
    filled = time.perf_counter() - started
    web, base, _ = start_web()
    try:
        ndjson_s, seen, _ = over_the_wire(base, key, hash_set.slug, parse=True)
        assert seen == ENTRIES, seen
        url = f"{base}/taxii2/hashx/collections/{collection_id(exchange, hash_set.slug)}/objects/"
        taxii_s, objects, pages = through_taxii(base, key, url)
        assert objects == ENTRIES, objects
    finally:
        web.terminate()
        web.wait()
    ndjson_rate, taxii_rate = ENTRIES / ndjson_s, ENTRIES / taxii_s
    print(
        f"entries                         {ENTRIES} random PDQ, one set (filled in {filled:.1f} s)"
    )
    print(f"NDJSON sync, parsed             {ndjson_rate:10.0f} entries/s  ({ndjson_s:.1f} s)")
    print(
        f"TAXII objects/, parsed          {taxii_rate:10.0f} objects/s  ({taxii_s:.1f} s,"
        f" {pages} pages of {PAGE})"
    )
    print(f"ratio, TAXII / NDJSON           {taxii_rate / ndjson_rate:10.2f}  (goal 0.30)")


if __name__ == "__main__":
    main()
