"""Moving the price window: every level re-laid into a new ladder, and what the move costs.

Data layout (engine.book.layout): a ladder is the window rows [0, M_LEN) and the far rows after
them (far.py). `relay_levels` reads the old ladder with a copy of the old meta and writes the
new one, whose meta already names the new window (state.py sets it up, empty, in Python).

Invariants: the move changes where levels live, never what they hold: every level keeps its
side, price, FIFO (head, tail: the orders' links are untouched), total and count; a price in
the new window gets its window row and bitmap bit, any other a far row; the best levels are
recomputed. The new far store must have a row for every level outside the new window
(`count_outside` tells the caller how many).

Complexity: O(window + levels * log far levels) per move; the state moves the window only
when the touch leaves its middle half (or the far store fills), so the cost is amortised over
at least a quarter window of price movement.
"""

from __future__ import annotations

from numba import njit

from engine.book.bitmap import bit_set
from engine.book.far import far_extreme, far_insert, far_price, far_step
from engine.book.layout import (
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_BASE,
    M_LEN,
    M_TICK,
    M_WIN_END,
)
from engine.book.levels import new_best


@njit(cache=True, _nrt=False)
def _place(lad, bm, meta, side, price, src, src_row):
    """Copy the level in src[src_row] of `side` at `price` to its place in the new ladder."""
    r = side * 4
    if meta[M_BASE] <= price < meta[M_WIN_END]:
        row = (price - meta[M_BASE]) // meta[M_TICK]
        bit_set(bm, meta, side, row)
    else:
        row = far_insert(lad, meta, side, price)
    lad[row, r + L_HEAD] = src[src_row, r + L_HEAD]
    lad[row, r + L_TAIL] = src[src_row, r + L_TAIL]
    lad[row, r + L_TOTAL] = src[src_row, r + L_TOTAL]
    lad[row, r + L_COUNT] = src[src_row, r + L_COUNT]
    new_best(meta, side, row, price)


@njit(cache=True, _nrt=False)
def relay_levels(old_lad, old_meta, lad, bm, meta):
    """Every level of the old ladder into the new one (empty, its window set in meta)."""
    base, tick = old_meta[M_BASE], old_meta[M_TICK]
    for side in range(2):
        for idx in range(old_meta[M_LEN]):
            if old_lad[idx, side * 4 + L_COUNT] > 0:
                _place(lad, bm, meta, side, base + idx * tick, old_lad, idx)
        row = far_extreme(old_lad, old_meta, side, False)
        while row >= 0:
            _place(lad, bm, meta, side, far_price(old_lad, old_meta, side, row), old_lad, row)
            row = far_step(old_lad, old_meta, side, row, True)


@njit(cache=True, _nrt=False)
def count_levels(lad, meta, low, end, inside):
    """Levels (both sides) priced in [low, end) when `inside`, else outside it."""
    n = 0
    base, tick = meta[M_BASE], meta[M_TICK]
    for side in range(2):
        for idx in range(meta[M_LEN]):
            if lad[idx, side * 4 + L_COUNT] > 0:
                price = base + idx * tick
                n += (low <= price < end) == inside
        row = far_extreme(lad, meta, side, False)
        while row >= 0:
            n += (low <= far_price(lad, meta, side, row) < end) == inside
            row = far_step(lad, meta, side, row, True)
    return n
