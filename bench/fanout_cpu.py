"""Worker CPU of a webhook fan-out, in process: ``BENCH_FANOUT_SUBSCRIPTIONS`` subscriptions (500)
of as many organisations on one receiver (a child process: asyncio, keep-alive),
20 new PDQ hashes published and merged, then the dispatch (``do_dispatch``) and the sends
(``do_send_many``, ``HASHX_WEBHOOK_SEND_BATCH`` at a time) run here, each fan-out timed on this
process's CPU clock. The first of ``BENCH_FANOUT_ROUNDS`` (5) warms up and is left out.
Where ``bench/fanout.py`` measures latency on a loaded machine, this measures what one
delivery costs the worker, with nothing else to share the figure.

    .venv/bin/python -m exchange.embedded --var var/bench-cpu -- \
        .venv/bin/python bench/fanout_cpu.py
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
os.environ.update(
    {"HASHX_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8", "HASHX_WEBHOOK_ALLOW_HTTP": "1"}
)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from members.actions.organisations import do_create_organisation  # noqa: E402
from signals.actions.merge import do_merge_batch  # noqa: E402
from signals.actions.publish import do_publish  # noqa: E402
from signals.actions.sets import do_create_set  # noqa: E402
from signals.actions.subscriptions import do_create_subscription  # noqa: E402
from signals.actions.webhooks import do_dispatch, do_send_many  # noqa: E402
from signals.api.uploads import json_items  # noqa: E402
from signals.feed.positions import Position, visible_horizon  # noqa: E402

SUBSCRIPTIONS = int(os.environ.get("BENCH_FANOUT_SUBSCRIPTIONS", "500"))
ROUNDS = int(os.environ.get("BENCH_FANOUT_ROUNDS", "5"))

RECEIVER = """
import asyncio, sys

async def connection(reader, writer):
    try:
        while head := await reader.readuntil(b"\\r\\n\\r\\n"):
            lines = head.decode("latin-1").split("\\r\\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
            await reader.readexactly(int(headers.get("content-length", "0")))
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(connection, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def main() -> None:
    call_command("migrate", verbosity=0)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        run = uuid.uuid4().hex[:8]
        owner = do_create_organisation(f"bench-{run}", "Bench publisher", active=True)
        hash_set = do_create_set(
            owner, {"slug": f"fanout-{run}", "name": "Fan-out", "distribution": "coalition"}
        )
        start = Position(visible_horizon(), 0).cursor()
        for n in range(SUBSCRIPTIONS):
            member = do_create_organisation(f"sub-{run}-{n}", f"Subscriber {n}", active=True)
            do_create_subscription(
                member,
                url=f"http://127.0.0.1:{port}/hook/{n}",
                sets=[hash_set],
                signal_types=[],
                labels=[],
                cursor=start,
            )
        dispatch = send = 0.0
        delivered = 0
        batch = settings.HASHX_WEBHOOK_SEND_BATCH
        for fan_out in range(ROUNDS):
            values = [{"type": "pdq", "value": uuid.uuid4().hex * 2} for _ in range(20)]
            published, _ = do_publish(hash_set, owner, json_items(values))
            do_merge_batch(str(published.pk))
            started = time.process_time()
            claimed = do_dispatch()
            cut = time.process_time()
            outcomes = []
            for at in range(0, len(claimed), batch):
                outcomes += do_send_many(claimed[at : at + batch])
            sent = time.process_time()
            assert outcomes.count("delivered") == SUBSCRIPTIONS, outcomes
            if fan_out:  # the first warms up
                dispatch, send = dispatch + cut - started, send + sent - cut
                delivered += len(outcomes)
    finally:
        receiver.terminate()
    print(f"subscriptions                   {SUBSCRIPTIONS}, {ROUNDS - 1} fan-outs timed")
    print(f"dispatch CPU per delivery       {dispatch / delivered * 1000:8.3f} ms")
    print(f"send CPU per delivery           {send / delivered * 1000:8.3f} ms")


if __name__ == "__main__":
    main()
