"""The exchange core's compiled order path: NewOrder, CancelOrder and AmendOrder on a
compiled book in one compiled call each (engine.book.orderpath), events built at the edge.

Invariants:
- it yields exactly the events and state the plain handlers in engine.core yield for the same
  command (the property tests run the core over both books, and the reference book always
  takes the plain path);
- anything it does not cover goes to the plain path before any change: unknown member or
  instrument, duplicate ClOrdID, orders off the book (one-way auction bids), fields that are
  not plain ints; and every reject is worded by the plain path, which must refuse the command
  with the same code (checked), so reject texts have one source;
- growth of the book's arrays happens between calls: a NEED_* status changed nothing.

The compiled entry points are taken with `Dispatcher.compile(signature)`, which returns the
compiled wrapper itself: calling it skips numba's per-call type dispatch (about half the
cost of a call with this many arguments).
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial

from numba import typeof

from engine.book import Book
from engine.book.kernel import K_AMENDED, K_CANCELLED, K_FILL
from engine.book.orderpath import K_LEVEL, REJECT_BASE, amend, cancel, new_order
from engine.market import Market
from engine.orders import Reject, order_reject
from engine.protocol import (
    Accepted,
    Amended,
    AmendOrder,
    Cancelled,
    CancelOrder,
    DepthUpdate,
    Filled,
    NewOrder,
    RejectCode,
    Trade,
)
from engine.risk import Accounts
from engine.types import CancelReason, OrderType

_SCALARS = {new_order: 8, cancel: 2, amend: 4}  # integer arguments after the arrays
_MARKET = int(OrderType.MARKET)
_ORDER_LOOKUP = frozenset({int(RejectCode.UNKNOWN_ORDER), int(RejectCode.NOT_OWNER)})


class OrderPath:
    """One market's compiled entry points, bound to its book's and the accounts' arrays."""

    def __init__(self, market: Market, accounts: Accounts) -> None:
        self.book: Book = market.book
        self.accounts = accounts
        self.params = market.params
        self.bind()
        self.book.on_rebind(self.bind)

    def bind(self) -> None:
        """(Re)bind after the book's arrays were replaced by growth."""
        st = self.book.state
        arrays = (st.pool, st.lad, st.bm, st.ht, st.meta, st.ev)
        arrays += (self.accounts.acct, self.accounts.ids, self.params)
        self.ev = st.ev
        self.new_order, self.cancel, self.amend = (
            partial(_entry(fn, arrays), *arrays) for fn in (new_order, cancel, amend)
        )

    def grown(self, status: int) -> bool:
        """Satisfy a NEED_* status; False when the status is a reject instead."""
        if status <= REJECT_BASE:
            return False
        self.book.grow(status)
        return True


_ENTRIES: dict = {}


def _entry(fn, arrays: tuple):
    signature = tuple(typeof(a) for a in arrays) + (typeof(0),) * _SCALARS[fn]
    key = (fn, signature)
    if key not in _ENTRIES:
        _ENTRIES[key] = fn.compile(signature)
    return _ENTRIES[key]


class CompiledOrders:
    """Exchange mixin: the compiled handlers, with the plain ones as fallback."""

    def _compiled_paths(self) -> None:
        self.paths = {
            code: OrderPath(market, self.accounts)
            for code, market in self.markets.items()
            if type(market.book) is Book
        }

    def _refused(self, plain, cmd, status: int) -> None:
        """The compiled path refused `cmd`: the plain handler words it (and must agree)."""
        code = REJECT_BASE - status
        if code == 0:
            raise AssertionError(f"the book refused what the core validated: {cmd}")
        if code in _ORDER_LOOKUP and type(cmd) is not NewOrder:
            raise order_reject(RejectCode(code), cmd.order_id)  # no plain-path lookups needed
        try:
            plain(cmd)
        except Reject as reject:
            assert reject.code == code, f"compiled path said {code}, plain path {reject.code}"
            raise
        raise AssertionError(f"compiled path refused {cmd} (code {code}), plain path accepted")

    def _new_order_compiled(self, cmd: NewOrder) -> Collection[str] | None:
        path = self.paths.get(cmd.instrument)
        key = (cmd.member, cmd.cl_ord_id)
        if (
            path is None
            or cmd.member not in self.accounts.row_of
            or key in self.cl_ord_ids
            or not (type(cmd.price) is int and type(cmd.qty) is int)
        ):
            return self._new_order(cmd)
        oid = self.next_order_id
        args = (oid, cmd.member, cmd.side, cmd.price, cmd.qty, cmd.order_type, cmd.tif, cmd.stp)
        n = path.new_order(*args)
        while n < 0:
            if not path.grown(n):
                self._refused(self._new_order, cmd, n)
            n = path.new_order(*args)
        self.next_order_id = oid + 1
        self.cl_ord_ids.add(key)
        market = self.markets[cmd.instrument]
        price = 0 if cmd.order_type == _MARKET else cmd.price
        self.out.append(
            Accepted(
                self.seq, cmd.cl_ord_id, cmd.member, market.code, oid, cmd.side, price, cmd.qty
            )
        )
        return self._compiled_events(market, path, n)

    def _cancel_compiled(self, cmd: CancelOrder) -> Collection[str] | None:
        path = self.paths.get(cmd.instrument)
        if path is None or cmd.member not in self.accounts.row_of or cmd.order_id in self.orders:
            return self._cancel(cmd)
        n = path.cancel(cmd.order_id, cmd.member)
        while n < 0:
            if not path.grown(n):
                self._refused(self._cancel, cmd, n)
            n = path.cancel(cmd.order_id, cmd.member)
        return self._compiled_events(self.markets[cmd.instrument], path, n)

    def _amend_compiled(self, cmd: AmendOrder) -> Collection[str] | None:
        path = self.paths.get(cmd.instrument)
        if (
            path is None
            or cmd.member not in self.accounts.row_of
            or cmd.order_id in self.orders
            or not (type(cmd.price) is int and type(cmd.qty) is int)
        ):
            return self._amend(cmd)
        args = (cmd.order_id, cmd.member, cmd.price, cmd.qty)
        n = path.amend(*args)
        while n < 0:
            if not path.grown(n):
                self._refused(self._amend, cmd, n)
            n = path.amend(*args)
        return self._compiled_events(self.markets[cmd.instrument], path, n)

    def _compiled_events(self, market: Market, path: OrderPath, n: int) -> Collection[str] | None:
        """Protocol events from the compiled path's rows, in the plain path's order."""
        out, seq, code = self.out, self.seq, market.code
        for kind, oid, oid2, price, qty, leaves, leaves2, reason, side, owner, owner2 in path.ev[
            :n
        ].tolist():
            if kind == K_LEVEL:
                out.append(DepthUpdate(seq, code, side, price, qty, leaves))
            elif kind == K_FILL:
                trade_id = self.next_trade_id
                self.next_trade_id = trade_id + 1
                if side == 0:
                    buyer, seller, buy_id, sell_id, buy_left, sell_left = (
                        owner,
                        owner2,
                        oid,
                        oid2,
                        leaves,
                        leaves2,
                    )
                else:
                    buyer, seller, buy_id, sell_id, buy_left, sell_left = (
                        owner2,
                        owner,
                        oid2,
                        oid,
                        leaves2,
                        leaves,
                    )
                trade = Trade(
                    seq,
                    trade_id,
                    self.ts_ns,
                    self.date,
                    code,
                    price,
                    qty,
                    buyer,
                    seller,
                    buy_id,
                    sell_id,
                    side,
                    "continuous",
                )
                market.record(trade)
                out.append(trade)
                out.append(
                    Filled(seq, trade_id, buyer, code, buy_id, 0, price, qty, buy_left, side == 0)
                )
                out.append(
                    Filled(
                        seq, trade_id, seller, code, sell_id, 1, price, qty, sell_left, side == 1
                    )
                )
            elif kind == K_CANCELLED:
                out.append(Cancelled(seq, owner, code, oid, qty, CancelReason(reason)))
            elif kind == K_AMENDED:
                out.append(Amended(seq, owner, code, oid, price, qty, bool(reason)))
        return (code,) if market.in_call else None
