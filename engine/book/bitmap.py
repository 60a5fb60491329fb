"""The two-level occupancy bitmap of the price ladder: which levels hold orders, found fast.

Data layout: `bm[side, w]` uint64. Words [0, W) hold one bit per ladder level (bit i of word w
is level 64 * w + i); words [W, W + W2) hold one summary bit per level-one word (bit j of
summary word s is set iff word 64 * s + j is non-zero). `meta[M_BM2]` holds W, `meta[M_LEN]`
the number of levels (a multiple of 64). `meta[M_BEST_BID]` / `meta[M_BEST_ASK]` are the
rows of the best occupied bid / ask (window.py), -1 when that side is empty.

Invariants: a level's bit is set iff the ladder's order count for that side and level is > 0;
a summary bit is set iff its word is non-zero; the best indices are the highest set bid bit and
the lowest set ask bit when the far store has no better level (window.py). `bit_set` /
`bit_clear` keep both levels in step; the callers keep the best levels (levels.py,
relayout.py).

Complexity: the next occupied level after one empties is found with count-leading/trailing
zeros over at most W / 64 summary words (O(levels / 4096) word reads), never tick by tick.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from engine.book.layout import (
    M_BEST_ASK,
    M_BEST_BID,
    M_BM2,
    M_LEN,
)

ONE = np.uint64(1)
ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, _nrt=False)
def bit_set(bm, meta, side, idx):
    w = idx >> 6
    bm[side, w] |= ONE << np.uint64(idx & 63)
    bm[side, meta[M_BM2] + (w >> 6)] |= ONE << np.uint64(w & 63)


@njit(cache=True, _nrt=False)
def bit_clear(bm, meta, side, idx):
    w = idx >> 6
    word = bm[side, w] & ~(ONE << np.uint64(idx & 63))
    bm[side, w] = word
    if word == 0:
        bm[side, meta[M_BM2] + (w >> 6)] &= ~(ONE << np.uint64(w & 63))


@njit(cache=True, _nrt=False)
def find_ge(bm, meta, side, idx):
    """Lowest occupied level index >= idx on `side`, or -1."""
    n1 = meta[M_BM2]
    if idx < 0:
        idx = 0
    if idx >= meta[M_LEN]:
        return -1
    w = idx >> 6
    word = bm[side, w] & (ALL_BITS << np.uint64(idx & 63))
    if word != 0:
        return (w << 6) + np.int64(trailing_zeros(word))
    w += 1
    if w >= n1:
        return -1
    n2 = bm.shape[1] - n1
    j = w >> 6
    word = bm[side, n1 + j] & (ALL_BITS << np.uint64(w & 63))
    while word == 0:
        j += 1
        if j >= n2:
            return -1
        word = bm[side, n1 + j]
    w = (j << 6) + np.int64(trailing_zeros(word))
    return (w << 6) + np.int64(trailing_zeros(bm[side, w]))


@njit(cache=True, _nrt=False)
def _low_mask(bit):
    """Bits 0..bit set."""
    if bit == 63:
        return ALL_BITS
    return (ONE << np.uint64(bit + 1)) - ONE


@njit(cache=True, _nrt=False)
def find_le(bm, meta, side, idx):
    """Highest occupied level index <= idx on `side`, or -1."""
    if idx >= meta[M_LEN]:
        idx = meta[M_LEN] - 1
    if idx < 0:
        return -1
    n1 = meta[M_BM2]
    w = idx >> 6
    word = bm[side, w] & _low_mask(idx & 63)
    if word != 0:
        return (w << 6) + 63 - np.int64(leading_zeros(word))
    w -= 1
    if w < 0:
        return -1
    j = w >> 6
    word = bm[side, n1 + j] & _low_mask(w & 63)
    while word == 0:
        j -= 1
        if j < 0:
            return -1
        word = bm[side, n1 + j]
    w = (j << 6) + 63 - np.int64(leading_zeros(word))
    return (w << 6) + 63 - np.int64(leading_zeros(bm[side, w]))


@njit(cache=True, _nrt=False)
def best_level(meta, side):
    return meta[M_BEST_BID] if side == 0 else meta[M_BEST_ASK]
