"""check_integrity(): prove the compiled book's arrays are self-consistent.

Checks the invariants that bitmap.py, idhash.py, levels.py and matching.py state: FIFO links
both ways, level totals and counts, bitmap bits (both levels), best indices, the book not
crossed, the hash holding exactly the resting orders, and every other slot on the free list.
O(pool + ladder): a test tool, not something the hot path calls. Raises AssertionError naming
the first broken invariant.
"""

from __future__ import annotations

import numpy as np

from engine.book.book import Book
from engine.book.idhash import ht_find
from engine.book.layout import (
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_BASE,
    M_BEST_BID,
    M_BM2,
    M_COUNT_BID,
    M_FREE,
    M_LEN,
    M_LIVE,
    M_TICK,
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


def check_integrity(book: Book) -> None:
    st = book.state
    pool, lad, meta = st.pool, st.lad, st.meta
    base, tick, length, words = (int(meta[i]) for i in (M_BASE, M_TICK, M_LEN, M_BM2))
    resting: set[int] = set()
    for side in (0, 1):
        r = side * 4
        counts = lad[:, r + L_COUNT]
        occupied = np.flatnonzero(counts > 0)
        bits = np.unpackbits(st.bm[side, :words].view(np.uint8), bitorder="little")[:length]
        _check(np.array_equal(np.flatnonzero(bits), occupied), f"side {side} bitmap != levels")
        summary = np.unpackbits(st.bm[side, words:].view(np.uint8), bitorder="little")[:words]
        _check(
            np.array_equal(np.flatnonzero(summary), np.flatnonzero(st.bm[side, :words])),
            f"side {side} summary bitmap != non-empty words",
        )
        empty = counts == 0
        _check(bool(np.all(lad[:, r + L_HEAD][empty] == -1)), f"side {side} empty level has head")
        _check(bool(np.all(lad[:, r + L_TOTAL][empty] == 0)), f"side {side} empty level has qty")
        best = int(meta[M_BEST_BID + side])
        expected_best = -1 if occupied.size == 0 else int(occupied[-1 if side == 0 else 0])
        _check(best == expected_best, f"side {side} best index {best} != {expected_best}")
        for idx in occupied.tolist():
            price = base + idx * tick
            slot, prev, total, n, stamp = int(lad[idx, r + L_HEAD]), -1, 0, 0, -1
            while slot != -1:
                _check(int(pool[slot, P_SEQ]) > stamp, f"time priority broken at slot {slot}")
                stamp = int(pool[slot, P_SEQ])
                _check(int(pool[slot, P_PREV]) == prev, f"prev link broken at slot {slot}")
                _check(int(pool[slot, P_FLAGS]) & 1 == side, f"slot {slot} on the wrong side")
                _check(int(pool[slot, P_PRICE]) == price, f"slot {slot} at the wrong level")
                _check(int(pool[slot, P_QTY]) > 0, f"slot {slot} rests with qty <= 0")
                oid = int(pool[slot, P_ID])
                _check(ht_find(st.ht, meta, oid) == slot, f"order {oid} not hashed to its slot")
                _check(slot not in resting, f"slot {slot} linked twice")
                resting.add(slot)
                total += int(pool[slot, P_QTY])
                n += 1
                prev, slot = slot, int(pool[slot, P_NEXT])
            _check(int(lad[idx, r + L_TAIL]) == prev, f"tail wrong at level {price}")
            _check(int(lad[idx, r + L_TOTAL]) == total, f"total wrong at level {price}")
            _check(int(lad[idx, r + L_COUNT]) == n, f"count wrong at level {price}")
        _check(int(meta[M_COUNT_BID + side]) == int(counts.sum()), f"side {side} order count")
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
