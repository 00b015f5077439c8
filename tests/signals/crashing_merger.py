"""``python -m tests.signals.crashing_merger BATCH CHUNK``: a worker that dies (os._exit) in the
middle of merging the third chunk it starts, after its entries were written but before it
committed (the parts merge in parallel: by then a part has committed its first chunk)."""

import itertools
import os
import sys

import django


def main(batch_id: str, chunk: int) -> None:
    django.setup()
    from signals.actions import merge

    real = merge._merge_chunk
    calls = itertools.count(1)  # next() is atomic: the parts call from two threads

    def dying(*args):
        number = next(calls)
        result = real(*args)
        if number == 3:
            os._exit(17)
        return result

    merge._merge_chunk = dying
    merge.do_merge_batch(batch_id, chunk=chunk)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
