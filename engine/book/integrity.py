"""check_integrity(): prove the compiled book's arrays are self-consistent.

Checks the invariants that bitmap.py, far.py, window.py, idhash.py, levels.py and matching.py
state: FIFO links both ways, level totals and counts, bitmap bits (both levels) for the
window, the far trees (search order, heap order of the priorities, parent links, every price
on tick and outside the window, their level counts, every far row in a tree or free), the best
rows and prices over window and far levels, the book not crossed, the hash holding exactly the
resting orders, and every other slot on the free list. O(pool + ladder): a test tool, not
something the hot path calls. Raises AssertionError naming the first broken invariant.
"""

from __future__ import annotations

import numpy as np

from engine.book.book import Book
from engine.book.far import _priority
from engine.book.idhash import ht_find
from engine.book.layout import (
    F_LEFT,
    F_PARENT,
    F_PRICE,
    F_RIGHT,
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_BASE,
    M_BEST_BID,
    M_BEST_BID_PX,
    M_BM2,
    M_COUNT_BID,
    M_FAR_FREE,
    M_FAR_LEVELS,
    M_FAR_ROOT,
    M_FREE,
    M_LEN,
    M_LIVE,
    M_TICK,
    M_WIN_END,
    P_FLAGS,
    P_ID,
    P_NEXT,
    P_PREV,
    P_PRICE,
    P_QTY,
    P_SEQ,
)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"book integrity: {message}")


def _far_rows(lad: np.ndarray, meta: np.ndarray, side: int) -> list[tuple[int, int]]:
    """(price, row) of the side's far tree in order, checking its links and heap order."""
    length, o = int(meta[M_LEN]), (1 - side) * 4
    out: list[tuple[int, int]] = []
    stack: list[tuple[int, int]] = []  # (offset, expected parent)
    k, parent = int(meta[M_FAR_ROOT + side]), -1
    while stack or k >= 0:
        while k >= 0:
            row = length + k
            _check(0 <= row < lad.shape[0], f"side {side} far link {k} out of the store")
            _check(int(lad[row, o + F_PARENT]) == parent, f"side {side} far parent of {k}")
            if parent >= 0:
                above = int(lad[length + parent, o + F_PRICE])
                _check(
                    _priority(above) > _priority(int(lad[row, o + F_PRICE])),
                    f"side {side} far heap order broken at {k}",
                )
            stack.append((k, parent))
            k, parent = int(lad[row, o + F_LEFT]), k
        k, _ = stack.pop()
        row = length + k
        out.append((int(lad[row, o + F_PRICE]), row))
        _check(len(out) <= lad.shape[0] - length, f"side {side} far tree has a cycle")
        k, parent = int(lad[row, o + F_RIGHT]), k
    prices = [price for price, _ in out]
    _check(prices == sorted(set(prices)), f"side {side} far tree out of price order")
    return out


def _check_level(book: Book, side: int, row: int, price: int, resting: set[int]) -> int:
    """Walk one level's FIFO; returns its order count."""
    st = book.state
    pool, lad, r = st.pool, st.lad, side * 4
    slot, prev, total, n, stamp = int(lad[row, r + L_HEAD]), -1, 0, 0, -1
    while slot != -1:
        _check(int(pool[slot, P_SEQ]) > stamp, f"time priority broken at slot {slot}")
        stamp = int(pool[slot, P_SEQ])
        _check(int(pool[slot, P_PREV]) == prev, f"prev link broken at slot {slot}")
        _check(int(pool[slot, P_FLAGS]) & 1 == side, f"slot {slot} on the wrong side")
        _check(int(pool[slot, P_PRICE]) == price, f"slot {slot} at the wrong level")
        _check(int(pool[slot, P_QTY]) > 0, f"slot {slot} rests with qty <= 0")
        oid = int(pool[slot, P_ID])
        _check(ht_find(st.ht, st.meta, oid) == slot, f"order {oid} not hashed to its slot")
        _check(slot not in resting, f"slot {slot} linked twice")
        resting.add(slot)
        total += int(pool[slot, P_QTY])
        n += 1
        prev, slot = slot, int(pool[slot, P_NEXT])
    _check(int(lad[row, r + L_TAIL]) == prev, f"tail wrong at level {price}")
    _check(int(lad[row, r + L_TOTAL]) == total, f"total wrong at level {price}")
    _check(int(lad[row, r + L_COUNT]) == n, f"count wrong at level {price}")
    _check(n > 0, f"side {side} empty level {price} kept")
    return n


def check_integrity(book: Book) -> None:
    st = book.state
    pool, lad, meta = st.pool, st.lad, st.meta
    base, tick, length, words = (int(meta[i]) for i in (M_BASE, M_TICK, M_LEN, M_BM2))
    end = int(meta[M_WIN_END])
    window = lad[:length]
    resting: set[int] = set()
    far_in_trees: set[int] = set()
    for side in (0, 1):
        r = side * 4
        counts = window[:, r + L_COUNT]
        occupied = np.flatnonzero(counts > 0)
        bits = np.unpackbits(st.bm[side, :words].view(np.uint8), bitorder="little")[:length]
        _check(np.array_equal(np.flatnonzero(bits), occupied), f"side {side} bitmap != levels")
        summary = np.unpackbits(st.bm[side, words:].view(np.uint8), bitorder="little")[:words]
        _check(
            np.array_equal(np.flatnonzero(summary), np.flatnonzero(st.bm[side, :words])),
            f"side {side} summary bitmap != non-empty words",
        )
        empty = counts == 0
        heads, totals = window[:, r + L_HEAD][empty], window[:, r + L_TOTAL][empty]
        _check(bool(np.all(heads == -1)), f"side {side} empty level has head")
        _check(bool(np.all(totals == 0)), f"side {side} empty level has qty")
        levels = [(base + int(idx) * tick, int(idx)) for idx in occupied.tolist()]
        far = _far_rows(lad, meta, side)
        _check(len(far) == int(meta[M_FAR_LEVELS + side]), f"side {side} far level count")
        for price, row in far:
            _check(price % tick == 0 and price > 0, f"side {side} far level {price} off tick")
            _check(not base <= price < end, f"side {side} far level {price} inside the window")
            far_in_trees.add(row)
        levels = sorted(levels + far)
        orders = sum(_check_level(book, side, row, price, resting) for price, row in levels)
        _check(int(meta[M_COUNT_BID + side]) == orders, f"side {side} order count")
        best_row = int(meta[M_BEST_BID + side])
        if not levels:
            _check(best_row == -1, f"side {side} best row {best_row} on an empty side")
            continue
        price, row = levels[-1 if side == 0 else 0]
        _check(best_row == row, f"side {side} best row {best_row} != {row}")
        _check(int(meta[M_BEST_BID_PX + side]) == price, f"side {side} best price != {price}")
    free_far, k = set(), int(meta[M_FAR_FREE])
    while k != -1:
        row = length + k
        _check(row not in free_far and row not in far_in_trees, f"far row {row} reused")
        free_far.add(row)
        k = int(lad[row, 0])
    _check(len(free_far) + len(far_in_trees) == lad.shape[0] - length, "far rows leaked")
    _check(int(meta[M_LIVE]) == len(resting), "hash size != resting orders")
    _check(int(np.count_nonzero(st.ht[:, 0] != -1)) == len(resting), "hash holds stale ids")
    free, slot = set(), int(meta[M_FREE])
    while slot != -1:
        _check(slot not in free and slot not in resting, f"free slot {slot} reused")
        free.add(slot)
        slot = int(pool[slot, P_NEXT])
    _check(len(free) + len(resting) == pool.shape[0], "slots leaked from the free list")
    bid, ask = book.best_bid(), book.best_ask()
    crossed = bid is not None and ask is not None and bid >= ask
    _check(not crossed or book.collecting, f"book crossed outside a call: {bid} >= {ask}")
