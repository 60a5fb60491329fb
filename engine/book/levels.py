"""The price levels' FIFO queues and the order pool's free list.

Data layout: see `engine.book.layout`. `pool[slot, P_*]` is one order per row; its P_NEXT and
P_PREV link it into the FIFO of its level (oldest first, -1 ends), or P_NEXT chains it on the
free list headed by `meta[M_FREE]` when the slot is free (P_ID -1). `lad[idx, side * 4 + L_*]`
holds each level's head and tail slot, total remaining qty and order count, at price
`meta[M_BASE] + idx * meta[M_TICK]`.

Invariants kept here: each level's FIFO links exactly the live orders of that side and price,
oldest first (P_SEQ strictly increasing along it, from `meta[M_SEQ]`), both ways; its total
and count equal the sum and number of their remaining quantities (a fill that leaves an order
resting adjusts the total where it changes P_QTY); its bitmap bit and the side's best index
follow its count (bitmap.py); `meta[M_COUNT_BID + side]` counts each side's orders. A released
slot is off its level, out of the id hash, and first on the free list (reused while cached).
"""

from __future__ import annotations

from numba import njit

from engine.book.bitmap import bit_clear, bit_set, find_ge, find_le
from engine.book.idhash import ht_delete
from engine.book.layout import (
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_COUNT_BID,
    M_FREE,
    M_LEN,
    M_NEED,
    M_SEQ,
    M_TICK,
    P_FLAGS,
    P_ID,
    P_NEXT,
    P_PREV,
    P_PRICE,
    P_QTY,
    P_SEQ,
)


@njit(cache=True, _nrt=False)
def push_tail(pool, lad, bm, meta, side, slot):
    """Join the order in `slot` (its price and qty set) to the back of its level: it is now the
    last in time priority there."""
    idx = (pool[slot, P_PRICE] - meta[M_BASE]) // meta[M_TICK]
    r = side * 4
    tail = lad[idx, r + L_TAIL]
    pool[slot, P_NEXT] = -1
    pool[slot, P_PREV] = tail
    if tail == -1:
        lad[idx, r + L_HEAD] = slot
        bit_set(bm, meta, side, idx)
        if side == 0:
            if idx > meta[M_BEST_BID]:
                meta[M_BEST_BID] = idx
        else:
            best = meta[M_BEST_ASK]
            if best == -1 or idx < best:
                meta[M_BEST_ASK] = idx
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
    """Take the order out of its level (its remaining qty leaves the level total)."""
    side = pool[slot, P_FLAGS] & 1
    idx = (pool[slot, P_PRICE] - meta[M_BASE]) // meta[M_TICK]
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
        bit_clear(bm, meta, side, idx)
        if side == 0:
            if meta[M_BEST_BID] == idx:
                meta[M_BEST_BID] = find_le(bm, meta, 0, idx - 1)
        elif meta[M_BEST_ASK] == idx:
            meta[M_BEST_ASK] = find_ge(bm, meta, 1, idx + 1)


@njit(cache=True, _nrt=False)
def release(pool, ht, meta, slot):
    """Forget a resting order that has left its level: drop its id, free its slot."""
    ht_delete(ht, meta, pool[slot, P_ID])
    pool[slot, P_ID] = -1
    pool[slot, P_NEXT] = meta[M_FREE]
    meta[M_FREE] = slot


@njit(cache=True, _nrt=False)
def ladder_has(meta, price):
    """Whether `price` has a ladder level; if not, meta[M_NEED] = price (for NEED_LADDER)."""
    idx = (price - meta[M_BASE]) // meta[M_TICK]
    if idx < 0 or idx >= meta[M_LEN]:
        meta[M_NEED] = price
        return False
    return True
