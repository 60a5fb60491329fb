"""Matching: the book's commands (add, cancel, amend, pick, uncross) and their entry points.

Data layout: the six arrays of `engine.book.layout` (pool, ladder, bitmap, hash, meta, events),
kept by bitmap.py, idhash.py and levels.py; events are written by eventrows.py.

Invariants after every command (checked by `integrity.check_integrity`):
- price-time priority: an incoming order trades with the best opposite level, oldest order
  first, at the resting order's price, while its limit reaches the level;
- the book is never crossed once a command has finished (outside a call phase, when
  `meta[M_COLLECT]` lets orders rest without matching);
- a FOK order either fills completely or changes nothing but its CANCELLED(FOK_UNFILLED) row;
- self-trade prevention follows the incoming order's mode: no fill ever names one owner twice;
- a command either completes or returns a negative resource status (NEED_*) *before* changing
  anything; the caller grows the named array (outside the compiled code) and calls again.
  Rejected commands change nothing but the event buffer and the reject counter.

Compilation: @njit(cache=True, _nrt=False) here and in every module the kernel calls. The
kernel never allocates, so it runs without numba's reference-counted runtime: no
incref/decref per array argument on every internal call (that bookkeeping cost more than the
matching itself). Compiled code is cached on disk: in the package's __pycache__, or numba's
user-wide cache when the install is read-only (NUMBA_CACHE_DIR overrides both).

Complexity: add/cancel/amend O(1) plus O(fills) inside the price window, O(log far levels)
for a level outside it; finding the next level is the bitmap's or the far store's
(window.py), the id hash O(1) expected (idhash.py). Adds and amends first check that the
window still holds the touch (levels.window_holds_touch) and ask to re-centre it if not.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.book.bitmap import best_level
from engine.book.eventrows import (
    C_FOK,
    C_REMAINDER,
    C_STP_INCOMING,
    C_STP_RESTING,
    C_USER,
    K_AMENDED,
    K_CANCELLED,
    K_FILL,
    K_RESTED,
    MIN_FREE_EVENTS,
    R_DUPLICATE_ORDER_ID,
    R_INVALID_FIELD,
    R_INVALID_ORDER_ID,
    R_NOT_OWNER,
    R_PICK_NOT_IN_TOP,
    R_PICK_QTY,
    R_PICK_WRONG_SIDE,
    R_PRICE_OFF_TICK,
    R_PRICE_OUT_OF_RANGE,
    R_PRICE_OUTSIDE_BAND,
    R_QTY_INVALID,
    R_SELF_TRADE,
    R_UNKNOWN_ORDER,
    R_UNSUPPORTED_IN_PHASE,
    emit,
    reject,
)
from engine.book.idhash import ht_find, ht_insert
from engine.book.layout import (
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
    CMD_PICK,
    CMD_UNCROSS,
    EV_NONE,
    L_HEAD,
    L_TOTAL,
    M_BAND_HI,
    M_BAND_LO,
    M_BEST_BID_PX,
    M_COLLECT,
    M_COUNT_BID,
    M_EV_MODE,
    M_FILL_QTY,
    M_FILLS,
    M_FREE,
    M_LIVE,
    M_NEED,
    M_NEV,
    M_STP_HIT,
    M_TICK,
    MAX_ORDER_ID,
    MAX_OWNER,
    MAX_PRICE,
    MAX_QTY,
    NEED_EVENTS,
    NEED_HASH,
    NEED_LADDER,
    NEED_POOL,
    P_FLAGS,
    P_ID,
    P_NEXT,
    P_OWNER,
    P_PRICE,
    P_QTY,
    PICK_LEVELS,
)
from engine.book.levels import level_room, push_tail, release, unlink, window_holds_touch
from engine.book.uncross import uncross
from engine.book.window import level_price, next_level, row_of
from engine.types import OrderType, StpMode, TimeInForce

LIMIT = int(OrderType.LIMIT)
MARKET = int(OrderType.MARKET)
DAY = int(TimeInForce.DAY)
IOC = int(TimeInForce.IOC)
FOK = int(TimeInForce.FOK)
STP_INCOMING = int(StpMode.CANCEL_INCOMING)
STP_RESTING = int(StpMode.CANCEL_RESTING)
STP_BOTH = int(StpMode.CANCEL_BOTH)

INT64_MAX = np.iinfo(np.int64).max


# -- checks ---------------------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def _price_code(meta, price):
    """0 if `price` may rest in this book, else the BookReject."""
    tick = meta[M_TICK]
    if price <= 0 or price > MAX_PRICE:
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
    best = best_level(meta, opp)
    if best >= 0 and _crosses(side, limit, meta[M_BEST_BID_PX + opp]):
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


@njit(cache=True, _nrt=False)
def order_fields_valid(side, otype, tif, stp):
    """Side, order type, time in force and STP mode are values of their enums."""
    return (
        0 <= side <= 1
        and LIMIT <= otype <= MARKET
        and DAY <= tif <= FOK
        and STP_INCOMING <= stp <= STP_BOTH
    )


# -- matching -------------------------------------------------------------------------------------


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
    emit(
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
        unlink(pool, lad, bm, meta, slot)
        release(pool, ht, meta, slot)
    return qty


@njit(cache=True, _nrt=False)
def _match(pool, lad, bm, ht, meta, ev, oid, owner, side, limit, qty, stp):
    """Match an incoming order against the other side; returns the quantity left.

    Sets meta[M_STP_HIT] when self-trade prevention ended the incoming order.
    """
    meta[M_STP_HIT] = 0
    opp = 1 - side
    while qty > 0:
        idx = best_level(meta, opp)
        if idx < 0:
            break
        price = meta[M_BEST_BID_PX + opp]
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
                emit(
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
                unlink(pool, lad, bm, meta, slot)
                release(pool, ht, meta, slot)
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
    idx = best_level(meta, opp)
    available = 0
    while idx >= 0:
        price = level_price(lad, meta, opp, idx)
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
        idx = next_level(lad, bm, meta, opp, idx)
    return False


@njit(cache=True, _nrt=False)
def _finish(pool, lad, bm, ht, meta, ev, slot, oid, owner, side, price, left, rests):
    """After matching: rest the remainder (slot already holds the order) or cancel it."""
    if left == 0:
        if slot >= 0:
            release(pool, ht, meta, slot)
        return
    if meta[M_STP_HIT] != 0 or not rests:
        reason = C_STP_INCOMING if meta[M_STP_HIT] != 0 else C_REMAINDER
        if slot >= 0:
            release(pool, ht, meta, slot)
        emit(ev, meta, K_CANCELLED, oid, 0, price, left, 0, 0, reason, side, owner, 0)
        return
    pool[slot, P_QTY] = left
    push_tail(pool, lad, bm, meta, side, slot)
    emit(ev, meta, K_RESTED, oid, 0, price, left, 0, 0, 0, side, owner, 0)


# -- commands -------------------------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def _add(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, otype, tif, stp):
    if oid < 0 or oid >= MAX_ORDER_ID:
        return reject(ev, meta, oid, R_INVALID_ORDER_ID, side)
    if owner < 0 or owner >= MAX_OWNER or not order_fields_valid(side, otype, tif, stp):
        return reject(ev, meta, oid, R_INVALID_FIELD, side)
    collect = meta[M_COLLECT] != 0
    if collect and (otype != LIMIT or tif != DAY):
        return reject(ev, meta, oid, R_UNSUPPORTED_IN_PHASE, side)
    if qty <= 0 or qty > MAX_QTY:
        return reject(ev, meta, oid, R_QTY_INVALID, side)
    if otype == LIMIT:
        code = _price_code(meta, price)
        if code != 0:
            return reject(ev, meta, oid, code, side)
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
        return reject(ev, meta, oid, R_DUPLICATE_ORDER_ID, side)
    rests = tif == DAY
    if rests:
        if meta[M_FREE] < 0:
            return NEED_POOL
        if (meta[M_LIVE] + 1) * 2 > ht.shape[0]:
            return NEED_HASH
        if not level_room(meta, price):
            return NEED_LADDER
    status = _room_for(meta, ev, side, limit, qty, stp)
    if status != 0:
        return status
    if tif == FOK and not _fok_can_fill(pool, lad, bm, meta, owner, side, limit, qty, stp):
        emit(ev, meta, K_CANCELLED, oid, 0, price, qty, 0, 0, C_FOK, side, owner, 0)
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
        reject(ev, meta, oid, R_INVALID_ORDER_ID, 0)
        return -1
    slot = ht_find(ht, meta, oid)
    if slot < 0:
        reject(ev, meta, oid, R_UNKNOWN_ORDER, 0)
        return -1
    if owner >= 0 and pool[slot, P_OWNER] != owner:
        reject(ev, meta, oid, R_NOT_OWNER, pool[slot, P_FLAGS] & 1)
        return -1
    return slot


@njit(cache=True, _nrt=False)
def _cancel(pool, lad, bm, ht, meta, ev, oid, owner):
    slot = _find_owned(pool, ht, meta, ev, oid, owner)
    if slot < 0:
        return 0
    side = pool[slot, P_FLAGS] & 1
    emit(
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
    unlink(pool, lad, bm, meta, slot)
    release(pool, ht, meta, slot)
    return 0


@njit(cache=True, _nrt=False)
def _amend(pool, lad, bm, ht, meta, ev, oid, owner, price, qty):
    slot = _find_owned(pool, ht, meta, ev, oid, owner)
    if slot < 0:
        return 0
    flags = pool[slot, P_FLAGS]
    side = flags & 1
    if qty <= 0 or qty > MAX_QTY:
        return reject(ev, meta, oid, R_QTY_INVALID, side)
    code = _price_code(meta, price)
    if code != 0:
        return reject(ev, meta, oid, code, side)
    owner = pool[slot, P_OWNER]
    old_qty = pool[slot, P_QTY]
    if price == pool[slot, P_PRICE] and qty <= old_qty:
        idx = row_of(lad, meta, side, price)
        lad[idx, side * 4 + L_TOTAL] -= old_qty - qty
        pool[slot, P_QTY] = qty
        emit(ev, meta, K_AMENDED, oid, 0, price, qty, 0, 0, 1, side, owner, 0)
        return 0
    if not level_room(meta, price):
        return NEED_LADDER
    stp = (flags >> 1) & 3
    status = _room_for(meta, ev, side, price, qty, stp)
    if status != 0:
        return status
    unlink(pool, lad, bm, meta, slot)
    pool[slot, P_PRICE] = price
    pool[slot, P_QTY] = qty
    emit(ev, meta, K_AMENDED, oid, 0, price, qty, 0, 0, 0, side, owner, 0)
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
        return reject(ev, meta, oid, R_INVALID_ORDER_ID, side)
    if owner < 0 or owner >= MAX_OWNER or side < 0 or side > 1:
        return reject(ev, meta, oid, R_INVALID_FIELD, side)
    if meta[M_COLLECT] != 0:
        return reject(ev, meta, oid, R_UNSUPPORTED_IN_PHASE, side)
    if qty <= 0 or qty > MAX_QTY:
        return reject(ev, meta, oid, R_QTY_INVALID, side)
    if ht_find(ht, meta, oid) >= 0:
        return reject(ev, meta, oid, R_DUPLICATE_ORDER_ID, side)
    slot = ht_find(ht, meta, target) if 0 <= target < MAX_ORDER_ID else -1
    if slot < 0:
        return reject(ev, meta, oid, R_UNKNOWN_ORDER, side)
    opp = pool[slot, P_FLAGS] & 1
    if opp == side:
        return reject(ev, meta, oid, R_PICK_WRONG_SIDE, side)
    if pool[slot, P_OWNER] == owner:
        return reject(ev, meta, oid, R_SELF_TRADE, side)
    price = pool[slot, P_PRICE]
    idx = row_of(lad, meta, opp, price)
    level = best_level(meta, opp)
    better = 0
    while level != idx:
        better += 1
        if better >= PICK_LEVELS:
            return reject(ev, meta, oid, R_PICK_NOT_IN_TOP, side)
        level = next_level(lad, bm, meta, opp, level)
    if qty > pool[slot, P_QTY]:
        return reject(ev, meta, oid, R_PICK_QTY, side)
    _fill(pool, lad, bm, ht, meta, ev, oid, owner, side, qty, slot, price, idx)
    return 0


@njit(cache=True, _nrt=False)
def apply_command(
    pool, lad, bm, ht, meta, ev, kind, oid, owner, side, price, qty, otype, tif, stp, oid2
):
    if meta[M_EV_MODE] != EV_NONE and ev.shape[0] - meta[M_NEV] < MIN_FREE_EVENTS:
        meta[M_NEED] = meta[M_NEV] + MIN_FREE_EVENTS
        return NEED_EVENTS
    if kind in (CMD_ADD, CMD_AMEND) and not window_holds_touch(meta):
        meta[M_NEED] = 0
        return NEED_LADDER
    if kind == CMD_ADD:
        return _add(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, otype, tif, stp)
    if kind == CMD_CANCEL:
        return _cancel(pool, lad, bm, ht, meta, ev, oid, owner)
    if kind == CMD_AMEND:
        return _amend(pool, lad, bm, ht, meta, ev, oid, owner, price, qty)
    if kind == CMD_PICK:
        return _pick(pool, lad, bm, ht, meta, ev, oid, owner, side, oid2, qty)
    if kind == CMD_UNCROSS:
        return uncross(pool, lad, bm, ht, meta, ev, price)
    return reject(ev, meta, oid, R_INVALID_FIELD, 0)


@njit(cache=True, _nrt=False)
def _events_or_status(meta, status):
    return status if status < 0 else meta[M_NEV]


# Per-command entry points: one per command kind, so each call passes only the scalars it
# needs (numba's dispatch cost grows with the argument count). Each returns the number of
# events written at ev[0:n], or a NEED_* status.


@njit(cache=True, _nrt=False)
def add_one(pool, lad, bm, ht, meta, ev, oid, owner, side, price, qty, otype, tif, stp):
    meta[M_NEV] = 0
    status = apply_command(
        pool, lad, bm, ht, meta, ev, CMD_ADD, oid, owner, side, price, qty, otype, tif, stp, 0
    )
    return _events_or_status(meta, status)


@njit(cache=True, _nrt=False)
def cancel_one(pool, lad, bm, ht, meta, ev, oid, owner):
    meta[M_NEV] = 0
    status = apply_command(pool, lad, bm, ht, meta, ev, CMD_CANCEL, oid, owner, 0, 0, 0, 0, 0, 0, 0)
    return _events_or_status(meta, status)


@njit(cache=True, _nrt=False)
def apply_one(
    pool, lad, bm, ht, meta, ev, kind, oid, owner, side, price, qty, otype, tif, stp, oid2
):
    """Any command kind (amend and pick go this way)."""
    meta[M_NEV] = 0
    status = apply_command(
        pool, lad, bm, ht, meta, ev, kind, oid, owner, side, price, qty, otype, tif, stp, oid2
    )
    return _events_or_status(meta, status)


@njit(cache=True, _nrt=False)
def apply_batch(pool, lad, bm, ht, meta, ev, cmds, start):
    """Commands cmds[start:], appending events; returns (status, index of the next command)."""
    for i in range(start, cmds.shape[0]):
        status = apply_command(
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
