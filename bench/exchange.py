"""Exchange-core benchmarks: Exchange.apply with validation and risk on, and call uncrossing.

exchange_apply replays the seeded mixed workload as protocol commands (built before the
timer) through an Exchange over the compiled book (its compiled order path; the median of
three runs on fresh exchanges), and through one over the reference book (the plain Python
path) for comparison; every run must end with the reference's state hash and trade count.
The timed loop touches every returned event, as a gateway would. uncross collects a call book
of random crossed orders and times finding the equilibrium plus executing it; the compiled
and the reference book must produce the same fills and the same remaining book.
call_phase sends orders to an opening call whose book crosses from one end of the band to the
other (a bid at the band's top, an ask at its bottom, as brokers send to be sure of the
open), so every order moves the indicative price the exchange publishes; both exchanges must
end with the same state hash and the same indicatives.
exchange_batch replays the same workload as order-command records (engine.codec, built before
the timer) through Exchange.apply_batch in runs of BATCH records, from records in to encoded
event bytes out; exchange_apply (per command) and the reference exchange run in the same
benchmark, and every batched run must end with the per-command run's state hash and trades.
Both report wall-clock rates (`value`, `rounds`) and rates per second of the timing thread's
CPU time (`cpu`, `cpu_rounds`; time.thread_time): on a machine shared with other work, where
the wall clock also counts the time other processes held the core, the CPU figures compare.
exchange_rejects floods the exchange with orders it must refuse (off tick, outside the band,
an unknown member, more than the member's cash) and times them against the same number of
valid orders that rest without trading, on fresh exchanges in the same run: every refusal
must be answered with its code and leave the state hash unchanged.
"""

from __future__ import annotations

import gc
import time

import msgspec
import numpy as np

from bench.book import WrongResult
from bench.workload import DEFAULT_MID, MEMBERS, mixed_workload
from engine.book import Book, ReferenceBook
from engine.book.auction import run_uncross
from engine.book.layout import CMD_ADD
from engine.codec import EVENT_DTYPE, ROW_TRADE, records_of
from engine.config import MarketConfig, Member
from engine.core import Exchange, ReferenceExchange
from engine.instruments import Instrument
from engine.protocol import (
    Accepted,
    CancelOrder,
    Indicative,
    NewOrder,
    OpenCall,
    RejectCode,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import Side

CODE = "CEA25"


def bench_market() -> MarketConfig:
    instrument = Instrument(
        code=CODE, name="bench", product="CEA", reference_price=DEFAULT_MID, max_qty=99_999
    )
    members = [
        Member(id=m, name=f"m{m}", cash=10**15, holdings={CODE: 10**9}) for m in range(MEMBERS)
    ]
    return MarketConfig(name="bench", instruments=[instrument], members=members)


def as_commands(cmds: np.ndarray) -> list:
    """Workload rows as protocol commands (cancels name the order's owner)."""
    owner: dict[int, int] = {}
    out = []
    for i, (kind, oid, member, side, price, qty, _, tif, _, _) in enumerate(cmds.tolist()):
        if kind == CMD_ADD:
            owner[oid] = member
            out.append(NewOrder(f"c{i}", member, CODE, Side(side), price, qty, tif=tif))
        else:
            out.append(CancelOrder(f"c{i}", owner[oid], CODE, oid))
    return out


def run_exchange(
    commands: list, exchange_class: type[Exchange]
) -> tuple[float, Exchange, int, float]:
    """Commands per second through Exchange.apply on a fresh exchange (wall clock), the
    exchange, the trades printed, and commands per second of the thread's CPU time."""
    exchange = exchange_class(bench_market())
    for command in (StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)):
        exchange.apply(command)
    apply = exchange.apply
    trades = 0
    gc.collect()
    gc.disable()
    try:
        cpu, start = time.thread_time(), time.perf_counter()
        for command in commands:
            for event in apply(command):
                if type(event) is Trade:
                    trades += 1
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    finally:
        gc.enable()
    return len(commands) / elapsed, exchange, trades, len(commands) / cpu


def exchange_benchmark(messages: int, rounds: int = 3) -> dict:
    """Median of `rounds` runs, each on a fresh Exchange (as the book benchmarks do); the
    reference exchange, ten times slower, runs once."""
    commands = as_commands(mixed_workload(messages, seed=2))
    run_exchange(commands[:2000], Exchange)  # compile and warm up outside the timer
    ref_rate, reference, ref_trades, _ = run_exchange(commands, ReferenceExchange)
    rates, cpu_rates = [], []
    for _ in range(rounds):
        rate, exchange, trades, cpu_rate = run_exchange(commands, Exchange)
        if exchange.state_hash() != reference.state_hash() or trades != ref_trades:
            raise WrongResult("exchange_apply: compiled and reference exchanges disagree")
        rates.append(rate)
        cpu_rates.append(cpu_rate)
    return {
        "bench": "exchange_apply",
        "value": float(np.median(rates)),
        "unit": "cmd/s",
        "reference": ref_rate,
        "rounds": [round(r) for r in rates],
        "cpu": float(np.median(cpu_rates)),  # per second of the thread's CPU time
        "cpu_rounds": [round(r) for r in cpu_rates],
        "messages": messages,
        "trades": trades,
        "state_hash": exchange.state_hash()[:16],
        "target": 1_000_000,
    }


BATCH = 8192  # records per apply_batch call: what a service drains per fsync, say


def run_batches(records: np.ndarray) -> tuple[float, Exchange, int, float]:
    """Records per second through apply_batch on a fresh exchange (wall clock), the
    exchange, the trades printed, and records per second of the thread's CPU time."""
    exchange = Exchange(bench_market())
    for command in (StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)):
        exchange.apply(command)
    first = exchange.seq + 1
    records = records.copy()
    records["seq"] = np.arange(first, first + len(records))
    apply_batch = exchange.apply_batch
    out = []
    gc.collect()
    gc.disable()
    try:
        cpu, start = time.thread_time(), time.perf_counter()
        for i in range(0, len(records), BATCH):
            out.append(apply_batch(records[i : i + BATCH]))
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
    finally:
        gc.enable()
    trades = sum(
        int(np.count_nonzero(np.frombuffer(data, EVENT_DTYPE)["kind"] == ROW_TRADE)) for data in out
    )
    return len(records) / elapsed, exchange, trades, len(records) / cpu


def batch_benchmark(messages: int, rounds: int = 3) -> dict:
    """apply_batch against Exchange.apply and the reference exchange, in the same run."""
    commands = as_commands(mixed_workload(messages, seed=2))
    records = records_of(commands, [CODE], 0, [0] * len(commands))
    run_batches(records[:2000])  # compile and warm up outside the timer
    run_exchange(commands[:2000], Exchange)
    ref_rate, reference, ref_trades, _ = run_exchange(commands, ReferenceExchange)
    apply_rates, batch_rates, apply_cpu, batch_cpu = [], [], [], []
    for _ in range(rounds):
        rate, single, trades, cpu_rate = run_exchange(commands, Exchange)
        apply_rates.append(rate)
        apply_cpu.append(cpu_rate)
        rate, batched, batch_trades, cpu_rate = run_batches(records)
        batch_rates.append(rate)
        batch_cpu.append(cpu_rate)
        if not batched.state_hash() == single.state_hash() == reference.state_hash():
            raise WrongResult("exchange_batch: batched and per-command states differ")
        if not batch_trades == trades == ref_trades:
            raise WrongResult("exchange_batch: batched and per-command trades differ")
    value, per_command = float(np.median(batch_rates)), float(np.median(apply_rates))
    return {
        "bench": "exchange_batch",
        "value": value,
        "unit": "cmd/s",
        "reference": ref_rate,
        "exchange_apply": per_command,
        "ratio_exchange_apply": value / per_command,
        "rounds": [round(r) for r in batch_rates],
        "cpu": float(np.median(batch_cpu)),  # per second of the thread's CPU time
        "cpu_rounds": [round(r) for r in batch_cpu],
        "exchange_apply_cpu": float(np.median(apply_cpu)),
        "batch": BATCH,
        "messages": messages,
        "trades": batch_trades,
        "state_hash": batched.state_hash()[:16],
        "target": 3_000_000,
    }


def call_book(orders: int, seed: int = 4) -> np.ndarray:
    """Crossed call-phase orders around the mid: bids mostly above asks."""
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, orders)
    offset = rng.integers(-60, 20, orders)
    price = np.where(side == 0, DEFAULT_MID - offset, DEFAULT_MID + offset)
    return np.column_stack(
        [side, price, rng.integers(1, 200, orders), rng.integers(0, MEMBERS, orders)]
    )


def time_uncross(book_factory, rows: np.ndarray) -> tuple[float, list, list]:
    book = book_factory(tick=1)
    book.set_collecting(True)
    for oid, (side, price, qty, owner) in enumerate(rows.tolist(), 1):
        book.add(oid, owner, side, price, qty)
    start = time.perf_counter()
    events, rounds = run_uncross(book, DEFAULT_MID)
    elapsed = time.perf_counter() - start
    return len(rows) / elapsed, events, [rounds, book.depth(1 << 30)]


def uncross_benchmark(orders: int) -> dict:
    rows = call_book(orders)
    time_uncross(Book, rows[:1000])
    rate, events, outcome = time_uncross(Book, rows)
    ref_rate, ref_events, ref_outcome = time_uncross(ReferenceBook, rows)
    if events != ref_events or outcome != ref_outcome:
        raise WrongResult("uncross: compiled and reference books disagree")
    rounds = outcome[0]
    return {
        "bench": "uncross",
        "value": rate,
        "unit": "orders/s",
        "reference": ref_rate,
        "orders": orders,
        "price": rounds[0].equilibrium.price,
        "volume": sum(r.executed for r in rounds),
        "rounds": len(rounds),
        "fills": sum(1 for e in events if e.kind == 3),
    }


def call_orders(orders: int, seed: int = 5) -> list[NewOrder]:
    """Limit orders within 20 ticks of the reference, after one bid at the top of the band
    and one ask at its bottom."""
    low, high = bench_market().instruments[0].band(DEFAULT_MID)
    out = [
        NewOrder("top", 0, CODE, Side.BUY, high, 100),
        NewOrder("bottom", 1, CODE, Side.SELL, low, 100),
    ]
    rng = np.random.default_rng(seed)
    for i, (side, offset, qty, member) in enumerate(
        zip(
            rng.integers(0, 2, orders).tolist(),
            rng.integers(-20, 21, orders).tolist(),
            rng.integers(1, 200, orders).tolist(),
            rng.integers(0, MEMBERS, orders).tolist(),
            strict=True,
        )
    ):
        out.append(NewOrder(f"c{i}", member, CODE, Side(side), DEFAULT_MID + offset, qty))
    return out


def time_call_phase(commands: list, exchange_class: type[Exchange]) -> tuple[float, Exchange, list]:
    exchange = exchange_class(bench_market())
    for command in (StartOfDay("2026-11-24"), OpenCall(CODE)):
        exchange.apply(command)
    indicatives = []
    start = time.perf_counter()
    for command in commands:
        indicatives += (e for e in exchange.apply(command) if type(e) is Indicative)
    return len(commands) / (time.perf_counter() - start), exchange, indicatives


def call_phase_benchmark(orders: int) -> dict:
    commands = call_orders(orders)
    time_call_phase(commands[:500], Exchange)  # compile and warm up outside the timer
    rate, exchange, indicatives = time_call_phase(commands, Exchange)
    ref_rate, reference, ref_indicatives = time_call_phase(commands, ReferenceExchange)
    if exchange.state_hash() != reference.state_hash() or indicatives != ref_indicatives:
        raise WrongResult("call_phase: compiled and reference exchanges disagree")
    low, high = exchange.markets[CODE].band
    return {
        "bench": "call_phase",
        "value": rate,
        "unit": "cmd/s",
        "reference": ref_rate,
        "orders": len(commands),
        "band_ticks": (high - low) // exchange.markets[CODE].instrument.tick,
        "indicatives": len(indicatives),
        "last_indicative": [indicatives[-1].price, indicatives[-1].volume],
    }


def reject_flood(orders: int, seed: int = 6) -> tuple[list[NewOrder], list[NewOrder]]:
    """`orders` commands each refused for one reason, in turn, and as many valid ones that
    rest without trading (bids below the mid, asks above it)."""
    high = rejects_market().instruments[0].band(DEFAULT_MID)[1]
    rng = np.random.default_rng(seed)
    bad, good = [], []
    for i, (side, offset, qty, member) in enumerate(
        zip(
            rng.integers(0, 2, orders).tolist(),
            rng.integers(1, 50, orders).tolist(),
            rng.integers(1, 200, orders).tolist(),
            rng.integers(0, MEMBERS - 1, orders).tolist(),
            strict=True,
        )
    ):
        price = DEFAULT_MID - 2 * offset if side == 0 else DEFAULT_MID + 2 * offset
        good.append(NewOrder(f"g{i}", member, CODE, Side(side), price, qty))
        reason = i % 4
        if reason == 0:  # a price between ticks
            bad.append(NewOrder(f"b{i}", member, CODE, Side(side), price + 1, qty))
        elif reason == 1:  # beyond the band
            bad.append(NewOrder(f"b{i}", member, CODE, Side(side), high + 2 * offset, qty))
        elif reason == 2:  # nobody
            bad.append(NewOrder(f"b{i}", 10_000 + member, CODE, Side(side), price, qty))
        else:  # the poor member buys more than its cash
            bad.append(NewOrder(f"b{i}", MEMBERS - 1, CODE, Side.BUY, price, 99_000))
    return bad, good


REJECT_CODES = [RejectCode.PRICE_OFF_TICK, RejectCode.PRICE_OUTSIDE_BAND]
REJECT_CODES += [RejectCode.UNKNOWN_MEMBER, RejectCode.INSUFFICIENT_FUNDS]


def rejects_market() -> MarketConfig:
    """The bench market with a tick of 2 fen (so odd prices are off tick) and a last member
    with too little cash for a large buy."""
    config = bench_market()
    instrument = config.instruments[0]
    tick = Instrument(**{**msgspec.structs.asdict(instrument), "tick": 2})
    members = [*config.members[:-1], Member(id=MEMBERS - 1, name="poor", cash=100_000)]
    return MarketConfig(name="rejects", instruments=[tick], members=members)


def time_orders(
    commands: list[NewOrder], exchange_class: type[Exchange]
) -> tuple[float, list, Exchange]:
    """Orders per second through a fresh exchange in continuous trading, with the answers."""
    exchange = exchange_class(rejects_market())
    for command in (StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)):
        exchange.apply(command)
    apply = exchange.apply
    answers = []
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for command in commands:
            answers.append(apply(command)[0])
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return len(commands) / elapsed, answers, exchange


def rejects_benchmark(orders: int, rounds: int = 3) -> dict:
    bad, good = reject_flood(orders)
    time_orders(bad[:2000] + good[:2000], Exchange)  # compile and warm up outside the timer
    fresh_hash = Exchange(rejects_market())
    for command in (StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)):
        fresh_hash.apply(command)
    ref_rate, ref_answers, _ = time_orders(bad, ReferenceExchange)
    reject_rates, accept_rates = [], []
    for _ in range(rounds):
        rate, answers, exchange = time_orders(bad, Exchange)
        codes = [getattr(a, "code", None) for a in answers]
        expected = [REJECT_CODES[i % 4] for i in range(len(bad))]
        if answers != ref_answers or codes != expected:
            raise WrongResult("exchange_rejects: a refusal differs from the reference's")
        if exchange.state_hash() != fresh_hash.state_hash():
            raise WrongResult("exchange_rejects: a refused order changed the state")
        reject_rates.append(rate)
        rate, answers, _ = time_orders(good, Exchange)
        if any(type(a) is not Accepted for a in answers):
            raise WrongResult("exchange_rejects: a valid order was refused")
        accept_rates.append(rate)
    rejects, accepted = float(np.median(reject_rates)), float(np.median(accept_rates))
    return {
        "bench": "exchange_rejects",
        "value": rejects,
        "unit": "cmd/s",
        "reference": ref_rate,
        "accepted_resting": accepted,
        "rejects_vs_accepted": rejects / accepted,
        "orders": len(bad),
        "rounds": [round(r) for r in reject_rates],
    }
