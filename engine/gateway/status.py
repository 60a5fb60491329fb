"""The day's orders by member and ClOrdID, for answering a resent NewOrder with its state.

Built from the events the core emits (never from the commands), so it says what the exchange
did. Invariants:
- a key (member, ClOrdID) maps to the order id its NewOrder was accepted with, or to the text
  of the refusal, whichever came first (a later reuse of the ClOrdID is refused by the core
  and does not change the entry);
- cleared at each StartOfDay, as the core's ClOrdID store is; it is written beside each
  snapshot (`dump`, `load`) and recovery feeds it the journal tail's events (or a batch's
  event rows: `record_rows`, accepted orders only), so after a restart it is what it was;
- a key the core's store has seen but this table has not (a snapshot without its table)
  is answered "done" with a text that says so.
"""

from __future__ import annotations

import msgspec
import numpy as np

from engine.codec import (
    EVENT_BYTES,
    EVENT_DTYPE,
    ROW_ACCEPTED,
    ROW_DTYPES,
    ROW_REJECTED_TEXT,
)
from engine.core import Exchange
from engine.gateway.wire import OrderStatus
from engine.protocol import Accepted, NewOrder, Rejected

_TEXT_ROW = ROW_DTYPES[ROW_REJECTED_TEXT]
_ACCEPTED_ROW = ROW_DTYPES[ROW_ACCEPTED]


class OrderStatusTable:
    def __init__(self) -> None:
        self.orders: dict[tuple[int, str], int | str] = {}
        self.instruments: dict[int, str] = {}

    def dump(self) -> bytes:
        return msgspec.msgpack.encode((list(self.orders.items()), list(self.instruments.items())))

    def load(self, data: bytes) -> None:
        orders, instruments = msgspec.msgpack.decode(data)
        self.orders = {(member, key): value for (member, key), value in orders}
        self.instruments = dict(instruments)

    def record_rows(self, data: bytes, codes: list[str]) -> None:
        """The accepted orders among a batch's event rows (engine.codec), without decoding
        the rest; the batch path's refusals are not kept (a resend is then taken as new
        and refused again the same way)."""
        rows = np.frombuffer(data, dtype=EVENT_DTYPE)
        kinds = rows["kind"]
        skip = np.zeros(len(rows), dtype=bool)  # a worded refusal's text rows
        for i in np.flatnonzero(kinds == ROW_REJECTED_TEXT):
            if not skip[i]:
                size = int(rows[i : i + 1].view(_TEXT_ROW)["text_bytes"][0])
                skip[i + 1 : i + 1 + -(-size // EVENT_BYTES)] = True
        self.record_accepted(rows[(kinds == ROW_ACCEPTED) & ~skip], codes)

    def record_accepted(self, rows: np.ndarray, codes: list[str]) -> None:
        """ROW_ACCEPTED event rows (EVENT_DTYPE): each order's key, if new, and instrument."""
        accepted = rows.view(_ACCEPTED_ROW)
        orders, instruments = self.orders, self.instruments
        for member, order_id, key, index in zip(
            accepted["member"].tolist(),
            accepted["order_id"].tolist(),
            accepted["cl_ord_id"].tolist(),
            accepted["instrument"].tolist(),
            strict=True,
        ):
            orders.setdefault((member, key.decode("utf-8")), order_id)
            instruments[order_id] = codes[index]

    def clear(self) -> None:
        self.orders.clear()
        self.instruments.clear()

    def record(self, events: list) -> None:
        orders = self.orders
        for event in events:
            kind = type(event)
            if kind is Accepted:
                orders.setdefault((event.member, event.cl_ord_id), event.order_id)
                self.instruments[event.order_id] = event.instrument
            elif kind is Rejected and event.seq:
                orders.setdefault((event.member, event.cl_ord_id), event.text)

    def status(self, exchange: Exchange, command: NewOrder) -> OrderStatus | None:
        """The status of a NewOrder the exchange has seen today, or None for a new one."""
        member, cl_ord_id = command.member, command.cl_ord_id
        known = self.orders.get((member, cl_ord_id))
        if known is None:
            if not exchange.state.cl_ord_ids.used(member, cl_ord_id):
                return None
            text = "seen today; its state was not kept across the engine's last restart"
            return OrderStatus(member, cl_ord_id, "done", text=text)
        if isinstance(known, str):
            return OrderStatus(member, cl_ord_id, "rejected", text=known)
        instrument = self.instruments.get(known, "")
        market = exchange.markets.get(instrument)
        resting = market.book.order(known) if market is not None else None
        live = exchange.state.orders.get(known)  # off the book (a one-way auction)
        if resting is not None:
            return OrderStatus(member, cl_ord_id, "live", known, instrument, resting[2])
        if live is not None:
            return OrderStatus(member, cl_ord_id, "live", known, instrument, live.leaves)
        return OrderStatus(member, cl_ord_id, "done", known, instrument, 0)
