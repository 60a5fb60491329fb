"""One md_fanout subscriber process: python -m bench.md_subscriber SUB_ENDPOINT SNAPSHOT_ENDPOINT.

Prints "ready" once its first snapshot is applied, then applies updates until it has applied
the public stream position the parent writes on its stdin once the flow is through, and
prints one JSON line: events applied, the monotonic times of the first and the last,
resyncs, snapshots asked again, messages read, the position reached and every instrument's
depth.
"""

from __future__ import annotations

import json
import select
import sys
import time

from engine.gateway.marketdata_client import MarketDataClient, Synced
from engine.types import Side

WAIT = 0.2  # seconds between looks at stdin while no update comes


def main(sub: str, snapshot: str) -> None:
    client = MarketDataClient(sub, snapshot)
    while not isinstance(client.next_update(30.0), Synced):
        pass
    print("ready", flush=True)
    events, first, last, reached, target = 0, 0.0, 0.0, client.seq, None
    while target is None or reached < target:
        update = client.next_update(WAIT)
        if update is None:
            if target is None and select.select([sys.stdin], [], [], 0)[0]:
                target = int(sys.stdin.readline())
            continue
        if isinstance(update, Synced):
            reached = max(reached, update.seq)
            continue
        last = time.monotonic()
        if not events:
            first = last
        events += 1
        reached = max(reached, update.stream_seq)
    depth = {
        code: [[list(level) for level in book.depth(side)] for side in (Side.BUY, Side.SELL)]
        for code, book in client.books.items()
    }
    result = {
        "events": events,
        "first": first,
        "last": last,
        "resyncs": client.resyncs,
        "snapshot_retries": client.snapshot_retries,
        "messages": client.messages,
        "seq": reached,
        "depth": depth,
    }
    client.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
