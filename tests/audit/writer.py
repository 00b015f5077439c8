"""A separate process that records audit events in many small transactions, some rolled back.

``python -m tests.audit.writer NAME COUNT`` prints the number of events it committed.
"""

import random
import sys

import django


def main(name: str, count: int) -> int:
    django.setup()
    from django.db import transaction

    from audit.actions import record

    committed = 0
    rng = random.Random(name)

    class Rollback(Exception):
        pass

    for i in range(count):
        size = rng.randint(1, 3)
        try:
            with transaction.atomic():
                for j in range(size):
                    record("test.concurrent", details={"writer": name, "batch": i, "n": j})
                if rng.random() < 0.2:
                    raise Rollback
            committed += size
        except Rollback:
            pass
    return committed


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2])))
