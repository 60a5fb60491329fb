"""Exchange: the deterministic state machine. apply(command, ts_ns) -> events.

Invariants:
- `apply` is the only mutator. It reads no clock, socket, environment or random source: time
  arrives as `ts_ns` (the sequencer's stamp) and every id (order, trade, sequence) derives
  from state, so the same commands give byte-identical encoded events on any machine.
- Validation runs before any change: a rejected command produces one `Rejected` event (code
  and text) and leaves `state_hash()` unchanged (the sequence number is not state).
- Pre-trade risk (engine.risk) freezes before the book sees an order, and every book event is
  mirrored in the accounts at once, so frozen balances always equal what live orders need.
- Orders in a book are held only by the book; `self.orders` holds off-book orders.
- Over a compiled book, new orders, cancels and amends take the compiled order path
  (engine.compiled), which must give exactly what the plain handlers here give.
- Each trade is one `Trade` event (public print and clearing record) plus a `Filled` for
  each side; `DayClosed` carries the day's trade count and `trades_digest` per instrument.

Operator commands (sessions, auctions, block trades) are applied as they come; a calendar in
the config can issue the same transitions from the commands' timestamps.
"""

from __future__ import annotations

import hashlib
from zoneinfo import ZoneInfo

import msgspec

from engine.book import Book, EventKind, ReferenceBook
from engine.compiled import CompiledOrders
from engine.config import MarketConfig
from engine.market import Market
from engine.offbook import OffBookCommands
from engine.orders import LiveOrder, Reject, order_reject, rejected, typed
from engine.protocol import (
    Accepted,
    Amended,
    AmendOrder,
    AuctionBid,
    BlockTrade,
    Cancelled,
    CancelOrder,
    Close,
    CloseCall,
    Command,
    DepthUpdate,
    EndOfDay,
    Event,
    Filled,
    Halt,
    Indicative,
    NewOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    OpenCall,
    PickOrder,
    RejectCode,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
    encode,
)
from engine.risk import Accounts, freeze_for
from engine.sessions import SessionCommands
from engine.types import CancelReason, OrderType, Phase, Side, StpMode, TimeInForce

ORDER_ENUMS = tuple(
    (name, frozenset(int(member) for member in enum))
    for name, enum in (
        ("side", Side),
        ("order_type", OrderType),
        ("tif", TimeInForce),
        ("stp", StpMode),
    )
)


class Exchange(SessionCommands, OffBookCommands, CompiledOrders):
    def __init__(self, config: MarketConfig, book_factory=Book) -> None:
        self.config = config
        self.accounts = Accounts(config.members, [i.code for i in config.instruments])
        self.markets = {
            i.code: Market(i, book_factory, index) for index, i in enumerate(config.instruments)
        }
        self.zone = ZoneInfo(config.timezone)
        self.schedule = sorted(config.schedule)
        self.seq = 0
        self.next_order_id = 1
        self.next_trade_id = config.first_trade_id
        self.orders: dict[int, LiveOrder] = {}  # off-book only; book orders live in the books
        self.cl_ord_ids: dict[int, set[str]] = {m.id: set() for m in config.members}  # today's
        self.date = ""  # the open trading day; "" between EndOfDay and StartOfDay
        # the latest trading day started (or the one the opening balances follow): the next
        # must come after it
        self.last_date = config.last_trading_day
        self.calendar_done = 0
        self._calendar_key: tuple[str, int] | None = None  # see SessionCommands._calendar_due
        self._calendar_due_ns = 0
        self.ts_ns = 0
        self.out: list[Event] = []
        self._compiled_paths()
        self._handlers = {
            NewOrder: self._new_order_compiled,
            CancelOrder: self._cancel_compiled,
            AmendOrder: self._amend_compiled,
            PickOrder: self._pick,
            StartOfDay: self._start_of_day,
            OpenCall: self._open_call,
            Uncross: self._uncross,
            Halt: self._halt,
            Resume: self._resume,
            CloseCall: self._close_call,
            Close: self._close,
            SetReference: self._set_reference,
            EndOfDay: self._end_of_day,
            OneWayAuctionOpen: self._one_way_open,
            AuctionBid: self._one_way_bid,
            OneWayAuctionClose: self._one_way_close,
            BlockTrade: self._block_trade,
        }

    # -- the one entry point ----------------------------------------------------------------------

    def apply(self, command: Command, ts_ns: int = 0) -> list[Event]:
        self.seq += 1
        self.ts_ns = ts_ns
        self.out = []
        if self.schedule:
            self._run_calendar()
        try:
            handler = self._handlers.get(type(command))
            if handler is None:
                raise Reject(RejectCode.MALFORMED, f"not a command: {type(command).__name__}")
            touched = handler(command)
        except Reject as reject:
            touched = None
            self._rejected(command, reject)
        if touched:
            for code in sorted(touched):
                self._publish(self.markets[code])
        return self.out

    def _rejected(self, command: Command, reject: Reject) -> None:
        """Answer a refused command: one Rejected event; nothing it touched is published."""
        for market in self.markets.values():
            market.touched.clear()
        self.out.append(rejected(self.seq, command, reject.code, reject.text))

    # -- validation helpers -----------------------------------------------------------------------

    def _market(self, code: str) -> Market:
        market = self.markets.get(code)
        if market is None:
            raise Reject(RejectCode.UNKNOWN_INSTRUMENT, code)
        return market

    def _member(self, member: int) -> None:
        if member not in self.accounts:
            raise Reject(RejectCode.UNKNOWN_MEMBER, str(member))

    def _fresh_cl_ord_id(self, member: int, cl_ord_id: str) -> None:
        if cl_ord_id in self.cl_ord_ids[member]:
            raise Reject(RejectCode.DUPLICATE_CLORDID, cl_ord_id)

    def _order_phase(self, market: Market, call_ok: bool = True) -> None:
        if market.phase == Phase.CLOSED:
            raise Reject(RejectCode.MARKET_CLOSED, market.code)
        if market.phase == Phase.HALTED:
            raise Reject(RejectCode.MARKET_HALTED, market.code)
        if market.in_call and not call_ok:
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, f"{market.code} is in a call")

    @staticmethod
    def _order_fields(cmd: NewOrder) -> None:
        """Enum fields hold values of their enums (the wire decoder checks this; commands
        built in process may not)."""
        for name, allowed in ORDER_ENUMS:
            value = getattr(cmd, name)
            if int(value) not in allowed:  # an int: check_types ran first
                raise Reject(RejectCode.INVALID_FIELD, f"{name} {value!r}")

    @staticmethod
    def _whole_units(market: Market, qty: int) -> None:
        if qty <= 0:
            raise Reject(RejectCode.QTY_INVALID)
        if qty % market.instrument.unit:
            raise Reject(RejectCode.QTY_NOT_WHOLE_UNIT, f"unit {market.instrument.unit} t")

    def _quantity(self, market: Market, qty: int) -> None:
        """A listed order's quantity: whole units within the order size limits."""
        self._whole_units(market, qty)
        inst = market.instrument
        if qty > inst.max_qty:
            raise Reject(RejectCode.QTY_ABOVE_MAX, f"max {inst.max_qty} t")
        if qty < inst.min_qty:
            raise Reject(RejectCode.QTY_BELOW_MIN, f"min {inst.min_qty} t")

    @staticmethod
    def _price(market: Market, price: int, band: tuple[int, int]) -> None:
        if price % market.instrument.tick:
            raise Reject(RejectCode.PRICE_OFF_TICK, f"tick {market.instrument.tick} fen")
        if not band[0] <= price <= band[1]:
            raise Reject(RejectCode.PRICE_OUTSIDE_BAND, f"band {band[0]}-{band[1]} fen")

    def _freeze(self, market: Market, member: int, side: int, limit: int, qty: int) -> int:
        """Freeze what an order needs; returns the cash frozen (0 for a sell)."""
        if side == Side.BUY:
            need = freeze_for(market.instrument, limit, qty)
            if not self.accounts.can_freeze_cash(member, need):
                raise Reject(RejectCode.INSUFFICIENT_FUNDS, f"needs {need} fen")
            self.accounts.freeze_cash(member, need)
            return need
        if not self.accounts.can_freeze_qty(member, market.code, qty):
            raise Reject(RejectCode.INSUFFICIENT_ALLOWANCES, f"needs {qty} t")
        self.accounts.freeze_qty(member, market.code, qty)
        return 0

    def _release(self, order: LiveOrder, qty: int) -> None:
        """Give back what `order` holds for `qty` more tonnes that will never trade."""
        if order.side == Side.BUY:
            keep = freeze_for(self.markets[order.code].instrument, order.limit, order.leaves - qty)
            self.accounts.release_cash(order.member, order.frozen - keep)
            order.frozen = keep
        else:
            self.accounts.release_qty(order.member, order.code, qty)
        order.leaves -= qty

    def _accept(self, order: LiveOrder, price: int) -> None:
        """Take a validated order (its id is the next one) and acknowledge it. Off-book orders
        are registered here; a book order lives in its book from the book call on."""
        self.next_order_id += 1
        if order.venue != "book":
            self.orders[order.order_id] = order
        self.cl_ord_ids[order.member].add(order.cl_ord_id)
        self.out.append(
            Accepted(
                self.seq,
                order.cl_ord_id,
                order.member,
                order.code,
                order.order_id,
                order.side,
                price,
                order.leaves,
            )
        )

    def _end(self, order: LiveOrder, reason: CancelReason) -> None:
        """An order leaves the exchange unfilled: tell its member, release what it holds."""
        self.orders.pop(order.order_id, None)
        self.out.append(
            Cancelled(self.seq, order.member, order.code, order.order_id, order.leaves, reason)
        )
        self._release(order, order.leaves)

    # -- orders -----------------------------------------------------------------------------------

    @typed
    def _new_order(self, cmd: NewOrder) -> set[str]:
        self._member(cmd.member)
        market = self._market(cmd.instrument)
        self._fresh_cl_ord_id(cmd.member, cmd.cl_ord_id)
        self._order_fields(cmd)
        market_order = cmd.order_type == OrderType.MARKET
        self._order_phase(market, call_ok=not market_order and cmd.tif == 0)
        self._quantity(market, cmd.qty)
        if not market_order:
            self._price(market, cmd.price, market.band)
        limit = market.band[1] if market_order else cmd.price
        frozen = self._freeze(market, cmd.member, cmd.side, limit, cmd.qty)
        order = LiveOrder(
            self.next_order_id,
            cmd.member,
            cmd.cl_ord_id,
            market.code,
            cmd.side,
            limit,
            cmd.qty,
            frozen,
        )
        price = 0 if market_order else cmd.price
        self._accept(order, price)
        market.book.add(
            order.order_id,
            cmd.member,
            int(cmd.side),
            price,
            cmd.qty,
            int(cmd.order_type),
            int(cmd.tif),
            int(cmd.stp),
        )
        self._book_events(market, "continuous", taker=order)
        return {market.code}

    def _owned(self, member: int, order_id: int, market: Market) -> LiveOrder:
        order = self.orders.get(order_id) or self._book_order(market, order_id)
        if order is None or order.code != market.code:
            raise order_reject(RejectCode.UNKNOWN_ORDER, order_id)
        if order.member != member:
            raise order_reject(RejectCode.NOT_OWNER, order_id)
        return order

    @typed
    def _cancel(self, cmd: CancelOrder) -> set[str]:
        self._member(cmd.member)
        market = self._market(cmd.instrument)
        self._fresh_cl_ord_id(cmd.member, cmd.cl_ord_id)
        order = self._owned(cmd.member, cmd.order_id, market)
        if order.venue == "one_way_bid":
            market.one_way.bids = [b for b in market.one_way.bids if b.order_id != order.order_id]
            self._end(order, CancelReason.USER)
            self.cl_ord_ids[cmd.member].add(cmd.cl_ord_id)
            return set()
        if order.venue != "book":
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, "an auction offer ends with the auction")
        market.book.cancel(cmd.order_id, cmd.member)
        self._book_events(market, "continuous")
        self.cl_ord_ids[cmd.member].add(cmd.cl_ord_id)
        return {market.code}

    @typed
    def _amend(self, cmd: AmendOrder) -> set[str]:
        self._member(cmd.member)
        market = self._market(cmd.instrument)
        self._fresh_cl_ord_id(cmd.member, cmd.cl_ord_id)
        order = self._owned(cmd.member, cmd.order_id, market)
        if order.venue != "book":
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, "only orders in the book are amended")
        self._order_phase(market)
        self._quantity(market, cmd.qty)
        self._price(market, cmd.price, market.band)
        old_price = order.limit
        if order.side == Side.BUY:
            need = freeze_for(market.instrument, cmd.price, cmd.qty)
            extra = need - order.frozen
            if extra > 0 and not self.accounts.can_freeze_cash(order.member, extra):
                raise Reject(RejectCode.INSUFFICIENT_FUNDS, f"needs {extra} fen more")
            if extra > 0:
                self.accounts.freeze_cash(order.member, extra)
            else:
                self.accounts.release_cash(order.member, -extra)
            order.frozen, order.limit = need, cmd.price
        else:
            extra = cmd.qty - order.leaves
            if extra > 0 and not self.accounts.can_freeze_qty(order.member, order.code, extra):
                raise Reject(RejectCode.INSUFFICIENT_ALLOWANCES, f"needs {extra} t more")
            if extra > 0:
                self.accounts.freeze_qty(order.member, order.code, extra)
            else:
                self.accounts.release_qty(order.member, order.code, -extra)
        market.touched.append((order.side, old_price))
        order.leaves = cmd.qty
        market.book.amend(cmd.order_id, cmd.price, cmd.qty, cmd.member)
        self._book_events(market, "continuous", taker=order)
        self.cl_ord_ids[cmd.member].add(cmd.cl_ord_id)
        return {market.code}

    @typed
    def _pick(self, cmd: PickOrder) -> set[str]:
        self._member(cmd.member)
        market = self._market(cmd.instrument)
        self._fresh_cl_ord_id(cmd.member, cmd.cl_ord_id)
        self._order_phase(market, call_ok=False)
        self._quantity(market, cmd.qty)
        resting = market.book.order(cmd.target_order_id)
        if resting is None:
            raise Reject(RejectCode.UNKNOWN_ORDER, str(cmd.target_order_id))
        price = resting[1]
        frozen = self._freeze(market, cmd.member, cmd.side, price, cmd.qty)
        order = LiveOrder(
            self.next_order_id,
            cmd.member,
            cmd.cl_ord_id,
            market.code,
            cmd.side,
            price,
            cmd.qty,
            frozen,
        )
        market.book.pick(order.order_id, cmd.member, int(cmd.side), cmd.target_order_id, cmd.qty)
        events = market.book.events()
        if events[0].kind == EventKind.REJECTED:  # top five levels, side, own order, quantity
            if cmd.side == Side.BUY:
                self.accounts.release_cash(cmd.member, frozen)
            else:
                self.accounts.release_qty(cmd.member, market.code, cmd.qty)
            raise Reject(RejectCode(events[0].code))
        self._accept(order, price)
        self._book_events(market, "pick", events, taker=order)
        return {market.code}

    # -- book events -> accounts and protocol events ------------------------------------------

    def _book_events(
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
                self._trade(
                    market,
                    first,
                    second,
                    e.price,
                    e.qty,
                    "call" if auction else venue,
                    aggressor=not auction,
                )
            elif e.kind == EventKind.CANCELLED:
                if taker is not None and taker.order_id == e.oid:
                    order = taker
                else:
                    order = self._resting(market, e.oid, e.side, e.price, e.qty, e.owner)
                    market.touched.append((e.side, e.price))
                assert e.qty == order.leaves, f"book and core disagree on order {e.oid}"
                self._end(order, CancelReason(e.code))
            elif e.kind == EventKind.RESTED:
                market.touched.append((e.side, e.price))
            elif e.kind == EventKind.AMENDED:
                self.out.append(
                    Amended(self.seq, e.owner, market.code, e.oid, e.price, e.qty, bool(e.code))
                )
            elif e.kind == EventKind.REJECTED:
                raise AssertionError(f"the book rejected what the core validated: {e}")

    def _resting(
        self, market: Market, order_id: int, side: int, limit: int, leaves: int, member: int
    ) -> LiveOrder:
        """The core's view of a book order: what it holds follows from its limit and leaves."""
        frozen = freeze_for(market.instrument, limit, leaves) if side == Side.BUY else 0
        return LiveOrder(order_id, member, "", market.code, side, limit, leaves, frozen)

    def _filled_order(
        self, market: Market, order_id: int, side: int, limit: int, leaves_after: int, fill
    ) -> LiveOrder:
        """A book order as it stood just before `fill` (a FILL book event) took from it."""
        member = fill.owner if order_id == fill.oid else fill.owner2
        return self._resting(market, order_id, side, limit, leaves_after + fill.qty, member)

    def _book_order(self, market: Market, order_id: int) -> LiveOrder | None:
        found = market.book.order(order_id)
        if found is None:
            return None
        side, price, qty, owner = found
        return self._resting(market, order_id, side, price, qty, owner)

    def live_orders(self) -> dict[int, LiveOrder]:
        """Every order that can still trade (book and off-book), by id."""
        live = dict(self.orders)
        for market in self.markets.values():
            for order_id, side, price, qty, owner, _ in market.book.orders():
                live[order_id] = self._resting(market, order_id, side, price, qty, owner)
        return dict(sorted(live.items()))

    def _trade(
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
        taker_side = taker.side
        buy, sell = (taker, maker) if taker_side == Side.BUY else (maker, taker)
        cost, _ = self.accounts.settle_trade(market.instrument, buy.member, sell.member, price, qty)
        buy.frozen -= cost
        buy.leaves -= qty
        sell.leaves -= qty
        self._release(buy, 0)  # a better price than the limit frees cash at once
        trade = Trade(
            self.seq,
            self.next_trade_id,
            self.ts_ns,
            self.date,
            market.code,
            price,
            qty,
            buy.member,
            sell.member,
            buy.order_id,
            sell.order_id,
            int(taker_side) if aggressor else -1,
            venue,
        )
        self.next_trade_id += 1
        market.record(trade)
        self.out.append(trade)
        for order in (buy, sell):
            self.out.append(
                Filled(
                    self.seq,
                    trade.trade_id,
                    order.member,
                    market.code,
                    order.order_id,
                    order.side,
                    price,
                    qty,
                    order.leaves,
                    aggressor and order is taker,
                )
            )
            if order.leaves == 0:  # nothing left frozen: the buy's release above freed it
                self.orders.pop(order.order_id, None)

    def _publish(self, market: Market) -> None:
        """Market data after a command: each changed level once, then the indicative."""
        for side, price in dict.fromkeys(market.touched):
            qty, orders = market.book.level(side, price)
            self.out.append(DepthUpdate(self.seq, market.code, side, price, qty, orders))
        market.touched.clear()
        if market.in_call:
            found = market.book.equilibrium(market.reference)
            indicative = (found.price or 0, found.volume, found.imbalance)
            if indicative != market.published_indicative:
                market.published_indicative = indicative
                self.out.append(Indicative(self.seq, market.code, *indicative))

    # -- state ------------------------------------------------------------------------------------

    def state_hash(self) -> str:
        """SHA-256 over everything that decides future behaviour (not the sequence number)."""
        state = [
            self.date,
            self.last_date,
            self.next_order_id,
            self.next_trade_id,
            self.calendar_done,
            sorted((member, sorted(seen)) for member, seen in self.cl_ord_ids.items()),
            [
                (
                    o.order_id,
                    o.member,
                    o.cl_ord_id,
                    o.code,
                    o.side,
                    o.limit,
                    o.leaves,
                    o.frozen,
                    o.venue,
                )
                for o in sorted(self.orders.values(), key=lambda o: o.order_id)  # off-book
            ],
            [self.markets[code].snapshot() for code in sorted(self.markets)],
            self.accounts.snapshot(),
        ]
        return hashlib.sha256(msgspec.msgpack.encode(state)).hexdigest()

    def encoded(self, events: list[Event]) -> bytes:
        return b"".join(encode(e) for e in events)


class ReferenceExchange(Exchange):
    """The executable specification: the same rules over the reference book, by the plain
    handlers only. Tests hold `Exchange` to it; nothing in production uses it."""

    def __init__(self, config: MarketConfig) -> None:
        super().__init__(config, book_factory=ReferenceBook)
