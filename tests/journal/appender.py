"""Log writers for the crash tests, run as their own process and killed with SIGKILL.

`python -m tests.journal.appender journal DIR SEED` opens the journal in DIR (cutting a torn
tail as any restart does) and appends forever from the record after its last: groups of 1 to
300 records, one fsync per group (group commit), then prints the last seq of the group: from
then on that record is acknowledged. Record `seq` always holds `command_for(seq)` stamped
`ts_for(seq)`, so a test can tell exactly what each record must be.

`python -m tests.journal.appender frames FILE` appends framed records `payload_for(n)`
(the n-th counted from 1) in groups of four small ones and one of 2 MB, one fsync per group,
printing "writing N" before it writes the large record N and "ack N" after the fsync: a
write that large spans many pages, and a kill between two of them leaves a torn record,
which small records rarely do.
"""

from __future__ import annotations

import random
import sys

from engine.framing import FramedWriter, read_frames
from engine.journal import Journal
from engine.protocol import Command, NewOrder, StartOfDay
from engine.types import Side

SEGMENT_BYTES = 64 * 1024
RECORDS_PER_DAY = 5_000


def command_for(seq: int) -> Command:
    if seq % RECORDS_PER_DAY == 1:
        return StartOfDay(f"2026-{1 + seq // (28 * RECORDS_PER_DAY) % 12:02d}-01")
    side = Side.BUY if seq % 2 else Side.SELL
    return NewOrder(f"order-{seq}", 1 + seq % 4, "CEA25", side, 10_000 + seq % 50, seq % 97 + 1)


def ts_for(seq: int) -> int:
    return 1_764_000_000_000_000_000 + seq * 1_000


def payload_for(n: int) -> bytes:
    size = 2 << 20 if n % 5 == 0 else 1 + n * 7919 % 65_536
    return (n.to_bytes(8, "little") * (size // 8 + 1))[:size]


def append_journal(directory: str, rng: random.Random) -> None:
    with Journal(directory, SEGMENT_BYTES) as journal:
        seq = journal.last_seq
        while True:
            for _ in range(rng.randint(1, 300)):
                seq += 1
                journal.append(seq, ts_for(seq), command_for(seq))
            journal.sync()
            print(seq, flush=True)


def append_frames(path: str) -> None:
    with FramedWriter(path) as writer:
        n = sum(1 for _ in read_frames(path))
        while True:
            n += 1
            if n % 5 == 0:
                print("writing", n, flush=True)
            writer.write(payload_for(n))
            if n % 5 == 0:
                writer.sync()
                print("ack", n, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "journal":
        append_journal(sys.argv[2], random.Random(sys.argv[3]))
    else:
        append_frames(sys.argv[2])
