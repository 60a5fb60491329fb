"""The exchange core's compiled order path: NewOrder, CancelOrder and AmendOrder on a
compiled book in one compiled call each (engine.book.orderpath), events built at the edge.

Invariants:
- it yields exactly the events and state the plain handlers in engine.core yield for the same
  command (the property tests run the core over both books, and the reference book always
  takes the plain path);
- anything it does not cover goes to the plain path before any change: unknown member or
  instrument, duplicate ClOrdID (of an order, a cancel or an amend), orders off the book
  (one-way auction bids), any field not of its declared kind (the plain path refuses those:
  `orders.check_types`);
- every reject is worded by the plain path, which must refuse the command with the same code
  (checked), except an unknown or foreign order on cancel and amend, answered at once with
  the wording the plain path uses too (`orders.order_reject_detail`, `orders.reject_text`);
- growth of the book's arrays happens between calls: a NEED_* status changed nothing.

The compiled functions are called through `engine.book.entry` (no per-call type dispatch).
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial

from engine.book import Book
from engine.book.entry import entry_point
from engine.book.eventrows import K_AMENDED, K_CANCELLED, K_FILL
from engine.book.orderpath import K_LEVEL, REJECT_BASE, amend, cancel, new_order
from engine.market import Market
from engine.orders import Reject, order_reject_detail, reject_text
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
    Rejected,
    Trade,
)
from engine.risk import Accounts
from engine.types import CancelReason, OrderType, Side, StpMode, TimeInForce

_SCALARS = {new_order: 8, cancel: 2, amend: 4}  # integer arguments after the arrays
_MARKET = int(OrderType.MARKET)
# kinds the compiled wrapper takes as they are (it would truncate a float)
_INTEGERS = frozenset({int, Side, OrderType, TimeInForce, StpMode})
_REASONS = {int(reason): reason for reason in CancelReason}
_USER = CancelReason.USER
_ORDER_LOOKUP = {  # status -> code of the refusals worded without the plain path
    REJECT_BASE - c: c for c in (RejectCode.UNKNOWN_ORDER, RejectCode.NOT_OWNER)
}


class OrderPath:
    """One market's compiled entry points, bound to its book's and the accounts' arrays."""

    def __init__(self, market: Market, accounts: Accounts) -> None:
        self.market = market
        self.code = market.code
        self.touched = (market.code,)  # what the core publishes after a call-phase command
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
            partial(entry_point(fn, arrays, _SCALARS[fn]), *arrays)
            for fn in (new_order, cancel, amend)
        )

    def grown(self, status: int) -> bool:
        """Satisfy a NEED_* status; False when the status is a reject instead."""
        if status <= REJECT_BASE:
            return False
        self.book.grow(status)
        return True


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
        try:
            plain(cmd)
        except Reject as reject:
            assert reject.code == code, f"compiled path said {code}, plain path {reject.code}"
            raise
        raise AssertionError(f"compiled path refused {cmd} (code {code}), plain path accepted")

    def _order_lookup_refused(self, cmd: CancelOrder | AmendOrder, status: int) -> bool:
        """Answer an unknown or foreign order at once (no lookups to word it); False when
        `status` is another refusal or a request for room."""
        code = _ORDER_LOOKUP.get(status)
        if code is None:
            return False
        text = reject_text(code, order_reject_detail(cmd.order_id))
        self.out.append(Rejected(self.seq, cmd.cl_ord_id, cmd.member, code, text))
        return True

    def _new_order_compiled(self, cmd: NewOrder) -> Collection[str] | None:
        cl_ord_id = cmd.cl_ord_id
        member = cmd.member
        code = cmd.instrument
        side = cmd.side
        price = cmd.price
        qty = cmd.qty
        order_type = cmd.order_type
        tif = cmd.tif
        stp = cmd.stp
        if (  # kinds first: a float must not be truncated, a list cannot be looked up
            type(member) is not int
            or type(price) is not int
            or type(qty) is not int
            or type(cl_ord_id) is not str
            or type(code) is not str
            or type(side) not in _INTEGERS
            or type(order_type) not in _INTEGERS
            or type(tif) not in _INTEGERS
            or type(stp) not in _INTEGERS
        ):
            return self._new_order(cmd)
        path = self.paths.get(code)
        seen = self.cl_ord_ids.get(member)  # None: not a member
        if path is None or seen is None or cl_ord_id in seen:
            return self._new_order(cmd)
        oid = self.next_order_id
        try:
            result = path.new_order(oid, member, side, price, qty, order_type, tif, stp)
        except OverflowError:  # beyond int64: only built in process (the wire bounds ints)
            return self._new_order(cmd)
        if result[0] < 0:
            args = (oid, member, side, price, qty, order_type, tif, stp)
            result = self._compiled_retry(path, "new_order", args, result)
            if result[0] < 0:
                return self._refused(self._new_order, cmd, result[0])
        self.next_order_id = oid + 1
        seen.add(cl_ord_id)
        if order_type == _MARKET:
            price = 0
        self.out.append(Accepted(self.seq, cl_ord_id, member, code, oid, side, price, qty))
        return self._compiled_events(path, result)

    def _book_order_path(self, cmd: CancelOrder | AmendOrder) -> tuple[OrderPath, set[str]] | None:
        """The path for a cancel or amend of an order in a compiled book and the member's
        ClOrdIDs of the day (the request's joins them once accepted), or None when the plain
        handler must take it (kinds first, then membership and a fresh ClOrdID)."""
        if (
            type(cmd.member) is not int
            or type(cmd.order_id) is not int
            or type(cmd.cl_ord_id) is not str
            or type(cmd.instrument) is not str
            or cmd.order_id in self.orders
        ):
            return None
        seen = self.cl_ord_ids.get(cmd.member)  # None: not a member
        path = self.paths.get(cmd.instrument)
        if seen is None or path is None or cmd.cl_ord_id in seen:
            return None
        return path, seen

    def _cancel_compiled(self, cmd: CancelOrder) -> Collection[str] | None:
        found = self._book_order_path(cmd)
        if found is None:
            return self._cancel(cmd)
        path, seen = found
        order_id, member = cmd.order_id, cmd.member
        try:
            result = path.cancel(order_id, member)
        except OverflowError:
            return self._cancel(cmd)
        if result[0] < 0:
            if self._order_lookup_refused(cmd, result[0]):
                return None
            result = self._compiled_retry(path, "cancel", (order_id, member), result)
            if result[0] < 0:
                return self._refused(self._cancel, cmd, result[0])
        seen.add(cmd.cl_ord_id)
        _, side, price, level_qty, level_orders, cancelled = result
        seq, code = self.seq, path.code
        self.out += (
            Cancelled(seq, member, code, order_id, cancelled, _USER),
            DepthUpdate(seq, code, side, price, level_qty, level_orders),
        )
        return path.touched if path.market.in_call else None

    def _amend_compiled(self, cmd: AmendOrder) -> Collection[str] | None:
        found = self._book_order_path(cmd)
        if found is None or type(cmd.price) is not int or type(cmd.qty) is not int:
            return self._amend(cmd)
        path, seen = found
        args = (cmd.order_id, cmd.member, cmd.price, cmd.qty)
        try:
            result = path.amend(*args)
        except OverflowError:
            return self._amend(cmd)
        if result[0] < 0:
            if self._order_lookup_refused(cmd, result[0]):
                return None
            result = self._compiled_retry(path, "amend", args, result)
            if result[0] < 0:
                return self._refused(self._amend, cmd, result[0])
        seen.add(cmd.cl_ord_id)
        return self._compiled_events(path, result)

    @staticmethod
    def _compiled_retry(path: OrderPath, entry: str, args: tuple, result: tuple) -> tuple:
        """After a negative status: grow and call again while the status asks for room; the
        result is then an answer or a refusal (REJECT_BASE - code)."""
        while result[0] < 0 and path.grown(result[0]):
            result = getattr(path, entry)(*args)  # bound to the grown arrays
        return result

    def _compiled_events(self, path: OrderPath, result: tuple) -> Collection[str] | None:
        """Protocol events from the compiled path's answer, in the plain path's order: a lone
        level change from the tuple, anything else from the event rows (trades also go to the
        market's day figures)."""
        rows, level_side, level_price, level_qty, level_orders = result
        out, seq, code = self.out, self.seq, path.code
        if level_price:  # a lone level change comes in the tuple (rows is 0)
            out.append(DepthUpdate(seq, code, level_side, level_price, level_qty, level_orders))
        elif rows:
            append = out.append
            record = path.market.record
            ts_ns, date = self.ts_ns, self.date
            for (
                kind,
                oid,
                oid2,
                price,
                qty,
                leaves,
                leaves2,
                reason,
                side,
                owner,
                owner2,
            ) in path.ev[:rows].tolist():
                if kind == K_LEVEL:  # side, price, total (qty) and orders (leaves)
                    append(DepthUpdate(seq, code, side, price, qty, leaves))
                elif kind == K_FILL:  # buy order first: oid, leaves, owner; sell: the *2
                    trade_id = self.next_trade_id
                    self.next_trade_id = trade_id + 1
                    trade = Trade(
                        seq, trade_id, ts_ns, date, code, price, qty,
                        owner, owner2, oid, oid2, side, "continuous",
                    )  # fmt: skip
                    record(trade)
                    out += (
                        trade,
                        Filled(seq, trade_id, owner, code, oid, 0, price, qty, leaves, side == 0),
                        Filled(
                            seq, trade_id, owner2, code, oid2, 1, price, qty, leaves2, side == 1
                        ),
                    )
                elif kind == K_CANCELLED:
                    append(Cancelled(seq, owner, code, oid, qty, _REASONS[reason]))
                elif kind == K_AMENDED:
                    append(Amended(seq, owner, code, oid, price, qty, reason == 1))
        return path.touched if path.market.in_call else None
