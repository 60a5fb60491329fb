"""Fixed binary layouts for batches: order-entry command records in, event rows out.

The per-command API speaks msgspec (engine.protocol); a batch of order commands arrives as a
numpy structured array of COMMAND_DTYPE records (what a gateway gets from a frame with
`np.frombuffer(frame, COMMAND_DTYPE)`), and its events leave as bytes: a sequence of
EVENT_DTYPE rows that compiled code writes (engine.core.batch). docs/CODEC.md shows the two
encodings of each command side by side.

Invariants:
- Both layouts are little-endian, with every field at its natural alignment, so compiled code
  reads a record as RECORD_WORDS int64 words and writes an event as EVENT_WORDS int64 words
  (on a little-endian host; the batch refuses to run on another).
- A record's `kind` is its command's msgspec tag (NewOrder 1, CancelOrder 2, AmendOrder 3);
  an event row's `kind` is its event's tag minus 100, except ROW_REJECTED_TEXT, a refusal
  worded in Python, whose text follows in ceil(len / EVENT_BYTES) raw rows.
- A ClOrdID is its UTF-8 bytes, zero-padded to 32: `records_of` refuses one that does not
  fit or ends in a NUL (it would not come back the same); such commands go as messages.
- A trade is one ROW_TRADE: it decodes to the Trade and the buy and sell Filled events, in
  the order EventWriter emits them.
- Nothing here validates a command against the market: that is the core's work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from engine.protocol import (
    Accepted,
    Amended,
    AmendOrder,
    AuctionResult,
    Cancelled,
    CancelOrder,
    DepthUpdate,
    Event,
    Filled,
    Indicative,
    NewOrder,
    PhaseChanged,
    RejectCode,
    Rejected,
    Trade,
    TradePrint,
)
from engine.types import CancelReason, OrderType, Phase, Side, StpMode, TimeInForce

CL_ORD_ID_BYTES = 32

# -- commands ------------------------------------------------------------------------------------

REC_NEW_ORDER, REC_CANCEL, REC_AMEND = 1, 2, 3  # the commands' msgspec tags
COMMAND_DTYPE = np.dtype(
    [
        ("seq", "<i8"),  # stamped by the sequencer
        ("ts_ns", "<i8"),  # stamped by the sequencer
        ("kind", "u1"),  # REC_*
        ("side", "u1"),
        ("order_type", "u1"),
        ("tif", "u1"),
        ("stp", "u1"),
        ("reserved", "u1", (3,)),
        ("member", "<i4"),
        ("instrument", "<i4"),  # index in the market config's instrument list
        ("price", "<i8"),
        ("qty", "<i8"),
        ("order_id", "<i8"),  # CancelOrder and AmendOrder
        ("cl_ord_id", f"S{CL_ORD_ID_BYTES}"),
    ]
)
RECORD_WORDS = COMMAND_DTYPE.itemsize // 8
# the words compiled code reads: W_FLAGS holds kind, side, order_type, tif, stp in bytes 0-4;
# W_IDS the member (low half) and the instrument (high half)
W_SEQ, W_TS, W_FLAGS, W_IDS, W_PRICE, W_QTY, W_ORDER_ID, W_KEY = range(8)

# -- events --------------------------------------------------------------------------------------

ROW_ACCEPTED, ROW_REJECTED, ROW_CANCELLED, ROW_AMENDED, ROW_TRADE = 1, 2, 4, 5, 6
ROW_PHASE, ROW_INDICATIVE, ROW_AUCTION, ROW_DEPTH = 7, 8, 9, 10
ROW_REJECTED_TEXT = 32
_HEADER = [
    ("kind", "u1"),  # ROW_*
    ("flag", "i1"),  # side (Accepted, DepthUpdate), aggressor (Trade), kept (Amended)
    ("code", "<u2"),  # RejectCode, CancelReason, Phase, venue (Trade), auction (AuctionResult)
    ("instrument", "<u4"),
    ("seq", "<i8"),
]
EVENT_WORDS = 12
EVENT_BYTES = 8 * EVENT_WORDS
EVENT_DTYPE = np.dtype([*_HEADER, ("data", "<i8", (EVENT_WORDS - 2,))])
_CLID = ("cl_ord_id", f"S{CL_ORD_ID_BYTES}")


def _row_dtype(*fields: tuple[str, str]) -> np.dtype:
    """One kind's view of an event row: the header, its fields, then padding."""
    names = [*_HEADER, *fields]
    layout = np.dtype(names)
    if layout.itemsize < EVENT_BYTES:  # pad before a ClOrdID, which ends the row
        clid = names[-1] == _CLID
        pad = [("reserved", f"V{EVENT_BYTES - layout.itemsize}")]
        names = [*names[:-1], *pad, names[-1]] if clid else [*names, *pad]
    return np.dtype(names)


ROW_DTYPES = {
    ROW_ACCEPTED: _row_dtype(("member", "<i8"), ("order_id", "<i8"), ("price", "<i8"),
                             ("qty", "<i8"), _CLID),
    # detail_a, detail_b: what the reject's text is worded from (engine.core.rows)
    ROW_REJECTED: _row_dtype(("member", "<i8"), ("detail_a", "<i8"), ("detail_b", "<i8"),
                             _CLID),
    ROW_REJECTED_TEXT: _row_dtype(("member", "<i8"), ("text_bytes", "<i8"), _CLID),
    ROW_TRADE: _row_dtype(("trade_id", "<i8"), ("price", "<i8"), ("qty", "<i8"),
                          ("buyer", "<i4"), ("seller", "<i4"), ("buy_order_id", "<i8"),
                          ("sell_order_id", "<i8"), ("buy_leaves", "<i8"),
                          ("sell_leaves", "<i8"), ("ts_ns", "<i8"), ("date", "<i8")),
    ROW_CANCELLED: _row_dtype(("member", "<i8"), ("order_id", "<i8"), ("leaves", "<i8")),
    ROW_AMENDED: _row_dtype(("member", "<i8"), ("order_id", "<i8"), ("price", "<i8"),
                            ("qty", "<i8")),
    ROW_DEPTH: _row_dtype(("price", "<i8"), ("qty", "<i8"), ("orders", "<i8")),
    ROW_PHASE: _row_dtype(("reference", "<i8"), ("band_low", "<i8"), ("band_high", "<i8")),
    ROW_INDICATIVE: _row_dtype(("price", "<i8"), ("volume", "<i8"), ("imbalance", "<i8")),
    ROW_AUCTION: _row_dtype(("price", "<i8"), ("volume", "<i8")),
}  # fmt: skip
# words of the payload, as compiled code writes them (word 0 is the header, word 1 seq)
A_MEMBER, A_ORDER_ID, A_PRICE, A_QTY = 2, 3, 4, 5
R_MEMBER, R_DETAIL_A, R_DETAIL_B = 2, 3, 4
KEY_WORD = 8  # a ClOrdID's first word, in Accepted and Rejected rows
T_TRADE_ID, T_PRICE, T_QTY, T_MEMBERS, T_BUY_OID, T_SELL_OID = 2, 3, 4, 5, 6, 7
T_BUY_LEAVES, T_SELL_LEAVES, T_TS, T_DATE = 8, 9, 10, 11
X_MEMBER, X_ORDER_ID, X_LEAVES = 2, 3, 4  # cancelled
M_MEMBER, M_ORDER_ID, M_PRICE, M_QTY = 2, 3, 4, 5  # amended
D_PRICE, D_QTY, D_ORDERS = 2, 3, 4  # depth

VENUES = ("continuous", "call", "pick", "one_way", "block")
AUCTIONS = ("call", "closing_call", "one_way")
ORDER_FIELDS = ("side", "order_type", "tif", "stp")  # INVALID_FIELD's detail_a indexes these


def header(kind: int, flag: int, code: int, instrument: int) -> int:
    """An event row's first word (as int64)."""
    word = kind | (flag & 0xFF) << 8 | code << 16 | instrument << 32
    return word - (1 << 64) if word >= 1 << 63 else word


def date_number(date: str) -> int:
    """A trading day as yyyymmdd (0: none)."""
    return int(date.replace("-", "")) if date else 0


def date_text(number: int) -> str:
    if not number:
        return ""
    text = f"{number:08d}"
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


# -- commands <-> records ------------------------------------------------------------------------


def key_bytes(cl_ord_id: str) -> bytes:
    """A ClOrdID as a record carries it; ValueError when it cannot."""
    key = cl_ord_id.encode("utf-8", "surrogatepass")
    if len(key) > CL_ORD_ID_BYTES or key.endswith(b"\0"):
        raise ValueError(
            f"ClOrdID {cl_ord_id!r} does not fit a record ({CL_ORD_ID_BYTES} bytes of UTF-8, "
            "no trailing NUL): send it as a message"
        )
    return key


def records_of(
    commands: Sequence[NewOrder | CancelOrder | AmendOrder],
    codes: Sequence[str],
    first_seq: int,
    ts_ns: Sequence[int],
) -> np.ndarray:
    """The records of order commands stamped with sequence numbers from `first_seq` and the
    given timestamps; ValueError for a command a record cannot carry."""
    index = {code: i for i, code in enumerate(codes)}
    records = np.zeros(len(commands), dtype=COMMAND_DTYPE)
    for i, cmd in enumerate(commands):
        r = records[i]
        r["seq"], r["ts_ns"] = first_seq + i, ts_ns[i]
        if cmd.instrument not in index:
            raise ValueError(f"command {i}: instrument {cmd.instrument!r} is not listed")
        r["member"], r["instrument"] = cmd.member, index[cmd.instrument]
        r["cl_ord_id"] = key_bytes(cmd.cl_ord_id)
        if type(cmd) is NewOrder:
            r["kind"] = REC_NEW_ORDER
            r["side"], r["order_type"], r["tif"], r["stp"] = (
                cmd.side, cmd.order_type, cmd.tif, cmd.stp
            )  # fmt: skip
            r["price"], r["qty"] = cmd.price, cmd.qty
        elif type(cmd) is CancelOrder:
            r["kind"], r["order_id"] = REC_CANCEL, cmd.order_id
        elif type(cmd) is AmendOrder:
            r["kind"], r["order_id"] = REC_AMEND, cmd.order_id
            r["price"], r["qty"] = cmd.price, cmd.qty
        else:
            raise ValueError(f"command {i}: {type(cmd).__name__} has no record layout")
    return records


def _enum_or_int(enum: type, value: int):
    try:
        return enum(value)
    except ValueError:
        return value  # refused by the core as INVALID_FIELD, worded with the value


def command_of(record: np.void, codes: Sequence[str]) -> NewOrder | CancelOrder | AmendOrder:
    """The protocol command a record carries. An instrument index beyond the list becomes
    the code "#index", which no market has: the core refuses it as unknown."""
    i = int(record["instrument"])
    code = codes[i] if 0 <= i < len(codes) else f"#{i}"
    cl_ord_id = bytes(record["cl_ord_id"]).decode("utf-8", "surrogatepass")
    member, kind = int(record["member"]), int(record["kind"])
    if kind == REC_NEW_ORDER:
        return NewOrder(
            cl_ord_id, member, code, _enum_or_int(Side, int(record["side"])),
            int(record["price"]), int(record["qty"]),
            _enum_or_int(OrderType, int(record["order_type"])),
            _enum_or_int(TimeInForce, int(record["tif"])),
            _enum_or_int(StpMode, int(record["stp"])),
        )  # fmt: skip
    if kind == REC_CANCEL:
        return CancelOrder(cl_ord_id, member, code, int(record["order_id"]))
    if kind == REC_AMEND:
        return AmendOrder(
            cl_ord_id, member, code, int(record["order_id"]), int(record["price"]),
            int(record["qty"]),
        )  # fmt: skip
    raise ValueError(f"record kind {kind} is not an order command")


# -- events <-> rows -----------------------------------------------------------------------------


def text_rows(rows: np.ndarray) -> np.ndarray:
    """A mask of the rows of `rows` (EVENT_DTYPE) that carry a worded refusal's text, not an
    event: read as events, their bytes can look like any kind (a probe: a text with a space,
    ROW_REJECTED_TEXT's kind, where a row's kind would be)."""
    kinds = rows["kind"]
    text = np.zeros(len(rows), dtype=bool)
    for i in np.flatnonzero(kinds == ROW_REJECTED_TEXT):
        if not text[i]:
            size = int(rows[i : i + 1].view(ROW_DTYPES[ROW_REJECTED_TEXT])["text_bytes"][0])
            text[i + 1 : i + 1 + -(-size // EVENT_BYTES)] = True
    return text


def encode_events(events: Sequence[Event], codes: Sequence[str]) -> bytes:
    """The rows of protocol events, as the batch writes them (for what the per-command path
    answers inside a batch). A Trade takes its public print and the two Filled events after
    it with it (a decoder gives them back from the one row); every refusal is written with
    its text. Stream numbers are not written: a decoder counts them on from the positions
    before the batch (engine.core.rows.StreamNumbers)."""
    index = {code: i for i, code in enumerate(codes)}
    out: list[bytes] = []
    i = 0
    while i < len(events):
        event = events[i]
        kind = type(event)
        if kind is Trade:
            trade_print, buy, sell = events[i + 1], events[i + 2], events[i + 3]
            assert type(trade_print) is TradePrint, "a Trade without its print"
            assert type(buy) is Filled and type(sell) is Filled, "a Trade without its fills"
            out.append(_trade_row(event, buy.leaves, sell.leaves, index))
            i += 4
            continue
        out.append(_row(event, index))
        if kind is Rejected:
            text = event.text.encode("utf-8", "surrogatepass")
            rows = -(-len(text) // EVENT_BYTES)
            out.append(text.ljust(rows * EVENT_BYTES, b"\0"))
        i += 1
    return b"".join(out)


def _trade_row(trade: Trade, buy_leaves: int, sell_leaves: int, index: dict) -> bytes:
    row = np.zeros(1, ROW_DTYPES[ROW_TRADE])[0]
    row["kind"], row["flag"] = ROW_TRADE, trade.aggressor
    row["code"], row["instrument"] = VENUES.index(trade.venue), index[trade.instrument]
    for name in ("seq", "trade_id", "price", "qty", "buyer", "seller", "buy_order_id"):
        row[name] = getattr(trade, name)
    row["sell_order_id"], row["ts_ns"], row["date"] = (
        trade.sell_order_id, trade.ts_ns, date_number(trade.date)
    )  # fmt: skip
    row["buy_leaves"], row["sell_leaves"] = buy_leaves, sell_leaves
    return row.tobytes()


_ROW_FIELDS: dict[type, tuple[int, str, str, tuple[str, ...]]] = {
    # event type: (row kind, flag field, code field, fields copied as they are)
    Accepted: (ROW_ACCEPTED, "side", "", ("member", "order_id", "price", "qty")),
    Rejected: (ROW_REJECTED_TEXT, "", "code", ("member",)),
    Cancelled: (ROW_CANCELLED, "", "reason", ("member", "order_id", "leaves")),
    Amended: (ROW_AMENDED, "kept_priority", "", ("member", "order_id", "price", "qty")),
    DepthUpdate: (ROW_DEPTH, "side", "", ("price", "qty", "orders")),
    PhaseChanged: (ROW_PHASE, "", "phase", ("reference", "band_low", "band_high")),
    Indicative: (ROW_INDICATIVE, "", "", ("price", "volume", "imbalance")),
    AuctionResult: (ROW_AUCTION, "", "", ("price", "volume")),
}


def _row(event: Event, index: dict) -> bytes:
    found = _ROW_FIELDS.get(type(event))
    if found is None:
        raise ValueError(f"{type(event).__name__} has no row layout")
    kind, flag, code, fields = found
    row = np.zeros(1, ROW_DTYPES[kind])[0]
    row["kind"], row["seq"] = kind, event.seq
    row["instrument"] = index[event.instrument] if hasattr(event, "instrument") else 0
    if flag:
        row["flag"] = int(getattr(event, flag))
    if code:
        row["code"] = int(getattr(event, code))
    if type(event) is AuctionResult:
        row["code"] = AUCTIONS.index(event.auction)
    for name in fields:
        row[name] = getattr(event, name)
    if kind == ROW_ACCEPTED:
        row["cl_ord_id"] = key_bytes(event.cl_ord_id)
    if kind == ROW_REJECTED_TEXT:
        row["cl_ord_id"] = event.cl_ord_id.encode("utf-8", "surrogatepass")[:CL_ORD_ID_BYTES]
        row["text_bytes"] = len(event.text.encode("utf-8", "surrogatepass"))
    return row.tobytes()


RejectWording = Callable[[RejectCode, int, int, int, str, int], str]
"""(code, instrument index, detail_a, detail_b, cl_ord_id, member) -> the reject's text."""


class Streams(Protocol):
    """Gives each decoded event its stream number (engine.core.rows numbers them on from
    the exchange's positions), and each trade its fees and public print."""

    def private(self, member: int) -> int: ...
    def public(self) -> int: ...
    def clearing(self) -> int: ...
    def fee(self, code: str, price: int, qty: int) -> int: ...
    def print_of(self, trade: Trade) -> Event | None: ...


class Unnumbered:
    """Stream numbers 0, no fees and no print: the rows' own content."""

    def private(self, member: int) -> int:
        return 0

    def public(self) -> int:
        return 0

    def clearing(self) -> int:
        return 0

    def fee(self, code: str, price: int, qty: int) -> int:
        return 0

    def print_of(self, trade: Trade) -> None:
        return None


_SIDES = {int(side): side for side in Side}
_REJECTS = {int(code): code for code in RejectCode}
_REASONS = {int(reason): reason for reason in CancelReason}
_PHASES = {int(phase): phase for phase in Phase}


def decode_events(
    data: bytes, codes: Sequence[str], word: RejectWording, streams: Streams | None = None
) -> list[Event]:
    """The protocol events of event rows. `word` words a ROW_REJECTED from its code and
    details (engine.core.rows.reject_wording); `streams`, when given, numbers every event,
    puts each side's fee on a Trade and adds its public print after it (engine.core.rows
    .decode); without it the events carry what the rows carry. The rows are read as lists of
    int64 words, once: no numpy scalar per field, no numpy call per batch."""
    flat = memoryview(data).cast("B").cast("q").tolist()  # no numpy: a turn's few rows
    rows = [flat[k : k + EVENT_WORDS] for k in range(0, len(flat), EVENT_WORDS)]
    numbers = streams or Unnumbered()
    private, public = numbers.private, numbers.public
    events: list[Event] = []
    append = events.append
    i, n = 0, len(rows)
    while i < n:
        w = rows[i]
        head, seq = w[0], w[1]
        kind, flag, row_code = head & 0xFF, (head >> 8) & 0xFF, (head >> 16) & 0xFFFF
        flag -= (flag & 0x80) << 1  # the byte is signed (a side, -1 for none)
        index = (head >> 32) & 0xFFFFFFFF
        code = codes[index] if index < len(codes) else f"#{index}"
        key = data[i * EVENT_BYTES + 64 : (i + 1) * EVENT_BYTES]
        i += 1
        if kind == ROW_ACCEPTED:
            member = w[A_MEMBER]
            accepted = Accepted(
                seq, _text(key.rstrip(b"\0")), member, code, w[A_ORDER_ID], _SIDES[flag],
                w[A_PRICE], w[A_QTY], private(member),
            )  # fmt: skip
            append(accepted)
        elif kind in (ROW_REJECTED, ROW_REJECTED_TEXT):
            reject = _REJECTS[row_code]
            member = w[R_MEMBER]
            cl_ord_id = _text(key.rstrip(b"\0"))
            if kind == ROW_REJECTED:
                text = word(reject, index, w[R_DETAIL_A], w[R_DETAIL_B], cl_ord_id, member)
            else:
                size = w[R_DETAIL_A]  # text_bytes
                text = _text(data[i * EVENT_BYTES : i * EVENT_BYTES + size])
                i += -(-size // EVENT_BYTES)
            append(Rejected(seq, cl_ord_id, member, reject, text, private(member)))
        elif kind == ROW_TRADE:
            _trade_events(w, seq, code, flag, row_code, numbers, append)
        elif kind == ROW_CANCELLED:
            member = w[X_MEMBER]
            cancelled = Cancelled(
                seq, member, code, w[X_ORDER_ID], w[X_LEAVES], _REASONS[row_code],
                private(member),
            )  # fmt: skip
            append(cancelled)
        elif kind == ROW_AMENDED:
            member = w[M_MEMBER]
            amended = Amended(
                seq, member, code, w[M_ORDER_ID], w[M_PRICE], w[M_QTY], bool(flag),
                private(member),
            )  # fmt: skip
            append(amended)
        elif kind == ROW_DEPTH:
            depth = DepthUpdate(
                seq, code, _SIDES[flag], w[D_PRICE], w[D_QTY], w[D_ORDERS], public()
            )
            append(depth)
        elif kind == ROW_PHASE:
            append(PhaseChanged(seq, code, _PHASES[row_code], w[2], w[3], w[4], public()))
        elif kind == ROW_INDICATIVE:
            append(Indicative(seq, code, w[2], w[3], w[4], public()))
        elif kind == ROW_AUCTION:
            append(AuctionResult(seq, code, AUCTIONS[row_code], w[2], w[3], public()))
        else:
            raise ValueError(f"event row {i - 1}: unknown kind {kind}")
    return events


def _text(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


def _trade_events(
    w: list[int], seq: int, code: str, aggressor: int, venue: int, numbers: Streams, append
) -> None:
    """A trade row: the clearing Trade (with each side's fee), its public print when the
    numbering gives one, then the buy and the sell Filled, as EventWriter emits them."""
    trade_id, price, qty = w[T_TRADE_ID], w[T_PRICE], w[T_QTY]
    members = w[T_MEMBERS]
    buyer = members & 0xFFFFFFFF
    buyer = buyer - (1 << 32) if buyer >= 1 << 31 else buyer
    seller = members >> 32
    buy_oid, sell_oid = w[T_BUY_OID], w[T_SELL_OID]
    fee = numbers.fee(code, price, qty)
    trade = Trade(
        seq, trade_id, w[T_TS], date_text(w[T_DATE]), code, price, qty, buyer, seller,
        buy_oid, sell_oid, aggressor, VENUES[venue], fee, fee, numbers.clearing(),
    )  # fmt: skip
    append(trade)
    printed = numbers.print_of(trade)
    if printed is not None:
        append(printed)
    buy = Filled(
        seq, trade_id, buyer, code, buy_oid, Side.BUY, price, qty, w[T_BUY_LEAVES],
        aggressor == 0, numbers.private(buyer),
    )  # fmt: skip
    sell = Filled(
        seq, trade_id, seller, code, sell_oid, Side.SELL, price, qty, w[T_SELL_LEAVES],
        aggressor == 1, numbers.private(seller),
    )  # fmt: skip
    append(buy)
    append(sell)
