"""The day's orders by member and ClOrdID, for answering a resent NewOrder with its state.

Built from the events the core emits (never from the commands), so it says what the exchange
did. Invariants:
- a key (member, ClOrdID) maps to the order id and instrument its NewOrder was accepted with,
  or to the text of the refusal, whichever came first (a later reuse of the ClOrdID is
  refused by the core and does not change the entry);
- a batch's accepted orders (and a loaded table's, keys of up to KEY_BYTES bytes) live in
  a compiled hash table, the core's ClOrdID store (engine.core.clordid) with two value
  columns, order id and instrument index: one compiled pass per batch, no Python object per
  order. The per-command path's accepted orders and every refusal live in a dict beside it,
  which `lookup` reads first. A key is accepted at most once a day (the core refuses a used
  ClOrdID), so only a refusal can be in both: the dict's, recorded first (a refusal is
  recorded only for a key neither holds);
- cleared at each StartOfDay, as the core's ClOrdID store is; it is written beside each
  snapshot (`dump`, `load`) and recovery feeds it the journal tail's events (or a batch's
  event rows: `record_rows`, accepted orders only), so after a restart it is what it was;
- a key the core's store has seen but this table has not (a snapshot without its table)
  is answered "done" with a text that says so;
- `dump` carries a CRC-32 of what it holds, and `load` refuses a table whose bytes do not
  match it (a probe flipped one bit of a table: the engine started without a word and
  answered a live order's resend 'done', with another order's id).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
import numpy as np
from numba import njit

from engine.codec import (
    A_MEMBER,
    A_ORDER_ID,
    EVENT_DTYPE,
    EVENT_WORDS,
    KEY_WORD,
    ROW_ACCEPTED,
    text_rows,
)
from engine.core import Exchange
from engine.core.clordid import (
    CM_COUNT,
    EMPTY,
    K_LEN,
    K_MEMBER,
    K_WORD,
    KEY_BYTES,
    TABLE_COLUMNS,
    ClOrdIds,
    clid_insert,
    clid_probe,
    key_of,
    key_words,
)
from engine.gateway.replies import key_length
from engine.gateway.wire import OrderStatus
from engine.protocol import Accepted, NewOrder, Rejected

S_ORDER, S_INSTRUMENT = TABLE_COLUMNS, TABLE_COLUMNS + 1  # the value columns of an entry
# `dump`'s head (versions before 2026-12-01 wrote none; format 2, to 2026-12-02, no CRC)
DUMP_KIND, DUMP_FORMAT = "cxe-order-status", 3
_Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # an order id
# -1: an operator command's refusal, which versions before 2026-12-02 kept (and then could not
# load their own snapshot's table): read, and left out
_Member = Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]
_Entries = list[tuple[tuple[_Member, str], _Id | str]]  # ((member, ClOrdID), order id or text)
_Instruments = list[tuple[_Id, str]]  # (order id, instrument)
_Body = tuple[list[str], bytes, _Entries, _Instruments]  # codes, rows, dict entries
_checked_form = msgspec.msgpack.Decoder(
    tuple[Literal[DUMP_KIND], Literal[DUMP_FORMAT], int, bytes]  # the kind, format, CRC, body
)
_body_form = msgspec.msgpack.Decoder(_Body)
_dump_form = msgspec.msgpack.Decoder(  # format 2
    tuple[Literal[DUMP_KIND], int, list[str], bytes, _Entries, _Instruments]
)
_entry_form = msgspec.msgpack.Decoder(tuple[_Entries, _Instruments])


@njit(cache=True, _nrt=False)
def _put(table, meta, member, n, w0, w1, w2, w3, order_id, instrument):
    """Record the key's order unless the key is there (room reserved by the caller)."""
    keys = meta[CM_COUNT]
    i = clid_insert(table, meta, member, n, w0, w1, w2, w3)
    if meta[CM_COUNT] != keys:  # a new entry
        table[i, S_ORDER] = order_id
        table[i, S_INSTRUMENT] = instrument


@njit(cache=True, _nrt=False)
def _put_rows(table, meta, words, chosen):
    """Record the ROW_ACCEPTED rows words[chosen]: each row's key is its 32 key bytes less
    the trailing NULs (as the row's ClOrdID decodes)."""
    for r in chosen:
        _put(
            table, meta, words[r, A_MEMBER], key_length(words, r), words[r, KEY_WORD],
            words[r, KEY_WORD + 1], words[r, KEY_WORD + 2], words[r, KEY_WORD + 3],
            words[r, A_ORDER_ID], (words[r, 0] >> 32) & 0xFFFFFFFF,
        )  # fmt: skip


@njit(cache=True, _nrt=False)
def _find(table, meta, member, n, w0, w1, w2, w3):
    """The key's entry, or -1."""
    i = clid_probe(table, meta, member, n, w0, w1, w2, w3)
    return -1 if table[i, K_LEN] == EMPTY else i


def _body_of(data: bytes) -> tuple[list[str], bytes | None, list, list]:
    """(codes, rows, dict entries, instruments) of a dump of this format (checked against
    its CRC-32), of format 2, or of the form before (entries alone: codes and rows None);
    ValueError saying what is wrong."""
    try:
        _, _, crc, body = _checked_form.decode(data)
    except msgspec.ValidationError as current:
        try:
            _, form, codes, rows, orders, instruments = _dump_form.decode(data)
        except msgspec.ValidationError:
            try:
                orders, instruments = _entry_form.decode(data)  # a version before's table
            except msgspec.ValidationError as earlier:
                raise ValueError(f"{current}; read as the forms before: {earlier}") from None
            return [], None, orders, instruments
        if form != 2:
            raise ValueError(
                f"format {form!r}: this engine reads formats {DUMP_FORMAT} and 2"
            ) from None
        return codes, rows, orders, instruments
    if zlib.crc32(body) != crc:
        raise ValueError(f"its bytes do not match its CRC-32 ({crc:#010x}): it is damaged")
    return _body_form.decode(body)


class OrderStatusTable:
    def __init__(self, codes: Sequence[str]) -> None:
        self.codes = list(codes)
        self._index = {code: i for i, code in enumerate(self.codes)}
        self.accepted = ClOrdIds(values=2)
        self.other: dict[tuple[int, str], tuple[int, str] | str] = {}

    def lookup(self, member: int, cl_ord_id: str) -> tuple[int, str] | str | None:
        """(order id, instrument) of the key's accepted order, the text of its refusal, or
        None for a key not seen today."""
        known = self.other.get((member, cl_ord_id))
        if known is not None:
            return known
        key = key_of(cl_ord_id)
        if len(key) > KEY_BYTES:
            return None
        table = self.accepted.table
        i = _find(table, self.accepted.meta, member, *key_words(key))
        if i < 0:
            return None
        return int(table[i, S_ORDER]), self._code(int(table[i, S_INSTRUMENT]))

    def _code(self, index: int) -> str:
        return self.codes[index] if 0 <= index < len(self.codes) else ""

    def entries(self) -> dict[tuple[int, str], tuple[int, str] | str]:
        """Every key's entry, as `lookup` gives it."""
        rows = self.accepted.rows()
        words = np.ascontiguousarray(rows[:, K_WORD:TABLE_COLUMNS]).astype("<i8").tobytes()
        out: dict[tuple[int, str], tuple[int, str] | str] = {}
        for i, (member, n, order_id, index) in enumerate(
            rows[:, [K_MEMBER, K_LEN, S_ORDER, S_INSTRUMENT]].tolist()
        ):
            key = words[KEY_BYTES * i : KEY_BYTES * i + n].decode("utf-8", "surrogatepass")
            out[(member, key)] = (order_id, self._code(index))
        return out | self.other

    def dump(self) -> bytes:
        """The table as msgpack: [DUMP_KIND, DUMP_FORMAT, the CRC-32 of the body, the body],
        the body msgpack of [the instrument codes, the compiled table's rows
        (`ClOrdIds.rows`: member, key length, key words, order id, instrument index, as
        little-endian int64), then the dict's entries in the form of versions before:
        [((member, ClOrdID), order id or text)], [(order id, instrument)]]. The rows go as
        one block: a busy day's 560,000 entries as Python objects took 1.2 s to write and
        2.4 s to read, in the loop's thread."""
        orders, instruments = [], []
        for key, value in self.other.items():
            if isinstance(value, str):
                orders.append((key, value))
            else:
                orders.append((key, value[0]))
                instruments.append(value)
        rows = self.accepted.rows().astype("<i8").tobytes()
        body = msgspec.msgpack.encode((self.codes, rows, orders, instruments))
        return msgspec.msgpack.encode((DUMP_KIND, DUMP_FORMAT, zlib.crc32(body), body))

    def load(self, data: bytes) -> None:
        """Hold what `dump` wrote (or what versions before wrote: the entries alone); bytes
        that are neither raise ValueError saying what is wrong, and the table is left empty."""
        self.clear()
        try:
            codes, rows, orders, instruments = _body_of(data)
            if rows is not None:
                self._load_rows(codes, rows)
            self._load_entries(orders, instruments)
        except ValueError as exc:  # msgspec's errors are ValueErrors
            self.clear()
            raise ValueError(f"not an order status table this engine can read ({exc})") from exc

    def _load_rows(self, codes: list[str], data: bytes) -> None:
        width = self.accepted.table.shape[1]
        if len(data) % (8 * width):
            raise ValueError(f"{len(data)} bytes of rows are not rows of {width} int64s")
        rows = np.frombuffer(data, dtype="<i8").reshape(-1, width).astype(np.int64)
        index = np.array([self._index.get(code, -1) for code in codes] + [-1], dtype=np.int64)
        stored = rows[:, S_INSTRUMENT]
        stored[(stored < 0) | (stored >= len(codes))] = len(codes)  # no instrument: ""
        rows[:, S_INSTRUMENT] = index[stored]
        self.accepted.restore(rows, [])

    def _load_entries(self, orders: list, instruments: list) -> None:
        codes = dict(instruments)
        self.accepted.reserve(len(orders))
        table, meta = self.accepted.table, self.accepted.meta
        for (member, cl_ord_id), value in orders:
            if member < 0:
                if not isinstance(value, str):
                    raise ValueError(f"an order {value} of member {member}")
                continue  # an operator command's refusal: no member resends it
            key = key_of(cl_ord_id)
            if isinstance(value, str):
                self.other[(member, cl_ord_id)] = value
            elif len(key) > KEY_BYTES:
                self.other[(member, cl_ord_id)] = (value, codes.get(value, ""))
            else:
                index = self._index.get(codes.get(value, ""), -1)
                _put(table, meta, member, *key_words(key), value, index)

    def record_rows(self, data: bytes) -> None:
        """The accepted orders among a batch's event rows (engine.codec), without decoding
        the rest; the batch path's refusals are not kept (a resend is then taken as new
        and refused again the same way)."""
        rows = np.frombuffer(data, dtype=EVENT_DTYPE)
        accepted = (rows["kind"] == ROW_ACCEPTED) & ~text_rows(rows)
        self.record_accepted(data, np.flatnonzero(accepted))

    def record_accepted(self, data: bytes, chosen: np.ndarray) -> None:
        """The ROW_ACCEPTED rows `chosen` (indices) of a batch's event rows `data`. A key the
        dict holds (refused first, by the per-command path) keeps its refusal: `lookup`
        looks there first."""
        words = np.frombuffer(data, dtype=np.int64).reshape(-1, EVENT_WORDS)
        self.accepted.reserve(len(chosen))
        _put_rows(self.accepted.table, self.accepted.meta, words, chosen.astype(np.int64))

    def reserve(self, orders: int) -> None:
        """Room for `orders` accepted orders in all, grown now at most once."""
        self.accepted.reserve(max(0, orders - len(self.accepted)))

    def clear(self) -> None:
        self.accepted.clear()
        self.other.clear()

    def record(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is Accepted:  # a fresh key: only a refusal can be there
                self.other.setdefault(
                    (event.member, event.cl_ord_id), (event.order_id, event.instrument)
                )
            elif kind is Rejected and event.seq and event.member >= 0:  # not an operator's
                key = (event.member, event.cl_ord_id)
                if self.lookup(*key) is None:
                    self.other[key] = event.text

    def status(self, exchange: Exchange, command: NewOrder) -> OrderStatus | None:
        """The status of a NewOrder the exchange has seen today, or None for a new one."""
        member, cl_ord_id = command.member, command.cl_ord_id
        known = self.lookup(member, cl_ord_id)
        if known is None:
            if not exchange.state.cl_ord_ids.used(member, cl_ord_id):
                return None
            text = "seen today; its state was not kept across the engine's last restart"
            return OrderStatus(member, cl_ord_id, "done", text=text)
        if isinstance(known, str):
            return OrderStatus(member, cl_ord_id, "rejected", text=known)
        order_id, instrument = known
        market = exchange.markets.get(instrument)
        resting = market.book.order(order_id) if market is not None else None
        live = exchange.state.orders.get(order_id)  # off the book (a one-way auction)
        if resting is not None:
            return OrderStatus(member, cl_ord_id, "live", order_id, instrument, resting[2])
        if live is not None:
            return OrderStatus(member, cl_ord_id, "live", order_id, instrument, live.leaves)
        return OrderStatus(member, cl_ord_id, "done", order_id, instrument, 0)
