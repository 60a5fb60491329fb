"""Event rows after the compiled run: the day's digest of its trades, and reading rows back.

- `trade_bytes` writes each trade row of a run as msgpack, byte for byte what msgspec writes
  for the `Trade` event (`engine.protocol.encode_trades`), so the batch folds its trades
  into the market's digest (`Market.add_trades`) without a Trade object (the writers of
  engine.core.packing).
- `tally` counts a run's rows by event stream (private per member, public, clearing) as
  EventWriter numbers them, so the batch moves the stream positions without numbering rows.
- `reject_wording` words a ROW_REJECTED from its code and details with the per-command
  path's own words (engine.core.validation); `decode` gives back the protocol events of a
  batch's bytes (tests and consumers, not the hot path).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import msgspec
import numpy as np
from numba import njit

from engine.codec import (
    A_MEMBER,
    M_MEMBER,
    ORDER_FIELDS,
    R_MEMBER,
    ROW_ACCEPTED,
    ROW_AMENDED,
    ROW_CANCELLED,
    ROW_DEPTH,
    ROW_REJECTED,
    ROW_TRADE,
    T_BUY_OID,
    T_MEMBERS,
    T_PRICE,
    T_QTY,
    T_SELL_OID,
    T_TRADE_ID,
    T_TS,
    X_MEMBER,
    decode_events,
)
from engine.core.events import print_of
from engine.core.packing import put_bytes, put_int
from engine.core.pipeline import fee_on, find_row
from engine.core.validation import (
    band_detail,
    market_detail,
    order_detail,
    reject_text,
    shortfall_detail,
)
from engine.instruments import Instrument
from engine.protocol import Event, RejectCode, Trade

_SHORTFALL = frozenset({RejectCode.INSUFFICIENT_FUNDS, RejectCode.INSUFFICIENT_ALLOWANCES})
_ORDER_LOOKUP = frozenset({RejectCode.UNKNOWN_ORDER, RejectCode.NOT_OWNER})


# -- trades into the day's figures ----------------------------------------------------------------


@njit(cache=True, _nrt=False)
def put_trade(buf, p, w, head, date, code, venue, fee, cseq):
    """The Trade of the trade row w at buf[p], as msgspec encodes it (`head`: array header
    and tag; `date`, `code`, `venue`: the strs' encodings; each side's `fee`; the clearing
    stream number `cseq`); the end."""
    p = put_bytes(buf, p, head)
    p = put_int(buf, p, w[1])
    p = put_int(buf, p, w[T_TRADE_ID])
    p = put_int(buf, p, w[T_TS])
    p = put_bytes(buf, p, date)
    p = put_bytes(buf, p, code)
    p = put_int(buf, p, w[T_PRICE])
    p = put_int(buf, p, w[T_QTY])
    p = put_int(buf, p, (w[T_MEMBERS] << 32) >> 32)  # the buyer (the low half, signed)
    p = put_int(buf, p, w[T_MEMBERS] >> 32)
    p = put_int(buf, p, w[T_BUY_OID])
    p = put_int(buf, p, w[T_SELL_OID])
    p = put_int(buf, p, ((w[0] >> 8) & 0xFF ^ 0x80) - 0x80)
    p = put_bytes(buf, p, venue)
    p = put_int(buf, p, fee)
    p = put_int(buf, p, fee)
    return put_int(buf, p, cseq)


MAX_TRADE_BYTES = 20 * 9 + 64  # seventeen ints at most nine bytes each, and the three strs


@njit(cache=True, _nrt=False)
def trade_bytes(out, lo, hi, instrument, head, date, code, venue, buf, figures, fee_ppm, cseq):
    """Encode the trades of `instrument` among out[lo:hi] into buf as msgspec encodes each
    Trade (`head`: array header and tag; `date`, `code`, `venue`: the strs' encodings; each
    side's fee at `fee_ppm`; the clearing stream number: `cseq` plus the trade's place among
    every instrument's trades in out[lo:hi]) and add them to figures (count, volume, listed
    value, open, high, low, as Market.fold); returns the bytes written, or -(bytes needed)
    when buf is too small."""
    trades = 0
    for r in range(lo, hi):
        if (out[r, 0] & 0xFF) == ROW_TRADE and (out[r, 0] >> 32) == instrument:
            trades += 1
    if trades * MAX_TRADE_BYTES > buf.shape[0]:
        return -trades * MAX_TRADE_BYTES
    p = 0
    for r in range(lo, hi):
        if (out[r, 0] & 0xFF) != ROW_TRADE:
            continue
        cseq += 1
        if (out[r, 0] >> 32) != instrument:
            continue
        price, qty = out[r, T_PRICE], out[r, T_QTY]
        fee = fee_on(price * qty, fee_ppm, False)
        p = put_trade(buf, p, out[r], head, date, code, venue, fee, cseq)
        figures[0] += 1
        figures[1] += qty
        figures[2] += qty * price
        if figures[3] == 0:
            figures[3] = figures[4] = figures[5] = price
        elif price > figures[4]:
            figures[4] = price
        elif price < figures[5]:
            figures[5] = price
    return p


# -- stream positions ------------------------------------------------------------------------------

PRIVATE_MEMBER_WORD = A_MEMBER  # the member of every private row the compiled run writes
assert A_MEMBER == R_MEMBER == X_MEMBER == M_MEMBER


@njit(cache=True, _nrt=False)
def _count_member(ids, counts, touched, n_touched, strangers, n_strangers, member):
    """Count one private event of `member` at its accounts row (a row counted for the first
    time goes to touched); a member with no row (a refused unknown member) goes to strangers.
    Returns the touched rows' and the strangers' counts."""
    row = find_row(ids, member)
    if row >= 0:
        if counts[row] == 0:
            touched[n_touched, 0] = row
            n_touched += 1
        counts[row] += 1
        return n_touched, n_strangers
    strangers[n_strangers] = member
    return n_touched, n_strangers + 1


@njit(cache=True, _nrt=False)
def tally(out, lo, hi, ids, counts, touched, strangers, trades):
    """Count the events of the rows out[lo:hi] (written by the compiled run) by stream, as
    EventWriter numbers them: private events per member into touched[:k] as (member, count)
    in the order the members first appear (members with no accounts row, one entry per event,
    into strangers[:n]), each trade's clearing record, the public prints and depth updates;
    and each instrument's trades into trades (by instrument index). `counts` (one per accounts
    row) is scratch: all zeros before and after. Returns (public, clearing, k, n)."""
    public = clearing = k = n = 0
    for r in range(lo, hi):
        kind = out[r, 0] & 0xFF
        if kind == ROW_TRADE:
            public += 1
            clearing += 1
            trades[out[r, 0] >> 32] += 1
            members = out[r, T_MEMBERS]
            buyer, seller = (members << 32) >> 32, members >> 32
            k, n = _count_member(ids, counts, touched, k, strangers, n, buyer)
            k, n = _count_member(ids, counts, touched, k, strangers, n, seller)
        elif kind == ROW_DEPTH:
            public += 1
        elif kind in (ROW_ACCEPTED, ROW_REJECTED, ROW_CANCELLED, ROW_AMENDED):
            member = out[r, PRIVATE_MEMBER_WORD]
            k, n = _count_member(ids, counts, touched, k, strangers, n, member)
    for i in range(k):
        row = touched[i, 0]
        touched[i, 0], touched[i, 1] = ids[row], counts[row]
        counts[row] = 0
    return public, clearing, k, n


# -- reject texts ----------------------------------------------------------------------------------


def reject_wording(instruments: Sequence[Instrument]):
    """The wording of ROW_REJECTED rows (engine.codec.decode_events' `word`) for a market of
    these instruments: the same text the per-command path gives (engine.core.validation)."""

    def word(code: RejectCode, index: int, a: int, b: int, cl_ord_id: str, member: int) -> str:
        if code == RejectCode.UNKNOWN_MEMBER:
            detail = str(member)
        elif code == RejectCode.UNKNOWN_INSTRUMENT:
            detail = f"#{a}"
        elif code == RejectCode.DUPLICATE_CLORDID:
            detail = cl_ord_id
        elif code == RejectCode.INVALID_FIELD:
            detail = f"{ORDER_FIELDS[a]} {b!r}"
        elif code in _SHORTFALL:
            detail = shortfall_detail(code, a, bool(b))
        elif code in _ORDER_LOOKUP:
            detail = order_detail(code, a)
        elif code == RejectCode.PRICE_OUTSIDE_BAND:
            detail = band_detail(a, b)
        else:
            instrument = instruments[index]
            figures = SimpleNamespace(instrument=instrument, code=instrument.code, band=None)
            detail = market_detail(code, figures)
        return reject_text(code, detail)

    return word


def decode(
    data: bytes, instruments: Sequence[Instrument], positions: dict[str, object]
) -> list[Event]:
    """The protocol events of a batch's bytes, as the per-command path gives them: each
    trade row is the clearing Trade (with each side's fee), the public TradePrint and the two
    Filled, and every event carries the next number of its audience's stream, counted from
    `positions` (Exchange.stream_positions() before the batch)."""
    codes = [i.code for i in instruments]
    return decode_events(
        data, codes, reject_wording(instruments), StreamNumbers(instruments, positions)
    )


class StreamNumbers:
    """engine.codec.Streams for a batch: numbers counted on from the exchange's positions,
    the instruments' fees, the print of engine.core.events."""

    def __init__(self, instruments: Sequence[Instrument], positions: dict[str, object]) -> None:
        self._public = int(positions["public"])
        self._clearing = int(positions["clearing"])
        self._private = dict(positions["private"])
        self._fees = {i.code: i.fee for i in instruments}

    def private(self, member: int) -> int:
        n = self._private[member] = self._private.get(member, 0) + 1
        return n

    def public(self) -> int:
        self._public += 1
        return self._public

    def clearing(self) -> int:
        self._clearing += 1
        return self._clearing

    def fee(self, code: str, price: int, qty: int) -> int:
        return self._fees[code](price * qty)

    def print_of(self, trade: Trade) -> Event:
        return print_of(trade, self.public())


TRADE_PROBE = Trade(0, 0, 0, "", "", 0, 0, 0, 0, 0, 0, 0, "")


def trade_head() -> np.ndarray:
    """What msgspec writes before a Trade's first field: the array header and the tag."""
    encoded = msgspec.msgpack.encode(TRADE_PROBE)
    header = 1 if encoded[0] & 0xF0 == 0x90 else 3  # fixarray, or array16 (16+ fields)
    return np.frombuffer(encoded[: header + 1], dtype=np.uint8)  # the tag: one fixint


def packed(text: str) -> np.ndarray:
    return np.frombuffer(msgspec.msgpack.encode(text), dtype=np.uint8)
