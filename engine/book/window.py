"""The levels of a side in price order, across the dense window and the far store.

Data layout (engine.book.layout): the window is ladder rows [0, M_LEN) at prices
`meta[M_BASE] + row * meta[M_TICK]`, up to (not including) `meta[M_WIN_END]`, found through
the bitmap (bitmap.py); every other occupied level has a far row (far.py), below the window
or above it. A level is named by its row either way; `meta[M_BEST_BID]` / `meta[M_BEST_ASK]`
are rows and `meta[M_BEST_BID_PX]` / `meta[M_BEST_ASK_PX]` their prices.

Invariants: a price inside the window is never in the far store and a price outside it never
in the window, so each side's levels in price order are: far levels below the window, window
levels, far levels above it. `next_level` and `level_ceil` / `level_floor` walk them in that
order without a gap at the window's edges.

Complexity: inside the window the bitmap's; a step that leaves the window, or starts in the
far store, O(log far levels).
"""

from __future__ import annotations

from numba import njit

from engine.book.bitmap import find_ge, find_le
from engine.book.far import far_ceil, far_find, far_floor, far_price, far_step
from engine.book.layout import M_BASE, M_LEN, M_TICK, M_WIN_END


@njit(cache=True, _nrt=False)
def level_price(lad, meta, side, row):
    """Price of the level in `row` of `side`."""
    if row < meta[M_LEN]:
        return meta[M_BASE] + row * meta[M_TICK]
    return far_price(lad, meta, side, row)


@njit(cache=True, _nrt=False)
def in_window(meta, price):
    return meta[M_BASE] <= price < meta[M_WIN_END]


@njit(cache=True, _nrt=False)
def row_of(lad, meta, side, price):
    """Row of the level at `price` (on tick) on `side`: its window row, its far row, or -1
    when the price is outside the window and has no far level."""
    if meta[M_BASE] <= price < meta[M_WIN_END]:
        return (price - meta[M_BASE]) // meta[M_TICK]
    return far_find(lad, meta, side, price)


@njit(cache=True, _nrt=False)
def level_ceil(lad, bm, meta, side, price):
    """Row of the lowest occupied level of `side` at or above `price`, or -1."""
    base = meta[M_BASE]
    if price < base:
        row = far_ceil(lad, meta, side, price)
        if row >= 0 and far_price(lad, meta, side, row) < base:
            return row
        price = base
    end = meta[M_WIN_END]
    if price < end:
        tick = meta[M_TICK]
        row = find_ge(bm, meta, side, (price - base + tick - 1) // tick)
        if row >= 0:
            return row
        price = end
    return far_ceil(lad, meta, side, price)


@njit(cache=True, _nrt=False)
def level_floor(lad, bm, meta, side, price):
    """Row of the highest occupied level of `side` at or below `price`, or -1."""
    end = meta[M_WIN_END]
    if price >= end:
        row = far_floor(lad, meta, side, price)
        if row >= 0 and far_price(lad, meta, side, row) >= end:
            return row
        price = end - 1
    base = meta[M_BASE]
    if price >= base:
        row = find_le(bm, meta, side, (price - base) // meta[M_TICK])
        if row >= 0:
            return row
        price = base - 1
    return far_floor(lad, meta, side, price)


@njit(cache=True, _nrt=False)
def next_level(lad, bm, meta, side, row):
    """The next worse occupied level after `row` (lower for bids, higher for asks), or -1."""
    length = meta[M_LEN]
    if row < length:
        if side == 0:
            nxt = find_le(bm, meta, 0, row - 1)
            if nxt >= 0:
                return nxt
            return far_floor(lad, meta, 0, meta[M_BASE] - 1)
        nxt = find_ge(bm, meta, 1, row + 1)
        if nxt >= 0:
            return nxt
        return far_ceil(lad, meta, 1, meta[M_WIN_END])
    up = side == 1
    nxt = far_step(lad, meta, side, row, up)
    price = far_price(lad, meta, side, row)
    outside_before = price >= meta[M_WIN_END] if side == 0 else price < meta[M_BASE]
    if outside_before:
        after = -1 if nxt < 0 else far_price(lad, meta, side, nxt)
        crosses = nxt < 0 or (after < meta[M_BASE] if side == 0 else after >= meta[M_WIN_END])
        if crosses:
            inner = find_le(bm, meta, 0, length - 1) if side == 0 else find_ge(bm, meta, 1, 0)
            if inner >= 0:
                return inner
    return nxt
