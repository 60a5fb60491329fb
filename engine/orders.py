"""What the core knows about a live order, and the exception its validation raises.

Invariants: `frozen` is the cash a buy still holds and always equals
`risk.freeze_for(limit, leaves)`; a sell holds `leaves` allowances. The core registers a
LiveOrder only for an order off the book (a one-way auction bid or offer) and exactly while it
can still trade; for an order in a book it builds one on demand from the book's row (price
as limit, remaining qty as leaves), because the book is the one record of a resting order.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass
from enum import IntEnum

import msgspec

from engine.protocol import RejectCode, Rejected
from engine.types import INT64_MAX, INT64_MIN


class Reject(Exception):
    """Raised by validation; apply() turns it into a Rejected event."""

    def __init__(self, code: RejectCode, detail: str = "") -> None:
        # BaseException.__new__ has already kept (code, detail) as self.args
        self.code = code
        self.text = reject_text(code, detail)


def rejected(seq: int, command, code: RejectCode, text: str) -> Rejected:
    """The Rejected event answering `command`. Its ClOrdID and member are echoed only when
    they are of their kinds (a str; an int within 64 bits), so the event always goes over the
    wire and back: a command built in process may hold anything there."""
    cl_ord_id = getattr(command, "cl_ord_id", "")
    member = getattr(command, "member", -1)
    if type(cl_ord_id) is not str:
        cl_ord_id = ""
    if type(member) is not int or not INT64_MIN <= member <= INT64_MAX:
        member = -1
    return Rejected(seq, cl_ord_id, member, code, text)


def reject_text(code: RejectCode, detail: str = "") -> str:
    """A reject's readable reason: the code's text, then what was wrong."""
    return f"{code.text}: {detail}" if detail else code.text


@functools.cache
def _field_kinds(kind: type) -> tuple[tuple[str, type], ...]:
    """(field, int | str | bool) for each field of a command type, Annotated unwrapped."""
    kinds = []
    for field in msgspec.structs.fields(kind):
        base = field.type
        if typing.get_origin(base) is typing.Annotated:
            base = typing.get_args(base)[0]
        kinds.append(
            (
                field.name,
                int
                if isinstance(base, type) and issubclass(base, int) and base is not bool
                else base,
            )
        )
    return tuple(kinds)


def check_types(command) -> None:
    """Refuse, before any change, a command whose fields are not of their declared kinds (an
    int, an IntEnum member, a str or a bool). The wire decoder guarantees this; commands built
    in process might not, and a float must never be truncated into a price or a side."""
    for name, kind in _field_kinds(type(command)):
        value = getattr(command, name)
        if kind is int:
            ok = type(value) is int or isinstance(value, IntEnum)
        else:
            ok = type(value) is kind
        if not ok:
            raise Reject(RejectCode.INVALID_FIELD, f"{name} must be {kind.__name__}: {value!r}")


def typed(handler):
    """Decorator for the core's command handlers: `check_types` before anything else."""

    @functools.wraps(handler)
    def checked(self, command):
        check_types(command)
        return handler(self, command)

    return checked


def order_reject(code: RejectCode, order_id: int) -> Reject:
    """UNKNOWN_ORDER or NOT_OWNER for `order_id`, worded once for every path."""
    return Reject(code, order_reject_detail(order_id))


def order_reject_detail(order_id: int) -> str:
    return str(order_id)


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
