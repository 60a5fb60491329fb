"""The compiled order pipeline: the exchange core's order handling around the matching kernel.

One compiled call per new order, cancel or amend does what the reference exchange
(engine.core.reference, the executable specification over the reference book) does for them
in Python:
phase, quantity and price checks in the core's order, the funds or allowances check, the
freeze, the book command, settlement of every fill into the accounts (fees to the exchange
row), the release of whatever an order gives up, and the market-data levels it changed.

Arrays (besides the book's six, see layout.py):
- `acct[row, ACCT_*]` int64: per member row (member ids ascending, then the exchange's row)
  available and frozen cash, then per instrument available, frozen and locked tonnes at
  ACCT_HELD + 3 * instrument (layout owned by engine.core.risk, whose `Accounts` views the
  same memory).
- `ids[row]` int64: the member id of each row, ascending, so a row is a binary search away.
- `mk[MK_*]` int64: the market's phase, order-size limits, band, tick, fee and instrument
  index (layout owned by engine.core.market, whose `Market` writes them whenever they
  change).
- `ck`, `cm`: the day's ClOrdID table and its meta (engine.core.clordid). A command's
  ClOrdID arrives as its key bytes (the per-command entry points) or as its length and four
  words (`_new_order`, `_cancel`, `_amend`, which the batch calls too); it is checked first
  and recorded only when the command is accepted. A key too long for the table is the
  caller's to check and record.

Output rows at ev[0:rows]: the book's event rows in the order it wrote them, RESTED rows
dropped (they make no protocol event) and FILL rows turned buy side first (E_OID, E_LEAVES,
E_OWNER are the buy order's, the *2 columns the sell's, E_SIDE stays the taker's side, E_CODE
holds the fee each side paid); then
one K_LEVEL row per price level the command changed, first touch first: side at E_SIDE, price
at E_PRICE, new total at E_QTY, orders at E_LEAVES.

new_order and amend return (rows, side, price, qty, orders): when the only row would be a
level row it comes in the tuple instead (price > 0, rows 0), sparing the caller the buffer
read; cancel returns its whole answer in the tuple (see `cancel`).
rows < 0 is a NEED_* status (nothing changed: grow and call again; NEED_CLORDIDS: the ClOrdID
table) or REJECT_BASE - code (nothing changed).

Risk arithmetic (identical to engine.core.risk, and exact for any value below MAX_VALUE: fee_of):
a buy holds freeze_for(limit, leaves) = value plus the fee on it rounded up; a fill spends
value plus the fee rounded down and the buy keeps freeze_for(limit, leaves after), the rest
returns to available; a sell holds its leaves.
"""

from __future__ import annotations

from numba import njit

from engine.book.eventrows import K_CANCELLED, K_FILL, K_REJECTED, K_RESTED, MIN_FREE_EVENTS
from engine.book.idhash import ht_find
from engine.book.layout import (
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
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
    EVENT_ROWS,
    M_NEED,
    M_NEV,
    MAX_ORDER_ID,
    NEED_EVENTS,
    P_FLAGS,
    P_OWNER,
    P_PRICE,
    P_QTY,
)
from engine.book.matching import MARKET, apply_command, events_needed, order_fields_valid
from engine.book.views import level_on_tick
from engine.core.clordid import clid_insert, clid_room, clid_used, key_words
from engine.core.market import (
    MK_BAND_HI,
    MK_BAND_LO,
    MK_FEE_PPM,
    MK_INSTRUMENT,
    MK_MAX_QTY,
    MK_MIN_QTY,
    MK_PHASE,
    MK_RESALE,
    MK_TICK,
    MK_UNIT,
)
from engine.core.risk import (
    ACCT_CASH,
    ACCT_FROZEN,
    ACCT_HELD,
    HELD_AVAILABLE,
    HELD_FROZEN,
    HELD_LOCKED,
)
from engine.instruments import fee_of
from engine.protocol import RejectCode
from engine.types import Phase

K_LEVEL = 6  # a market-data row: this level's new total and order count


REJECT_BASE = -1000

_CLOSED, _HALTED, _CALL, _CLOSING_CALL = (
    int(Phase.CLOSED),
    int(Phase.HALTED),
    int(Phase.CALL),
    int(Phase.CLOSING_CALL),
)
_R = {code.name: int(code) for code in RejectCode}
R_INVALID_FIELD = _R["INVALID_FIELD"]
R_DUPLICATE_CLORDID = _R["DUPLICATE_CLORDID"]
R_MARKET_CLOSED = _R["MARKET_CLOSED"]
R_MARKET_HALTED = _R["MARKET_HALTED"]
R_UNSUPPORTED_IN_PHASE = _R["UNSUPPORTED_IN_PHASE"]
R_QTY_INVALID = _R["QTY_INVALID"]
R_QTY_NOT_WHOLE_UNIT = _R["QTY_NOT_WHOLE_UNIT"]
R_QTY_ABOVE_MAX = _R["QTY_ABOVE_MAX"]
R_QTY_BELOW_MIN = _R["QTY_BELOW_MIN"]
R_PRICE_OFF_TICK = _R["PRICE_OFF_TICK"]
R_PRICE_OUTSIDE_BAND = _R["PRICE_OUTSIDE_BAND"]
R_INSUFFICIENT_FUNDS = _R["INSUFFICIENT_FUNDS"]
R_INSUFFICIENT_ALLOWANCES = _R["INSUFFICIENT_ALLOWANCES"]
R_UNKNOWN_ORDER = _R["UNKNOWN_ORDER"]
R_NOT_OWNER = _R["NOT_OWNER"]


fee_on = njit(cache=True, _nrt=False)(fee_of)  # compiled once, for int64 scalars


@njit(cache=True, _nrt=False)
def freeze_for(mk, price, qty):
    value = price * qty
    return value + fee_on(value, mk[MK_FEE_PPM], True)


@njit(cache=True, _nrt=False)
def find_row(ids, member):
    """Row of `member` in the accounts (`ids` ascending), or -1. Members numbered without
    gaps from the first (the usual case) are found at once, any other by binary search."""
    n = ids.shape[0]
    if n == 0:
        return -1
    guess = member - ids[0]
    if 0 <= guess < n and ids[guess] == member:
        return guess
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if ids[mid] < member:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and ids[lo] == member else -1


@njit(cache=True, _nrt=False)
def _phase_check(mk, call_ok):
    phase = mk[MK_PHASE]
    if phase == _CLOSED:
        return R_MARKET_CLOSED
    if phase == _HALTED:
        return R_MARKET_HALTED
    if (phase in (_CALL, _CLOSING_CALL)) and not call_ok:
        return R_UNSUPPORTED_IN_PHASE
    return 0


@njit(cache=True, _nrt=False)
def _qty_check(mk, qty):
    if qty <= 0:
        return R_QTY_INVALID
    if qty % mk[MK_UNIT] != 0:
        return R_QTY_NOT_WHOLE_UNIT
    if qty > mk[MK_MAX_QTY]:
        return R_QTY_ABOVE_MAX
    if qty < mk[MK_MIN_QTY]:
        return R_QTY_BELOW_MIN
    return 0


@njit(cache=True, _nrt=False)
def _price_check(mk, price):
    if price % mk[MK_TICK] != 0:
        return R_PRICE_OFF_TICK
    if price < mk[MK_BAND_LO] or price > mk[MK_BAND_HI]:
        return R_PRICE_OUTSIDE_BAND
    return 0


@njit(cache=True, _nrt=False)
def _held(mk, column):
    return ACCT_HELD + 3 * mk[MK_INSTRUMENT] + column


@njit(cache=True, _nrt=False)
def _short_of(acct, mk, row, side, cash, tonnes):
    """The reject code if `row` cannot freeze `cash` more (a buy) or `tonnes` more (a sell);
    0 when it can (a negative amount always can)."""
    if side == 0:
        return R_INSUFFICIENT_FUNDS if cash > acct[row, ACCT_CASH] else 0
    return R_INSUFFICIENT_ALLOWANCES if tonnes > acct[row, _held(mk, HELD_AVAILABLE)] else 0


@njit(cache=True, _nrt=False)
def _freeze(acct, mk, row, side, cash, tonnes):
    """Move `cash` (a buy) or `tonnes` (a sell) from available to frozen; negative moves back."""
    if side == 0:
        acct[row, ACCT_CASH] -= cash
        acct[row, ACCT_FROZEN] += cash
    else:
        acct[row, _held(mk, HELD_AVAILABLE)] -= tonnes
        acct[row, _held(mk, HELD_FROZEN)] += tonnes


@njit(cache=True, _nrt=False)
def _release(acct, mk, row, side, limit, qty):
    """An order of `row` gives up `qty` it will never trade (at most all it holds)."""
    _freeze(acct, mk, row, side, -freeze_for(mk, limit, qty), -qty)


@njit(cache=True, _nrt=False)
def _settle_fill(acct, ids, mk, ev, i, taker_row, taker_limit):
    """Settle the FILL at ev[i]: the taker's limit is `taker_limit`, the maker's is the fill
    price (it rests there)."""
    price = ev[i, E_PRICE]
    qty = ev[i, E_QTY]
    maker_row = find_row(ids, ev[i, E_OWNER2])
    if ev[i, E_SIDE] == 0:
        buyer, seller = taker_row, maker_row
        limit, leaves_after = taker_limit, ev[i, E_LEAVES]
    else:
        buyer, seller = maker_row, taker_row
        limit, leaves_after = price, ev[i, E_LEAVES2]
    value = price * qty
    fee = fee_on(value, mk[MK_FEE_PPM], False)
    held_before = freeze_for(mk, limit, leaves_after + qty)
    held_after = freeze_for(mk, limit, leaves_after)
    acct[buyer, ACCT_FROZEN] -= held_before - held_after
    acct[buyer, ACCT_CASH] += held_before - held_after - value - fee
    bought = HELD_AVAILABLE if mk[MK_RESALE] != 0 else HELD_LOCKED
    acct[buyer, _held(mk, bought)] += qty
    acct[seller, _held(mk, HELD_FROZEN)] -= qty
    acct[seller, ACCT_CASH] += value - fee
    acct[acct.shape[0] - 1, ACCT_CASH] += 2 * fee
    ev[i, E_CODE] = fee  # the caller's trade record names each side's fee


@njit(cache=True, _nrt=False)
def _swap(ev, i, a, b):
    ev[i, a], ev[i, b] = ev[i, b], ev[i, a]


@njit(cache=True, _nrt=False)
def _touch(ev, first_level, n, side, price):
    """Add level (side, price) to the rows from first_level to n unless already there."""
    for i in range(n - 1, first_level - 1, -1):
        if ev[i, E_PRICE] == price and ev[i, E_SIDE] == side:
            return n
    ev[n, E_KIND] = K_LEVEL
    ev[n, E_PRICE] = price
    ev[n, E_SIDE] = side
    return n + 1


@njit(cache=True, _nrt=False)
def _settle_and_publish(lad, meta, ev, acct, ids, mk, oid, taker_row, side, limit, old_price):
    """Mirror the book's rows in the accounts, then append the changed levels' rows.
    `old_price` > 0 is where an amended order stood before (its level changed)."""
    n_book = meta[M_NEV]
    n = n_book
    if old_price > 0:
        n = _touch(ev, n_book, n, side, old_price)
    for i in range(n_book):
        kind = ev[i, E_KIND]
        if kind == K_FILL:
            _settle_fill(acct, ids, mk, ev, i, taker_row, limit)
            n = _touch(ev, n_book, n, 1 - ev[i, E_SIDE], ev[i, E_PRICE])
            if ev[i, E_SIDE] == 1:  # the caller reads fills buy side first
                _swap(ev, i, E_OID, E_OID2)
                _swap(ev, i, E_LEAVES, E_LEAVES2)
                _swap(ev, i, E_OWNER, E_OWNER2)
        elif kind == K_CANCELLED:
            if ev[i, E_OID] == oid:
                _release(acct, mk, taker_row, side, limit, ev[i, E_QTY])
            else:
                row = find_row(ids, ev[i, E_OWNER])
                _release(acct, mk, row, ev[i, E_SIDE], ev[i, E_PRICE], ev[i, E_QTY])
                n = _touch(ev, n_book, n, ev[i, E_SIDE], ev[i, E_PRICE])
        elif kind == K_RESTED:
            n = _touch(ev, n_book, n, ev[i, E_SIDE], ev[i, E_PRICE])
    for i in range(n_book, n):  # the book finds the level, in its window or far store
        ev[i, E_QTY], ev[i, E_LEAVES] = level_on_tick(lad, meta, ev[i, E_SIDE], ev[i, E_PRICE])
    return n


@njit(cache=True, _nrt=False)
def _room(meta, ev, book_events):
    """NEED_EVENTS unless ev holds what the book may write plus one level row per event and
    the amended order's old level."""
    need = 2 * book_events + 1
    if ev.shape[0] < need:
        meta[M_NEV] = 0
        meta[M_NEED] = need
        return NEED_EVENTS
    return 0


@njit(cache=True, _nrt=False)
def _book(
    pool, lad, bm, ht, meta, ev, book_events, kind, oid, member, side, price, qty, otype, tif, stp
):
    """Run one book command once ev has room for it: 0, a NEED_* status, or REJECT_BASE when
    the book refused what the core validated (a bug; nothing changed either way)."""
    status = _room(meta, ev, book_events)
    if status != 0:
        return status
    meta[M_NEV] = 0
    status = apply_command(
        pool, lad, bm, ht, meta, ev, kind, oid, member, side, price, qty, otype, tif, stp, 0
    )
    if status < 0:
        return status
    if meta[M_NEV] > 0 and ev[0, E_KIND] == K_REJECTED:
        return REJECT_BASE
    return 0


@njit(cache=True, _nrt=False)
def _result(meta, ev, n):
    """The entry points' answer: (rows, side, price, qty, orders). RESTED rows (no protocol
    event) are dropped from ev[0:rows]; when all that is left is one level row, it comes in
    the tuple instead (price > 0) and rows is 0, which spares the caller reading the buffer."""
    meta[M_NEV] = 0  # ev now holds this path's rows, not book events
    if n < 0:
        return n, 0, 0, 0, 0
    rows = 0
    for i in range(n):
        if ev[i, E_KIND] != K_RESTED:
            if rows != i:
                for column in range(EVENT_ROWS):
                    ev[rows, column] = ev[i, column]
            rows += 1
    if rows == 1 and ev[0, E_KIND] == K_LEVEL:
        return 0, ev[0, E_SIDE], ev[0, E_PRICE], ev[0, E_QTY], ev[0, E_LEAVES]
    return rows, 0, 0, 0, 0


@njit(cache=True, _nrt=False)
def new_order(
    pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, side, price, qty, otype,
    tif, stp, key,
):  # fmt: skip
    """NewOrder; returns _result's tuple."""
    n, k0, k1, k2, k3 = key_words(key)
    rows = _new_order(
        pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, side, price, qty, otype,
        tif, stp, n, k0, k1, k2, k3,
    )  # fmt: skip
    return _result(meta, ev, rows)


@njit(cache=True, _nrt=False)
def cancel(pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, key):
    """CancelOrder; returns (status, side, price, level qty, level orders, cancelled qty): a
    cancel that succeeds (status 0) always removes one order from one level, so its two
    events come whole in the tuple and the buffer is not read."""
    n, k0, k1, k2, k3 = key_words(key)
    status = _cancel(
        pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, n, k0, k1, k2, k3
    )
    meta[M_NEV] = 0  # ev now holds this path's rows, not book events
    if status < 0:
        return status, 0, 0, 0, 0, 0
    # rows: CANCELLED (the order), then the K_LEVEL row of the level it left
    return 0, ev[1, E_SIDE], ev[1, E_PRICE], ev[1, E_QTY], ev[1, E_LEAVES], ev[0, E_QTY]


@njit(cache=True, _nrt=False)
def amend(pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, price, qty, key):
    """AmendOrder; returns _result's tuple."""
    n, k0, k1, k2, k3 = key_words(key)
    rows = _amend(
        pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, price, qty, n, k0, k1,
        k2, k3,
    )  # fmt: skip
    return _result(meta, ev, rows)


@njit(cache=True, _nrt=False)
def _fresh(ck, cm, member, n, k0, k1, k2, k3):
    """0 when the ClOrdID is fresh and the table has room to record it, else a status."""
    if clid_used(ck, cm, member, n, k0, k1, k2, k3):
        return REJECT_BASE - R_DUPLICATE_CLORDID
    return clid_room(ck, cm)


@njit(cache=True, _nrt=False)
def _new_order(
    pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, side, price, qty, otype,
    tif, stp, n, k0, k1, k2, k3,
):  # fmt: skip
    status = _fresh(ck, cm, member, n, k0, k1, k2, k3)
    if status != 0:
        return status
    rows = _new_order_checked(
        pool, lad, bm, ht, meta, ev, acct, ids, mk, oid, member, side, price, qty, otype, tif, stp
    )
    if rows >= 0:
        clid_insert(ck, cm, member, n, k0, k1, k2, k3)
    return rows


@njit(cache=True, _nrt=False)
def _new_order_checked(
    pool, lad, bm, ht, meta, ev, acct, ids, mk, oid, member, side, price, qty, otype, tif, stp
):
    if not order_fields_valid(side, otype, tif, stp):
        return REJECT_BASE - R_INVALID_FIELD
    market_order = otype == MARKET
    code = _phase_check(mk, not market_order and tif == 0)
    if code == 0:
        code = _qty_check(mk, qty)
    if code == 0 and not market_order:
        code = _price_check(mk, price)
    if code != 0:
        return REJECT_BASE - code
    limit = mk[MK_BAND_HI] if market_order else price
    row = find_row(ids, member)
    need = freeze_for(mk, limit, qty) if side == 0 else 0
    code = _short_of(acct, mk, row, side, need, qty)
    if code != 0:
        return REJECT_BASE - code
    reach = limit if side == 0 or not market_order else mk[MK_BAND_LO]
    status = _book(
        pool, lad, bm, ht, meta, ev, events_needed(meta, side, reach, qty, stp),
        CMD_ADD, oid, member, side, 0 if market_order else price, qty, otype, tif, stp,
    )  # fmt: skip
    if status != 0:
        return status
    _freeze(acct, mk, row, side, need, qty)
    return _settle_and_publish(lad, meta, ev, acct, ids, mk, oid, row, side, limit, 0)


@njit(cache=True, _nrt=False)
def _owned_slot(pool, ht, meta, oid, member):
    """Slot of the member's live order, or REJECT_BASE - code."""
    slot = ht_find(ht, meta, oid) if 0 <= oid < MAX_ORDER_ID else -1
    if slot < 0:
        return REJECT_BASE - R_UNKNOWN_ORDER
    if pool[slot, P_OWNER] != member:
        return REJECT_BASE - R_NOT_OWNER
    return slot


@njit(cache=True, _nrt=False)
def _cancel(pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, n, k0, k1, k2, k3):
    status = _fresh(ck, cm, member, n, k0, k1, k2, k3)
    if status != 0:
        return status
    rows = _cancel_checked(pool, lad, bm, ht, meta, ev, acct, ids, mk, oid, member)
    if rows >= 0:
        clid_insert(ck, cm, member, n, k0, k1, k2, k3)
    return rows


@njit(cache=True, _nrt=False)
def _cancel_checked(pool, lad, bm, ht, meta, ev, acct, ids, mk, oid, member):
    slot = _owned_slot(pool, ht, meta, oid, member)
    if slot < 0:
        return slot
    status = _book(
        pool, lad, bm, ht, meta, ev, MIN_FREE_EVENTS, CMD_CANCEL, oid, member, 0, 0, 0, 0, 0, 0
    )
    if status != 0:
        return status
    return _settle_and_publish(lad, meta, ev, acct, ids, mk, -1, -1, 0, 0, 0)


@njit(cache=True, _nrt=False)
def _amend(
    pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, price, qty, n, k0, k1, k2,
    k3,
):  # fmt: skip
    status = _fresh(ck, cm, member, n, k0, k1, k2, k3)
    if status != 0:
        return status
    rows = _amend_checked(pool, lad, bm, ht, meta, ev, acct, ids, mk, oid, member, price, qty)
    if rows >= 0:
        clid_insert(ck, cm, member, n, k0, k1, k2, k3)
    return rows


@njit(cache=True, _nrt=False)
def _amend_checked(pool, lad, bm, ht, meta, ev, acct, ids, mk, oid, member, price, qty):
    slot = _owned_slot(pool, ht, meta, oid, member)
    if slot < 0:
        return slot
    code = _phase_check(mk, True)
    if code == 0:
        code = _qty_check(mk, qty)
    if code == 0:
        code = _price_check(mk, price)
    if code != 0:
        return REJECT_BASE - code
    flags = pool[slot, P_FLAGS]
    side = flags & 1
    old_price, old_qty = pool[slot, P_PRICE], pool[slot, P_QTY]
    row = find_row(ids, member)
    extra_cash = freeze_for(mk, price, qty) - freeze_for(mk, old_price, old_qty)
    code = _short_of(acct, mk, row, side, extra_cash, qty - old_qty)
    if code != 0:
        return REJECT_BASE - code
    stp = (flags >> 1) & 3
    status = _book(
        pool, lad, bm, ht, meta, ev, events_needed(meta, side, price, qty, stp),
        CMD_AMEND, oid, member, 0, price, qty, 0, 0, 0,
    )  # fmt: skip
    if status != 0:
        return status
    _freeze(acct, mk, row, side, extra_cash, qty - old_qty)
    return _settle_and_publish(lad, meta, ev, acct, ids, mk, oid, row, side, price, old_price)
