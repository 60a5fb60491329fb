"""ReferenceBook: the executable specification of the order book, in the most obvious Python.

Invariants: the same contract and the same events, field for field, as `engine.book.Book`
(the property tests hold the two to it after every command). One `SortedDict` of price ->
`deque` of orders per side (oldest first) and a dict of live orders by id. Nothing here is
optimised beyond the obvious; when the two books disagree, read this file to decide which is
right.

Complexity: O(log levels) to add a level, O(level length) to cancel from the middle of a level.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from msgspec.structs import astuple
from sortedcontainers import SortedDict

from engine.book.auction import Equilibrium, equilibrium
from engine.book.events import EVENT_DTYPE, BookEvent, BookReject, EventKind
from engine.book.layout import (
    MAX_ORDER_ID,
    MAX_OWNER,
    MAX_PRICE,
    MAX_QTY,
    PICK_LEVELS,
    check_band,
    check_side,
)
from engine.types import CancelReason, OrderType, Side, StpMode, TimeInForce, as_ints

Level = tuple[int, int, int]


@dataclass(slots=True, eq=False)  # identity: deque.remove must find this very order
class _Order:
    oid: int
    owner: int
    side: int
    price: int
    qty: int
    stp: int
    entry: int = -1  # when it joined its level's queue (time priority)


class ReferenceBook:
    def __init__(self, tick: int = 1, band: tuple[int, int] | None = None) -> None:
        if tick <= 0:
            raise ValueError(f"tick must be a positive integer, got {tick}")
        self.tick = tick
        self.band = None
        if band is not None:
            self.set_band(*band)
        self.levels: tuple[SortedDict, SortedDict] = (SortedDict(), SortedDict())
        self.live: dict[int, _Order] = {}
        self._events: list[BookEvent] = []
        self.fills = 0
        self.traded_qty = 0
        self.collecting = False  # call phase: rest without matching
        self._entries = 0

    def set_collecting(self, collecting: bool) -> None:
        self.collecting = bool(collecting)

    def set_band(self, low: int, high: int) -> None:
        check_band(low, high, self.tick)
        self.band = (low, high)

    def clear_band(self) -> None:
        self.band = None

    # -- helpers ----------------------------------------------------------------------------------

    def _emit(self, kind: EventKind, oid: int, **fields: int) -> None:
        self._events.append(BookEvent(int(kind), oid, **fields))

    def _reject(self, oid: int, code: BookReject, side: int = 0) -> int:
        self._emit(EventKind.REJECTED, oid, code=int(code), side=side)
        return len(self._events)

    def _price_error(self, price: int) -> BookReject | None:
        if price <= 0 or price > MAX_PRICE:
            return BookReject.PRICE_OUT_OF_RANGE
        if price % self.tick:
            return BookReject.PRICE_OFF_TICK
        if self.band is not None and not self.band[0] <= price <= self.band[1]:
            return BookReject.PRICE_OUTSIDE_BAND
        return None

    def _best_price(self, side: int) -> int | None:
        levels = self.levels[side]
        if not levels:
            return None
        return levels.peekitem(-1 if side == Side.BUY else 0)[0]

    def _prices_best_first(self, side: int):
        levels = self.levels[side]
        return reversed(levels) if side == Side.BUY else iter(levels)

    @staticmethod
    def _crosses(side: int, limit: int, price: int) -> bool:
        return price <= limit if side == Side.BUY else price >= limit

    def _remove(self, order: _Order) -> None:
        level = self.levels[order.side][order.price]
        level.remove(order)
        if not level:
            del self.levels[order.side][order.price]
        del self.live[order.oid]

    def _rest(self, order: _Order) -> None:
        order.entry, self._entries = self._entries, self._entries + 1
        self.levels[order.side].setdefault(order.price, deque()).append(order)
        self.live[order.oid] = order

    def _fill(self, oid: int, owner: int, side: int, qty: int, maker: _Order) -> int:
        done = min(qty, maker.qty)
        qty -= done
        maker.qty -= done
        self.fills += 1
        self.traded_qty += done
        self._emit(
            EventKind.FILL,
            oid,
            oid2=maker.oid,
            price=maker.price,
            qty=done,
            leaves=qty,
            leaves2=maker.qty,
            side=side,
            owner=owner,
            owner2=maker.owner,
        )
        if maker.qty == 0:
            self._remove(maker)
        return qty

    def _match(self, oid: int, owner: int, side: int, limit: int, qty: int, stp: int):
        """Returns (quantity left, whether self-trade prevention ended the incoming order)."""
        opp = 1 - side
        while qty > 0:
            price = self._best_price(opp)
            if price is None or not self._crosses(side, limit, price):
                break
            for maker in list(self.levels[opp][price]):
                if qty == 0:
                    break
                if maker.owner != owner:
                    qty = self._fill(oid, owner, side, qty, maker)
                    continue
                if stp == StpMode.CANCEL_INCOMING:
                    return qty, True
                self._emit(
                    EventKind.CANCELLED,
                    maker.oid,
                    price=price,
                    qty=maker.qty,
                    code=int(CancelReason.STP_RESTING),
                    side=opp,
                    owner=owner,
                )
                self._remove(maker)
                if stp == StpMode.CANCEL_BOTH:
                    return qty, True
        return qty, False

    def _fok_can_fill(self, owner: int, side: int, limit: int, qty: int, stp: int) -> bool:
        opp = 1 - side
        available = 0
        for price in self._prices_best_first(opp):
            if not self._crosses(side, limit, price):
                return False
            for maker in self.levels[opp][price]:
                if maker.owner == owner:
                    if stp != StpMode.CANCEL_RESTING:
                        return False
                    continue
                available += maker.qty
                if available >= qty:
                    return True
        return False

    def _finish(self, order: _Order, left: int, stp_hit: bool, rests: bool) -> None:
        if left == 0:
            return
        if stp_hit or not rests:
            reason = CancelReason.STP_INCOMING if stp_hit else CancelReason.UNFILLED_REMAINDER
            self._emit(
                EventKind.CANCELLED,
                order.oid,
                price=order.price,
                qty=left,
                code=int(reason),
                side=order.side,
                owner=order.owner,
            )
            return
        order.qty = left
        self._rest(order)
        self._emit(
            EventKind.RESTED,
            order.oid,
            price=order.price,
            qty=left,
            side=order.side,
            owner=order.owner,
        )

    # -- commands ---------------------------------------------------------------------------------

    def add(
        self,
        order_id: int,
        owner: int,
        side: int,
        price: int,
        qty: int,
        order_type: int = OrderType.LIMIT,
        tif: int = TimeInForce.DAY,
        stp: int = StpMode.CANCEL_INCOMING,
    ) -> int:
        order_id, owner, side, price, qty, order_type, tif, stp = as_ints(
            "order_id owner side price qty order_type tif stp",
            (order_id, owner, side, price, qty, order_type, tif, stp),
        )
        self._events = []
        if not 0 <= order_id < MAX_ORDER_ID:
            return self._reject(order_id, BookReject.INVALID_ORDER_ID, side)
        if (
            not 0 <= owner < MAX_OWNER
            or side not in (0, 1)
            or order_type not in (1, 2)
            or tif not in (0, 1, 2)
            or stp not in (0, 1, 2)
        ):
            return self._reject(order_id, BookReject.INVALID_FIELD, side)
        if self.collecting and (order_type != OrderType.LIMIT or tif != TimeInForce.DAY):
            return self._reject(order_id, BookReject.UNSUPPORTED_IN_PHASE, side)
        if not 0 < qty <= MAX_QTY:
            return self._reject(order_id, BookReject.QTY_INVALID, side)
        if order_type == OrderType.LIMIT:
            error = self._price_error(price)
            if error is not None:
                return self._reject(order_id, error, side)
            limit = price
        else:
            price = 0
            tif = TimeInForce.IOC if tif == TimeInForce.DAY else tif
            if side == Side.BUY:
                limit = self.band[1] if self.band else 2**63 - 1
            else:
                limit = self.band[0] if self.band else 0
        if order_id in self.live:
            return self._reject(order_id, BookReject.DUPLICATE_ORDER_ID, side)
        if tif == TimeInForce.FOK and not self._fok_can_fill(owner, side, limit, qty, stp):
            self._emit(
                EventKind.CANCELLED,
                order_id,
                price=price,
                qty=qty,
                code=int(CancelReason.FOK_UNFILLED),
                side=side,
                owner=owner,
            )
            return len(self._events)
        left, stp_hit = (
            (qty, False) if self.collecting else self._match(order_id, owner, side, limit, qty, stp)
        )
        order = _Order(order_id, owner, side, price, qty, stp)
        self._finish(order, left, stp_hit, tif == TimeInForce.DAY)
        return len(self._events)

    def _find_owned(self, order_id: int, owner: int) -> _Order | None:
        if not 0 <= order_id < MAX_ORDER_ID:
            self._reject(order_id, BookReject.INVALID_ORDER_ID)
            return None
        order = self.live.get(order_id)
        if order is None:
            self._reject(order_id, BookReject.UNKNOWN_ORDER)
            return None
        if owner >= 0 and order.owner != owner:
            self._reject(order_id, BookReject.NOT_OWNER, order.side)
            return None
        return order

    def cancel(self, order_id: int, owner: int = -1) -> int:
        order_id, owner = as_ints("order_id owner", (order_id, owner))
        self._events = []
        order = self._find_owned(order_id, owner)
        if order is not None:
            self._emit(
                EventKind.CANCELLED,
                order_id,
                price=order.price,
                qty=order.qty,
                code=int(CancelReason.USER),
                side=order.side,
                owner=order.owner,
            )
            self._remove(order)
        return len(self._events)

    def amend(self, order_id: int, price: int, qty: int, owner: int = -1) -> int:
        order_id, price, qty, owner = as_ints(
            "order_id price qty owner", (order_id, price, qty, owner)
        )
        self._events = []
        order = self._find_owned(order_id, owner)
        if order is None:
            return len(self._events)
        if not 0 < qty <= MAX_QTY:
            return self._reject(order_id, BookReject.QTY_INVALID, order.side)
        error = self._price_error(price)
        if error is not None:
            return self._reject(order_id, error, order.side)
        kept = price == order.price and qty <= order.qty  # a pure reduction keeps priority
        if not kept:
            self._remove(order)
        order.price, order.qty = price, qty
        self._emit(
            EventKind.AMENDED,
            order_id,
            price=price,
            qty=qty,
            code=int(kept),
            side=order.side,
            owner=order.owner,
        )
        if kept:
            return len(self._events)
        left, stp_hit = (
            (qty, False)
            if self.collecting
            else self._match(order_id, order.owner, order.side, price, qty, order.stp)
        )
        self._finish(order, left, stp_hit, True)
        return len(self._events)

    def pick(self, order_id: int, owner: int, side: int, target_id: int, qty: int) -> int:
        order_id, owner, side, target_id, qty = as_ints(
            "order_id owner side target_id qty", (order_id, owner, side, target_id, qty)
        )
        self._events = []
        if not 0 <= order_id < MAX_ORDER_ID:
            return self._reject(order_id, BookReject.INVALID_ORDER_ID, side)
        if not 0 <= owner < MAX_OWNER or side not in (0, 1):
            return self._reject(order_id, BookReject.INVALID_FIELD, side)
        if self.collecting:
            return self._reject(order_id, BookReject.UNSUPPORTED_IN_PHASE, side)
        if not 0 < qty <= MAX_QTY:
            return self._reject(order_id, BookReject.QTY_INVALID, side)
        if order_id in self.live:
            return self._reject(order_id, BookReject.DUPLICATE_ORDER_ID, side)
        target = self.live.get(target_id)
        if target is None:
            return self._reject(order_id, BookReject.UNKNOWN_ORDER, side)
        if target.side == side:
            return self._reject(order_id, BookReject.PICK_WRONG_SIDE, side)
        if target.owner == owner:
            return self._reject(order_id, BookReject.SELF_TRADE, side)
        better = list(self._prices_best_first(target.side)).index(target.price)
        if better >= PICK_LEVELS:
            return self._reject(order_id, BookReject.PICK_NOT_IN_TOP_LEVELS, side)
        if qty > target.qty:
            return self._reject(order_id, BookReject.PICK_QTY_EXCEEDS_ORDER, side)
        self._fill(order_id, owner, side, qty, target)
        return len(self._events)

    def uncross(self, price: int) -> int:
        """Trade the best bid against the best ask at `price` while both reach it."""
        (price,) = as_ints("price", (price,))
        self._events = []
        bids, asks = self.levels
        while bids and asks and bids.peekitem(-1)[0] >= price >= asks.peekitem(0)[0]:
            buy, sell = bids.peekitem(-1)[1][0], asks.peekitem(0)[1][0]
            if buy.owner == sell.owner:
                later = buy if buy.entry > sell.entry else sell
                self._emit(
                    EventKind.CANCELLED,
                    later.oid,
                    price=later.price,
                    qty=later.qty,
                    code=int(CancelReason.STP_INCOMING),
                    side=later.side,
                    owner=later.owner,
                )
                self._remove(later)
                continue
            done = min(buy.qty, sell.qty)
            buy.qty -= done
            sell.qty -= done
            self.fills += 1
            self.traded_qty += done
            self._emit(
                EventKind.FILL,
                buy.oid,
                oid2=sell.oid,
                price=price,
                qty=done,
                leaves=buy.qty,
                leaves2=sell.qty,
                code=1,
                side=Side.BUY,
                owner=buy.owner,
                owner2=sell.owner,
            )
            for order in (buy, sell):
                if order.qty == 0:
                    self._remove(order)
        return len(self._events)

    # -- reading ----------------------------------------------------------------------------------

    def events(self) -> list[BookEvent]:
        return list(self._events)

    def event_rows(self) -> np.ndarray:
        """The last command's events as a structured array (a copy, `EVENT_DTYPE`)."""
        return np.array([astuple(e) for e in self._events], dtype=EVENT_DTYPE)

    def side_depth(self, side: int, levels: int) -> list[Level]:
        check_side(side)
        out = []
        for price in self._prices_best_first(side):
            if len(out) >= levels:
                break
            queue = self.levels[side][price]
            out.append((price, sum(o.qty for o in queue), len(queue)))
        return out

    def depth(self, levels: int = 5) -> tuple[list[Level], list[Level]]:
        return self.side_depth(0, levels), self.side_depth(1, levels)

    def equilibrium(self, reference: int) -> Equilibrium:
        """The call-auction price and volumes of the book as it stands (the rules of
        `engine.book.auction.equilibrium`, over the whole depth)."""
        return equilibrium(*self.depth(1 << 30), reference, self.tick)

    def level(self, side: int, price: int) -> tuple[int, int]:
        """(total qty, orders) resting at `price` on `side`; (0, 0) when none."""
        check_side(side)
        queue = self.levels[side].get(price, ())
        return sum(o.qty for o in queue), len(queue)

    def refresh_top(self, top: np.ndarray) -> bool:
        fresh = np.zeros_like(top)
        for side in (0, 1):
            for k, (price, qty, _) in enumerate(self.side_depth(side, top.shape[1])):
                fresh[side, k] = (price, qty)
        changed = not np.array_equal(fresh, top)
        top[:] = fresh
        return changed

    def best_bid(self) -> int | None:
        return self._best_price(Side.BUY)

    def best_ask(self) -> int | None:
        return self._best_price(Side.SELL)

    def order(self, order_id: int) -> tuple[int, int, int, int] | None:
        order = self.live.get(order_id)
        if order is None:
            return None
        return order.side, order.price, order.qty, order.owner

    def orders(self) -> list[tuple[int, int, int, int, int, int]]:
        """Every resting order as (id, side, price, qty, owner, entry), by id."""
        return [
            (o.oid, o.side, o.price, o.qty, o.owner, o.entry)
            for o in sorted(self.live.values(), key=lambda o: o.oid)
        ]

    def __len__(self) -> int:
        return len(self.live)

    def order_counts(self) -> tuple[int, int]:
        return tuple(sum(len(q) for q in self.levels[s].values()) for s in (0, 1))
