"""The price levels' FIFO queues and the order pool's free list.

Data layout: see `engine.book.layout`. `pool[slot, P_*]` is one order per row; its P_NEXT and
P_PREV link it into the FIFO of its level (oldest first, -1 ends), or P_NEXT chains it on the
free list headed by `meta[M_FREE]` when the slot is free (P_ID -1). `lad[row, side * 4 + L_*]`
holds each level's head and tail slot, total remaining qty and order count, in its window row
or its far row (window.py, far.py).

Invariants kept here: each level's FIFO links exactly the live orders of that side and price,
oldest first (P_SEQ strictly increasing along it, from `meta[M_SEQ]`), both ways; its total
and count equal the sum and number of their remaining quantities (a fill that leaves an order
resting adjusts the total where it changes P_QTY); its bitmap bit (window rows) or its far
row (outside the window) and the side's best row and price follow its count;
`meta[M_COUNT_BID + side]` counts each side's orders. A released slot is off its level, out
of the id hash, and first on the free list (reused while cached).
"""

from __future__ import annotations

from numba import njit

from engine.book.bitmap import bit_clear, bit_set
from engine.book.far import far_delete, far_find, far_insert
from engine.book.idhash import ht_delete
from engine.book.layout import (
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_BASE,
    M_BEST_ASK,
    M_BEST_ASK_PX,
    M_BEST_BID,
    M_BEST_BID_PX,
    M_COUNT_ASK,
    M_COUNT_BID,
    M_FAR_FREE,
    M_FREE,
    M_LEN,
    M_MID_HI,
    M_MID_LO,
    M_NEED,
    M_SEQ,
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
from engine.book.window import level_price, next_level, row_of


@njit(cache=True, _nrt=False)
def new_best(meta, side, row, price):
    """A level just became occupied: make it the side's best if it is better."""
    best = meta[M_BEST_BID + side]
    if side == 0:
        if best == -1 or price > meta[M_BEST_BID_PX]:
            meta[M_BEST_BID] = row
            meta[M_BEST_BID_PX] = price
    elif best == -1 or price < meta[M_BEST_ASK_PX]:
        meta[M_BEST_ASK] = row
        meta[M_BEST_ASK_PX] = price


@njit(cache=True, _nrt=False)
def push_tail(pool, lad, bm, meta, side, slot):
    """Join the order in `slot` (its price and qty set) to the back of its level: it is now the
    last in time priority there. A price outside the window takes a far row if its level has
    none (`level_room` made sure one is free)."""
    price = pool[slot, P_PRICE]
    r = side * 4
    if meta[M_BASE] <= price < meta[M_WIN_END]:
        idx = (price - meta[M_BASE]) // meta[M_TICK]
        tail = lad[idx, r + L_TAIL]
        if tail == -1:
            bit_set(bm, meta, side, idx)
    else:
        idx = far_find(lad, meta, side, price)
        if idx < 0:
            idx = far_insert(lad, meta, side, price)
        tail = lad[idx, r + L_TAIL]
    pool[slot, P_NEXT] = -1
    pool[slot, P_PREV] = tail
    if tail == -1:
        lad[idx, r + L_HEAD] = slot
        new_best(meta, side, idx, price)
    else:
        pool[tail, P_NEXT] = slot
    lad[idx, r + L_TAIL] = slot
    pool[slot, P_SEQ] = meta[M_SEQ]
    meta[M_SEQ] += 1
    lad[idx, r + L_TOTAL] += pool[slot, P_QTY]
    lad[idx, r + L_COUNT] += 1
    meta[M_COUNT_BID + side] += 1


@njit(cache=True, _nrt=False)
def unlink(pool, lad, bm, meta, slot):
    """Take the order out of its level (its remaining qty leaves the level total); a level
    left empty leaves the bitmap or the far store, and the side's best moves past it."""
    side = pool[slot, P_FLAGS] & 1
    idx = row_of(lad, meta, side, pool[slot, P_PRICE])
    r = side * 4
    prv = pool[slot, P_PREV]
    nxt = pool[slot, P_NEXT]
    if prv == -1:
        lad[idx, r + L_HEAD] = nxt
    else:
        pool[prv, P_NEXT] = nxt
    if nxt == -1:
        lad[idx, r + L_TAIL] = prv
    else:
        pool[nxt, P_PREV] = prv
    lad[idx, r + L_TOTAL] -= pool[slot, P_QTY]
    lad[idx, r + L_COUNT] -= 1
    meta[M_COUNT_BID + side] -= 1
    if lad[idx, r + L_COUNT] == 0:
        if meta[M_BEST_BID + side] == idx:
            best = next_level(lad, bm, meta, side, idx)
            meta[M_BEST_BID + side] = best
            if best >= 0:
                meta[M_BEST_BID_PX + side] = level_price(lad, meta, side, best)
        if idx < meta[M_LEN]:
            bit_clear(bm, meta, side, idx)
        else:
            far_delete(lad, meta, side, idx)


@njit(cache=True, _nrt=False)
def release(pool, ht, meta, slot):
    """Forget a resting order that has left its level: drop its id, free its slot."""
    ht_delete(ht, meta, pool[slot, P_ID])
    pool[slot, P_ID] = -1
    pool[slot, P_NEXT] = meta[M_FREE]
    meta[M_FREE] = slot


@njit(cache=True, _nrt=False)
def level_room(meta, price):
    """Whether an order can rest at `price` now: inside the window, or outside it with a free
    far row. If not, meta[M_NEED] = price and the caller returns NEED_LADDER (the state then
    makes room, or first moves the window to `price` when nothing rests)."""
    if meta[M_BASE] <= price < meta[M_WIN_END]:
        return True
    if meta[M_FAR_FREE] >= 0 and meta[M_COUNT_BID] + meta[M_COUNT_ASK] > 0:
        return True
    meta[M_NEED] = price
    return False


@njit(cache=True, _nrt=False)
def window_holds_touch(meta):
    """False when the window should move: some side has orders and no side's best price lies
    in the window's middle half (meta[M_MID_LO], meta[M_MID_HI]). Checked before a command
    changes anything, so the state can re-centre the window first (NEED_LADDER)."""
    bid = meta[M_BEST_BID]
    ask = meta[M_BEST_ASK]
    if bid < 0 and ask < 0:
        return True
    lo = meta[M_MID_LO]
    hi = meta[M_MID_HI]
    if bid >= 0 and lo <= meta[M_BEST_BID_PX] < hi:
        return True
    return ask >= 0 and lo <= meta[M_BEST_ASK_PX] < hi
