"""Read-only views of the compiled book: depth levels, the next order to trade, one level.

Data layout: the ladder (window and far rows), bitmap and meta of `engine.book.layout`, walked
in price order by window.py; nothing here writes the book (`refresh_top` writes only the
caller's `top` array).

Invariants: levels come best first (highest bid, lowest ask), each as (price, total remaining
qty, order count) straight from the ladder, far levels included; a price with no level or off
the tick is an empty level, never an error.
"""

from __future__ import annotations

from numba import njit

from engine.book.bitmap import best_level
from engine.book.layout import L_COUNT, L_HEAD, L_TOTAL, M_BEST_BID_PX, M_TICK, P_ID
from engine.book.window import level_price, next_level, row_of


@njit(cache=True, _nrt=False)
def depth_levels(lad, bm, meta, side, n, out):
    """Fill out[k] = (price, total qty, order count) for the best n levels; returns how many."""
    idx = best_level(meta, side)
    price = meta[M_BEST_BID_PX + side]
    k = 0
    while idx >= 0 and k < n:
        out[k, 0] = price
        out[k, 1] = lad[idx, side * 4 + L_TOTAL]
        out[k, 2] = lad[idx, side * 4 + L_COUNT]
        k += 1
        idx = next_level(lad, bm, meta, side, idx)
        if idx >= 0:
            price = level_price(lad, meta, side, idx)
    return k


@njit(cache=True, _nrt=False)
def best_head(pool, lad, meta, side):
    """Id of the oldest order at the best level of `side` (the next to trade), or -1."""
    idx = best_level(meta, side)
    if idx < 0:
        return -1
    return pool[lad[idx, side * 4 + L_HEAD], P_ID]


@njit(cache=True, _nrt=False)
def refresh_top(lad, bm, meta, top):
    """Rewrite top[side, k] = (price, qty) of the best levels (zeros past the last) in place;
    returns whether anything changed. One call per command feeds the depth-change events."""
    changed = False
    for side in range(2):
        idx = best_level(meta, side)
        for k in range(top.shape[1]):
            price = 0
            qty = 0
            if idx >= 0:
                price = level_price(lad, meta, side, idx)
                qty = lad[idx, side * 4 + L_TOTAL]
                idx = next_level(lad, bm, meta, side, idx)
            if top[side, k, 0] != price or top[side, k, 1] != qty:
                top[side, k, 0] = price
                top[side, k, 1] = qty
                changed = True
    return changed


@njit(cache=True, _nrt=False)
def level_of(lad, meta, side, price):
    """(total qty, orders) at `price` on `side`, (0, 0) with no level there or off the tick."""
    if price % meta[M_TICK] != 0:
        return 0, 0
    return level_on_tick(lad, meta, side, price)


@njit(cache=True, _nrt=False)
def level_on_tick(lad, meta, side, price):
    """level_of for a price known to be on the tick (one from the book's own events): (total
    qty, orders), (0, 0) with no level there."""
    idx = row_of(lad, meta, side, price)
    if idx < 0:
        return 0, 0
    return lad[idx, side * 4 + L_TOTAL], lad[idx, side * 4 + L_COUNT]
