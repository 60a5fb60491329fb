"""Recovery benchmark: restart an exchange from its journal (open, read, apply), timed.

The journal holds the seeded mixed workload (bench.workload, as bench.exchange replays it)
after the session's opening messages (StartOfDay, OpenCall, Uncross), written as the engine
service writes it: order commands as batch records of BATCH order-command records each (the
COMMAND_DTYPE bytes a gateway sends, seq and ts_ns left zero), the session's commands as
message records. `recovery` times `engine.journal.recovery.recover` of that journal into a
fresh Exchange (no snapshot) and, for comparison, of the same commands written as one message
record each; the compiled code is warmed outside the timer. Every recovered exchange must end
with the state hash of applying the commands directly (apply_batch over all the records in
one call, after the same opening messages), else WrongResult.

From a snapshot: `snapshot_tail` commands before the end, the exchange is snapshotted and
recovery restores it and replays the journal after it. That needs the exchange's snapshot
serialisation (engine.core.snapshot: `dump`, `restore`); where it is absent, that part is
skipped and the result says so (`from_snapshot: null`).
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from bench.book import WrongResult
from bench.exchange import CODE, bench_market
from bench.workload import mixed_workload
from engine.book.layout import C_KIND, C_OID, C_OWNER, C_PRICE, C_QTY, C_SIDE, C_TIF, CMD_ADD
from engine.codec import COMMAND_DTYPE, REC_CANCEL, REC_NEW_ORDER
from engine.core import Exchange
from engine.journal import Journal
from engine.journal.recovery import recover, save_snapshot
from engine.protocol import Command, OpenCall, StartOfDay, Uncross, encode

BATCH = 256  # records per batch record: a gateway's frame
RECORD = COMMAND_DTYPE.itemsize
RUN = 1 << 16  # records per apply_batch call when applying them directly
SNAPSHOT_TAIL = 100_000  # commands after the snapshot, for "from a snapshot plus 100 k"
TS_START = 1_795_900_000_000_000_000
OPENING: tuple[Command, ...] = (StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE))


def stamps(n: int) -> np.ndarray:
    """The time of each order command: that of its batch (the service stamps a turn's
    commands with one time), whichever way the commands are written or applied."""
    return TS_START + 1_000 * (len(OPENING) + 1 + np.arange(n) // BATCH)


def workload_records(n: int, seed: int = 2) -> np.ndarray:
    """The mixed workload as unstamped order-command records (what bench.exchange.as_commands
    gives as messages: ClOrdID "c<i>", cancels in the name of the order's owner), vectorised."""
    cmds = mixed_workload(n, seed=seed)
    adds = cmds[:, C_KIND] == CMD_ADD
    owner = np.zeros(int(cmds[:, C_OID].max()) + 1, dtype=np.int64)
    owner[cmds[adds, C_OID]] = cmds[adds, C_OWNER]
    records = np.zeros(n, COMMAND_DTYPE)
    records["kind"] = np.where(adds, REC_NEW_ORDER, REC_CANCEL)
    records["member"] = np.where(adds, cmds[:, C_OWNER], owner[cmds[:, C_OID]])
    records["instrument"] = 0
    records["side"] = np.where(adds, cmds[:, C_SIDE], 0)
    records["order_type"] = np.where(adds, 1, 0)  # limit
    records["tif"] = np.where(adds, cmds[:, C_TIF], 0)
    records["price"] = np.where(adds, cmds[:, C_PRICE], 0)
    records["qty"] = np.where(adds, cmds[:, C_QTY], 0)
    records["order_id"] = np.where(adds, 0, cmds[:, C_OID])
    records["cl_ord_id"] = np.char.add(b"c", np.arange(n).astype("S"))
    return records


def write_journal(directory: Path, records: np.ndarray, batch: bool) -> None:
    """The opening messages, then the records: as batch records of BATCH records each
    (their wire bytes), or with batch False as one message record each."""
    from engine.codec import command_of

    ts = stamps(len(records)).tolist()
    with Journal(directory) as journal:
        for seq, command in enumerate(OPENING, 1):
            journal.append(seq, TS_START + 1_000 * seq, command)
        first = len(OPENING) + 1
        if not batch:
            codes = [CODE]
            for i, record in enumerate(records):
                journal.append_encoded(first + i, ts[i], encode(command_of(record, codes)))
            return
        data = memoryview(records.tobytes())
        for at in range(0, len(records), BATCH):
            journal.append_batch(first + at, ts[at], data[at * RECORD : (at + BATCH) * RECORD])


def applied_directly(records: np.ndarray) -> Exchange:
    """An exchange after the opening and then the records through apply_batch, in runs of
    RUN (the same state whatever the runs: engine.core.batch)."""
    exchange = Exchange(bench_market())
    for seq, command in enumerate(OPENING, 1):
        exchange.apply_stamped(seq, TS_START + 1_000 * seq, command)
    stamped = records.copy()
    stamped["seq"] = np.arange(exchange.seq + 1, exchange.seq + 1 + len(records))
    stamped["ts_ns"] = stamps(len(records))
    for at in range(0, len(stamped), RUN):
        exchange.apply_batch(stamped[at : at + RUN])
    return exchange


def time_recovery(
    journal: Path, snapshots: Path, restore: Callable[[bytes], Exchange] | None = None
) -> tuple[float, Exchange, int]:
    """Seconds to recover (snapshot restored if there is one, then the journal after it)."""
    fresh = partial(Exchange, bench_market())
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        recovered = recover(journal, snapshots, fresh, restore or (lambda _: fresh()))
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed, recovered.state, recovered.replayed


def snapshot_codec() -> tuple[Callable[[Exchange], bytes], Callable[[bytes], Exchange]] | None:
    """(dump, restore) of the exchange's snapshot serialisation, None where it is absent."""
    if importlib.util.find_spec("engine.core.snapshot") is None:
        return None
    from engine.core import snapshot

    return snapshot.dump, partial(snapshot.restore, bench_market())


def from_snapshot(
    root: Path, records: np.ndarray, expected: str, tail: int, rounds: int
) -> dict | None:
    """Recovery from a snapshot `tail` commands before the end of the batch journal."""
    codec = snapshot_codec()
    if codec is None:
        return None
    dump, restore = codec
    journal, snapshots = root / "batches", root / "snapshots"
    save_snapshot(snapshots, applied_directly(records[: len(records) - tail]), dump)
    times = []
    for _ in range(rounds):
        seconds, state, replayed = time_recovery(journal, snapshots, restore)
        if state.state_hash() != expected or replayed != tail:
            raise WrongResult("recovery: the snapshot and its journal tail give another state")
        times.append(seconds)
    return {"seconds": float(np.median(times)), "replayed": tail}


def recovery_benchmark(
    commands: int = 1_000_000, rounds: int = 3, snapshot_tail: int = SNAPSHOT_TAIL
) -> dict:
    records = workload_records(commands)
    expected = applied_directly(records).state_hash()
    with tempfile.TemporaryDirectory(prefix="cxe-recovery-") as temporary:
        root = Path(temporary)
        write_journal(root / "warm", records[:5_000], True)
        time_recovery(root / "warm", root / "none")  # compile and warm up outside the timer
        write_journal(root / "batches", records, True)
        write_journal(root / "messages", records, False)
        batch_times, message_times = [], []
        for _ in range(rounds):
            seconds, state, replayed = time_recovery(root / "batches", root / "none")
            if state.state_hash() != expected or replayed != commands + len(OPENING):
                raise WrongResult("recovery: the batch journal recovers to another state")
            batch_times.append(seconds)
        seconds, state, _ = time_recovery(root / "messages", root / "none")
        if state.state_hash() != expected:
            raise WrongResult("recovery: the message journal recovers to another state")
        message_times.append(seconds)
        snapshot = from_snapshot(root, records, expected, snapshot_tail, rounds)
        sizes = {
            kind: sum(p.stat().st_size for p in (root / kind).iterdir())
            for kind in ("batches", "messages")
        }
    value = float(np.median(batch_times))
    messages = float(np.median(message_times))
    total = commands + len(OPENING)
    return {
        "bench": "recovery",
        "value": total / value,
        "unit": "cmd/s",
        "reference": total / messages,  # the same commands as one message record each
        "seconds": value,
        "rounds": [round(t, 3) for t in batch_times],
        "commands": total,
        "batch": BATCH,
        "journal_bytes": sizes["batches"],
        "messages_seconds": messages,
        "messages_journal_bytes": sizes["messages"],
        "from_snapshot": snapshot,
        "state_hash": expected[:16],
        "target_seconds": 1.0,
    }
