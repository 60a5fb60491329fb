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


def encode_events(events: Sequence[Event], codes: Sequence[str]) -> bytes:
    """The rows of protocol events, as the batch writes them (for what the per-command path
    answers inside a batch). A Trade takes its public print and the two Filled events after
    it with it (a decoder gives them back from the one row); every refusal is written with
    its text. Stream numbers are not written: a decoder counts them on from the positions
    before the batch (engine.core.rows.number_streams)."""
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


def decode_events(data: bytes, codes: Sequence[str], word: RejectWording) -> list[Event]:
    """The protocol events of event rows (tests and consumers; not the hot path). `word`
    words a ROW_REJECTED from its code and details (engine.core.rows.reject_wording)."""
    rows = np.frombuffer(data, dtype=EVENT_DTYPE)
    events: list[Event] = []
    i = 0
    while i < len(rows):
        kind = int(rows[i]["kind"])
        row = rows[i : i + 1].view(ROW_DTYPES[kind])[0]
        seq, instrument = int(row["seq"]), int(row["instrument"])
        code = codes[instrument] if instrument < len(codes) else f"#{instrument}"
        i += 1
        if kind == ROW_ACCEPTED:
            accepted = Accepted(
                seq, _text(row["cl_ord_id"]), int(row["member"]), code, int(row["order_id"]),
                Side(int(row["flag"])), int(row["price"]), int(row["qty"]),
            )  # fmt: skip
            events.append(accepted)
        elif kind in (ROW_REJECTED, ROW_REJECTED_TEXT):
            reject = RejectCode(int(row["code"]))
            cl_ord_id, member = _text(row["cl_ord_id"]), int(row["member"])
            if kind == ROW_REJECTED:
                a, b = int(row["detail_a"]), int(row["detail_b"])
                text = word(reject, instrument, a, b, cl_ord_id, member)
            else:
                size = int(row["text_bytes"])
                span = -(-size // EVENT_BYTES)
                text = _text(rows[i : i + span].tobytes()[:size])
                i += span
            events.append(Rejected(seq, cl_ord_id, member, reject, text))
        elif kind == ROW_TRADE:
            events += _trade_events(row, seq, code)
        elif kind == ROW_CANCELLED:
            reason = CancelReason(int(row["code"]))
            member, order_id, leaves = int(row["member"]), int(row["order_id"]), int(row["leaves"])
            events.append(Cancelled(seq, member, code, order_id, leaves, reason))
        elif kind == ROW_AMENDED:
            amended = Amended(
                seq, int(row["member"]), code, int(row["order_id"]), int(row["price"]),
                int(row["qty"]), bool(row["flag"]),
            )  # fmt: skip
            events.append(amended)
        elif kind == ROW_DEPTH:
            side, price = Side(int(row["flag"])), int(row["price"])
            events.append(DepthUpdate(seq, code, side, price, int(row["qty"]), int(row["orders"])))
        elif kind == ROW_PHASE:
            phase = PhaseChanged(
                seq, code, Phase(int(row["code"])), int(row["reference"]), int(row["band_low"]),
                int(row["band_high"]),
            )  # fmt: skip
            events.append(phase)
        elif kind == ROW_INDICATIVE:
            price, volume = int(row["price"]), int(row["volume"])
            events.append(Indicative(seq, code, price, volume, int(row["imbalance"])))
        elif kind == ROW_AUCTION:
            auction = AUCTIONS[int(row["code"])]
            events.append(AuctionResult(seq, code, auction, int(row["price"]), int(row["volume"])))
        else:
            raise ValueError(f"event row {i - 1}: unknown kind {kind}")
    return events


def _text(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


def _trade_events(row: np.void, seq: int, code: str) -> tuple[Trade, Filled, Filled]:
    trade_id, price, qty = int(row["trade_id"]), int(row["price"]), int(row["qty"])
    buyer, seller = int(row["buyer"]), int(row["seller"])
    buy_oid, sell_oid = int(row["buy_order_id"]), int(row["sell_order_id"])
    aggressor = int(row["flag"])
    trade = Trade(
        seq, trade_id, int(row["ts_ns"]), date_text(int(row["date"])), code, price, qty,
        buyer, seller, buy_oid, sell_oid, aggressor, VENUES[int(row["code"])],
    )  # fmt: skip
    return (
        trade,
        Filled(seq, trade_id, buyer, code, buy_oid, Side.BUY, price, qty,
               int(row["buy_leaves"]), aggressor == 0),
        Filled(seq, trade_id, seller, code, sell_oid, Side.SELL, price, qty,
               int(row["sell_leaves"]), aggressor == 1),
    )  # fmt: skip
