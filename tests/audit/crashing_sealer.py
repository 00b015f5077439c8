"""``python -m tests.audit.crashing_sealer N``: a worker that dies (os._exit, no cleanup) while
hashing the N-th event of its second batch, as a killed Celery worker would."""

import os
import sys

import django


def main(crash_at: int) -> None:
    django.setup()
    from audit.actions import seal

    real_chain_hash = seal.chain_hash
    calls = 0

    def dying_chain_hash(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == crash_at:
            os._exit(17)
        return real_chain_hash(*args, **kwargs)

    seal.chain_hash = dying_chain_hash
    seal.do_seal_pending(batch=3, wait=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
