"""``python -m tests.exchange.stalling_worker merge|link CELERY-WORKER-OPTIONS``: a real Celery
worker that stalls for good in the middle of a merge (in part 1's first chunk, its entries written
and not committed, part 0 merged and committed beside it) or of near-duplicate linking (in the
search of the match index), after creating the file ``HASHX_STALL_MARK``: a test then kills it
with SIGKILL exactly there. Run it with ``--pool solo``, so the kill takes the merge with it."""

import os
import sys
import time
from pathlib import Path
from typing import Any

import django


def stall() -> None:
    Path(os.environ["HASHX_STALL_MARK"]).touch()
    time.sleep(3600)


def main(what: str, options: list[str]) -> None:
    django.setup()
    from exchange.celery import app
    from signals.actions import merge, neardup

    if what == "merge":
        merge_chunk = merge._merge_chunk

        def stalling_chunk(cursor: Any, batch: Any, part: int, lo: int, hi: int) -> Any:
            result = merge_chunk(cursor, batch, part, lo, hi)
            if part == 1:
                stall()
            return result

        merge._merge_chunk = stalling_chunk
    else:

        def stalling_search(
            view: Any, set_id: int, threshold: int, new: list[tuple[int, str]]
        ) -> dict[int, tuple[int, int]]:
            stall()
            return {}

        neardup.nearest_older = stalling_search
    app.worker_main(["worker", *options])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
