"""The far store: the price levels outside the dense window, one search tree per side.

Data layout (engine.book.layout): far rows are the ladder rows from `meta[M_LEN]` on. A far
level of side s in row r keeps its FIFO fields where a window row does, `lad[r, s * 4 + L_*]`,
and uses the other side's block o = (1 - s) * 4 for itself: `lad[r, o + F_PRICE]` its price,
`lad[r, o + F_LEFT]`, `lad[r, o + F_RIGHT]`, `lad[r, o + F_PARENT]` its tree links. Links and
`meta[M_FAR_ROOT + s]` are offsets into the far store (row - M_LEN, -1 none), so the window can
change length without touching them. Free far rows are chained through column 0 from
`meta[M_FAR_FREE]`; `meta[M_FAR_LEVELS + s]` counts the levels in each tree.

Invariants: each side's tree holds exactly that side's occupied levels outside the window,
one row per price, in binary-search order of price, and is a heap of `_priority(price)` (a
treap whose priorities are a fixed bijective mix of the price, so its shape is a function of
the set of prices alone: deterministic, and balanced in expectation). A far row is either in
one tree or on the free list. Callers make sure a free row exists before `far_insert`
(`levels.level_room`), so nothing here allocates.

Complexity: find, insert, delete, floor, ceiling O(log levels) expected; successor and
predecessor O(1) amortised along an in-order walk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.book.layout import (
    F_LEFT,
    F_PARENT,
    F_PRICE,
    F_RIGHT,
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_FAR_FREE,
    M_FAR_LEVELS,
    M_FAR_ROOT,
    M_LEN,
)

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, _nrt=False)
def _priority(price):
    """splitmix64's finaliser: a bijection of the price, so no two levels of a side tie."""
    z = np.uint64(price)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, _nrt=False)
def _get(lad, meta, side, k, field):
    return lad[meta[M_LEN] + k, (1 - side) * 4 + field]


@njit(cache=True, _nrt=False)
def _put(lad, meta, side, k, field, value):
    lad[meta[M_LEN] + k, (1 - side) * 4 + field] = value


@njit(cache=True, _nrt=False)
def far_price(lad, meta, side, row):
    """Price of the far level in `row`."""
    return lad[row, (1 - side) * 4 + F_PRICE]


@njit(cache=True, _nrt=False)
def _row(meta, k):
    return -1 if k < 0 else meta[M_LEN] + k


@njit(cache=True, _nrt=False)
def far_find(lad, meta, side, price):
    """Row of the far level at `price` on `side`, or -1."""
    k = meta[M_FAR_ROOT + side]
    while k >= 0:
        p = _get(lad, meta, side, k, F_PRICE)
        if p == price:
            return meta[M_LEN] + k
        k = _get(lad, meta, side, k, F_LEFT if price < p else F_RIGHT)
    return -1


@njit(cache=True, _nrt=False)
def far_ceil(lad, meta, side, price):
    """Row of the lowest far level at or above `price`, or -1."""
    k = meta[M_FAR_ROOT + side]
    found = -1
    while k >= 0:
        p = _get(lad, meta, side, k, F_PRICE)
        if p == price:
            return meta[M_LEN] + k
        if p > price:
            found = k
            k = _get(lad, meta, side, k, F_LEFT)
        else:
            k = _get(lad, meta, side, k, F_RIGHT)
    return _row(meta, found)


@njit(cache=True, _nrt=False)
def far_floor(lad, meta, side, price):
    """Row of the highest far level at or below `price`, or -1."""
    k = meta[M_FAR_ROOT + side]
    found = -1
    while k >= 0:
        p = _get(lad, meta, side, k, F_PRICE)
        if p == price:
            return meta[M_LEN] + k
        if p < price:
            found = k
            k = _get(lad, meta, side, k, F_RIGHT)
        else:
            k = _get(lad, meta, side, k, F_LEFT)
    return _row(meta, found)


@njit(cache=True, _nrt=False)
def far_step(lad, meta, side, row, up):
    """The far level after `row` in price order: the next higher when `up`, else the next
    lower; -1 at the end."""
    toward, back = (F_RIGHT, F_LEFT) if up else (F_LEFT, F_RIGHT)
    k = row - meta[M_LEN]
    child = _get(lad, meta, side, k, toward)
    if child >= 0:
        k = child
        nxt = _get(lad, meta, side, k, back)
        while nxt >= 0:
            k = nxt
            nxt = _get(lad, meta, side, k, back)
        return meta[M_LEN] + k
    parent = _get(lad, meta, side, k, F_PARENT)
    while parent >= 0 and _get(lad, meta, side, parent, toward) == k:
        k = parent
        parent = _get(lad, meta, side, k, F_PARENT)
    return _row(meta, parent)


@njit(cache=True, _nrt=False)
def _rotate_up(lad, meta, side, k):
    """Rotate node k above its parent (keeps the search order)."""
    p = _get(lad, meta, side, k, F_PARENT)
    g = _get(lad, meta, side, p, F_PARENT)
    if _get(lad, meta, side, p, F_LEFT) == k:
        moved = _get(lad, meta, side, k, F_RIGHT)
        _put(lad, meta, side, p, F_LEFT, moved)
        _put(lad, meta, side, k, F_RIGHT, p)
    else:
        moved = _get(lad, meta, side, k, F_LEFT)
        _put(lad, meta, side, p, F_RIGHT, moved)
        _put(lad, meta, side, k, F_LEFT, p)
    if moved >= 0:
        _put(lad, meta, side, moved, F_PARENT, p)
    _put(lad, meta, side, p, F_PARENT, k)
    _put(lad, meta, side, k, F_PARENT, g)
    if g < 0:
        meta[M_FAR_ROOT + side] = k
    elif _get(lad, meta, side, g, F_LEFT) == p:
        _put(lad, meta, side, g, F_LEFT, k)
    else:
        _put(lad, meta, side, g, F_RIGHT, k)


@njit(cache=True, _nrt=False)
def far_insert(lad, meta, side, price):
    """A new, empty far level at `price` (not yet in the tree; a free row exists): its row."""
    k = meta[M_FAR_FREE]
    row = meta[M_LEN] + k
    meta[M_FAR_FREE] = lad[row, 0]
    r = side * 4
    lad[row, r + L_HEAD] = -1
    lad[row, r + L_TAIL] = -1
    lad[row, r + L_TOTAL] = 0
    lad[row, r + L_COUNT] = 0
    _put(lad, meta, side, k, F_PRICE, price)
    _put(lad, meta, side, k, F_LEFT, -1)
    _put(lad, meta, side, k, F_RIGHT, -1)
    parent = -1
    at = meta[M_FAR_ROOT + side]
    while at >= 0:
        parent = at
        left = price < _get(lad, meta, side, at, F_PRICE)
        at = _get(lad, meta, side, at, F_LEFT if left else F_RIGHT)
    _put(lad, meta, side, k, F_PARENT, parent)
    if parent < 0:
        meta[M_FAR_ROOT + side] = k
    elif price < _get(lad, meta, side, parent, F_PRICE):
        _put(lad, meta, side, parent, F_LEFT, k)
    else:
        _put(lad, meta, side, parent, F_RIGHT, k)
    mine = _priority(price)
    parent = _get(lad, meta, side, k, F_PARENT)
    while parent >= 0 and _priority(_get(lad, meta, side, parent, F_PRICE)) < mine:
        _rotate_up(lad, meta, side, k)
        parent = _get(lad, meta, side, k, F_PARENT)
    meta[M_FAR_LEVELS + side] += 1
    return row


@njit(cache=True, _nrt=False)
def far_delete(lad, meta, side, row):
    """Take the (empty) far level in `row` out of its tree and free the row."""
    k = row - meta[M_LEN]
    while True:
        left = _get(lad, meta, side, k, F_LEFT)
        right = _get(lad, meta, side, k, F_RIGHT)
        if left < 0 and right < 0:
            break
        if right < 0 or (
            left >= 0
            and _priority(_get(lad, meta, side, left, F_PRICE))
            > _priority(_get(lad, meta, side, right, F_PRICE))
        ):
            _rotate_up(lad, meta, side, left)
        else:
            _rotate_up(lad, meta, side, right)
    parent = _get(lad, meta, side, k, F_PARENT)
    if parent < 0:
        meta[M_FAR_ROOT + side] = -1
    elif _get(lad, meta, side, parent, F_LEFT) == k:
        _put(lad, meta, side, parent, F_LEFT, -1)
    else:
        _put(lad, meta, side, parent, F_RIGHT, -1)
    meta[M_FAR_LEVELS + side] -= 1
    lad[row, 0] = meta[M_FAR_FREE]
    meta[M_FAR_FREE] = k


@njit(cache=True, _nrt=False)
def far_extreme(lad, meta, side, highest):
    """Row of the highest (or lowest) far level of `side`, or -1."""
    k = meta[M_FAR_ROOT + side]
    if k < 0:
        return -1
    toward = F_RIGHT if highest else F_LEFT
    nxt = _get(lad, meta, side, k, toward)
    while nxt >= 0:
        k = nxt
        nxt = _get(lad, meta, side, k, toward)
    return meta[M_LEN] + k
