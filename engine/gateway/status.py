"""The day's orders by member and ClOrdID, for answering a resent NewOrder with its state.

Built from the events the core emits (never from the commands), so it says what the exchange
did. Invariants:
- a key (member, ClOrdID) maps to the order id its NewOrder was accepted with, or to the text
  of the refusal, whichever came first (a later reuse of the ClOrdID is refused by the core
  and does not change the entry);
- cleared at each StartOfDay, as the core's ClOrdID store is; recovery rebuilds it by feeding
  it the replayed events (a restart from a snapshot knows the keys after the snapshot; a key
  the core has seen but this table has not is answered as "done" with a text that says so).
"""

from __future__ import annotations

from engine.core import Exchange
from engine.gateway.wire import OrderStatus
from engine.protocol import Accepted, NewOrder, Rejected


class OrderStatusTable:
    def __init__(self) -> None:
        self.orders: dict[tuple[int, str], int | str] = {}
        self.instruments: dict[int, str] = {}

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
            text = "used today before the engine's last restart from a snapshot: no detail kept"
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
