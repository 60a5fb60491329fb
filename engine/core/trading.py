"""Trading: what every path that moves an order shares (freeze, accept, trade, release, end),
the mirroring of a book's events in the accounts, market data after a command, and pick.

Invariants:
- Pre-trade risk freezes before the book sees an order, and every book event is mirrored in
  the accounts at once, so frozen balances always equal what live orders need: a buy holds
  `freeze_for(limit, leaves)`, a sell its leaves.
- A fill's maker rests at the fill price; the incoming order's limit may differ from the
  prices it takes; in an uncross every order's limit is its price before the call.
- `publish` emits each level a command changed once, in the order first touched, then the
  indicative of a market in a call when it changed.
"""

from __future__ import annotations

from engine.book import EventKind
from engine.core import validation as check
from engine.core.events import EventWriter
from engine.core.market import Market
from engine.core.risk import freeze_for
from engine.core.state import CoreState, LiveOrder
from engine.core.validation import Reject, order_reject, shortfall_detail, typed
from engine.protocol import PickOrder, RejectCode
from engine.types import CancelReason, Side


class Trading:
    def __init__(self, state: CoreState, emit: EventWriter) -> None:
        self.state = state
        self.emit = emit

    # -- balances ----------------------------------------------------------------------------------

    def freeze(self, market: Market, member: int, side: int, limit: int, qty: int) -> int:
        """Freeze what an order needs; returns the cash frozen (0 for a sell)."""
        accounts = self.state.accounts
        if side == Side.BUY:
            need = freeze_for(market.instrument, limit, qty)
            if not accounts.can_freeze_cash(member, need):
                code = RejectCode.INSUFFICIENT_FUNDS
                raise Reject(code, shortfall_detail(code, need, more=False))
            accounts.freeze_cash(member, need)
            return need
        if not accounts.can_freeze_qty(member, market.code, qty):
            code = RejectCode.INSUFFICIENT_ALLOWANCES
            raise Reject(code, shortfall_detail(code, qty, more=False))
        accounts.freeze_qty(member, market.code, qty)
        return 0

    def release(self, order: LiveOrder, qty: int) -> None:
        """Give back what `order` holds for `qty` more tonnes that will never trade."""
        accounts = self.state.accounts
        if order.side == Side.BUY:
            instrument = self.state.markets[order.code].instrument
            keep = freeze_for(instrument, order.limit, order.leaves - qty)
            accounts.release_cash(order.member, order.frozen - keep)
            order.frozen = keep
        else:
            accounts.release_qty(order.member, order.code, qty)
        order.leaves -= qty

    # -- order life --------------------------------------------------------------------------------

    def accept(self, order: LiveOrder, price: int) -> None:
        """Take a validated order (its id is the next one) and acknowledge it. Off-book orders
        are registered here; a book order lives in its book from the book call on."""
        state = self.state
        state.next_order_id += 1
        if order.venue != "book":
            state.orders[order.order_id] = order
        state.cl_ord_ids.add(order.member, order.cl_ord_id)
        self.emit.accepted(
            order.cl_ord_id, order.member, order.code, order.order_id, order.side, price,
            order.leaves,
        )  # fmt: skip

    def end(self, order: LiveOrder, reason: CancelReason) -> None:
        """An order leaves the exchange unfilled: tell its member, release what it holds."""
        self.state.orders.pop(order.order_id, None)
        self.emit.cancelled(order.member, order.code, order.order_id, order.leaves, reason)
        self.release(order, order.leaves)

    def trade(
        self,
        market: Market,
        taker: LiveOrder,
        maker: LiveOrder,
        price: int,
        qty: int,
        venue: str,
        aggressor: bool,
    ) -> None:
        """One trade between two orders as they stand before it (updated in place); an
        off-book order that is now complete leaves the registry."""
        buy, sell = (taker, maker) if taker.side == Side.BUY else (maker, taker)
        cost, _ = self.state.accounts.settle_trade(
            market.instrument, buy.member, sell.member, price, qty
        )
        fee = cost - price * qty  # each side's
        buy.frozen -= cost
        buy.leaves -= qty
        sell.leaves -= qty
        self.release(buy, 0)  # a better price than the limit frees cash at once
        self.emit.trade(
            market,
            price,
            qty,
            fee,
            (buy.member, buy.order_id, buy.leaves),
            (sell.member, sell.order_id, sell.leaves),
            int(taker.side) if aggressor else -1,
            venue,
        )
        for order in (buy, sell):
            if order.leaves == 0:  # nothing left frozen: the buy's release above freed it
                self.state.orders.pop(order.order_id, None)

    # -- book orders -------------------------------------------------------------------------------

    @staticmethod
    def resting(
        market: Market, order_id: int, side: int, limit: int, leaves: int, member: int
    ) -> LiveOrder:
        """The core's view of a book order: what it holds follows from its limit and leaves."""
        frozen = freeze_for(market.instrument, limit, leaves) if side == Side.BUY else 0
        return LiveOrder(order_id, member, "", market.code, side, limit, leaves, frozen)

    def book_order(self, market: Market, order_id: int) -> LiveOrder | None:
        found = market.book.order(order_id)
        if found is None:
            return None
        side, price, qty, owner = found
        return self.resting(market, order_id, side, price, qty, owner)

    def owned(self, member: int, order_id: int, market: Market) -> LiveOrder:
        """The member's live order `order_id` of `market`, off the book or in it."""
        order = self.state.orders.get(order_id) or self.book_order(market, order_id)
        if order is None or order.code != market.code:
            raise order_reject(RejectCode.UNKNOWN_ORDER, order_id)
        if order.member != member:
            raise order_reject(RejectCode.NOT_OWNER, order_id)
        return order

    def live_orders(self) -> dict[int, LiveOrder]:
        """Every order that can still trade (book and off-book), by id."""
        live = dict(self.state.orders)
        for market in self.state.markets.values():
            for order_id, side, price, qty, owner, _ in market.book.orders():
                live[order_id] = self.resting(market, order_id, side, price, qty, owner)
        return dict(sorted(live.items()))

    def book_events(
        self,
        market: Market,
        venue: str,
        events=None,
        taker: LiveOrder | None = None,
        limits: dict[int, int] | None = None,
    ) -> None:
        """Mirror book events in the accounts and emit them. A fill's maker rests at the fill
        price; `taker` is the incoming order (its limit may differ from the prices it takes);
        in an uncross every order's limit comes from `limits` (id -> price before the call)."""
        for e in market.book.events() if events is None else events:
            if e.kind == EventKind.FILL:
                auction = e.code == 1
                if auction:
                    first = self._filled_order(market, e.oid, e.side, limits[e.oid], e.leaves, e)
                    market.touched.append((e.side, first.limit))
                else:
                    first = taker
                    assert taker is not None and taker.order_id == e.oid
                maker_limit = limits[e.oid2] if auction else e.price
                market.touched.append((1 - e.side, maker_limit))
                second = self._filled_order(market, e.oid2, 1 - e.side, maker_limit, e.leaves2, e)
                self.trade(
                    market, first, second, e.price, e.qty, "call" if auction else venue,
                    aggressor=not auction,
                )  # fmt: skip
            elif e.kind == EventKind.CANCELLED:
                if taker is not None and taker.order_id == e.oid:
                    order = taker
                else:
                    order = self.resting(market, e.oid, e.side, e.price, e.qty, e.owner)
                    market.touched.append((e.side, e.price))
                assert e.qty == order.leaves, f"book and core disagree on order {e.oid}"
                self.end(order, CancelReason(e.code))
            elif e.kind == EventKind.RESTED:
                market.touched.append((e.side, e.price))
            elif e.kind == EventKind.AMENDED:
                self.emit.amended(e.owner, market.code, e.oid, e.price, e.qty, bool(e.code))
            elif e.kind == EventKind.REJECTED:
                raise AssertionError(f"the book rejected what the core validated: {e}")

    def _filled_order(
        self, market: Market, order_id: int, side: int, limit: int, leaves_after: int, fill
    ) -> LiveOrder:
        """A book order as it stood just before `fill` (a FILL book event) took from it."""
        member = fill.owner if order_id == fill.oid else fill.owner2
        return self.resting(market, order_id, side, limit, leaves_after + fill.qty, member)

    # -- market data -------------------------------------------------------------------------------

    def publish(self, market: Market) -> None:
        """Market data after a command: each changed level once, then the indicative."""
        for side, price in dict.fromkeys(market.touched):
            qty, orders = market.book.level(side, price)
            self.emit.depth(market.code, side, price, qty, orders)
        market.touched.clear()
        if market.in_call:
            found = market.book.equilibrium(market.reference)
            indicative = (found.price or 0, found.volume, found.imbalance)
            if indicative != market.published_indicative:
                market.published_indicative = indicative
                self.emit.indicative(market.code, *indicative)

    # -- pick --------------------------------------------------------------------------------------

    @typed
    def pick(self, cmd: PickOrder) -> set[str]:
        """点选: lift the named resting order at its price (one path for every book)."""
        state = self.state
        check.member(state, cmd.member)
        market = check.market(state, cmd.instrument)
        check.fresh_cl_ord_id(state, cmd.member, cmd.cl_ord_id)
        check.order_phase(market, call_ok=False)
        check.quantity(market, cmd.qty)
        resting = market.book.order(cmd.target_order_id)
        if resting is None:
            raise Reject(RejectCode.UNKNOWN_ORDER, str(cmd.target_order_id))
        price = resting[1]
        frozen = self.freeze(market, cmd.member, cmd.side, price, cmd.qty)
        order = LiveOrder(
            state.next_order_id, cmd.member, cmd.cl_ord_id, market.code, cmd.side, price,
            cmd.qty, frozen,
        )  # fmt: skip
        market.book.pick(order.order_id, cmd.member, int(cmd.side), cmd.target_order_id, cmd.qty)
        events = market.book.events()
        if events[0].kind == EventKind.REJECTED:  # top five levels, side, own order, quantity
            if cmd.side == Side.BUY:
                state.accounts.release_cash(cmd.member, frozen)
            else:
                state.accounts.release_qty(cmd.member, market.code, cmd.qty)
            raise Reject(RejectCode(events[0].code))
        self.accept(order, price)
        self.book_events(market, "pick", events, taker=order)
        return {market.code}
