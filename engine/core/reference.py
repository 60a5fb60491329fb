"""The reference exchange: the executable specification of the core's order handling.

`ReferenceExchange` is `Exchange` over the reference book (engine.book.reference) with
NewOrder, CancelOrder and AmendOrder handled by the plain Python below, written to be read:
validate in the documented order (kinds, member, instrument, fresh ClOrdID, field values,
phase, quantity, price, funds), freeze, run the book command, mirror its events. The
production exchange's compiled pipeline (engine.core.orders, engine.core.pipeline) must give
the same events and state for every command; the core's tests run on both. Nothing in
production uses this module.

Every other command (sessions, auctions, pick, off-book trading) has one implementation that
both exchanges share; the reference book checks it against its own oracle semantics.
"""

from __future__ import annotations

import numpy as np

from engine.book import ReferenceBook
from engine.core import validation as check
from engine.core.batch import apply_one_by_one
from engine.core.events import EventWriter
from engine.core.exchange import Exchange
from engine.core.offbook import OffBook
from engine.core.risk import freeze_for
from engine.core.state import CoreState, LiveOrder
from engine.core.trading import Trading
from engine.core.validation import Reject, shortfall_detail, typed
from engine.protocol import AmendOrder, CancelOrder, NewOrder, RejectCode
from engine.types import OrderType, Side


class PlainOrders:
    """NewOrder, CancelOrder and AmendOrder in plain Python over any book."""

    def __init__(
        self, state: CoreState, emit: EventWriter, trading: Trading, offbook: OffBook
    ) -> None:
        self.state = state
        self.trading = trading
        self.offbook = offbook
        self.handlers = {
            NewOrder: self.new_order,
            CancelOrder: self.cancel,
            AmendOrder: self.amend,
        }

    @typed
    def new_order(self, cmd: NewOrder) -> set[str]:
        state = self.state
        check.member(state, cmd.member)
        market = check.market(state, cmd.instrument)
        check.fresh_cl_ord_id(state, cmd.member, cmd.cl_ord_id)
        check.order_fields(cmd)
        market_order = cmd.order_type == OrderType.MARKET
        check.order_phase(market, call_ok=not market_order and cmd.tif == 0)
        check.quantity(market, cmd.qty)
        if not market_order:
            check.price(market, cmd.price)
        limit = market.band[1] if market_order else cmd.price
        frozen = self.trading.freeze(market, cmd.member, cmd.side, limit, cmd.qty)
        order = LiveOrder(
            state.next_order_id, cmd.member, cmd.cl_ord_id, market.code, cmd.side, limit,
            cmd.qty, frozen,
        )  # fmt: skip
        price = 0 if market_order else cmd.price
        self.trading.accept(order, price)
        market.book.add(
            order.order_id, cmd.member, int(cmd.side), price, cmd.qty, int(cmd.order_type),
            int(cmd.tif), int(cmd.stp),
        )  # fmt: skip
        self.trading.book_events(market, "continuous", taker=order)
        return {market.code}

    @typed
    def cancel(self, cmd: CancelOrder) -> set[str]:
        state = self.state
        check.member(state, cmd.member)
        market = check.market(state, cmd.instrument)
        check.fresh_cl_ord_id(state, cmd.member, cmd.cl_ord_id)
        order = self.trading.owned(cmd.member, cmd.order_id, market)
        if order.venue != "book":
            return self.offbook.cancel(cmd, market, order)
        market.book.cancel(cmd.order_id, cmd.member)
        self.trading.book_events(market, "continuous")
        state.cl_ord_ids.add(cmd.member, cmd.cl_ord_id)
        return {market.code}

    @typed
    def amend(self, cmd: AmendOrder) -> set[str]:
        state = self.state
        accounts = state.accounts
        check.member(state, cmd.member)
        market = check.market(state, cmd.instrument)
        check.fresh_cl_ord_id(state, cmd.member, cmd.cl_ord_id)
        order = self.trading.owned(cmd.member, cmd.order_id, market)
        if order.venue != "book":
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, "only orders in the book are amended")
        check.order_phase(market)
        check.quantity(market, cmd.qty)
        check.price(market, cmd.price)
        old_price = order.limit
        if order.side == Side.BUY:
            need = freeze_for(market.instrument, cmd.price, cmd.qty)
            extra = need - order.frozen
            if extra > 0 and not accounts.can_freeze_cash(order.member, extra):
                code = RejectCode.INSUFFICIENT_FUNDS
                raise Reject(code, shortfall_detail(code, extra, more=True))
            if extra > 0:
                accounts.freeze_cash(order.member, extra)
            else:
                accounts.release_cash(order.member, -extra)
            order.frozen, order.limit = need, cmd.price
        else:
            extra = cmd.qty - order.leaves
            if extra > 0 and not accounts.can_freeze_qty(order.member, order.code, extra):
                code = RejectCode.INSUFFICIENT_ALLOWANCES
                raise Reject(code, shortfall_detail(code, extra, more=True))
            if extra > 0:
                accounts.freeze_qty(order.member, order.code, extra)
            else:
                accounts.release_qty(order.member, order.code, -extra)
        market.touched.append((order.side, old_price))
        order.leaves = cmd.qty
        market.book.amend(cmd.order_id, cmd.price, cmd.qty, cmd.member)
        self.trading.book_events(market, "continuous", taker=order)
        state.cl_ord_ids.add(cmd.member, cmd.cl_ord_id)
        return {market.code}


class ReferenceExchange(Exchange):
    """The oracle: the same rules over the reference book, by the plain handlers above."""

    book_factory = ReferenceBook
    orders_factory = PlainOrders

    def apply_batch(self, records: np.ndarray) -> bytes:
        """The records one by one through the plain handlers (the batch's specification)."""
        return apply_one_by_one(self, records)
