"""A command file's flow through the bare book, every event traced to the command behind it.

The bare book is the compiled price-time book alone: no price band, no phases, no risk checks
(a command log replays into the full exchange core instead). Commands run in the kernel one
after another, as `Book.apply_batch` runs them, but the loop here also records after each
command how many events had been written, so every fill and reject carries the index of its
command (and so its time and file line), and it applies the replay-only CMD_REDUCE:
take qty off a live order keeping its place (an amend to the same price and a smaller
quantity; a cancel when nothing would be left).

Invariants: the book ends as `Book.apply_batch` of the same rows would leave it, with reduce
rows written as their amend or cancel; `ends[i]` is the number of events written once
command i was applied, so command i wrote events [ends[i - 1], ends[i]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from engine.book import Book, EventKind
from engine.book.idhash import ht_find
from engine.book.layout import (
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
    E_CODE,
    E_KIND,
    E_OID,
    E_OID2,
    E_PRICE,
    E_QTY,
    E_SIDE,
    EV_ALL,
    M_EV_MODE,
    M_NEV,
    P_PRICE,
    P_QTY,
)
from engine.book.matching import apply_command
from engine.protocol import RejectCode
from engine.replay.sources import CMD_REDUCE, BadRow, CommandFile, Flow


@njit(cache=True, _nrt=False)
def _reduce(pool, lad, bm, ht, meta, ev, oid, owner, qty):
    slot = ht_find(ht, meta, oid)
    if slot < 0 or qty >= pool[slot, P_QTY]:  # unknown: the cancel rejects it, naming why
        return apply_command(
            pool, lad, bm, ht, meta, ev, CMD_CANCEL, oid, owner, 0, 0, 0, 0, 0, 0, 0
        )
    left = pool[slot, P_QTY] - qty
    price = pool[slot, P_PRICE]
    return apply_command(
        pool, lad, bm, ht, meta, ev, CMD_AMEND, oid, owner, 0, price, left, 0, 0, 0, 0
    )


@njit(cache=True, _nrt=False)
def _apply_traced(pool, lad, bm, ht, meta, ev, cmds, start, ends):
    """Commands cmds[start:]; returns (status, index of the next command) as the kernel's
    apply_batch does, and writes ends[i] after command i."""
    for i in range(start, cmds.shape[0]):
        row = cmds[i]
        if row[0] == CMD_REDUCE:
            status = _reduce(pool, lad, bm, ht, meta, ev, row[1], row[2], row[5])
        else:
            status = apply_command(
                pool, lad, bm, ht, meta, ev, row[0], row[1], row[2], row[3], row[4], row[5],
                row[6], row[7], row[8], row[9],
            )  # fmt: skip
        if status < 0:
            return status, i
        ends[i] = meta[M_NEV]
    return 0, cmds.shape[0]


def apply_traced(book: Book, cmds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run `cmds` (layout C_*, CMD_REDUCE allowed) through `book`; returns (events (m, 11),
    the index of the command behind each event)."""
    state = book.state
    cmds = np.ascontiguousarray(cmds, dtype=np.int64)
    ends = np.zeros(len(cmds), dtype=np.int64)
    state.meta[M_EV_MODE] = EV_ALL
    state.meta[M_NEV] = 0
    state.reserve_events(2 * len(cmds))
    start = 0
    while True:
        status, start = _apply_traced(*state.arrays(), cmds, start, ends)
        if status == 0:
            break
        book.grow(status)
    events = state.ev[: state.meta[M_NEV]].copy()
    state.meta[M_NEV] = 0
    book._bind()  # reserve_events may have replaced the event buffer the book's calls hold
    origin = np.searchsorted(ends, np.arange(len(events)), side="right")
    return events, origin


@dataclass
class FlowResult:
    """One instrument's run: its book, fills and book rejects."""

    instrument: str
    book: Book
    fills: np.ndarray  # structured, FILL_COLUMNS
    rejects: list[BadRow]
    commands: int


FILL_COLUMNS = [
    ("instrument", "O"),
    ("time_ns", "i8"),
    ("line", "i8"),
    ("taker_order", "i8"),
    ("maker_order", "i8"),
    ("price", "i8"),
    ("qty", "i8"),
    ("aggressor_side", "i8"),
    ("taker_member", "i8"),
    ("maker_member", "i8"),
]


FILL_UNITS = {
    "time_ns": "ns, the command file's clock (its time_ns)",
    "line": "line of the command file behind the fill (header = 1)",
    "price": "book units: the file's price x --price-scale, a multiple of --tick",
    "qty": "book units: the file's qty x --qty-scale",
    "aggressor_side": "side of the incoming order: 0 buy, 1 sell",
}


def run_flow(instrument: str, flow: Flow, source: CommandFile) -> FlowResult:
    """The instrument's commands through a fresh bare book with the file's tick."""
    book = Book(tick=source.scale.tick)
    cmds = flow.commands
    events, origin = apply_traced(book, cmds)
    kinds = events[:, E_KIND]
    fill_rows = np.flatnonzero(kinds == EventKind.FILL)
    fills = np.zeros(len(fill_rows), dtype=FILL_COLUMNS)
    fills["instrument"] = instrument
    fill_cmd = origin[fill_rows]
    fills["time_ns"] = flow.times[fill_cmd]
    fills["line"] = flow.lines[fill_cmd]
    fills["taker_order"] = events[fill_rows, E_OID]
    fills["maker_order"] = events[fill_rows, E_OID2]
    fills["price"] = events[fill_rows, E_PRICE]
    fills["qty"] = events[fill_rows, E_QTY]
    fills["aggressor_side"] = events[fill_rows, E_SIDE]
    members = flow.members
    fills["taker_member"] = members[fill_cmd]
    fills["maker_member"] = _maker_members(cmds, members, fill_cmd, fills["maker_order"])
    rejects = [
        BadRow(
            int(flow.lines[i]),
            instrument,
            RejectCode(int(code)).name.lower(),
            f"the book rejected the command: {RejectCode(int(code)).name}",
            source.texts[int(flow.lines[i])],
        )
        for i, code in zip(
            origin[kinds == EventKind.REJECTED].tolist(),
            events[kinds == EventKind.REJECTED, E_CODE].tolist(),
            strict=True,
        )
    ]
    return FlowResult(instrument, book, fills, rejects, len(cmds))


def _maker_members(
    cmds: np.ndarray, members: np.ndarray, fill_cmd: np.ndarray, makers: np.ndarray
) -> np.ndarray:
    """The member of each fill's resting order: that of the last add of its id before the
    fill (ids are unique among live orders only, so an id may come back later)."""
    out = np.zeros(len(fill_cmd), dtype=np.int64)
    adds = np.flatnonzero(cmds[:, 0] == CMD_ADD)
    member_of: dict[int, int] = {}
    k = 0
    add_ids = cmds[adds, 1].tolist()
    add_members = members[adds].tolist()
    for j, (command, maker) in enumerate(zip(fill_cmd.tolist(), makers.tolist(), strict=True)):
        while k < len(adds) and adds[k] < command:
            member_of[add_ids[k]] = add_members[k]
            k += 1
        out[j] = member_of.get(maker, 0)
    return out
