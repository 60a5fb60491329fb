"""The production order path: NewOrder, CancelOrder and AmendOrder over the compiled book,
one compiled call each (engine.core.pipeline), events built by the one writer.

Invariants:
- This is the only production implementation of these commands. It yields exactly the events
  and state the reference exchange's plain handlers (engine.core.reference, the executable
  specification) yield for the same command; the core test suite runs on both exchanges.
- Checks run in the specification's order: kinds (and int64 range), member, instrument in
  Python; fresh ClOrdID (in the day's compiled ClOrdID table, engine.core.clordid, which the
  batch uses too), field values, phase, quantity, price and funds in the pipeline, which
  changes nothing when it refuses and answers with the code alone. A ClOrdID too long for the
  table is checked and recorded here.
- A reject is worded here from its code and the market's figures (engine.core.validation),
  never by running another handler; the commonest rejects are emitted without raising.
- Growth of the book's arrays happens between calls: a NEED_* status changed nothing.

The compiled functions are called through `engine.book.entry` (no per-call type dispatch).
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from functools import partial

from engine.book import Book
from engine.book.entry import entry_point
from engine.book.layout import EVENT_ROWS
from engine.core import validation as check
from engine.core.clordid import KEY_BYTES, NEED_CLORDIDS, ClOrdIds, key_of
from engine.core.events import EventWriter
from engine.core.market import Market
from engine.core.offbook import OffBook
from engine.core.pipeline import REJECT_BASE, amend, cancel, new_order
from engine.core.risk import Accounts, freeze_for
from engine.core.state import CoreState
from engine.core.trading import Trading
from engine.core.validation import (
    Reject,
    check_int64,
    check_types,
    market_detail,
    order_detail,
    reject_text,
    shortfall_detail,
)
from engine.protocol import AmendOrder, CancelOrder, NewOrder, RejectCode
from engine.types import OrderType, Side, StpMode, TimeInForce

_SCALARS = {new_order: 8, cancel: 2, amend: 4}  # integer arguments after the arrays
_KEY = (b"",)  # then the ClOrdID's key bytes
_MARKET = int(OrderType.MARKET)
# kinds the compiled wrapper takes as they are (it would truncate a float)
_INTEGERS = frozenset({int, Side, OrderType, TimeInForce, StpMode})
_USER = 1  # CancelReason.USER
_ROW = struct.Struct(f"{EVENT_ROWS}q")  # one output row of the pipeline (native int64s)
# codes by pipeline status, and the few compared against: an enum's attribute or call costs
# more than the rest of a refusal
_CODE_OF_STATUS = {REJECT_BASE - int(code): code for code in RejectCode}
_SHORTFALL = frozenset({RejectCode.INSUFFICIENT_FUNDS, RejectCode.INSUFFICIENT_ALLOWANCES})
_ORDER_LOOKUP = frozenset({RejectCode.UNKNOWN_ORDER, RejectCode.NOT_OWNER})
_INVALID_FIELD = RejectCode.INVALID_FIELD
_UNKNOWN_MEMBER = RejectCode.UNKNOWN_MEMBER
_UNKNOWN_INSTRUMENT = RejectCode.UNKNOWN_INSTRUMENT
_DUPLICATE_CLORDID = RejectCode.DUPLICATE_CLORDID


class OrderPath:
    """One market's compiled entry points, bound to its book's and the accounts' arrays."""

    def __init__(self, market: Market, accounts: Accounts, cl_ord_ids: ClOrdIds) -> None:
        self.market = market
        self.code = market.code
        self.touched = (market.code,)  # what the core publishes after a call-phase command
        self.book: Book = market.book
        self.accounts = accounts
        self.params = market.params
        self.cl_ord_ids = cl_ord_ids
        self.bind()
        self.book.on_rebind(self.bind)
        cl_ord_ids.on_rebind(self.bind)

    def bind(self) -> None:
        """(Re)bind after the book's arrays or the ClOrdID table were replaced by growth."""
        st = self.book.state
        arrays = (st.pool, st.lad, st.bm, st.ht, st.meta, st.ev)
        arrays += (self.accounts.acct, self.accounts.ids, self.params)
        arrays += (self.cl_ord_ids.table, self.cl_ord_ids.meta)
        self.ev_bytes = memoryview(st.ev).cast("B")  # rows read without a numpy slice
        self.new_order, self.cancel, self.amend = (
            partial(entry_point(fn, arrays, _SCALARS[fn], _KEY), *arrays)
            for fn in (new_order, cancel, amend)
        )

    def grown(self, entry: str, result: tuple, *args) -> tuple:
        """The answer of entry point `entry` called with `args` once it had room: `result` is
        its first answer; while that asks for room (a NEED_* status, nothing changed) the
        arrays grow and it is called again. A refusal is status REJECT_BASE - code."""
        while REJECT_BASE < result[0] < 0:
            if result[0] == NEED_CLORDIDS:
                self.cl_ord_ids.grow()
            else:
                self.book.grow(result[0])
            result = getattr(self, entry)(*args)  # bound to the grown arrays
        return result


class CompiledOrders:
    """NewOrder, CancelOrder and AmendOrder of the production exchange."""

    def __init__(
        self, state: CoreState, emit: EventWriter, trading: Trading, offbook: OffBook
    ) -> None:
        self.state = state
        self.emit = emit
        self.trading = trading
        self.offbook = offbook
        self.paths = {
            code: OrderPath(market, state.accounts, state.cl_ord_ids)
            for code, market in state.markets.items()
        }
        self._rows = state.accounts.row_of  # member id -> accounts row: who is known
        self._long_keys = state.cl_ord_ids.long  # the day's ClOrdIDs the pipeline cannot hold
        self.handlers = {
            NewOrder: self.new_order,
            CancelOrder: self.cancel,
            AmendOrder: self.amend,
        }

    # -- refusals ----------------------------------------------------------------------------------

    def _refuse(self, cmd, code: RejectCode, detail: str = "") -> None:
        """Refuse a command whose fields are of their kinds (checked on the way in); a member
        given as an enum is echoed as -1, as `events.rejected` does."""
        member = cmd.member if type(cmd.member) is int else -1
        self.emit.refused(cmd.cl_ord_id, member, code, reject_text(code, detail))

    def _entry(self, cmd) -> tuple[OrderPath, bytes] | None:
        """The path and the ClOrdID's key for a command whose fields are of their kinds; None
        when it was refused (unknown member or instrument; a long ClOrdID used today: the
        pipeline checks the others). Ints beyond int64 are refused first, as the
        specification does."""
        known = cmd.member in self._rows
        path = self.paths.get(cmd.instrument)
        key = key_of(cmd.cl_ord_id)
        used_long = len(key) > KEY_BYTES and (cmd.member, key) in self._long_keys
        if not known or path is None or used_long:
            check_int64(cmd)  # an int beyond int64 is refused before anything else
            if not known:
                self._refuse(cmd, _UNKNOWN_MEMBER, str(cmd.member))
            elif path is None:
                self._refuse(cmd, _UNKNOWN_INSTRUMENT, cmd.instrument)
            else:
                self._refuse(cmd, _DUPLICATE_CLORDID, cmd.cl_ord_id)
            return None
        return path, key

    def _record_long(self, member: int, key: bytes) -> None:
        """An accepted command's ClOrdID, too long for the pipeline to record it."""
        self.state.cl_ord_ids.add_key(member, key)

    def _pipeline_refused(self, cmd, path: OrderPath, status: int) -> None:
        """Word a refusal of the pipeline from its code (and, for funds, what was needed)."""
        if status == REJECT_BASE:
            raise AssertionError(f"the book refused what the core validated: {cmd}")
        code = _CODE_OF_STATUS[status]
        if code is _INVALID_FIELD:
            check.order_fields(cmd)  # raises the worded reject
        if code is _DUPLICATE_CLORDID:
            self._refuse(cmd, code, cmd.cl_ord_id)
        elif code in _SHORTFALL:
            amend = type(cmd) is AmendOrder
            need = self._amend_need(path, cmd, code) if amend else self._new_order_need(path, cmd)
            self._refuse(cmd, code, shortfall_detail(code, need, amend))
        elif code in _ORDER_LOOKUP:
            self._refuse(cmd, code, order_detail(code, cmd.order_id))
        else:
            self._refuse(cmd, code, market_detail(code, path.market))

    # -- commands ----------------------------------------------------------------------------------

    def new_order(self, cmd: NewOrder) -> Collection[str] | None:
        member, price, qty = cmd.member, cmd.price, cmd.qty
        side, order_type, tif, stp = cmd.side, cmd.order_type, cmd.tif, cmd.stp
        if (  # kinds first: a float must not be truncated, a list cannot be looked up
            type(member) is not int
            or type(price) is not int
            or type(qty) is not int
            or type(cmd.cl_ord_id) is not str
            or type(cmd.instrument) is not str
            or type(side) not in _INTEGERS
            or type(order_type) not in _INTEGERS
            or type(tif) not in _INTEGERS
            or type(stp) not in _INTEGERS
        ):
            check_types(cmd)  # refuses what is not of its kind; an IntEnum of another enum
            side, order_type, tif, stp = int(side), int(order_type), int(tif), int(stp)
            price, qty = int(price), int(qty)
        entry = self._entry(cmd)
        if entry is None:
            return None
        path, key = entry
        oid = self.state.next_order_id
        try:
            result = path.new_order(oid, member, side, price, qty, order_type, tif, stp, key)
            if REJECT_BASE < result[0] < 0:
                result = path.grown(
                    "new_order", result, oid, member, side, price, qty, order_type, tif, stp, key
                )
        except OverflowError:  # beyond int64: only built in process (the wire bounds ints)
            check_types(cmd)
            raise
        if result[0] < 0:
            return self._pipeline_refused(cmd, path, result[0])
        self.state.next_order_id = oid + 1
        if len(key) > KEY_BYTES:
            self._record_long(member, key)
        self.emit.accepted(
            cmd.cl_ord_id, member, path.code, oid, side, 0 if order_type == _MARKET else price,
            qty,
        )  # fmt: skip
        return self._events(path, result)

    def _kinds_of_order_request(self, cmd: CancelOrder | AmendOrder) -> None:
        if (
            type(cmd.member) is not int
            or type(cmd.order_id) is not int
            or type(cmd.cl_ord_id) is not str
            or type(cmd.instrument) is not str
        ):
            check_types(cmd)

    def cancel(self, cmd: CancelOrder) -> Collection[str] | None:
        self._kinds_of_order_request(cmd)
        entry = self._entry(cmd)
        if entry is None:
            return None
        path, key = entry
        order_id, member = cmd.order_id, cmd.member
        if order_id in self.state.orders:  # off the book: a one-way auction's order
            check.fresh_cl_ord_id(self.state, member, cmd.cl_ord_id)
            order = self.trading.owned(member, order_id, path.market)
            return self.offbook.cancel(cmd, path.market, order)
        try:
            result = path.cancel(order_id, member, key)
            if REJECT_BASE < result[0] < 0:
                result = path.grown("cancel", result, order_id, member, key)
        except OverflowError:
            check_types(cmd)
            raise
        if result[0] < 0:
            return self._pipeline_refused(cmd, path, result[0])
        if len(key) > KEY_BYTES:
            self._record_long(member, key)
        _, side, price, level_qty, level_orders, cancelled = result
        self.emit.cancelled(member, path.code, order_id, cancelled, _USER)
        self.emit.depth(path.code, side, price, level_qty, level_orders)
        return path.touched if path.market.in_call else None

    def amend(self, cmd: AmendOrder) -> Collection[str] | None:
        self._kinds_of_order_request(cmd)
        if type(cmd.price) is not int or type(cmd.qty) is not int:
            check_types(cmd)
        entry = self._entry(cmd)
        if entry is None:
            return None
        path, key = entry
        order_id, member, price, qty = cmd.order_id, cmd.member, int(cmd.price), int(cmd.qty)
        if order_id in self.state.orders:  # off the book: a one-way auction's order
            check.fresh_cl_ord_id(self.state, member, cmd.cl_ord_id)
            self.trading.owned(member, order_id, path.market)
            raise Reject(RejectCode.UNSUPPORTED_IN_PHASE, "only orders in the book are amended")
        try:
            result = path.amend(order_id, member, price, qty, key)
            if REJECT_BASE < result[0] < 0:
                result = path.grown("amend", result, order_id, member, price, qty, key)
        except OverflowError:
            check_types(cmd)
            raise
        if result[0] < 0:
            return self._pipeline_refused(cmd, path, result[0])
        if len(key) > KEY_BYTES:
            self._record_long(member, key)
        return self._events(path, result)

    @staticmethod
    def _new_order_need(path: OrderPath, cmd: NewOrder) -> int:
        """What a new order needs frozen: cash for a buy (at the band's top for a market
        order), tonnes for a sell."""
        if cmd.side != 0:
            return int(cmd.qty)
        limit = path.market.band[1] if cmd.order_type == _MARKET else int(cmd.price)
        return freeze_for(path.market.instrument, limit, int(cmd.qty))

    @staticmethod
    def _amend_need(path: OrderPath, cmd: AmendOrder, code: RejectCode) -> int:
        """What an amend needs frozen beyond what the order holds: cash or tonnes."""
        _, old_price, old_qty, _ = path.book.order(cmd.order_id)
        if code == RejectCode.INSUFFICIENT_ALLOWANCES:
            return cmd.qty - old_qty
        instrument = path.market.instrument
        return freeze_for(instrument, cmd.price, cmd.qty) - freeze_for(
            instrument, old_price, old_qty
        )

    def _events(self, path: OrderPath, result: tuple) -> Collection[str] | None:
        """Events from the pipeline's answer (a lone level change comes in the tuple, anything
        else in the output rows); what the core publishes after it: the indicative in a call."""
        rows, level_side, level_price, level_qty, level_orders = result
        if level_price:
            self.emit.depth(path.code, level_side, level_price, level_qty, level_orders)
        elif rows:
            self.emit.pipeline_rows(
                path.market, _ROW.iter_unpack(path.ev_bytes[: rows * _ROW.size])
            )
        return path.touched if path.market.in_call else None
