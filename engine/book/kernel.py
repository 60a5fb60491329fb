"""The compiled matching kernel: plain numba functions over the book's arrays.

Data layout: see `engine.book.layout` (pool, ladder, bitmap, hash, meta, events).

Invariants the kernel keeps after every command (checked by `integrity.check_integrity`):
- each ladder level's FIFO links only live orders of that side and price, oldest first, and its
  total and count equal the sum and number of those orders; its bitmap bit is set iff count > 0;
- `M_BEST_BID` / `M_BEST_ASK` are the highest occupied bid / lowest occupied ask, and the book is
  never crossed once a command has finished;
- the hash maps exactly the resting orders' ids to their slots; every other slot is on the
  free list.

A command either completes or returns a negative resource status (NEED_*) *before* changing
anything; the caller grows the named array (outside the compiled code) and calls again.
Rejected commands change nothing but the event buffer and the reject counter.

Compilation: @njit(cache=True, _nrt=False). The kernel never allocates, so it runs without
numba's reference-counted runtime: no incref/decref per array argument on every internal call
(that bookkeeping cost more than the matching itself). Compiled code is cached on disk: in
the package's __pycache__, or numba's user-wide cache when the install is read-only
(NUMBA_CACHE_DIR overrides both).

Complexity: add/cancel/amend O(1) plus O(fills); finding the next best level after one empties
is O(levels / 4096) word reads through the two-level bitmap; the hash is O(1) expected.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from engine.book.events import BookReject, EventKind
from engine.book.layout import (
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
    CMD_PICK,
    CMD_UNCROSS,
    E_CODE,
    E_KIND,
    E_LEAVES,
    E_LEAVES2,
    E_OID,
    E_OID2,
    E_OWNER,
    E_OWNER2,
    E_PRICE,
    E_QTY,
    E_SIDE,
    EV_FILLS,
    EV_NONE,
    L_COUNT,
    L_HEAD,
    L_TAIL,
    L_TOTAL,
    M_BAND_HI,
    M_BAND_LO,
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_BM2,
    M_COLLECT,
    M_COUNT_ASK,
    M_COUNT_BID,
    M_EV_MODE,
    M_FILL_QTY,
    M_FILLS,
    M_FREE,
    M_HT_SHIFT,
    M_LEN,
    M_LIVE,
    M_NEED,
    M_NEV,
    M_REJECTS,
    M_SEQ,
    M_STP_HIT,
    M_TICK,
    MAX_ORDER_ID,
    MAX_OWNER,
    MAX_QTY,
    MAX_TICKS,
    NEED_EVENTS,
    NEED_HASH,
    NEED_LADDER,
    NEED_POOL,
    P_FLAGS,
    P_ID,
    P_NEXT,
    P_OWNER,
    P_PREV,
    P_PRICE,
    P_QTY,
    P_SEQ,
    PICK_LEVELS,
)
from engine.types import CancelReason, OrderType, StpMode, TimeInForce

K_REJECTED = int(EventKind.REJECTED)
K_RESTED = int(EventKind.RESTED)
K_FILL = int(EventKind.FILL)
K_CANCELLED = int(EventKind.CANCELLED)
K_AMENDED = int(EventKind.AMENDED)

R_INVALID_FIELD = int(BookReject.INVALID_FIELD)
R_INVALID_ORDER_ID = int(BookReject.INVALID_ORDER_ID)
R_PRICE_OFF_TICK = int(BookReject.PRICE_OFF_TICK)
R_PRICE_OUTSIDE_BAND = int(BookReject.PRICE_OUTSIDE_BAND)
R_PRICE_OUT_OF_RANGE = int(BookReject.PRICE_OUT_OF_RANGE)
R_QTY_INVALID = int(BookReject.QTY_INVALID)
R_DUPLICATE_ORDER_ID = int(BookReject.DUPLICATE_ORDER_ID)
R_UNKNOWN_ORDER = int(BookReject.UNKNOWN_ORDER)
R_NOT_OWNER = int(BookReject.NOT_OWNER)
R_PICK_WRONG_SIDE = int(BookReject.PICK_WRONG_SIDE)
R_PICK_NOT_IN_TOP = int(BookReject.PICK_NOT_IN_TOP_LEVELS)
R_PICK_QTY = int(BookReject.PICK_QTY_EXCEEDS_ORDER)
R_SELF_TRADE = int(BookReject.SELF_TRADE)
R_UNSUPPORTED_IN_PHASE = int(BookReject.UNSUPPORTED_IN_PHASE)

C_USER = int(CancelReason.USER)
C_REMAINDER = int(CancelReason.UNFILLED_REMAINDER)
C_FOK = int(CancelReason.FOK_UNFILLED)
C_STP_INCOMING = int(CancelReason.STP_INCOMING)
C_STP_RESTING = int(CancelReason.STP_RESTING)

LIMIT = int(OrderType.LIMIT)
MARKET = int(OrderType.MARKET)
DAY = int(TimeInForce.DAY)
IOC = int(TimeInForce.IOC)
FOK = int(TimeInForce.FOK)
STP_INCOMING = int(StpMode.CANCEL_INCOMING)
STP_RESTING = int(StpMode.CANCEL_RESTING)
STP_BOTH = int(StpMode.CANCEL_BOTH)

INT64_MAX = np.iinfo(np.int64).max
MIN_FREE_EVENTS = 4  # every command may write this many events without a capacity check
ONE = np.uint64(1)
ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# -- two-level occupancy bitmap ----------------------------------------------------------------


@njit(cache=True, _nrt=False)
def _bit_set(bm, meta, side, idx):
    w = idx >> 6
    bm[side, w] |= ONE << np.uint64(idx & 63)
    bm[side, meta[M_BM2] + (w >> 6)] |= ONE << np.uint64(w & 63)


@njit(cache=True, _nrt=False)
def _bit_clear(bm, meta, side, idx):
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
def _next_level(bm, meta, side, idx):
    """The next worse occupied level after idx (lower for bids, higher for asks), or -1."""
    if side == 0:
        return find_le(bm, meta, 0, idx - 1)
    return find_ge(bm, meta, 1, idx + 1)


@njit(cache=True, _nrt=False)
def _best(meta, side):
    return meta[M_BEST_BID] if side == 0 else meta[M_BEST_ASK]


# -- order id hash (open addressing, linear probing, backward-shift deletion) -------------------


@njit(cache=True, _nrt=False)
def _home(meta, key):
    return np.int64((np.uint64(key) * GOLDEN) >> np.uint64(meta[M_HT_SHIFT]))


@njit(cache=True, _nrt=False)
def ht_find(ht, meta, key):
    """Slot of the live order `key`, or -1."""
    mask = ht.shape[0] - 1
    i = _home(meta, key)
    while True:
        k = ht[i, 0]
        if k == key:
            return ht[i, 1]
        if k == -1:
            return -1
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def ht_insert(ht, meta, key, slot):
    mask = ht.shape[0] - 1
    i = _home(meta, key)
    while ht[i, 0] != -1:
        i = (i + 1) & mask
    ht[i, 0] = key
    ht[i, 1] = slot
    meta[M_LIVE] += 1


@njit(cache=True, _nrt=False)
def _ht_delete(ht, meta, key):
    mask = ht.shape[0] - 1
    i = _home(meta, key)
    while ht[i, 0] != key:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        k = ht[j, 0]
        if k == -1:
            break
        home = _home(meta, k)
        # the entry at j may fill the hole at i unless its home lies cyclically in (i, j]
        stays = (i < home <= j) if i <= j else (home > i or home <= j)
        if not stays:
            ht[i, 0] = k
            ht[i, 1] = ht[j, 1]
            i = j
    ht[i, 0] = -1
    meta[M_LIVE] -= 1


@njit(cache=True, _nrt=False)
def ht_rebuild(old, new, meta):
    """Re-insert every entry of `old` into the empty table `new` (meta's shift already set)."""
    meta[M_LIVE] = 0
    for i in range(old.shape[0]):
        if old[i, 0] != -1:
            ht_insert(new, meta, old[i, 0], old[i, 1])


# -- events -----------------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def _emit(ev, meta, kind, oid, oid2, price, qty, leaves, leaves2, code, side, owner, owner2):
    mode = meta[M_EV_MODE]
    if mode == EV_NONE or (mode == EV_FILLS and kind != K_FILL):
        return
    n = meta[M_NEV]
    ev[n, E_KIND] = kind
    ev[n, E_OID] = oid
    ev[n, E_OID2] = oid2
    ev[n, E_PRICE] = price
    ev[n, E_QTY] = qty
    ev[n, E_LEAVES] = leaves
    ev[n, E_LEAVES2] = leaves2
    ev[n, E_CODE] = code
    ev[n, E_SIDE] = side
    ev[n, E_OWNER] = owner
    ev[n, E_OWNER2] = owner2
    meta[M_NEV] = n + 1


@njit(cache=True, _nrt=False)
def _reject(ev, meta, oid, code, side):
    meta[M_REJECTS] += 1
    _emit(ev, meta, K_REJECTED, oid, 0, 0, 0, 0, 0, code, side, 0, 0)
    return 0


# -- levels and slots ---------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def _push_tail(pool, lad, bm, meta, side, slot):
    idx = (pool[slot, P_PRICE] - meta[M_BASE]) // meta[M_TICK]
    r = side * 4
    tail = lad[idx, r + L_TAIL]
    pool[slot, P_NEXT] = -1
    pool[slot, P_PREV] = tail
    if tail == -1:
        lad[idx, r + L_HEAD] = slot
        _bit_set(bm, meta, side, idx)
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
def _unlink(pool, lad, bm, meta, slot):
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
        _bit_clear(bm, meta, side, idx)
        if side == 0:
            if meta[M_BEST_BID] == idx:
                meta[M_BEST_BID] = find_le(bm, meta, 0, idx - 1)
        elif meta[M_BEST_ASK] == idx:
            meta[M_BEST_ASK] = find_ge(bm, meta, 1, idx + 1)


@njit(cache=True, _nrt=False)
def _release(pool, ht, meta, slot):
    """Forget a resting order that has left its level: drop its id, free its slot."""
    _ht_delete(ht, meta, pool[slot, P_ID])
    pool[slot, P_ID] = -1
    pool[slot, P_NEXT] = meta[M_FREE]
    meta[M_FREE] = slot


@njit(cache=True, _nrt=False)
def _price_code(meta, price):
    """0 if `price` may rest in this book, else the BookReject."""
    tick = meta[M_TICK]
    if price <= 0 or price > MAX_TICKS * tick:
        return R_PRICE_OUT_OF_RANGE
    if price % tick != 0:
        return R_PRICE_OFF_TICK
    if meta[M_BAND_HI] > 0 and (price < meta[M_BAND_LO] or price > meta[M_BAND_HI]):
        return R_PRICE_OUTSIDE_BAND
    return 0


@njit(cache=True, _nrt=False)
def _crosses(side, limit, level_price):
    return level_price <= limit if side == 0 else level_price >= limit


@njit(cache=True, _nrt=False)
def events_needed(meta, side, limit, qty, stp):
    """The most events an order of `qty` at `limit` can make the book write."""
    need = MIN_FREE_EVENTS
    opp = 1 - side
    best = _best(meta, opp)
    if best >= 0 and _crosses(side, limit, meta[M_BASE] + best * meta[M_TICK]):
        count = meta[M_COUNT_BID + opp]
        need += count if stp == STP_RESTING else min(count, qty)
    return need


@njit(cache=True, _nrt=False)
def _room_for(meta, ev, side, limit, qty, stp):
    """NEED_EVENTS (with M_NEED set) unless the buffer has room for what the order may write,
    so matching never overflows; 0 when it has."""
    if meta[M_EV_MODE] == EV_NONE:
        return 0
    need = events_needed(meta, side, limit, qty, stp)
    if ev.shape[0] - meta[M_NEV] < need:
        meta[M_NEED] = meta[M_NEV] + need
        return NEED_EVENTS
    return 0


# -- matching -----------------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def _fill(pool, lad, bm, ht, meta, ev, oid, owner, side, qty, slot, price, idx):
    """Trade `qty` of the taker against the resting order in `slot`; returns taker's leaves."""
    opp = 1 - side
    maker_qty = pool[slot, P_QTY]
    done = min(qty, maker_qty)
    qty -= done
    maker_qty -= done
    pool[slot, P_QTY] = maker_qty
    lad[idx, opp * 4 + L_TOTAL] -= done
    meta[M_FILLS] += 1
    meta[M_FILL_QTY] += done
    maker_owner = pool[slot, P_OWNER]
    _emit(
        ev,
        meta,
        K_FILL,
        oid,
        pool[slot, P_ID],
        price,
        done,
        qty,
        maker_qty,
        0,
        side,
        owner,
        maker_owner,
    )
    if maker_qty == 0:
        _unlink(pool, lad, bm, meta, slot)
        _release(pool, ht, meta, slot)
    return qty


@njit(cache=True, _nrt=False)
def _match(pool, lad, bm, ht, meta, ev, oid, owner, side, limit, qty, stp):
    """Match an incoming order against the other side; returns the quantity left.

    Sets meta[M_STP_HIT] when self-trade prevention ended the incoming order.
    """
    meta[M_STP_HIT] = 0
    opp = 1 - side
    base = meta[M_BASE]
    tick = meta[M_TICK]
    while qty > 0:
        idx = _best(meta, opp)
        if idx < 0:
            break
        price = base + idx * tick
        if not _crosses(side, limit, price):
            break
        slot = lad[idx, opp * 4 + L_HEAD]
        while slot != -1 and qty > 0:
            nxt = pool[slot, P_NEXT]
            if pool[slot, P_OWNER] == owner:
                if stp == STP_INCOMING:
                    meta[M_STP_HIT] = 1
                    return qty
                resting_qty = pool[slot, P_QTY]
                _emit(
                    ev,
                    meta,
                    K_CANCELLED,
                    pool[slot, P_ID],
                    0,
                    price,
                    resting_qty,
                    0,
                    0,
                    C_STP_RESTING,
                    opp,
                    owner,
                    0,
                )
                _unlink(pool, lad, bm, meta, slot)
                _release(pool, ht, meta, slot)
                if stp == STP_BOTH:
                    meta[M_STP_HIT] = 1
                    return qty
            else:
                qty = _fill(pool, lad, bm, ht, meta, ev, oid, owner, side, qty, slot, price, idx)
            slot = nxt
    return qty


@njit(cache=True, _nrt=False)
def _fok_can_fill(pool, lad, bm, meta, owner, side, limit, qty, stp):
    """Whether matching would fill `qty` completely (walks the queue as matching would)."""
    opp = 1 - side
    idx = _best(meta, opp)
    available = 0
    while idx >= 0:
        price = meta[M_BASE] + idx * meta[M_TICK]
        if not _crosses(side, limit, price):
            return False
        slot = lad[idx, opp * 4 + L_HEAD]
        while slot != -1:
            if pool[slot, P_OWNER] == owner:
                if stp != STP_RESTING:
                    return False
            else:
                available += pool[slot, P_QTY]
                if available >= qty:
                    return True
            slot = pool[slot, P_NEXT]
        idx = _next_level(bm, meta, opp, idx)
    return False


@njit(cache=True, _nrt=False)
def _ladder_has(meta, price):
    idx = (price - meta[M_BASE]) // meta[M_TICK]
    if idx < 0 or idx >= meta[M_LEN]:
        meta[M_NEED] = price
        return False
    return True


@njit(cache=True, _nrt=False)
def _finish(pool, lad, bm, ht, meta, ev, slot, oid, owner, side, price, left, rests):
    """After matching: rest the remainder (slot already holds the order) or cancel it."""
    if left == 0:
        if slot >= 0:
            _release(pool, ht, meta, slot)
        return
    if meta[M_STP_HIT] != 0 or not rests:
        reason = C_STP_INCOMING if meta[M_STP_HIT] != 0 else C_REMAINDER
        if slot >= 0:
            _release(pool, ht, meta, slot)
        _emit(ev, meta, K_CANCELLED, oid, 0, price, left, 0, 0, reason, side, owner, 0)
        return
    pool[slot, P_QTY] = left
    _push_tail(pool, lad, bm, meta, side, slot)
    _emit(ev, meta, K_RESTED, oid, 0, price, left, 0, 0, 0, side, owner, 0)


# -- commands -------------------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def order_fields_valid(side, otype, tif, stp):
    """Side, order type, time in force and STP mode are values of their enums."""
    return (
        0 <= side <= 1
        and LIMIT <= otype <= MARKET
        and DAY <= tif <= FOK
        and STP_INCOMING <= stp <= STP_BOTH
    )


@njit(cache=True, _nrt=False)
def _add(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, otype, tif, stp):
    if oid < 0 or oid >= MAX_ORDER_ID:
        return _reject(ev, meta, oid, R_INVALID_ORDER_ID, side)
    if owner < 0 or owner >= MAX_OWNER or not order_fields_valid(side, otype, tif, stp):
        return _reject(ev, meta, oid, R_INVALID_FIELD, side)
    collect = meta[M_COLLECT] != 0
    if collect and (otype != LIMIT or tif != DAY):
        return _reject(ev, meta, oid, R_UNSUPPORTED_IN_PHASE, side)
    if qty <= 0 or qty > MAX_QTY:
        return _reject(ev, meta, oid, R_QTY_INVALID, side)
    if otype == LIMIT:
        code = _price_code(meta, price)
        if code != 0:
            return _reject(ev, meta, oid, code, side)
        limit = price
    else:
        price = 0
        if tif == DAY:
            tif = IOC
        if side == 0:
            limit = meta[M_BAND_HI] if meta[M_BAND_HI] > 0 else INT64_MAX
        else:
            limit = meta[M_BAND_LO]
    if ht_find(ht, meta, oid) >= 0:
        return _reject(ev, meta, oid, R_DUPLICATE_ORDER_ID, side)
    rests = tif == DAY
    if rests:
        if meta[M_FREE] < 0:
            return NEED_POOL
        if (meta[M_LIVE] + 1) * 2 > ht.shape[0]:
            return NEED_HASH
        if not _ladder_has(meta, price):
            return NEED_LADDER
    status = _room_for(meta, ev, side, limit, qty, stp)
    if status != 0:
        return status
    if tif == FOK and not _fok_can_fill(pool, lad, bm, meta, owner, side, limit, qty, stp):
        _emit(ev, meta, K_CANCELLED, oid, 0, price, qty, 0, 0, C_FOK, side, owner, 0)
        return 0
    if collect:
        meta[M_STP_HIT] = 0
        left = qty
    else:
        left = _match(pool, lad, bm, ht, meta, ev, oid, owner, side, limit, qty, stp)
    slot = -1
    if left > 0 and rests and meta[M_STP_HIT] == 0:
        slot = meta[M_FREE]
        meta[M_FREE] = pool[slot, P_NEXT]
        pool[slot, P_PRICE] = price
        pool[slot, P_ID] = oid
        pool[slot, P_OWNER] = owner
        pool[slot, P_FLAGS] = side | (stp << 1)
        ht_insert(ht, meta, oid, slot)
    _finish(pool, lad, bm, ht, meta, ev, slot, oid, owner, side, price, left, rests)
    return 0


@njit(cache=True, _nrt=False)
def _find_owned(pool, ht, meta, ev, oid, owner):
    """Slot of a live order the caller may touch, or -1 after emitting the reject."""
    if oid < 0 or oid >= MAX_ORDER_ID:
        _reject(ev, meta, oid, R_INVALID_ORDER_ID, 0)
        return -1
    slot = ht_find(ht, meta, oid)
    if slot < 0:
        _reject(ev, meta, oid, R_UNKNOWN_ORDER, 0)
        return -1
    if owner >= 0 and pool[slot, P_OWNER] != owner:
        _reject(ev, meta, oid, R_NOT_OWNER, pool[slot, P_FLAGS] & 1)
        return -1
    return slot


@njit(cache=True, _nrt=False)
def _cancel(pool, lad, bm, ht, meta, ev, oid, owner):
    slot = _find_owned(pool, ht, meta, ev, oid, owner)
    if slot < 0:
        return 0
    side = pool[slot, P_FLAGS] & 1
    _emit(
        ev,
        meta,
        K_CANCELLED,
        oid,
        0,
        pool[slot, P_PRICE],
        pool[slot, P_QTY],
        0,
        0,
        C_USER,
        side,
        pool[slot, P_OWNER],
        0,
    )
    _unlink(pool, lad, bm, meta, slot)
    _release(pool, ht, meta, slot)
    return 0


@njit(cache=True, _nrt=False)
def _amend(pool, lad, bm, ht, meta, ev, oid, owner, price, qty):
    slot = _find_owned(pool, ht, meta, ev, oid, owner)
    if slot < 0:
        return 0
    flags = pool[slot, P_FLAGS]
    side = flags & 1
    if qty <= 0 or qty > MAX_QTY:
        return _reject(ev, meta, oid, R_QTY_INVALID, side)
    code = _price_code(meta, price)
    if code != 0:
        return _reject(ev, meta, oid, code, side)
    owner = pool[slot, P_OWNER]
    old_qty = pool[slot, P_QTY]
    if price == pool[slot, P_PRICE] and qty <= old_qty:
        idx = (price - meta[M_BASE]) // meta[M_TICK]
        lad[idx, side * 4 + L_TOTAL] -= old_qty - qty
        pool[slot, P_QTY] = qty
        _emit(ev, meta, K_AMENDED, oid, 0, price, qty, 0, 0, 1, side, owner, 0)
        return 0
    if not _ladder_has(meta, price):
        return NEED_LADDER
    stp = (flags >> 1) & 3
    status = _room_for(meta, ev, side, price, qty, stp)
    if status != 0:
        return status
    _unlink(pool, lad, bm, meta, slot)
    pool[slot, P_PRICE] = price
    pool[slot, P_QTY] = qty
    _emit(ev, meta, K_AMENDED, oid, 0, price, qty, 0, 0, 0, side, owner, 0)
    if meta[M_COLLECT] != 0:
        meta[M_STP_HIT] = 0
        left = qty
    else:
        left = _match(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, stp)
    _finish(pool, lad, bm, ht, meta, ev, slot, oid, owner, side, price, left, True)
    return 0


@njit(cache=True, _nrt=False)
def _pick(pool, lad, bm, ht, meta, ev, oid, owner, side, target, qty):
    if oid < 0 or oid >= MAX_ORDER_ID:
        return _reject(ev, meta, oid, R_INVALID_ORDER_ID, side)
    if owner < 0 or owner >= MAX_OWNER or side < 0 or side > 1:
        return _reject(ev, meta, oid, R_INVALID_FIELD, side)
    if meta[M_COLLECT] != 0:
        return _reject(ev, meta, oid, R_UNSUPPORTED_IN_PHASE, side)
    if qty <= 0 or qty > MAX_QTY:
        return _reject(ev, meta, oid, R_QTY_INVALID, side)
    if ht_find(ht, meta, oid) >= 0:
        return _reject(ev, meta, oid, R_DUPLICATE_ORDER_ID, side)
    slot = ht_find(ht, meta, target) if 0 <= target < MAX_ORDER_ID else -1
    if slot < 0:
        return _reject(ev, meta, oid, R_UNKNOWN_ORDER, side)
    opp = pool[slot, P_FLAGS] & 1
    if opp == side:
        return _reject(ev, meta, oid, R_PICK_WRONG_SIDE, side)
    if pool[slot, P_OWNER] == owner:
        return _reject(ev, meta, oid, R_SELF_TRADE, side)
    price = pool[slot, P_PRICE]
    idx = (price - meta[M_BASE]) // meta[M_TICK]
    level = _best(meta, opp)
    better = 0
    while level != idx:
        better += 1
        if better >= PICK_LEVELS:
            return _reject(ev, meta, oid, R_PICK_NOT_IN_TOP, side)
        level = _next_level(bm, meta, opp, level)
    if qty > pool[slot, P_QTY]:
        return _reject(ev, meta, oid, R_PICK_QTY, side)
    _fill(pool, lad, bm, ht, meta, ev, oid, owner, side, qty, slot, price, idx)
    return 0


@njit(cache=True, _nrt=False)
def _uncross(pool, lad, bm, ht, meta, ev, price):
    """Execute a call auction at one price: the best bid and the best ask trade (price-time
    priority on both sides) while the bid is at or above `price` and the ask at or below it.
    Fills carry code 1 (auction), the buy order as `oid`, the sell order as `oid2`. When the
    two orders at the head belong to one member, the one entered later is cancelled
    (STP_INCOMING): no trade between a member's own orders, in an auction either."""
    if meta[M_EV_MODE] != EV_NONE:
        need = meta[M_COUNT_BID] + meta[M_COUNT_ASK] + MIN_FREE_EVENTS
        if ev.shape[0] - meta[M_NEV] < need:
            meta[M_NEED] = meta[M_NEV] + need
            return NEED_EVENTS
    base = meta[M_BASE]
    tick = meta[M_TICK]
    while meta[M_BEST_BID] >= 0 and meta[M_BEST_ASK] >= 0:
        b = meta[M_BEST_BID]
        a = meta[M_BEST_ASK]
        if base + b * tick < price or base + a * tick > price:
            break
        buy = lad[b, L_HEAD]
        sell = lad[a, 4 + L_HEAD]
        if pool[buy, P_OWNER] == pool[sell, P_OWNER]:
            later = buy if pool[buy, P_SEQ] > pool[sell, P_SEQ] else sell
            _emit(
                ev,
                meta,
                K_CANCELLED,
                pool[later, P_ID],
                0,
                pool[later, P_PRICE],
                pool[later, P_QTY],
                0,
                0,
                C_STP_INCOMING,
                pool[later, P_FLAGS] & 1,
                pool[later, P_OWNER],
                0,
            )
            _unlink(pool, lad, bm, meta, later)
            _release(pool, ht, meta, later)
            continue
        done = min(pool[buy, P_QTY], pool[sell, P_QTY])
        pool[buy, P_QTY] -= done
        pool[sell, P_QTY] -= done
        lad[b, L_TOTAL] -= done
        lad[a, 4 + L_TOTAL] -= done
        meta[M_FILLS] += 1
        meta[M_FILL_QTY] += done
        _emit(
            ev,
            meta,
            K_FILL,
            pool[buy, P_ID],
            pool[sell, P_ID],
            price,
            done,
            pool[buy, P_QTY],
            pool[sell, P_QTY],
            1,
            0,
            pool[buy, P_OWNER],
            pool[sell, P_OWNER],
        )
        if pool[buy, P_QTY] == 0:
            _unlink(pool, lad, bm, meta, buy)
            _release(pool, ht, meta, buy)
        if pool[sell, P_QTY] == 0:
            _unlink(pool, lad, bm, meta, sell)
            _release(pool, ht, meta, sell)
    return 0


@njit(cache=True, _nrt=False)
def _apply(pool, lad, bm, ht, meta, ev, kind, oid, owner, side, price, qty, otype, tif, stp, oid2):
    if meta[M_EV_MODE] != EV_NONE and ev.shape[0] - meta[M_NEV] < MIN_FREE_EVENTS:
        meta[M_NEED] = meta[M_NEV] + MIN_FREE_EVENTS
        return NEED_EVENTS
    if kind == CMD_ADD:
        return _add(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, otype, tif, stp)
    if kind == CMD_CANCEL:
        return _cancel(pool, lad, bm, ht, meta, ev, oid, owner)
    if kind == CMD_AMEND:
        return _amend(pool, lad, bm, ht, meta, ev, oid, owner, price, qty)
    if kind == CMD_PICK:
        return _pick(pool, lad, bm, ht, meta, ev, oid, owner, side, oid2, qty)
    if kind == CMD_UNCROSS:
        return _uncross(pool, lad, bm, ht, meta, ev, price)
    return _reject(ev, meta, oid, R_INVALID_FIELD, 0)


@njit(cache=True, _nrt=False)
def _events_or_status(meta, status):
    return status if status < 0 else meta[M_NEV]


# Per-command entry points: one per command kind, so each call passes only the scalars it
# needs (numba's dispatch cost grows with the argument count). Each returns the number of
# events written at ev[0:n], or a NEED_* status.


@njit(cache=True, _nrt=False)
def add_one(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, otype, tif, stp):
    meta[M_NEV] = 0
    status = _apply(
        pool, lad, bm, ht, meta, ev, CMD_ADD, oid, owner, side, price, qty, otype, tif, stp, 0
    )
    return _events_or_status(meta, status)


@njit(cache=True, _nrt=False)
def cancel_one(pool, lad, bm, ht, meta, ev, oid, owner):
    meta[M_NEV] = 0
    status = _apply(pool, lad, bm, ht, meta, ev, CMD_CANCEL, oid, owner, 0, 0, 0, 0, 0, 0, 0)
    return _events_or_status(meta, status)


@njit(cache=True, _nrt=False)
def apply_one(
    pool, lad, bm, ht, meta, ev, kind, oid, owner, side, price, qty, otype, tif, stp, oid2
):
    """Any command kind (amend and pick go this way)."""
    meta[M_NEV] = 0
    status = _apply(
        pool, lad, bm, ht, meta, ev, kind, oid, owner, side, price, qty, otype, tif, stp, oid2
    )
    return _events_or_status(meta, status)


@njit(cache=True, _nrt=False)
def apply_batch(pool, lad, bm, ht, meta, ev, cmds, start):
    """Commands cmds[start:], appending events; returns (status, index of the next command)."""
    for i in range(start, cmds.shape[0]):
        status = _apply(
            pool,
            lad,
            bm,
            ht,
            meta,
            ev,
            cmds[i, 0],
            cmds[i, 1],
            cmds[i, 2],
            cmds[i, 3],
            cmds[i, 4],
            cmds[i, 5],
            cmds[i, 6],
            cmds[i, 7],
            cmds[i, 8],
            cmds[i, 9],
        )
        if status < 0:
            return status, i
    return 0, cmds.shape[0]


# -- views ----------------------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def depth_levels(lad, bm, meta, side, n, out):
    """Fill out[k] = (price, total qty, order count) for the best n levels; returns how many."""
    idx = _best(meta, side)
    k = 0
    while idx >= 0 and k < n:
        out[k, 0] = meta[M_BASE] + idx * meta[M_TICK]
        out[k, 1] = lad[idx, side * 4 + L_TOTAL]
        out[k, 2] = lad[idx, side * 4 + L_COUNT]
        k += 1
        idx = _next_level(bm, meta, side, idx)
    return k


@njit(cache=True, _nrt=False)
def best_head(pool, lad, meta, side):
    """Id of the oldest order at the best level of `side` (the next to trade), or -1."""
    idx = _best(meta, side)
    if idx < 0:
        return -1
    return pool[lad[idx, side * 4 + L_HEAD], P_ID]


@njit(cache=True, _nrt=False)
def refresh_top(lad, bm, meta, top):
    """Rewrite top[side, k] = (price, qty) of the best levels (zeros past the last) in place;
    returns whether anything changed. One call per command feeds the depth-change events."""
    changed = False
    for side in range(2):
        idx = _best(meta, side)
        for k in range(top.shape[1]):
            price = 0
            qty = 0
            if idx >= 0:
                price = meta[M_BASE] + idx * meta[M_TICK]
                qty = lad[idx, side * 4 + L_TOTAL]
                idx = _next_level(bm, meta, side, idx)
            if top[side, k, 0] != price or top[side, k, 1] != qty:
                top[side, k, 0] = price
                top[side, k, 1] = qty
                changed = True
    return changed


@njit(cache=True, _nrt=False)
def rebuild_bitmap(lad, bm, meta):
    """Recompute both bitmap levels and the best indices from the ladder's counts."""
    bm[:, :] = 0
    meta[M_BEST_BID] = -1
    meta[M_BEST_ASK] = -1
    for side in range(2):
        for idx in range(meta[M_LEN]):
            if lad[idx, side * 4 + L_COUNT] > 0:
                _bit_set(bm, meta, side, idx)
                if side == 0:
                    meta[M_BEST_BID] = idx
                elif meta[M_BEST_ASK] == -1:
                    meta[M_BEST_ASK] = idx


@njit(cache=True, _nrt=False)
def level_of(lad, meta, side, price):
    """(total qty, orders) at `price` on `side`, (0, 0) off the ladder or off the tick."""
    offset = price - meta[M_BASE]
    tick = meta[M_TICK]
    if offset < 0 or offset % tick != 0 or offset // tick >= meta[M_LEN]:
        return 0, 0
    idx = offset // tick
    return lad[idx, side * 4 + L_TOTAL], lad[idx, side * 4 + L_COUNT]
