"""Book-level events, identical for the compiled book and the reference book.

An event is a flat 11-field record: the columns of the kernel's event buffer (`layout.E_*`), in
`FIELDS` order. Fields a kind does not use are 0. Meanings per kind:

- REJECTED:  oid, code (a BookReject), side.
- RESTED:    oid, price, qty (resting), side, owner.
- FILL:      oid (taker), oid2 (maker), price (the maker's), qty, leaves (taker after),
             leaves2 (maker after), side (taker's), owner (taker), owner2 (maker).
- CANCELLED: oid, price (0 for a market order), qty (removed), code (a CancelReason), side, owner.
- AMENDED:   oid, price (new), qty (new remaining), code (1 kept priority, 0 lost it), side, owner.

Two representations of the same record, both offered by both books:
- `BookEvent`, one object per event (`events()`): a frozen msgspec struct that the garbage
  collector does not track (it holds only ints, so it can be in no cycle). Building one costs
  about a tenth of a NamedTuple's `_make`, and a loop that reads every event creates no work
  for the collector.
- `EVENT_DTYPE`, rows of a numpy structured array (`event_rows()`): the buffer itself viewed
  with named int64 fields, no object per event; for code that reads the rows by column.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec
import numpy as np


class EventKind(IntEnum):
    REJECTED = 1
    RESTED = 2
    FILL = 3
    CANCELLED = 4
    AMENDED = 5


class BookReject(IntEnum):
    """Why the book refused a command. The book knows nothing of the wire: each value equals
    the `engine.protocol.RejectCode` of the same name (a test holds them together), so the core
    passes a book reject on unchanged."""

    INVALID_FIELD = 101
    INVALID_ORDER_ID = 102
    UNSUPPORTED_IN_PHASE = 212
    PRICE_OFF_TICK = 300
    PRICE_OUTSIDE_BAND = 301
    PRICE_OUT_OF_RANGE = 302
    QTY_INVALID = 310
    DUPLICATE_ORDER_ID = 401
    UNKNOWN_ORDER = 402
    NOT_OWNER = 403
    PICK_WRONG_SIDE = 410
    PICK_NOT_IN_TOP_LEVELS = 411
    PICK_QTY_EXCEEDS_ORDER = 412
    SELF_TRADE = 600


class BookEvent(msgspec.Struct, frozen=True, gc=False):
    kind: int
    oid: int
    oid2: int = 0
    price: int = 0
    qty: int = 0
    leaves: int = 0
    leaves2: int = 0
    code: int = 0
    side: int = 0
    owner: int = 0
    owner2: int = 0


FIELDS: tuple[str, ...] = BookEvent.__struct_fields__
EVENT_DTYPE = np.dtype([(name, np.int64) for name in FIELDS])
