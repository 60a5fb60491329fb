"""Domain enums and unit conversions shared by every layer.

Invariants: every enum is an IntEnum whose values are stable wire and journal values (never
renumber one); `Side` values are also array indices in the book kernel (BUY=0, SELL=1).
Prices are int64 ticks of 0.01 CNY (fen), quantities int64 tonnes, cash int64 fen; decimal
strings appear only at the edges, through `parse_price` / `format_price`.
"""

from __future__ import annotations

import operator
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import IntEnum

FEN_PER_CNY = 100


class Side(IntEnum):
    BUY = 0
    SELL = 1


class OrderType(IntEnum):
    LIMIT = 1
    MARKET = 2  # an IOC (or FOK) limited by the price band edge


class TimeInForce(IntEnum):
    DAY = 0  # rests until filled, cancelled or expired at the end of the day
    IOC = 1  # fills what it can now, the remainder is cancelled
    FOK = 2  # fills entirely now or not at all (no partial trace)


class StpMode(IntEnum):
    """Self-trade prevention: what happens when an order would trade with its own member."""

    CANCEL_INCOMING = 0  # the default
    CANCEL_RESTING = 1
    CANCEL_BOTH = 2


class CancelReason(IntEnum):
    USER = 1  # the member asked
    UNFILLED_REMAINDER = 2  # IOC or market order: what did not fill at once
    FOK_UNFILLED = 3  # FOK that could not fill entirely
    STP_INCOMING = 4  # self-trade prevention removed the incoming order
    STP_RESTING = 5  # self-trade prevention removed the resting order
    EXPIRED = 6  # day order at the end of the day
    OPERATOR = 7  # cancelled by the market operator
    MASS_CANCEL = 8  # a MassCancel of the member (or its gateway's cancel-on-disconnect)


class Phase(IntEnum):
    CLOSED = 0
    CALL = 1
    CONTINUOUS = 2
    HALTED = 3
    CLOSING_CALL = 4


def parse_price(text: str) -> int:
    """'58.31' (CNY per tonne) -> 5831 fen. Raises ValueError for anything not a whole fen."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a price: {text!r}") from exc
    fen = value * FEN_PER_CNY
    if fen != fen.to_integral_value():
        raise ValueError(f"price {text!r} is not a whole number of fen (0.01 CNY)")
    return int(fen)


def format_price(fen: int, grouped: bool = False) -> str:
    """5831 -> '58.31'; with grouped, 123456789 -> '1,234,567.89'. Exact (no float)."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), FEN_PER_CNY)
    return f"{sign}{whole:,}.{part:02d}" if grouped else f"{sign}{whole}.{part:02d}"


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TICKS = 1 << 22  # the highest price a book holds, in ticks (price / tick)
MAX_QTY = 1 << 40  # the largest quantity a book holds, tonnes
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def is_trading_date(text: str) -> bool:
    """True for a real calendar date written YYYY-MM-DD (the form of every trading day)."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return _ISO_DATE.fullmatch(text) is not None


def as_ints(names: str, values: tuple) -> tuple[int, ...]:
    """Plain int64 values from integer-like values (int, IntEnum, numpy integers), in order.

    `names` are the space-separated field names for the error. Raises TypeError for anything
    else, bools included: a price or quantity given as a float is refused, never truncated.
    Raises OverflowError for an integer outside int64, which no book field can hold.
    """
    for value in values:
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            break
    else:
        return values
    out = []
    for name, value in zip(names.split(), values, strict=True):
        if isinstance(value, bool) or not hasattr(type(value), "__index__"):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        value = operator.index(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(f"{name} must fit in 64 bits (int64), got {value}")
        out.append(value)
    return tuple(out)
