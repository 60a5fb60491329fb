"""Book-level events, identical for the compiled book and the reference book.

A `BookEvent` is a flat 11-field record (the columns of the kernel's event buffer). Fields a
kind does not use are 0. Meanings per kind:

- REJECTED:  oid, code (a RejectCode), side.
- RESTED:    oid, price, qty (resting), side, owner.
- FILL:      oid (taker), oid2 (maker), price (the maker's), qty, leaves (taker after),
             leaves2 (maker after), side (taker's), owner (taker), owner2 (maker).
- CANCELLED: oid, price (0 for a market order), qty (removed), code (a CancelReason), side, owner.
- AMENDED:   oid, price (new), qty (new remaining), code (1 kept priority, 0 lost it), side, owner.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class EventKind(IntEnum):
    REJECTED = 1
    RESTED = 2
    FILL = 3
    CANCELLED = 4
    AMENDED = 5


class BookEvent(NamedTuple):
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
