"""Writing event rows: the kinds and codes as compiled-code integers, and the writer.

Data layout: `ev[i, E_*]` int64, one row per event in the order they happened, `meta[M_NEV]`
rows written; the columns are `engine.book.events.FIELDS` (the meaning of each field per kind
is documented there). `meta[M_EV_MODE]` says what is recorded: every event (EV_ALL), fills
only (EV_FILLS) or nothing (EV_NONE, counters only).

Invariants: `emit` never writes past the buffer: every command checks first that the buffer
has room for what it may write (MIN_FREE_EVENTS for any command, more for one that may trade:
`matching.events_needed`) and returns NEED_EVENTS otherwise, before changing anything. A
reject writes one REJECTED row and counts in `meta[M_REJECTS]`, nothing else.
"""

from __future__ import annotations

from numba import njit

from engine.book.events import BookReject, EventKind
from engine.book.layout import (
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
    M_EV_MODE,
    M_NEV,
    M_REJECTS,
)
from engine.types import CancelReason

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

MIN_FREE_EVENTS = 4  # every command may write this many events without a capacity check


@njit(cache=True, _nrt=False)
def emit(ev, meta, kind, oid, oid2, price, qty, leaves, leaves2, code, side, owner, owner2):
    """Append one event row, if the recording mode keeps this kind."""
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
def reject(ev, meta, oid, code, side):
    """Record a refused command (`code` a BookReject); returns 0, the status of a command that
    completed."""
    meta[M_REJECTS] += 1
    emit(ev, meta, K_REJECTED, oid, 0, 0, 0, 0, 0, code, side, 0, 0)
    return 0
