"""What the core knows about a live order, and the exception its validation raises.

Invariants: `frozen` is the cash a buy still holds and always equals
`risk.freeze_for(limit, leaves)`; a sell holds `leaves` allowances. The core registers a
LiveOrder only for an order off the book (a one-way auction bid or offer) and exactly while it
can still trade; for an order in a book it builds one on demand from the book's row (price
as limit, remaining qty as leaves), because the book is the one record of a resting order.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.protocol import RejectCode


class Reject(Exception):
    """Raised by validation; apply() turns it into a Rejected event."""

    def __init__(self, code: RejectCode, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.text = code.text + (f": {detail}" if detail else "")


def order_reject(code: RejectCode, order_id: int) -> Reject:
    """UNKNOWN_ORDER or NOT_OWNER for `order_id`, worded once for every path."""
    return Reject(code, str(order_id))


@dataclass(slots=True)
class LiveOrder:
    order_id: int
    member: int
    cl_ord_id: str
    code: str
    side: int
    limit: int  # price the buy freeze is computed at (band edge for a market order)
    leaves: int
    frozen: int = 0  # cash still frozen for a buy (sells freeze `leaves` allowances)
    venue: str = "book"  # or "one_way_bid", "one_way_offer", "block": not in the book
