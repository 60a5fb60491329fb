"""Counterfactual market rules on the same order flow.

Each scenario takes the command stream of a replay (batch layout, engine.book.layout C_*),
changes one market rule, runs it through the compiled book and reports what changed: fills,
traded volume, VWAP, rejects and the closing best bid and ask, beside the actual rules.

Scenarios:
- tick N: prices move to a tick N times coarser, passively (bids down, asks up), as a
  participant would re-quote; orders landing on one level queue behind each other;
- band P%: a price band of +-P% around the first order's price; orders outside are rejected;
- opening call: the first share of the commands is collected without matching (IOC orders
  are refused in a call), the book is uncrossed at its equilibrium price, then trading goes on;
- pick: every marketable IOC order instead lifts (点选) the largest resting order within the
  best five levels of the other side, up to its own quantity, rather than matching in
  price-time order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from engine.book import Book, EventKind
from engine.book.auction import run_uncross
from engine.book.book import apply_row
from engine.book.layout import (
    C_KIND,
    C_OID,
    C_OWNER,
    C_PRICE,
    C_QTY,
    C_SIDE,
    C_TIF,
    CMD_ADD,
    CMD_AMEND,
)


@dataclass(frozen=True)
class Outcome:
    scenario: str
    fills: int
    matched_volume: int  # what the engine matched: not hidden executions, not exceptions
    vwap: float
    rejects: int
    best_bid: int
    best_ask: int


def _outcome(name: str, book: Book, fills: list[tuple[int, int]], rejects: int) -> Outcome:
    volume = sum(q for _, q in fills)
    value = sum(p * q for p, q in fills)
    return Outcome(
        name,
        len(fills),
        volume,
        value / volume if volume else 0.0,
        rejects,
        book.best_bid() or 0,
        book.best_ask() or 0,
    )


def _run_batch(name: str, cmds: np.ndarray, tick: int, band=None) -> Outcome:
    book = Book(tick=tick, band=band)
    result = book.apply_batch(cmds, record="all")
    ev = result.events
    fills = ev[ev[:, 0] == EventKind.FILL]
    return _outcome(
        name,
        book,
        list(zip(fills[:, 3].tolist(), fills[:, 4].tolist(), strict=True)),
        result.rejects,
    )


def actual(cmds: np.ndarray, tick: int) -> Outcome:
    return _run_batch("actual rules", cmds, tick)


def coarser_tick(cmds: np.ndarray, tick: int, factor: int) -> Outcome:
    moved = cmds.copy()
    coarse = tick * factor
    prices = moved[:, C_PRICE]
    adds = moved[:, C_KIND] == CMD_ADD
    side_of = dict(zip(moved[adds, C_OID].tolist(), moved[adds, C_SIDE].tolist(), strict=True))
    amends = moved[:, C_KIND] == CMD_AMEND
    sides = moved[:, C_SIDE].copy()
    sides[amends] = [side_of.get(oid, 0) for oid in moved[amends, C_OID].tolist()]
    priced = prices > 0
    bids = priced & (sides == 0)
    asks = priced & (sides == 1)
    prices[bids] = prices[bids] // coarse * coarse
    prices[asks] = -(-prices[asks] // coarse) * coarse
    return _run_batch(f"tick x{factor}", moved, coarse)


def price_band(cmds: np.ndarray, tick: int, percent: int) -> Outcome:
    adds = cmds[(cmds[:, C_KIND] == CMD_ADD) & (cmds[:, C_PRICE] > 0)]
    centre = int(adds[0, C_PRICE])
    low = -(-centre * (100 - percent) // (100 * tick)) * tick
    high = centre * (100 + percent) // (100 * tick) * tick
    return _run_batch(f"band +-{percent}%", cmds, tick, band=(low, high))


def opening_call(cmds: np.ndarray, tick: int, share: float = 0.05) -> Outcome:
    split = max(1, int(len(cmds) * share))
    book = Book(tick=tick)
    book.set_collecting(True)
    first = book.apply_batch(cmds[:split], record="all")
    reference = int(cmds[0, C_PRICE]) or tick
    events, _ = run_uncross(book, reference)
    rest = book.apply_batch(cmds[split:], record="all")
    fills = [(e.price, e.qty) for e in events if e.kind == EventKind.FILL]
    for batch in (first, rest):
        f = batch.events[batch.events[:, 0] == EventKind.FILL]
        fills += list(zip(f[:, 3].tolist(), f[:, 4].tolist(), strict=True))
    return _outcome(f"opening call ({share:.0%})", book, fills, first.rejects + rest.rejects)


def largest_pick(cmds: np.ndarray, tick: int) -> Outcome:
    book = Book(tick=tick)
    fills, rejects = [], 0
    for row in cmds.tolist():
        if row[C_KIND] == CMD_ADD and row[C_TIF] == 1:  # a marketable IOC: pick instead
            side, want = row[C_SIDE], row[C_QTY]
            resting = [o for o in book.orders() if o[1] != side]
            prices = sorted({o[2] for o in resting}, reverse=(side == 1))[:5]
            top5 = [o for o in resting if o[2] in prices and o[4] != row[C_OWNER]]
            if not top5:
                continue
            target = max(top5, key=lambda o: (o[3], -o[5]))
            book.pick(row[C_OID], row[C_OWNER], side, target[0], min(want, target[3]))
        else:
            apply_row(book, row)
            continue
        for e in book.events():
            if e.kind == EventKind.FILL:
                fills.append((e.price, e.qty))
            elif e.kind == EventKind.REJECTED:
                rejects += 1
    return _outcome("pick largest in top 5", book, fills, rejects)


def compare(cmds: np.ndarray, tick: int, pick: bool = True) -> list[Outcome]:
    """Every scenario on the same commands, the actual rules first."""
    outcomes = [
        actual(cmds, tick),
        coarser_tick(cmds, tick, 5),
        price_band(cmds, tick, 1),
        opening_call(cmds, tick),
    ]
    if pick:
        outcomes.append(largest_pick(cmds, tick))
    return outcomes


def outcome_table(outcomes: list[Outcome]) -> np.ndarray:
    """The outcomes as a structured array, one row per scenario (counterfactuals.csv)."""
    names = [f.name for f in dataclasses.fields(Outcome)]
    return np.array(
        [dataclasses.astuple(o) for o in outcomes],
        dtype=[(n, {"scenario": "U32", "vwap": "f8"}.get(n, "i8")) for n in names],
    )
