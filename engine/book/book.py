"""Book: the compiled order book's Python API, per command and in batches.

Invariants: one price-time priority book for one instrument; every method either applies the
command completely or rejects it (a REJECTED event) leaving the book unchanged. Methods return
the number of events the command produced and build no Python object per fill; the caller
reads them after the call, until the next command overwrites them: `events()` as light
`BookEvent` objects (unpacked from the event buffer through a memoryview, untracked by the
garbage collector), or `event_rows()` as a read-only numpy structured view of the buffer (no
object at all). The same semantics, event for event, are implemented by
`engine.book.reference.ReferenceBook` (the oracle the tests compare against).

Prices are integers in the book's price unit (fen for the exchange) and must be multiples of
`tick`; quantities are positive integers; order ids are unique among live orders (the caller
assigns them); `owner` is the member id used for self-trade prevention.

`image()` gives the book's content without its array layout (resting orders in time priority
with every field the book keeps, counters, phase flag, band); `restore(image)` rebuilds it in
an empty book through the compiled add, so a snapshot never depends on the kernel's arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from engine.book.auction import NO_CROSS, Equilibrium
from engine.book.callprice import call_price
from engine.book.entry import entry_point
from engine.book.events import EVENT_DTYPE, BookEvent
from engine.book.idhash import ht_find
from engine.book.layout import (
    C_KIND,
    C_OID,
    C_OWNER,
    C_PRICE,
    C_QTY,
    C_SIDE,
    C_STP,
    C_TIF,
    C_TYPE,
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
    CMD_PICK,
    CMD_UNCROSS,
    COMMAND_ROWS,
    EV_ALL,
    EV_FILLS,
    EV_NONE,
    EVENT_ROWS,
    M_BAND_HI,
    M_BAND_LO,
    M_COLLECT,
    M_COUNT_ASK,
    M_COUNT_BID,
    M_EV_MODE,
    M_FILL_QTY,
    M_FILLS,
    M_LIVE,
    M_NEV,
    M_REJECTS,
    M_SEQ,
    M_TICK,
    P_FLAGS,
    P_ID,
    P_OWNER,
    P_PRICE,
    P_QTY,
    P_SEQ,
    check_side,
)
from engine.book.matching import add_one, apply_batch, apply_one, cancel_one
from engine.book.state import BookState
from engine.book.views import best_head, depth_levels, level_of, refresh_top
from engine.types import OrderType, StpMode, TimeInForce, as_ints

# plain ints: numba types an IntEnum argument on a slow path, so defaults must not be enums
LIMIT = int(OrderType.LIMIT)
DAY = int(TimeInForce.DAY)
CANCEL_INCOMING = int(StpMode.CANCEL_INCOMING)
_ADD_FIELDS = "order_id owner side price qty order_type tif stp"
_EVENT_ROW = struct.Struct(f"{EVENT_ROWS}q")  # one event row as native int64s
_ROW_BYTES = _EVENT_ROW.size

Level = tuple[int, int, int]  # price, total quantity, order count


# the columns of `BookImage.resting`
R_ID, R_SIDE, R_PRICE, R_QTY, R_OWNER, R_STP, R_ENTRY = range(7)
RESTING_COLUMNS = 7


class BookImage(NamedTuple):
    """Everything a book keeps, apart from how its arrays lay it out: `resting` is one int64
    row (R_* columns) per resting order in time priority (ascending entry stamp, so each
    level's queue is in order), then the next entry stamp, the running counters, the call
    phase flag and the band ((0, 0): none)."""

    resting: np.ndarray
    next_entry: int
    fills: int
    traded_qty: int
    rejects: int
    collecting: bool
    band: tuple[int, int]


class BatchResult(NamedTuple):
    """What a batch produced: events (n, 11) int64 rows in BookEvent field order."""

    events: np.ndarray
    fills: int
    traded_qty: int
    rejects: int


class Book:
    """Compiled price-time priority book (see the module docstring for the contract)."""

    def __init__(
        self,
        tick: int = 1,
        band: tuple[int, int] | None = None,
        capacity: int = 1024,
    ) -> None:
        self.state = BookState(tick=tick, band=band, capacity=capacity)
        self._rebound: list[Callable[[], None]] = []
        self._bind()

    def on_rebind(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever the state arrays are replaced (growth), so code that
        holds them (the core's compiled order path) can take the new ones."""
        self._rebound.append(callback)

    def grow(self, status: int) -> None:
        """Satisfy a NEED_* status a kernel call returned, then rebind."""
        self.state.grow(status)
        self._bind()

    def _bind(self) -> None:
        """Pre-bind the state arrays to the kernel entry points (re-done after any growth):
        the per-command hot path then passes only its scalars from Python."""
        arrays = self.state.arrays()
        self._add = partial(entry_point(add_one, arrays, 8), *arrays)
        self._cancel = partial(entry_point(cancel_one, arrays, 2), *arrays)
        self._apply = partial(entry_point(apply_one, arrays, 10), *arrays)
        # Python-int views of the buffers that events() reads (a numpy index would box each
        # value as a numpy scalar)
        self._meta_ints = memoryview(self.state.meta)
        self._ev_bytes = memoryview(self.state.ev).cast("B")
        rows = self.state.ev.view(EVENT_DTYPE).reshape(-1)
        rows.flags.writeable = False
        self._ev_rows = rows
        for callback in self._rebound:
            callback()

    @property
    def tick(self) -> int:
        return int(self.state.meta[M_TICK])

    def set_band(self, low: int, high: int) -> None:
        """Allow prices in [low, high] only. The window may move to the band (new ladder
        arrays), so the entry points are bound again, here and in every holder."""
        self.state.set_band(low, high)
        self._bind()

    def clear_band(self) -> None:
        self.state.clear_band()
        self._bind()

    # -- commands ---------------------------------------------------------------------------------

    def _run(self, *fields: int) -> int:
        status = self._apply(*fields)
        while status < 0:
            self.grow(status)
            status = self._apply(*fields)
        return status

    def add(
        self,
        order_id: int,
        owner: int,
        side: int,
        price: int,
        qty: int,
        order_type: int = LIMIT,
        tif: int = DAY,
        stp: int = CANCEL_INCOMING,
    ) -> int:
        """New order (price is ignored for a market order); returns the number of events."""
        if not (
            type(order_id) is int
            and type(owner) is int
            and type(side) is int
            and type(price) is int
            and type(qty) is int
            and type(order_type) is int
            and type(tif) is int
            and type(stp) is int
        ):
            args = (order_id, owner, side, price, qty, order_type, tif, stp)
            return self.add(*as_ints(_ADD_FIELDS, args))
        try:
            status = self._add(order_id, owner, side, price, qty, order_type, tif, stp)
        except OverflowError:  # beyond int64: as_ints raises naming the field
            as_ints(_ADD_FIELDS, (order_id, owner, side, price, qty, order_type, tif, stp))
            raise
        if status < 0:
            return self._run(CMD_ADD, order_id, owner, side, price, qty, order_type, tif, stp, 0)
        return status

    def cancel(self, order_id: int, owner: int = -1) -> int:
        """Cancel a resting order; owner >= 0 also checks that it belongs to that member."""
        if not (type(order_id) is int and type(owner) is int):
            return self.cancel(*as_ints("order_id owner", (order_id, owner)))
        try:
            return self._cancel(order_id, owner)
        except OverflowError:  # beyond int64: as_ints raises naming the field
            as_ints("order_id owner", (order_id, owner))
            raise

    def amend(self, order_id: int, price: int, qty: int, owner: int = -1) -> int:
        """New price and remaining qty: a pure reduction keeps time priority, anything else
        loses it (and the order may trade as it re-enters)."""
        order_id, price, qty, owner = as_ints(
            "order_id price qty owner", (order_id, price, qty, owner)
        )
        return self._run(CMD_AMEND, order_id, owner, 0, price, qty, 0, 0, 0, 0)

    def pick(self, order_id: int, owner: int, side: int, target_id: int, qty: int) -> int:
        """点选: trade qty against the named resting order at its price, if it is within the
        best five levels of the other side. The taker `order_id` never rests."""
        args = as_ints("order_id owner side target_id qty", (order_id, owner, side, target_id, qty))
        order_id, owner, side, target_id, qty = args
        return self._run(CMD_PICK, order_id, owner, side, 0, qty, 0, 0, 0, target_id)

    @property
    def collecting(self) -> bool:
        """True during a call phase: orders rest without matching."""
        return bool(self.state.meta[M_COLLECT])

    def set_collecting(self, collecting: bool) -> None:
        """Call phase on/off. While collecting, only limit day orders are accepted (others are
        rejected UNSUPPORTED_IN_PHASE), nothing matches, and the book may be crossed."""
        self.state.meta[M_COLLECT] = int(bool(collecting))

    def uncross(self, price: int) -> int:
        """Execute the call auction at `price` (engine/book/uncross.py); returns the event count."""
        (price,) = as_ints("price", (price,))
        return self._run(CMD_UNCROSS, 0, -1, 0, price, 0, 0, 0, 0, 0)

    def apply_batch(
        self, cmds: np.ndarray, record: str = "all", out: np.ndarray | None = None
    ) -> BatchResult:
        """Apply rows of `cmds` (n, 10) int64 (layout C_*); record 'all', 'fills' or 'none'.

        Events go to `out` (an (m, 11) int64 array the caller reuses across batches, grown if
        too small) or to a new array; result.events is a view of the rows written. Reusing
        `out` matters: writing to never-touched memory costs more than matching here.
        """
        st = self.state
        mode = {"all": EV_ALL, "fills": EV_FILLS, "none": EV_NONE}[record]
        cmds = np.asarray(cmds)
        if not (cmds.dtype.kind == "i" or (cmds.dtype.kind == "u" and cmds.dtype.itemsize < 8)):
            raise TypeError(f"commands must be an integer array, got dtype {cmds.dtype}")
        cmds = np.ascontiguousarray(cmds, dtype=np.int64)
        if cmds.ndim != 2 or cmds.shape[1] != COMMAND_ROWS:
            raise ValueError(f"commands must be an (n, {COMMAND_ROWS}) int64 array")
        if out is not None and not (
            out.dtype == np.int64
            and out.ndim == 2
            and out.shape[1] == EVENT_ROWS
            and out.flags.c_contiguous
        ):
            raise ValueError(f"out must be a C-contiguous (m, {EVENT_ROWS}) int64 array")
        fills0, qty0, rej0 = (int(st.meta[i]) for i in (M_FILLS, M_FILL_QTY, M_REJECTS))
        st.meta[M_EV_MODE] = mode
        st.meta[M_NEV] = 0
        if out is not None:
            st.ev = out
        st.reserve_events({EV_ALL: 2 * len(cmds), EV_FILLS: len(cmds), EV_NONE: 0}[mode])
        self._bind()
        try:
            start = 0
            while True:
                status, start = apply_batch(
                    st.pool, st.lad, st.bm, st.ht, st.meta, st.ev, cmds, start
                )
                if status == 0:
                    break
                st.grow(status)
            events = st.ev[: st.meta[M_NEV]]
            st.fresh_events()
        finally:
            st.meta[M_EV_MODE] = EV_ALL
            st.meta[M_NEV] = 0
            self._bind()
        return BatchResult(
            events,
            int(st.meta[M_FILLS]) - fills0,
            int(st.meta[M_FILL_QTY]) - qty0,
            int(st.meta[M_REJECTS]) - rej0,
        )

    # -- reading ----------------------------------------------------------------------------------

    def events(self) -> list[BookEvent]:
        """The events of the last per-command call, one `BookEvent` each."""
        n, unpack, buffer = self._meta_ints[M_NEV], _EVENT_ROW.unpack_from, self._ev_bytes
        if n == 1:  # the commonest answer; a comprehension would cost more than the event
            return [BookEvent(*unpack(buffer, 0))]
        return [BookEvent(*unpack(buffer, at)) for at in range(0, n * _ROW_BYTES, _ROW_BYTES)]

    def event_rows(self) -> np.ndarray:
        """The events of the last per-command call as a read-only structured array view of
        the event buffer (dtype `EVENT_DTYPE`: kind, oid, oid2, price, ...): no copy, valid
        until the next command."""
        return self._ev_rows[: self._meta_ints[M_NEV]]

    def depth(self, levels: int = 5) -> tuple[list[Level], list[Level]]:
        """(bids best first, asks best first), each [(price, qty, orders), ...]."""
        return self.side_depth(0, levels), self.side_depth(1, levels)

    def side_depth(self, side: int, levels: int) -> list[Level]:
        check_side(side)
        st = self.state
        levels = max(0, min(levels, int(st.meta[M_COUNT_BID + side])))
        out = np.zeros((levels, 3), dtype=np.int64)
        n = depth_levels(st.lad, st.bm, st.meta, side, levels, out)
        return [tuple(row) for row in out[:n].tolist()]

    def equilibrium(self, reference: int) -> Equilibrium:
        """The call-auction price and volumes of the book as it stands: the rules of
        `engine.book.auction.equilibrium`, over the ladder in one compiled call."""
        st = self.state
        price, volume, buy, sell = call_price(st.lad, st.bm, st.meta, reference)
        return NO_CROSS if price < 0 else Equilibrium(price, volume, buy, sell)

    def next_to_trade(self, side: int) -> int | None:
        """Id of the order first in line on `side` (oldest at the best price), or None."""
        check_side(side)
        st = self.state
        head = best_head(st.pool, st.lad, st.meta, side)
        return None if head < 0 else int(head)

    def level(self, side: int, price: int) -> tuple[int, int]:
        """(total qty, orders) resting at `price` on `side`; (0, 0) when none."""
        check_side(side)
        return level_of(self.state.lad, self.state.meta, side, price)

    def refresh_top(self, top: np.ndarray) -> bool:
        """Update `top` ((2, levels, 2) int64: [side][k] = (price, qty), zeros past the last
        level) in place from the book; returns whether it changed. One compiled call."""
        st = self.state
        return refresh_top(st.lad, st.bm, st.meta, top)

    def best_bid(self) -> int | None:
        return self.state.best_prices()[0]

    def best_ask(self) -> int | None:
        return self.state.best_prices()[1]

    def order(self, order_id: int) -> tuple[int, int, int, int] | None:
        """(side, price, remaining qty, owner) of a live order, or None."""
        st = self.state
        slot = ht_find(st.ht, st.meta, order_id) if 0 <= order_id < 2**62 else -1
        if slot < 0:
            return None
        pool = st.pool
        return (
            int(pool[slot, P_FLAGS] & 1),
            int(pool[slot, P_PRICE]),
            int(pool[slot, P_QTY]),
            int(pool[slot, P_OWNER]),
        )

    def orders(self) -> list[tuple[int, int, int, int, int, int]]:
        """Every resting order as (id, side, price, qty, owner, entry), by id; `entry` orders
        time priority (it grows each time an order joins the back of a level)."""
        pool = self.state.pool
        live = pool[pool[:, P_ID] >= 0]
        live = live[np.argsort(live[:, P_ID], kind="stable")]
        return [
            (oid, flags & 1, price, qty, owner, entry)
            for oid, flags, price, qty, owner, entry in live[
                :, [P_ID, P_FLAGS, P_PRICE, P_QTY, P_OWNER, P_SEQ]
            ].tolist()
        ]

    def __len__(self) -> int:
        return int(self.state.meta[M_LIVE])

    # -- image (snapshots) ------------------------------------------------------------------------

    def image(self) -> BookImage:
        """The book's content as plain rows and numbers (see BookImage)."""
        st = self.state
        pool, meta = st.pool, st.meta
        live = pool[pool[:, P_ID] >= 0]
        live = live[np.argsort(live[:, P_SEQ], kind="stable")]
        flags = live[:, P_FLAGS]
        resting = np.column_stack(
            (live[:, P_ID], flags & 1, live[:, P_PRICE], live[:, P_QTY], live[:, P_OWNER],
             (flags >> 1) & 3, live[:, P_SEQ]),
        ).reshape(-1, RESTING_COLUMNS)  # fmt: skip
        return BookImage(
            resting, int(meta[M_SEQ]), int(meta[M_FILLS]), int(meta[M_FILL_QTY]),
            int(meta[M_REJECTS]), self.collecting, (int(meta[M_BAND_LO]), int(meta[M_BAND_HI])),
        )  # fmt: skip

    def restore(self, image: BookImage) -> None:
        """Make this empty book the one `image` was taken of: its orders re-enter in time
        priority through the compiled add while collecting without a band (so none trades or
        is refused), then take back their entry stamps; then the counters, phase flag and
        band. ValueError if the image cannot be a book's (this book is then to be dropped)."""
        if len(self):
            raise ValueError("a book image is restored into an empty book only")
        resting = np.asarray(image.resting, dtype=np.int64).reshape(-1, RESTING_COLUMNS)
        entries = resting[:, R_ENTRY]
        if len(resting) and (np.any(np.diff(entries) <= 0) or entries[-1] >= image.next_entry):
            raise ValueError("a book image's orders must be in entry order, before next_entry")
        cmds = np.zeros((len(resting), COMMAND_ROWS), dtype=np.int64)
        cmds[:, C_KIND] = CMD_ADD
        cmds[:, [C_OID, C_OWNER, C_SIDE, C_PRICE, C_QTY, C_STP]] = resting[
            :, [R_ID, R_OWNER, R_SIDE, R_PRICE, R_QTY, R_STP]
        ]
        cmds[:, C_TYPE], cmds[:, C_TIF] = LIMIT, DAY
        self.clear_band()
        self.set_collecting(True)
        result = self.apply_batch(cmds, record="none")
        pool, meta = self.state.pool, self.state.meta
        if result.rejects:
            raise ValueError(f"{result.rejects} order(s) of a book image cannot rest in a book")
        slots = np.flatnonzero(pool[:, P_ID] >= 0)
        by_id = np.argsort(resting[:, R_ID])
        found = np.searchsorted(resting[by_id, R_ID], pool[slots, P_ID])
        pool[slots, P_SEQ] = entries[by_id[found]]
        for slot, value in (
            (M_SEQ, image.next_entry),
            (M_FILLS, image.fills),
            (M_FILL_QTY, image.traded_qty),
            (M_REJECTS, image.rejects),
        ):
            meta[slot] = value
        self.set_collecting(image.collecting)
        if image.band[0]:
            self.set_band(*image.band)

    def order_counts(self) -> tuple[int, int]:
        return int(self.state.meta[M_COUNT_BID]), int(self.state.meta[M_COUNT_ASK])

    @property
    def fills(self) -> int:
        """Fills since the book was created."""
        return int(self.state.meta[M_FILLS])

    @property
    def traded_qty(self) -> int:
        return int(self.state.meta[M_FILL_QTY])


def apply_row(book, row) -> int:
    """Send one batch-layout command row (C_*) to either book's per-command API."""
    kind, oid, owner, side, price, qty, otype, tif, stp, oid2 = (int(x) for x in row)
    if kind == CMD_ADD:
        return book.add(oid, owner, side, price, qty, otype, tif, stp)
    if kind == CMD_CANCEL:
        return book.cancel(oid, owner)
    if kind == CMD_AMEND:
        return book.amend(oid, price, qty, owner)
    if kind == CMD_PICK:
        return book.pick(oid, owner, side, oid2, qty)
    raise ValueError(f"unknown command kind {kind}")
