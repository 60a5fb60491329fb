"""One md_fanout subscriber process: python -m bench.md_subscriber SUB_ENDPOINT SNAPSHOT_ENDPOINT.

Prints "ready" once its first snapshot is applied, then applies updates until none comes for
IDLE seconds, and prints one JSON line: events applied, the monotonic times of the first and
the last, resyncs, the public stream position reached and every instrument's depth."""

from __future__ import annotations

import json
import sys
import time

from engine.gateway.marketdata import MarketDataClient, Synced
from engine.types import Side

IDLE = 2.0


def main(sub: str, snapshot: str) -> None:
    client = MarketDataClient(sub, snapshot)
    while not isinstance(client.next_update(30.0), Synced):
        pass
    print("ready", flush=True)
    events, first, last = 0, 0.0, 0.0
    while (update := client.next_update(IDLE)) is not None:
        if isinstance(update, Synced):
            continue
        last = time.monotonic()
        if not events:
            first = last
        events += 1
    depth = {
        code: [[list(level) for level in book.depth(side)] for side in (Side.BUY, Side.SELL)]
        for code, book in client.books.items()
    }
    result = {
        "events": events,
        "first": first,
        "last": last,
        "resyncs": client.resyncs,
        "seq": client.seq,
        "depth": depth,
    }
    client.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
