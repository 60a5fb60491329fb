"""Order book benchmarks: batch kernel, per-command API, reference book, memory per order.

Every throughput figure runs the same seeded workload (the mixed workload with 5% amends) and
checks its final state (fills, traded quantity, a hash of the whole depth) against the
reference book's, measured in the same run, so a fast wrong answer fails instead of being
reported. The per-command figures (book_apply, reference_book) are the loop a user of the
Python API writes: one call per command, then every event read through `events()`, with every
field of every fill used; what was read is checked against the book's own counters and
against the reference book's reading, so skipping the reads would fail too.
"""

from __future__ import annotations

import gc
import hashlib
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.workload import DEFAULT_BAND, mixed_workload
from engine.book import Book, EventKind, ReferenceBook
from engine.book.layout import CMD_ADD, CMD_AMEND, CMD_CANCEL

AMENDS = 0.05  # share of the workload's commands that amend a live order
FILL = int(EventKind.FILL)


@dataclass
class Outcome:
    """What a run of the workload left behind: compared across implementations."""

    fills: int
    traded_qty: int
    depth_hash: str

    @classmethod
    def of(cls, book) -> Outcome:
        bids, asks = book.depth(1 << 30)
        digest = hashlib.sha256(repr((bids, asks)).encode()).hexdigest()[:16]
        return cls(book.fills, book.traded_qty, digest)


@dataclass
class Readout:
    """What the per-command driver read from the events: fills, their quantity and value,
    a sum over every other field of every fill, and the events of other kinds."""

    fills: int = 0
    traded_qty: int = 0
    notional: int = 0
    fill_fields: int = 0
    other_events: int = 0


class WrongResult(AssertionError):
    pass


def verify(name: str, got: Outcome, want: Outcome) -> None:
    if got != want:
        raise WrongResult(f"{name}: final state {got} differs from the reference {want}")


def _calls(book, cmds: np.ndarray) -> list[tuple[Callable[..., int], tuple[int, ...]]]:
    """The workload as (bound method, args) pairs: the per-command driver loop's input."""
    calls = []
    for kind, oid, owner, side, price, qty, otype, tif, stp, _ in cmds.tolist():
        if kind == CMD_ADD:
            calls.append((book.add, (oid, owner, side, price, qty, otype, tif, stp)))
        elif kind == CMD_CANCEL:
            calls.append((book.cancel, (oid, owner)))
        elif kind == CMD_AMEND:
            calls.append((book.amend, (oid, price, qty, owner)))
        else:
            raise ValueError(f"the per-command driver does not handle command kind {kind}")
    return calls


def calls_rate(book, cmds: np.ndarray) -> float:
    """Messages per second of the calls alone, reading no event (for scale beside the
    figures that read them)."""
    calls = _calls(book, cmds)
    gc.collect()
    start = time.perf_counter()
    for method, args in calls:
        method(*args)
    return len(calls) / (time.perf_counter() - start)


def per_command_rate(book, cmds: np.ndarray) -> tuple[float, Readout]:
    """Messages per second through the book's Python API, as a user's loop runs it: one call
    per command, then every event read (the collector on, as in a user's program)."""
    calls = _calls(book, cmds)
    fills = traded = notional = fields = other = 0
    gc.collect()
    start = time.perf_counter()
    for method, args in calls:
        method(*args)
        for e in book.events():
            if e.kind == FILL:
                fills += 1
                traded += e.qty
                notional += e.price * e.qty
                fields += e.oid + e.oid2 + e.leaves + e.leaves2 + e.side + e.owner + e.owner2
            else:
                other += 1
    elapsed = time.perf_counter() - start
    readout = Readout(fills, traded, notional, fields, other)
    if (fills, traded) != (book.fills, book.traded_qty):
        raise WrongResult(f"events read {readout} disagree with the book's counters")
    return len(calls) / elapsed, readout


def batch_rate(cmds: np.ndarray, rounds: int) -> tuple[float, Outcome]:
    """Median messages per second of `rounds` batch runs on fresh books, recording fills into
    an output buffer reused across rounds (as a replay that runs day after day would)."""
    warm = Book(tick=1, band=DEFAULT_BAND)
    out = warm.apply_batch(cmds, record="fills").events.base
    rates, outcome = [], None
    for _ in range(rounds):
        book = Book(tick=1, band=DEFAULT_BAND)
        start = time.perf_counter()
        result = book.apply_batch(cmds, record="fills", out=out)
        rates.append(len(cmds) / (time.perf_counter() - start))
        if result.fills != book.fills or len(result.events) != result.fills:
            raise WrongResult("kernel_batch: fill rows do not match the fill count")
        outcome = Outcome.of(book)
    return float(np.median(rates)), outcome


def book_benchmarks(messages: int, rounds: int, seed: int = 1) -> list[dict]:
    cmds = mixed_workload(messages, seed=seed, amend=AMENDS)
    common = {"messages": messages, "seed": seed, "amends": AMENDS, "unit": "msg/s"}

    reference = ReferenceBook(tick=1, band=DEFAULT_BAND)
    ref_rate, ref_read = per_command_rate(reference, cmds)
    want = Outcome.of(reference)

    batch, got = batch_rate(cmds, rounds)
    verify("kernel_batch", got, want)

    per_command_rate(Book(tick=1, band=DEFAULT_BAND), cmds[:2000])  # warm the entry points
    book = Book(tick=1, band=DEFAULT_BAND)
    apply_rate, read = per_command_rate(book, cmds)
    verify("book_apply", Outcome.of(book), want)
    if read != ref_read:
        raise WrongResult(f"book_apply read {read}, the reference book {ref_read}")
    calls_only = Book(tick=1, band=DEFAULT_BAND)
    calls_only_rate = calls_rate(calls_only, cmds)
    verify("book_apply (calls only)", Outcome.of(calls_only), want)

    checks = {"fills": want.fills, "traded_qty": want.traded_qty, "depth_hash": want.depth_hash}
    return [
        {
            "bench": "kernel_batch",
            "value": batch,
            "reference": ref_rate,
            **common,
            **checks,
            "rounds": rounds,
        },
        {
            "bench": "book_apply",
            "value": apply_rate,
            "reference": ref_rate,
            "calls_only": calls_only_rate,
            "events_read": read.fills + read.other_events,
            **common,
            **checks,
        },
        {"bench": "reference_book", "value": ref_rate, "reference": ref_rate, **common, **checks},
    ]


def resting_orders(n: int, seed: int = 7) -> np.ndarray:
    """n non-crossing day orders spread over the band (bids below 6000, asks from 6001)."""
    rng = np.random.default_rng(seed)
    cmds = np.zeros((n, 10), dtype=np.int64)
    side = rng.integers(0, 2, n)
    offset = rng.integers(0, 600, n)
    cmds[:, 0] = CMD_ADD
    cmds[:, 1] = np.arange(1, n + 1)
    cmds[:, 2] = rng.integers(0, 50, n)
    cmds[:, 3] = side
    cmds[:, 4] = np.where(side == 0, 6000 - offset, 6001 + offset)
    cmds[:, 5] = rng.integers(1, 100, n)
    cmds[:, 6] = 1
    return cmds


def memory_benchmark(orders: int, reference_orders: int) -> dict:
    """Bytes of book state per resting order with `orders` resting (compiled book, all of its
    arrays counted), against the reference book's traced allocations per order."""
    cmds = resting_orders(orders)
    book = Book(tick=1, band=DEFAULT_BAND)
    result = book.apply_batch(cmds, record="none")
    if len(book) != orders or result.fills != 0:
        raise WrongResult(f"book_memory: {len(book)} resting of {orders}, {result.fills} fills")
    per_order = book.state.nbytes() / orders

    ref_cmds = cmds[:reference_orders].tolist()
    gc.collect()
    tracemalloc.start()
    reference = ReferenceBook(tick=1, band=DEFAULT_BAND)
    for row in ref_cmds:
        reference.add(*row[1:9])
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if len(reference) != reference_orders:
        raise WrongResult("book_memory: the reference book did not rest every order")
    ref_per_order = traced / reference_orders
    return {
        "bench": "book_memory",
        "value": per_order,
        "unit": "bytes/order",
        "reference": ref_per_order,
        "orders": orders,
        "reference_orders": reference_orders,
        "total_mb": book.state.nbytes() / 2**20,
        "target": 128,
    }
