"""MassCancel: a member's resting book orders, all at once (one instrument or every one).

Invariants:
- One handler for both exchanges (the production and the reference one), over the order
  registry both keep (`Trading.live_orders`): each cancelled order is taken out of its book,
  its holdings released and its member told with a `Cancelled` (reason MASS_CANCEL), in order
  id order; then each touched market publishes its depth; then one `MassCancelled` with the
  count (0 when nothing rested).
- Off-book orders (one-way auction bids and offers, block trades) are not touched: they are
  commitments to an auction or a counterparty, which the member withdraws one by one.
- Refused (nothing changed) for an unknown member or instrument; the ClOrdID is echoed, not
  registered, so a mass cancel may be sent again (a gateway's resend after a reconnect).
"""

from __future__ import annotations

from engine.core import validation as check
from engine.core.events import EventWriter
from engine.core.state import CoreState
from engine.core.trading import Trading
from engine.core.validation import typed
from engine.protocol import MassCancel
from engine.types import CancelReason


class MassCancels:
    def __init__(self, state: CoreState, emit: EventWriter, trading: Trading) -> None:
        self.state = state
        self.emit = emit
        self.trading = trading
        self.handlers = {MassCancel: self.mass_cancel}

    @typed
    def mass_cancel(self, cmd: MassCancel) -> set[str]:
        state = self.state
        check.member(state, cmd.member)
        if cmd.instrument:
            check.market(state, cmd.instrument)
        touched: set[str] = set()
        count = 0
        for order_id, order in self.trading.live_orders().items():
            if order.member != cmd.member or order.venue != "book":
                continue
            if cmd.instrument and order.code != cmd.instrument:
                continue
            market = state.markets[order.code]
            market.book.cancel(order_id)
            market.touched.append((order.side, order.limit))
            self.trading.end(order, CancelReason.MASS_CANCEL)
            touched.add(order.code)
            count += 1
        for code in sorted(touched):
            self.trading.publish(state.markets[code])
        self.emit.mass_cancelled(cmd.cl_ord_id, cmd.member, cmd.instrument, count)
        return set()
