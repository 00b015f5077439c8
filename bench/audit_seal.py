"""Audit log throughput: recording, sealing and verifying events.

    make bench            (runs every bench/ script beside embedded Postgres and Redis)

Prints events/s for record() (the cost a request pays), for the sealer (what a worker sustains)
and for verify_audit (an auditor's full check), and the ratio of sealing to recording measured
in the same run: above 1 the sealer keeps up with any write rate the exchange can take.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from audit.actions import record  # noqa: E402
from audit.actions.seal import do_seal_pending  # noqa: E402
from audit.actions.verify import verify_audit_log  # noqa: E402
from audit.models import AuditEvent  # noqa: E402

EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "20000"))
PER_TRANSACTION = 50


def main() -> None:
    call_command("migrate", verbosity=0)
    do_seal_pending(wait=True)  # start from a fully sealed chain

    started = time.perf_counter()
    for batch in range(EVENTS // PER_TRANSACTION):
        with transaction.atomic():
            for n in range(PER_TRANSACTION):
                record("bench.event", details={"batch": batch, "n": n, "set": "bench-set"})
    record_s = time.perf_counter() - started

    started = time.perf_counter()
    result = do_seal_pending(wait=True)
    seal_s = time.perf_counter() - started

    started = time.perf_counter()
    report = verify_audit_log()
    verify_s = time.perf_counter() - started
    assert report.ok, report.problems

    total = AuditEvent.objects.count()
    print(f"events recorded this run      {EVENTS}")
    record_rate, seal_rate = EVENTS / record_s, result.sealed / seal_s
    print(f"record()                      {record_rate:10.0f} events/s  ({PER_TRANSACTION}/commit)")
    print(f"seal (one worker)             {seal_rate:10.0f} events/s  ({result.sealed} sealed)")
    print(f"verify_audit (whole chain)    {total / verify_s:10.0f} events/s  ({total} events)")
    print(f"ratio seal / record           {seal_rate / record_rate:10.2f}x")


if __name__ == "__main__":
    main()
