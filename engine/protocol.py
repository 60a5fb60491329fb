"""Wire messages: commands (imperative) and events (past tense) as msgspec Structs.

Invariants:
- Every message is a frozen, array_like Struct with an integer tag, so a frame is a compact
  msgpack array whose first element names the type; tags are stable journal values.
- Numbers are integers in the units of `engine.types` (fen, tonnes, nanoseconds). msgspec's
  `Meta` constraints are the first validation gate (types and ranges); the core validates the
  rest and answers with a `Rejected` event carrying a `RejectCode`.
- `RejectCode` values are grouped by range: 1xx message, 2xx instrument/member/session,
  3xx price and quantity, 4xx order state, 5xx pre-trade risk, 6xx self-trade prevention.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Annotated, ClassVar

import msgspec

from engine.digest import digest_of
from engine.types import CancelReason, OrderType, Phase, Side, StpMode, TimeInForce

OrderId = Annotated[int, msgspec.Meta(ge=0, lt=2**62)]
MemberId = Annotated[int, msgspec.Meta(ge=0, lt=2**31)]
Price = Annotated[int, msgspec.Meta(ge=0, lt=2**62)]
Quantity = Annotated[int, msgspec.Meta(ge=0, lt=2**62)]
ClOrdId = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
InstrumentCode = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class RejectCode(IntEnum):
    MALFORMED = 100
    INVALID_FIELD = 101
    INVALID_ORDER_ID = 102

    UNKNOWN_INSTRUMENT = 200
    UNKNOWN_MEMBER = 201
    UNAUTHORISED = 202
    MARKET_CLOSED = 210
    MARKET_HALTED = 211
    UNSUPPORTED_IN_PHASE = 212

    PRICE_OFF_TICK = 300
    PRICE_OUTSIDE_BAND = 301
    PRICE_OUT_OF_RANGE = 302
    QTY_INVALID = 310
    QTY_NOT_WHOLE_UNIT = 311
    QTY_ABOVE_MAX = 312
    QTY_BELOW_MIN = 313

    DUPLICATE_CLORDID = 400
    DUPLICATE_ORDER_ID = 401
    UNKNOWN_ORDER = 402
    NOT_OWNER = 403
    PICK_WRONG_SIDE = 410
    PICK_NOT_IN_TOP_LEVELS = 411
    PICK_QTY_EXCEEDS_ORDER = 412

    INSUFFICIENT_FUNDS = 500
    INSUFFICIENT_ALLOWANCES = 501

    SELF_TRADE = 600

    @property
    def text(self) -> str:
        return REJECT_TEXT[self]


REJECT_TEXT: dict[RejectCode, str] = {
    RejectCode.MALFORMED: "the message could not be decoded",
    RejectCode.INVALID_FIELD: "a field holds a value outside its allowed set or range",
    RejectCode.INVALID_ORDER_ID: "the order id is negative or too large",
    RejectCode.UNKNOWN_INSTRUMENT: "no such instrument is listed",
    RejectCode.UNKNOWN_MEMBER: "the member is not known to this market",
    RejectCode.UNAUTHORISED: "the sender may not act for this member",
    RejectCode.MARKET_CLOSED: "the market is closed",
    RejectCode.MARKET_HALTED: "the market is halted: only cancels are accepted",
    RejectCode.UNSUPPORTED_IN_PHASE: "not accepted in the current phase",
    RejectCode.PRICE_OFF_TICK: "the price is not a multiple of the tick size",
    RejectCode.PRICE_OUTSIDE_BAND: "the price is outside today's price band",
    RejectCode.PRICE_OUT_OF_RANGE: "the price is zero, negative or beyond the book's range",
    RejectCode.QTY_INVALID: "the quantity is zero, negative or too large",
    RejectCode.QTY_NOT_WHOLE_UNIT: "the quantity is not a whole number of trading units",
    RejectCode.QTY_ABOVE_MAX: "the quantity exceeds the single-order limit (use block trading)",
    RejectCode.QTY_BELOW_MIN: "the quantity is below the minimum order size",
    RejectCode.DUPLICATE_CLORDID: "the ClOrdID was already used by this member today",
    RejectCode.DUPLICATE_ORDER_ID: "an order with this id is already live",
    RejectCode.UNKNOWN_ORDER: "no live order with this id",
    RejectCode.NOT_OWNER: "the order belongs to another member",
    RejectCode.PICK_WRONG_SIDE: "the picked order is on the same side as the taker",
    RejectCode.PICK_NOT_IN_TOP_LEVELS: "the picked order is not within the best five levels",
    RejectCode.PICK_QTY_EXCEEDS_ORDER: "the pick quantity exceeds the picked order's remaining",
    RejectCode.INSUFFICIENT_FUNDS: "not enough available cash for price x quantity plus fees",
    RejectCode.INSUFFICIENT_ALLOWANCES: "not enough available allowances to sell",
    RejectCode.SELF_TRADE: "the order would trade with an order of the same member",
}


class Audience(IntFlag):
    """Who an event is for; each audience's stream numbers its events gap-free from 1
    (`stream_seq`): PRIVATE per member (the member's gateways: acknowledgements, rejects,
    executions), PUBLIC (market data: no member ids) and CLEARING (trade records with both
    members and fees, end-of-day control totals)."""

    PRIVATE = 1
    PUBLIC = 2
    CLEARING = 4


class _Message(msgspec.Struct, frozen=True, array_like=True, tag_field="t", gc=False):
    pass


# -- commands ---------------------------------------------------------------------------------


class NewOrder(_Message, tag=1):
    cl_ord_id: ClOrdId
    member: MemberId
    instrument: InstrumentCode
    side: Side
    price: Price
    qty: Quantity
    order_type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    stp: StpMode = StpMode.CANCEL_INCOMING


class CancelOrder(_Message, tag=2):
    cl_ord_id: ClOrdId
    member: MemberId
    instrument: InstrumentCode
    order_id: OrderId


class AmendOrder(_Message, tag=3):
    cl_ord_id: ClOrdId
    member: MemberId
    instrument: InstrumentCode
    order_id: OrderId
    price: Price
    qty: Quantity  # the new remaining quantity


class PickOrder(_Message, tag=4):
    """点选: lift the named resting order (within the best five levels) at its own price."""

    cl_ord_id: ClOrdId
    member: MemberId
    instrument: InstrumentCode
    side: Side
    target_order_id: OrderId
    qty: Quantity


class MassCancel(_Message, tag=5):
    """Cancel every resting book order of `member` (of one instrument when `instrument` is
    given). One-way auction bids and block trades are not touched. The ClOrdID is echoed in
    the answer (MassCancelled) and not registered: a mass cancel may be repeated."""

    cl_ord_id: ClOrdId
    member: MemberId
    instrument: Annotated[str, msgspec.Meta(max_length=16)] = ""  # "" for every instrument


# -- operator commands (the admin channel authenticates them; the core only applies them) ----


class StartOfDay(_Message, tag=20):
    """Begin a trading day: ClOrdIDs, day statistics and trade checksums start afresh."""

    date: Annotated[str, msgspec.Meta(pattern=r"\A\d{4}-\d{2}-\d{2}\Z")]  # \Z: no newline after


class OpenCall(_Message, tag=21):
    """CLOSED -> CALL (opening call) or HALTED -> CALL (re-opening call, as Resume)."""

    instrument: InstrumentCode


class Uncross(_Message, tag=22):
    """CALL -> uncross at the equilibrium price -> CONTINUOUS."""

    instrument: InstrumentCode


class Halt(_Message, tag=23):
    """CONTINUOUS or CALL -> HALTED (cancels only)."""

    instrument: InstrumentCode


class Resume(_Message, tag=28):
    """HALTED -> CALL: 复牌, a halted market resumes through a re-opening call (Uncross then
    opens continuous trading). OpenCall on a halted market does the same."""

    instrument: InstrumentCode


class CloseCall(_Message, tag=24):
    """CONTINUOUS -> CLOSING_CALL."""

    instrument: InstrumentCode


class Close(_Message, tag=25):
    """-> CLOSED; a closing call is uncrossed first. Day orders stay until EndOfDay."""

    instrument: InstrumentCode


class SetReference(_Message, tag=26):
    """Set the reference price (previous close) of a closed market; the band follows."""

    instrument: InstrumentCode
    price: Price


class EndOfDay(_Message, tag=27):
    """Every market must be CLOSED: expire day orders, fix the closes, publish day records."""


class Clock(_Message, tag=29):
    """The sequencer's clock: a command that does nothing but carry its timestamp, so the
    calendar opens, breaks and closes an idle market on time."""


class OneWayAuctionOpen(_Message, tag=30):
    """单向竞价: a seller offers `qty` of a CEA vintage; its allowances are frozen now."""

    instrument: InstrumentCode
    seller: MemberId
    qty: Quantity
    floor_minus_10pct: bool = False  # floor = previous close, or that close minus 10%
    uniform: bool = True  # uniform price (lowest winning bid) or pay-as-bid


class AuctionBid(_Message, tag=31):
    cl_ord_id: ClOrdId
    member: MemberId
    instrument: InstrumentCode
    price: Price
    qty: Quantity


class OneWayAuctionClose(_Message, tag=32):
    instrument: InstrumentCode


class BlockTrade(_Message, tag=33):
    """A negotiated two-sided block trade report (大宗协议), printed without the book."""

    cl_ord_id: ClOrdId
    instrument: InstrumentCode
    buyer: MemberId
    seller: MemberId
    price: Price
    qty: Quantity


Command = (
    NewOrder
    | CancelOrder
    | AmendOrder
    | PickOrder
    | MassCancel
    | StartOfDay
    | OpenCall
    | Uncross
    | Halt
    | Resume
    | CloseCall
    | Close
    | SetReference
    | EndOfDay
    | Clock
    | OneWayAuctionOpen
    | AuctionBid
    | OneWayAuctionClose
    | BlockTrade
)


# -- events -----------------------------------------------------------------------------------


class Accepted(_Message, tag=101):
    audience: ClassVar[Audience] = Audience.PRIVATE
    seq: int
    cl_ord_id: str
    member: int
    instrument: str
    order_id: int
    side: Side
    price: int
    qty: int
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class Rejected(_Message, tag=102):
    audience: ClassVar[Audience] = Audience.PRIVATE
    seq: int
    cl_ord_id: str
    member: int
    code: RejectCode
    text: str
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class Filled(_Message, tag=103):
    """One side of a trade, sent to the owner of `order_id`."""

    audience: ClassVar[Audience] = Audience.PRIVATE
    seq: int
    trade_id: int
    member: int
    instrument: str
    order_id: int
    side: Side
    price: int
    qty: int
    leaves: int
    aggressor: bool
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class Cancelled(_Message, tag=104):
    audience: ClassVar[Audience] = Audience.PRIVATE
    seq: int
    member: int
    instrument: str
    order_id: int
    leaves: int
    reason: CancelReason
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class Amended(_Message, tag=105):
    audience: ClassVar[Audience] = Audience.PRIVATE
    seq: int
    member: int
    instrument: str
    order_id: int
    price: int
    qty: int
    kept_priority: bool
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class Trade(_Message, tag=106):
    """A trade's clearing record: both members, both orders and each side's fee (the public
    sees `TradePrint`, which names no member).

    `aggressor` is the side of the incoming order, or -1 for auctions and block trades;
    `venue` is how it printed: "continuous", "call", "pick", "one_way" or "block"."""

    audience: ClassVar[Audience] = Audience.CLEARING
    seq: int
    trade_id: int
    ts_ns: int
    date: str  # the trading day it belongs to (settlement date)
    instrument: str
    price: int
    qty: int
    buyer: int
    seller: int
    buy_order_id: int
    sell_order_id: int
    aggressor: int
    venue: str
    buyer_fee: int = 0  # fen, each side pays the fee on the trade's value
    seller_fee: int = 0
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


def trades_digest(trades: list[Trade]) -> str:
    """The end-of-day checksum: the SHA-256 chain of engine.digest over the trades'
    encodings, in order."""
    return digest_of(encode_trades(trades))


def encode_trades(trades: list[Trade]) -> bytes:
    """The trades' encodings back to back, in order (what the day checksum hashes)."""
    return b"".join(map(_encoder.encode, trades))


class PhaseChanged(_Message, tag=107):
    audience: ClassVar[Audience] = Audience.PUBLIC
    seq: int
    instrument: str
    phase: Phase
    reference: int  # previous close, fen
    band_low: int
    band_high: int
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class Indicative(_Message, tag=108):
    """Indicative uncross during a call (published whenever it changes); price 0: no cross."""

    audience: ClassVar[Audience] = Audience.PUBLIC
    seq: int
    instrument: str
    price: int
    volume: int
    imbalance: int
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class AuctionResult(_Message, tag=109):
    """What an auction traded. A call auction gives one per price it traded at: normally
    one, but when self-trade prevention leaves the book crossed after the uncross, the rest
    is uncrossed at its own price and gets its own result. A one-way auction gives one.
    Price 0 and volume 0: nothing traded."""

    audience: ClassVar[Audience] = Audience.PUBLIC
    seq: int
    instrument: str
    auction: str  # "call", "closing_call", "one_way"
    price: int  # call: the price; one-way: the uniform price, or the last (lowest) paid
    volume: int  # tonnes traded at that price (one-way: in all)
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class DepthUpdate(_Message, tag=110):
    """A price level changed: it now holds `qty` tonnes in `orders` orders (0 and 0: gone).

    One per level a command changed, in the order the command first touched them, so a
    subscriber that applies them in sequence holds the full book by price (market by price)."""

    audience: ClassVar[Audience] = Audience.PUBLIC
    seq: int
    instrument: str
    side: Side
    price: int
    qty: int
    orders: int
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class DayClosed(_Message, tag=111):
    """End-of-day record per instrument; clearing checks its trades against it."""

    audience: ClassVar[Audience] = Audience.CLEARING
    seq: int
    date: str
    instrument: str
    trades: int
    volume: int
    close: int  # VWAP of the day's listed (call, continuous, pick) trades; the reference if none
    checksum: str  # trades_digest() of the day's trades
    # The day's first, highest and lowest listed trade price (docs/MARKET.md: the open is the first
    # trade; with none, the previous close, and so are the high and low). 0 only in a record
    # written before these fields existed.
    open: int = 0
    high: int = 0
    low: int = 0
    stream_seq: int = 0  # gap-free per audience stream (see Audience)


class TradePrint(_Message, tag=112):
    """A trade as market data sees it: no member, no order id."""

    audience: ClassVar[Audience] = Audience.PUBLIC
    seq: int
    trade_id: int
    ts_ns: int
    instrument: str
    price: int
    qty: int
    aggressor: int  # the incoming order's side; -1 for auctions and block trades
    venue: str
    stream_seq: int = 0


class MassCancelled(_Message, tag=114):
    """The answer to a MassCancel, after the Cancelled event of each order it cancelled."""

    audience: ClassVar[Audience] = Audience.PRIVATE
    seq: int
    cl_ord_id: str
    member: int
    instrument: str
    cancelled: int
    stream_seq: int = 0


class DaySummary(_Message, tag=113):
    """A day's figures per instrument as market data sees them: the listed trades' open,
    high, low and close (the close is the next day's reference); the volume and trade count
    of all its trades, listed, block and one-way auction (DayClosed's totals)."""

    audience: ClassVar[Audience] = Audience.PUBLIC
    seq: int
    date: str
    instrument: str
    open: int
    high: int
    low: int
    close: int
    volume: int
    trades: int
    stream_seq: int = 0


Event = (
    Accepted
    | Rejected
    | Filled
    | Cancelled
    | Amended
    | Trade
    | PhaseChanged
    | Indicative
    | AuctionResult
    | DepthUpdate
    | DayClosed
    | TradePrint
    | DaySummary
    | MassCancelled
)

_encoder = msgspec.msgpack.Encoder()
_command_decoder = msgspec.msgpack.Decoder(Command)
_event_decoder = msgspec.msgpack.Decoder(Event)


def encode(message: _Message) -> bytes:
    return _encoder.encode(message)


class MalformedMessage(ValueError):
    """A frame that is not a valid message; the text names the message type and field."""


_COMMAND_TYPES = {
    cls.__struct_config__.tag: cls
    for cls in (NewOrder, CancelOrder, AmendOrder, PickOrder, MassCancel)
}


def _field_path(frame: bytes, error: msgspec.ValidationError) -> str:
    """'NewOrder.qty: Expected `int` >= 0' from msgspec's '... - at `$[6]`'."""
    text = str(error)
    message, _, where = text.rpartition(" - at `$[")
    if not message or not where.endswith("]`"):
        return text
    index = int(where[:-2].split("]", 1)[0])
    try:
        cls = _COMMAND_TYPES.get(msgspec.msgpack.decode(frame)[0])
    except (msgspec.DecodeError, TypeError, IndexError, KeyError):
        return text
    if cls is None or not 1 <= index <= len(cls.__struct_fields__):
        return text
    return f"{cls.__name__}.{cls.__struct_fields__[index - 1]}: {message}"


def decode_command(frame: bytes) -> Command:
    """Decode one command; MalformedMessage names what is wrong (type, field, constraint)."""
    try:
        return _command_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise MalformedMessage(_field_path(frame, exc)) from exc
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"not a msgpack message: {exc}") from exc


def decode_event(frame: bytes) -> Event:
    return _event_decoder.decode(frame)
