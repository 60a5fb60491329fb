"""Kill -9 the engine under load, restart it, and check that nothing acknowledged was lost,
nothing was applied twice, and the state is exactly a fresh replay of the journal.

Used by tests/gateway/test_crash_recovery.py (20 cycles) and tools/crash_soak.py (1,000).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.config import default_market
from engine.core import Exchange
from engine.journal import read_journal
from engine.protocol import Accepted, NewOrder
from tests.support.engine import EngineProcess

GATEWAYS = (("mm", 1), ("brokers", 3), ("entities", 5))


@dataclass
class CrashReport:
    cycles: int = 0
    acknowledged: int = 0
    journaled: int = 0


def acknowledged(logs: list[Path]) -> list[tuple[int, int, str]]:
    """(seq, member, ClOrdID) of every Accepted the load generators were told of."""
    found = []
    for log in logs:
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[3] == "Accepted":
                found.append((int(parts[0]), int(parts[1]), parts[2]))
    return found


def check_journal(
    data: Path, acks: list[tuple[int, int, str]], engine_seq: int, engine_hash: str
) -> int:
    """Every acknowledged order is in the journal at its seq; a fresh replay up to the seq the
    engine reported gives the engine's state hash there and accepts no (member, ClOrdID)
    twice. The number of records replayed. (The engine runs on meanwhile: the journal may
    hold more, and end in a record being written.)"""
    exchange = Exchange(default_market())
    accepted = Counter()
    commands = {}
    for record in read_journal(data / "journal"):
        if record.seq > engine_seq:
            break
        commands[record.seq] = record.command
        events = exchange.apply_stamped(record.seq, record.ts_ns, record.command)
        accepted.update((e.member, e.cl_ord_id) for e in events if type(e) is Accepted)
    for seq, member, cl_ord_id in acks:
        command = commands.get(seq)
        assert isinstance(command, NewOrder), f"acknowledged seq {seq} is not in the journal"
        assert (command.member, command.cl_ord_id) == (member, cl_ord_id), (seq, command)
    assert not [key for key, n in accepted.items() if n > 1], "an order was applied twice"
    assert exchange.state_hash() == engine_hash, "the restarted engine is not the journal's"
    return len(commands)


def crash_cycles(work: Path, cycles: int, seed: int = 1, progress=None) -> CrashReport:
    market = default_market()
    data = work / "data"
    orders = f"ipc://{work}/orders"
    engine = EngineProcess(data, "--orders", orders, "--admin", f"ipc://{work}/admin")
    rng = random.Random(seed)
    report = CrashReport()
    logs = [work / f"acks-{gateway}.log" for gateway, _ in GATEWAYS]
    engine.start()
    codes = [i.code for i in market.instruments]
    engine.open_market(codes[0])
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
            acks = acknowledged(logs)  # before the status: every ack read is covered by it
            status = engine.status()
            assert not acks or max(seq for seq, _, _ in acks) <= status.seq
            report.journaled = check_journal(data, acks, status.seq, status.state_hash)
            report.cycles = cycle + 1
            report.acknowledged = len(acks)
            if progress:
                progress(report)
    finally:
        for generator in generators:
            generator.terminate()
        for generator in generators:
            generator.wait(30)
        engine.__exit__()
    return report
