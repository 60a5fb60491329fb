"""Kill -9 the engine under load, restart it, and check that nothing acknowledged was lost,
nothing was applied twice, and the state is exactly a fresh replay of the journal. Every
`day_every` cycles the operator closes the day and opens the next, as a market does: the day's
orders end (the state stays the size of a day's), the engine snapshots at the day's end, and
the journal goes on in a new day's segment; kills fall on either side of it.

Used by tests/gateway/test_crash_recovery.py (20 cycles) and tools/crash_soak.py (1,000).
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from engine.config import default_market
from engine.core import Exchange
from engine.gateway import wire
from engine.journal import read_journal
from engine.journal.snapshot import SNAPSHOT
from engine.protocol import Accepted, Close, EndOfDay, NewOrder, Rejected
from tests.support.engine import DAY, EngineProcess

GATEWAYS = (("mm", 1), ("brokers", 3), ("entities", 5))
SNAPSHOT_EVERY = 10  # cycles: restarts then replay the journal after the latest snapshot
# of the snapshots asked for, the share waited for before the next kill (as an operator who
# asks for one sees it written); the others may be torn by the kill, which recovery must bear
SNAPSHOTS_WAITED = 0.75
SNAPSHOT_TIMEOUT_S = 120.0
DAY_EVERY = 25  # cycles per trading day


@dataclass
class CrashReport:
    cycles: int = 0
    acknowledged: int = 0
    journaled: int = 0
    days: int = 1


class Acknowledgements:
    """(seq, member, ClOrdID) of every Accepted the load generators were told of, read on
    from where the last call stopped (the logs only grow)."""

    def __init__(self, logs: list[Path]) -> None:
        self.logs = logs
        self.offsets = dict.fromkeys(logs, 0)
        self.count = 0

    def new(self) -> list[tuple[int, int, str]]:
        found = []
        for log in self.logs:
            with open(log, "rb") as file:
                file.seek(self.offsets[log])
                data = file.read()
            whole = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next call
            self.offsets[log] += len(whole)
            for line in whole.decode().splitlines():
                parts = line.split()
                if len(parts) == 4 and parts[3] == "Accepted":
                    found.append((int(parts[0]), int(parts[1]), parts[2]))
        self.count += len(found)
        return found


class JournalCheck:
    """A replay of the engine's journal kept beside it (an Exchange of its own, from the
    first record, taken further at each check: the same as a fresh replay, without redoing
    the records already checked), and every order it accepted."""

    def __init__(self, data: Path) -> None:
        self.journal = data / "journal"
        self.exchange = Exchange(default_market())
        self.accepted: Counter = Counter()
        self.commands: dict[int, NewOrder] = {}

    def check(self, acks: list[tuple[int, int, str]], engine_seq: int, engine_hash: str) -> int:
        """Every acknowledged order is in the journal at its seq; the replay up to the seq the
        engine reported has the engine's state hash there and accepted no (member, ClOrdID)
        twice. The number of records replayed. (The engine runs on meanwhile: the journal
        may hold more, and end in a record being written.)"""
        exchange = self.exchange
        for record in read_journal(self.journal, exchange.seq):
            if record.seq > engine_seq:
                break
            if isinstance(record.command, NewOrder):
                self.commands[record.seq] = record.command
            events = exchange.apply_stamped(record.seq, record.ts_ns, record.command)
            self.accepted.update((e.member, e.cl_ord_id) for e in events if type(e) is Accepted)
        for seq, member, cl_ord_id in acks:
            command = self.commands.get(seq)
            assert command is not None, f"acknowledged seq {seq} is not a NewOrder of the journal"
            assert (command.member, command.cl_ord_id) == (member, cl_ord_id), (seq, command)
        assert max(self.accepted.values(), default=0) <= 1, "an order was applied twice"
        assert exchange.seq == engine_seq, f"the journal ends at {exchange.seq}, not {engine_seq}"
        assert exchange.state_hash() == engine_hash, "the restarted engine is not the journal's"
        return exchange.seq


def written(directory: Path, seq: int) -> None:
    """Wait until `directory` holds a snapshot at `seq` or later (the engine writes it after
    the turn that took the request, atomically: the name appears when it is whole)."""
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
    while time.monotonic() < deadline:
        paths = directory.iterdir() if directory.is_dir() else ()
        names = (SNAPSHOT.fullmatch(path.name) for path in paths)
        if any(int(match[1]) >= seq for match in names if match):
            return
        time.sleep(0.02)
    raise AssertionError(f"no snapshot at seq {seq} or later in {directory}")


def trading_days(cycles: int, day_every: int) -> list[str]:
    """The trading days of `cycles` cycles: from DAY, or from an earlier day of the market's
    calendar when it ends before they do; ValueError when it cannot hold them."""
    market = default_market()
    days, day = [], (date.fromisoformat(market.calendar_range[0]) - timedelta(1)).isoformat()
    with contextlib.suppress(ValueError):  # the calendar's end
        while True:
            day = market.next_trading_day(day)
            days.append(day)
    needed = cycles // day_every + 1
    if needed > len(days):
        raise ValueError(
            f"{cycles} cycles at {day_every} a day need {needed} trading days; the market's "
            f"calendar holds {len(days)}: give --day-every more cycles"
        )
    start = min(days.index(DAY) if DAY in days else 0, len(days) - needed)
    return days[start : start + needed]


def open_day(engine: EngineProcess, code: str, day: str, close: bool) -> None:
    """(Close `code` and the day, kill the engine,) start it with its clock on `day`'s morning
    (a day starts on its own date), open the day and `code` in it."""
    if close:
        closed = engine.admin(Close(code), EndOfDay())
        assert not [a for a in closed if isinstance(a, Rejected)], closed
        engine.kill()
    engine.clock = f"{day}T09:10+08:00"
    engine.start()
    engine.open_market(code, day=day)


def crash_cycles(
    work: Path, cycles: int, seed: int = 1, progress=None, day_every: int = DAY_EVERY
) -> CrashReport:
    market = default_market()
    data = work / "data"
    orders = f"ipc://{work}/orders"
    engine = EngineProcess(data, "--orders", orders, "--admin", f"ipc://{work}/admin")
    rng = random.Random(seed)
    report = CrashReport()
    journal = JournalCheck(data)
    logs = [work / f"acks-{gateway}.log" for gateway, _ in GATEWAYS]
    for log in logs:
        log.touch()
    acknowledgements = Acknowledgements(logs)
    codes = [i.code for i in market.instruments]
    days = trading_days(cycles, day_every)
    open_day(engine, codes[0], days[0], close=False)
    price = market.instruments[0].reference_price
    generators = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.loadgen",
                orders,
                gateway,
                str(member),
                codes[0],
                str(price),
                str(log),
            ]
        )
        for (gateway, member), log in zip(GATEWAYS, logs, strict=True)
    ]
    try:
        for cycle in range(cycles):
            time.sleep(rng.uniform(0.05, 0.6))
            engine.kill()
            engine.start()
            acks = acknowledgements.new()  # before the status: every ack read is covered by it
            status = engine.status()
            assert not acks or max(seq for seq, _, _ in acks) <= status.seq
            report.journaled = journal.check(acks, status.seq, status.state_hash)
            if cycle % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1:  # as an operator would
                (requested,) = engine.admin(wire.SnapshotNow())
                if rng.random() < SNAPSHOTS_WAITED:
                    written(data / "snapshots", requested.seq)
            if cycle % day_every == day_every - 1:
                open_day(engine, codes[0], days[report.days], close=True)
                report.days += 1
            report.cycles = cycle + 1
            report.acknowledged = acknowledgements.count
            if progress:
                progress(report)
    finally:
        for generator in generators:
            generator.terminate()
        for generator in generators:
            generator.wait(30)
        engine.__exit__()
    return report
