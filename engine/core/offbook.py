"""Off-book trading of the exchange core: the one-way auction (单向竞价) and block trades.

A part of `engine.core.Exchange` over the core's declared state (engine.core.state).
One-way auction: the seller's allowances freeze when it opens; bids between the floor
(previous close, or that minus 10%) and the cap (the close plus 10%;
`Instrument.one_way_band_ppm`, not the listed band) freeze their cash; at the close
`allocate_one_way` ranks them by price then time and fills up to the offer at uniform or
pay-as-bid prices; everything unfilled is released. Block trades (大宗协议, >= the block
minimum, within +-30% of the reference) are validated and printed straight into the
accounts, never through the book, and do not count towards the close. Refusals beyond the
core's usual checks: a one-way auction is for a CEA vintage on a trading day, and its seller
may not bid in it; a block trade needs the market neither closed nor halted and, when a
schedule runs the day, the config's block hours.
"""

from __future__ import annotations

from engine.book.auction import AuctionBid as RankedBid
from engine.book.auction import allocate_one_way
from engine.core import validation as check
from engine.core.events import EventWriter
from engine.core.market import Market, OneWayAuction
from engine.core.state import CoreState, LiveOrder
from engine.core.trading import Trading
from engine.core.validation import Reject, typed
from engine.protocol import (
    AuctionBid,
    BlockTrade,
    CancelOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    RejectCode,
)
from engine.types import CancelReason, Phase, Side


class OffBook:
    """One-way auctions and block trades: orders that never enter a book."""

    def __init__(self, state: CoreState, emit: EventWriter, trading: Trading) -> None:
        self.state = state
        self.emit = emit
        self.trading = trading
        self.handlers = {
            OneWayAuctionOpen: self.one_way_open,
            AuctionBid: self.one_way_bid,
            OneWayAuctionClose: self.one_way_close,
            BlockTrade: self.block_trade,
        }

    def cancel(self, cmd: CancelOrder, market: Market, order: LiveOrder) -> set[str]:
        """A cancel of an off-book order: a one-way bid leaves its auction; an auction's offer
        ends only with the auction. The cancel's ClOrdID is spent once accepted."""
        if order.venue != "one_way_bid":
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, "an auction offer ends with the auction")
        auction = market.one_way
        auction.bids = [b for b in auction.bids if b.order_id != order.order_id]
        self.trading.end(order, CancelReason.USER)
        self.state.cl_ord_ids.add(cmd.member, cmd.cl_ord_id)
        return set()

    # -- one-way auction and block trades ------------------------------------------------------

    @typed
    def one_way_open(self, cmd: OneWayAuctionOpen) -> set[str]:
        check.member(self.state, cmd.seller)
        market = check.market(self.state, cmd.instrument)
        if market.instrument.product != "CEA":
            raise Reject(
                RejectCode.INVALID_FIELD,
                f"one-way auctions are for CEA vintages; {market.code} is "
                f"{market.instrument.product}",
            )
        if not self.state.date:
            raise Reject(RejectCode.MARKET_CLOSED, "no trading day: StartOfDay first")
        if market.one_way is not None:
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, "an auction is already open")
        check.whole_units(market, cmd.qty)
        if cmd.qty < market.instrument.block_min_qty:
            raise Reject(RejectCode.QTY_BELOW_MIN, f"min {market.instrument.block_min_qty} t")
        self.trading.freeze(market, cmd.seller, Side.SELL, 0, cmd.qty)
        inst = market.instrument
        low, high = inst.band(market.reference, inst.one_way_band_ppm)
        floor = low if cmd.floor_minus_10pct else market.reference
        offer_id = self.state.next_order_id
        market.one_way = OneWayAuction(offer_id, cmd.seller, cmd.qty, floor, high, cmd.uniform)
        self.state.orders[offer_id] = LiveOrder(
            offer_id, cmd.seller, "", market.code, Side.SELL, floor, cmd.qty,
            venue="one_way_offer",
        )  # fmt: skip
        self.emit.accepted(
            f"one-way-{offer_id}", cmd.seller, market.code, offer_id, Side.SELL, floor, cmd.qty
        )
        self.state.next_order_id += 1
        return set()

    @typed
    def one_way_bid(self, cmd: AuctionBid) -> set[str]:
        check.member(self.state, cmd.member)
        market = check.market(self.state, cmd.instrument)
        auction = market.one_way
        if auction is None:
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, f"no one-way auction on {market.code}")
        check.fresh_cl_ord_id(self.state, cmd.member, cmd.cl_ord_id)
        if cmd.member == auction.seller:
            raise Reject(RejectCode.SELF_TRADE, "the seller may not bid in its own auction")
        check.whole_units(market, cmd.qty)  # no order size limit: bids may be block-sized
        check.price(market, cmd.price, (auction.floor, auction.cap))
        frozen = self.trading.freeze(market, cmd.member, Side.BUY, cmd.price, cmd.qty)
        order = LiveOrder(
            self.state.next_order_id,
            cmd.member,
            cmd.cl_ord_id,
            market.code,
            Side.BUY,
            cmd.price,
            cmd.qty,
            frozen,
            venue="one_way_bid",
        )
        auction.bids.append(
            RankedBid(order.order_id, cmd.member, cmd.price, cmd.qty, len(auction.bids))
        )
        self.trading.accept(order, cmd.price)
        return set()

    @typed
    def one_way_close(self, cmd: OneWayAuctionClose) -> set[str]:
        market = check.market(self.state, cmd.instrument)
        auction = market.one_way
        if auction is None:
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, f"no one-way auction on {market.code}")
        fills = allocate_one_way(auction.qty, auction.bids, auction.uniform)
        for fill in fills:
            self.trading.trade(
                market,
                self.state.orders[fill.order_id],
                self.state.orders[auction.auction_id],
                fill.price,
                fill.qty,
                "one_way",
                aggressor=False,
            )
        for order_id in [b.order_id for b in auction.bids] + [auction.auction_id]:
            if order_id in self.state.orders:
                self.trading.end(self.state.orders[order_id], CancelReason.UNFILLED_REMAINDER)
        volume = sum(f.qty for f in fills)
        self.emit.auction_result(market.code, "one_way", fills[-1].price if fills else 0, volume)
        market.one_way = None
        return set()

    @typed
    def block_trade(self, cmd: BlockTrade) -> set[str]:
        check.member(self.state, cmd.buyer)
        check.member(self.state, cmd.seller)
        market = check.market(self.state, cmd.instrument)
        check.fresh_cl_ord_id(self.state, cmd.buyer, cmd.cl_ord_id)
        if market.phase == Phase.CLOSED:
            raise Reject(RejectCode.MARKET_CLOSED, market.code)
        if market.phase == Phase.HALTED:
            raise Reject(RejectCode.MARKET_HALTED, market.code)
        self._block_hours()
        inst = market.instrument
        if cmd.qty < inst.block_min_qty:
            raise Reject(RejectCode.QTY_BELOW_MIN, f"block trades from {inst.block_min_qty} t")
        if cmd.qty % inst.unit:
            raise Reject(RejectCode.QTY_NOT_WHOLE_UNIT)
        check.price(market, cmd.price, inst.band(market.reference, inst.block_band_ppm))
        if cmd.buyer == cmd.seller:
            raise Reject(RejectCode.SELF_TRADE)
        frozen = self.trading.freeze(market, cmd.buyer, Side.BUY, cmd.price, cmd.qty)
        try:
            self.trading.freeze(market, cmd.seller, Side.SELL, cmd.price, cmd.qty)
        except Reject:
            self.state.accounts.release_cash(cmd.buyer, frozen)
            raise
        buy = LiveOrder(
            self.state.next_order_id,
            cmd.buyer,
            cmd.cl_ord_id,
            market.code,
            Side.BUY,
            cmd.price,
            cmd.qty,
            frozen,
            venue="block",
        )
        sell = LiveOrder(
            self.state.next_order_id + 1,
            cmd.seller,
            cmd.cl_ord_id,
            market.code,
            Side.SELL,
            cmd.price,
            cmd.qty,
            venue="block",
        )
        self.state.next_order_id += 2
        self.state.cl_ord_ids.add(cmd.buyer, cmd.cl_ord_id)
        self.trading.trade(market, buy, sell, cmd.price, cmd.qty, "block", aggressor=False)
        return set()

    def _block_hours(self) -> None:
        """With a schedule, the clock decides: block trades only within the block hours."""
        if not self.state.schedule:
            return
        start, end = self.state.config.block_hours
        now = self.state.local_time().strftime("%H:%M")
        if not start <= now < end:
            raise Reject(
                RejectCode.UNSUPPORTED_IN_PHASE,
                f"block trades are reported {start}-{end} ({self.state.config.timezone}); "
                f"it is {now}",
            )
