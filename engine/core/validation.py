"""Validation: the checks every command passes before it changes anything, and their words.

Invariants:
- A check either returns (and has changed nothing) or raises `Reject(code, detail)`; the
  command's handler then changes nothing either, and `Exchange.apply` answers with one
  `Rejected` event.
- A reject's text is its code's standard text, then the detail (`reject_text`). The details
  that follow from a market's own figures (phase, unit, size limits, tick, band) are worded
  once here (`market_detail`), for the checks below and for the compiled order path, which
  gets only a code back from compiled code: so every reject reads the same whichever path
  found it.
- The order of the checks is the order the compiled pipeline (engine.core.pipeline) runs
  them in: member, instrument, fresh ClOrdID, field values, phase, quantity, price, funds.
"""

from __future__ import annotations

import functools
import typing
from enum import IntEnum

import msgspec

from engine.core.market import Market
from engine.core.state import CoreState
from engine.protocol import REJECT_TEXT, NewOrder, RejectCode
from engine.types import INT64_MAX, INT64_MIN, OrderType, Phase, Side, StpMode, TimeInForce


class Reject(Exception):
    """Raised by validation; `Exchange.apply` turns it into a Rejected event."""

    def __init__(self, code: RejectCode, detail: str = "") -> None:
        # BaseException.__new__ has already kept (code, detail) as self.args
        self.code = code
        self.text = reject_text(code, detail)


def reject_text(code: RejectCode, detail: str = "") -> str:
    """A reject's readable reason: the code's text, then what was wrong."""
    text = REJECT_TEXT[code]
    return f"{text}: {detail}" if detail else text


_MARKET_DETAILS = {
    RejectCode.QTY_NOT_WHOLE_UNIT: lambda m: f"unit {m.instrument.unit} t",
    RejectCode.QTY_ABOVE_MAX: lambda m: f"max {m.instrument.max_qty} t",
    RejectCode.QTY_BELOW_MIN: lambda m: f"min {m.instrument.min_qty} t",
    RejectCode.PRICE_OFF_TICK: lambda m: f"tick {m.instrument.tick} fen",
    RejectCode.PRICE_OUTSIDE_BAND: lambda m: band_detail(*m.band),
    RejectCode.MARKET_CLOSED: lambda m: m.code,
    RejectCode.MARKET_HALTED: lambda m: m.code,
    RejectCode.UNSUPPORTED_IN_PHASE: lambda m: f"{m.code} is in a call",
}


def market_detail(code: RejectCode, market: Market) -> str:
    """The detail of a reject that follows from the market's own figures ("" for others)."""
    detail = _MARKET_DETAILS.get(code)
    return "" if detail is None else detail(market)


def band_detail(low: int, high: int) -> str:
    return f"band {low}-{high} fen"


def shortfall_detail(code: RejectCode, amount: int, more: bool) -> str:
    """INSUFFICIENT_FUNDS (fen) or INSUFFICIENT_ALLOWANCES (t): what the order needs (an
    amend: needs more)."""
    unit = "fen" if code == RejectCode.INSUFFICIENT_FUNDS else "t"
    return f"needs {amount} {unit}{' more' if more else ''}"


def order_detail(code: RejectCode, order_id: int) -> str:
    """UNKNOWN_ORDER's or NOT_OWNER's detail, worded once for every path ("the order belongs
    to another member: 3" was read as a member's id: a newcomer's walk through the guides)."""
    return f"order {order_id}" if code == RejectCode.NOT_OWNER else str(order_id)


def order_reject(code: RejectCode, order_id: int) -> Reject:
    """UNKNOWN_ORDER or NOT_OWNER for `order_id`."""
    return Reject(code, order_detail(code, order_id))


# -- kinds -----------------------------------------------------------------------------------------


@functools.cache
def _field_kinds(kind: type) -> tuple[tuple[str, type], ...]:
    """(field, int | str | bool) for each field of a command type, Annotated unwrapped."""
    kinds = []
    for field in msgspec.structs.fields(kind):
        base = field.type
        if typing.get_origin(base) is typing.Annotated:
            base = typing.get_args(base)[0]
        is_int = isinstance(base, type) and issubclass(base, int) and base is not bool
        kinds.append((field.name, int if is_int else base))
    return tuple(kinds)


def check_types(command) -> None:
    """Refuse, before any change, a command whose fields are not of their declared kinds (an
    int within int64, an IntEnum member, a str or a bool). The wire decoder guarantees this;
    commands built in process might not, and a float must never be truncated into a price or
    a side, nor an int wrap around in the compiled book's int64 arrays."""
    for name, kind in _field_kinds(type(command)):
        value = getattr(command, name)
        if kind is int:
            ok = type(value) is int or isinstance(value, IntEnum)
            if ok and not INT64_MIN <= value <= INT64_MAX:
                raise Reject(RejectCode.INVALID_FIELD, f"{name} must fit in int64: {value}")
        else:
            ok = type(value) is kind
        if not ok:
            raise Reject(RejectCode.INVALID_FIELD, f"{name} must be {kind.__name__}: {value!r}")


@functools.cache
def _int_fields(kind: type) -> tuple[str, ...]:
    return tuple(name for name, field_kind in _field_kinds(kind) if field_kind is int)


def check_int64(command) -> None:
    """`check_types` for a command whose fields are known to be of their kinds: an int
    beyond int64 is refused, naming the field (cheaper: only the ints are looked at)."""
    for name in _int_fields(type(command)):
        value = getattr(command, name)
        if not INT64_MIN <= value <= INT64_MAX:
            raise Reject(RejectCode.INVALID_FIELD, f"{name} must fit in int64: {value}")


def typed(handler):
    """Decorator for the core's command handlers: `check_types` before anything else."""

    @functools.wraps(handler)
    def checked(self, command):
        check_types(command)
        return handler(self, command)

    return checked


# -- checks ----------------------------------------------------------------------------------------

ORDER_ENUMS = tuple(
    (name, frozenset(int(member) for member in enum))
    for name, enum in (
        ("side", Side),
        ("order_type", OrderType),
        ("tif", TimeInForce),
        ("stp", StpMode),
    )
)


def member(state: CoreState, member_id: int) -> None:
    if member_id not in state.accounts:
        raise Reject(RejectCode.UNKNOWN_MEMBER, str(member_id))


def market(state: CoreState, code: str) -> Market:
    found = state.markets.get(code)
    if found is None:
        raise Reject(RejectCode.UNKNOWN_INSTRUMENT, code)
    return found


def fresh_cl_ord_id(state: CoreState, member_id: int, cl_ord_id: str) -> None:
    if state.cl_ord_ids.used(member_id, cl_ord_id):
        raise Reject(RejectCode.DUPLICATE_CLORDID, cl_ord_id)


def order_fields(cmd: NewOrder) -> None:
    """Enum fields hold values of their enums (the wire decoder checks this; commands built in
    process may not)."""
    for name, allowed in ORDER_ENUMS:
        value = getattr(cmd, name)
        if int(value) not in allowed:  # an int: check_types ran first
            raise Reject(RejectCode.INVALID_FIELD, f"{name} {value!r}")


def _refuse(code: RejectCode, market_: Market) -> typing.NoReturn:
    raise Reject(code, market_detail(code, market_))


def order_phase(market_: Market, call_ok: bool = True) -> None:
    if market_.phase == Phase.CLOSED:
        _refuse(RejectCode.MARKET_CLOSED, market_)
    if market_.phase == Phase.HALTED:
        _refuse(RejectCode.MARKET_HALTED, market_)
    if market_.in_call and not call_ok:
        _refuse(RejectCode.UNSUPPORTED_IN_PHASE, market_)


def whole_units(market_: Market, qty: int) -> None:
    if qty <= 0:
        raise Reject(RejectCode.QTY_INVALID)
    if qty % market_.instrument.unit:
        _refuse(RejectCode.QTY_NOT_WHOLE_UNIT, market_)


def quantity(market_: Market, qty: int) -> None:
    """A listed order's quantity: whole units within the order size limits."""
    whole_units(market_, qty)
    if qty > market_.instrument.max_qty:
        _refuse(RejectCode.QTY_ABOVE_MAX, market_)
    if qty < market_.instrument.min_qty:
        _refuse(RejectCode.QTY_BELOW_MIN, market_)


def price(market_: Market, value: int, band: tuple[int, int] | None = None) -> None:
    """On the tick and within `band` (today's band when None)."""
    if value % market_.instrument.tick:
        _refuse(RejectCode.PRICE_OFF_TICK, market_)
    low, high = market_.band if band is None else band
    if not low <= value <= high:
        raise Reject(RejectCode.PRICE_OUTSIDE_BAND, band_detail(low, high))
