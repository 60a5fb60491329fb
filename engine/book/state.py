"""BookState: the arrays of one compiled book, and how they grow.

Invariants: the arrays follow `engine.book.layout`; growth happens here, in Python, between
kernel calls (the kernel returns a NEED_* status before it changes anything), so the compiled
loop never allocates. Every growth at least doubles, so its cost is amortised O(1) per order.

The price window: with a band of at most MAX_WINDOW ticks the window is the band (the
exchange's case: every price the core reads lies in it) and never moves. Otherwise it is
MIN_LADDER ticks or more, centred on the touch; NEED_LADDER moves it when no best price lies
in its middle half any more (or when the far store is full, or an empty book gets a price
outside it), and doubles it while levels crowd the quarter windows beyond its edges. Levels
outside it live in the far store, which has room for twice its levels after every move. So
the ladder grows with the levels near the touch and the number of far levels, never with the
span of prices: a $1 bid beside a $4 M ask costs one far row each.

Memory per resting order: 64 bytes in the pool (one cache line) plus 32-64 bytes of hash
(load 1/4 to 1/2), plus the ladder (64 bytes per window tick, 64-128 per far level) and the
event buffer.
"""

from __future__ import annotations

import numpy as np

from engine.book.idhash import ht_rebuild
from engine.book.layout import (
    EV_ALL,
    EVENT_ROWS,
    L_HEAD,
    L_TAIL,
    LADDER_FIELDS,
    M_BAND_HI,
    M_BAND_LO,
    M_BASE,
    M_BEST_ASK,
    M_BEST_BID,
    M_BEST_BID_PX,
    M_BM2,
    M_EV_MODE,
    M_FAR_FREE,
    M_FAR_LEVELS,
    M_FAR_LEVELS_ASK,
    M_FAR_ROOT,
    M_FAR_ROOT_ASK,
    M_FREE,
    M_HT_SHIFT,
    M_LEN,
    M_MID_HI,
    M_MID_LO,
    M_NEED,
    M_NEV,
    M_TICK,
    M_WIN_END,
    MAX_TICKS,
    META_LEN,
    NEED_EVENTS,
    NEED_HASH,
    NEED_LADDER,
    NEED_POOL,
    P_ID,
    P_NEXT,
    POOL_FIELDS,
    check_band,
)
from engine.book.relayout import count_levels, relay_levels

MIN_LADDER = 1024
MIN_FAR_ROWS = 64
MIN_EVENTS = 1024
MAX_WINDOW = (MAX_TICKS + 64) // 64 * 64  # the widest window: the exchange's widest band
INT64_MAX = (1 << 63) - 1


def _round64(n: int) -> int:
    return (n + 63) // 64 * 64


class BookState:
    """The six arrays of a compiled book (see layout.py) plus their growth rules."""

    def __init__(
        self,
        tick: int = 1,
        band: tuple[int, int] | None = None,
        capacity: int = 1024,
        events: int = 1024,
    ) -> None:
        if tick <= 0:
            raise ValueError(f"tick must be a positive integer, got {tick}")
        self.meta = np.zeros(META_LEN, dtype=np.int64)
        self.meta[M_TICK] = tick
        self.meta[M_BEST_BID] = -1
        self.meta[M_BEST_ASK] = -1
        self.meta[M_EV_MODE] = EV_ALL
        self.pool = np.zeros((0, POOL_FIELDS), dtype=np.int64)
        self.meta[M_FREE] = -1
        self._grow_pool(max(capacity, 16))
        self.ht = np.full((0, 2), -1, dtype=np.int64)
        self._set_hash(1 << (2 * max(capacity, 16) - 1).bit_length())
        self._events_size = max(events, MIN_EVENTS)
        self.fresh_events()
        self._set_window(1, MIN_LADDER, MIN_FAR_ROWS)
        if band is not None:
            self.set_band(*band)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The kernel's state arguments, in its parameter order."""
        return self.pool, self.lad, self.bm, self.ht, self.meta, self.ev

    def fresh_events(self) -> None:
        """Start a new event buffer (a batch hands its filled one to the caller)."""
        self.ev = np.zeros((self._events_size, EVENT_ROWS), dtype=np.int64)

    def reserve_events(self, rows: int) -> None:
        """Make room for `rows` events up front. np.empty only reserves address space, so an
        over-estimate costs nothing until written; growing by doubling while a large batch
        runs would instead fault in and copy fresh memory again and again."""
        if rows > self.ev.shape[0]:
            self.ev = np.empty((rows + MIN_EVENTS, EVENT_ROWS), dtype=np.int64)

    # -- settings -------------------------------------------------------------------------------

    def set_band(self, low: int, high: int) -> None:
        """Allow prices in [low, high] only (both on tick); the market order limit."""
        check_band(low, high, int(self.meta[M_TICK]))
        self.meta[M_BAND_LO] = low
        self.meta[M_BAND_HI] = high
        tick = int(self.meta[M_TICK])
        if self._fixed_window() == (int(self.meta[M_BASE]) // tick, int(self.meta[M_LEN])):
            self._set_middle()  # the window is the band's already: no level to move
        else:
            self._grow_ladder()

    def clear_band(self) -> None:
        self.meta[M_BAND_LO] = 0
        self.meta[M_BAND_HI] = 0
        self._set_middle()

    # -- growth -----------------------------------------------------------------------------------

    def grow(self, status: int) -> None:
        """Satisfy a NEED_* status returned by the kernel."""
        if status == NEED_POOL:
            self._grow_pool(2 * self.pool.shape[0])
        elif status == NEED_HASH:
            self._set_hash(2 * self.ht.shape[0])
        elif status == NEED_LADDER:
            self._grow_ladder()
        elif status == NEED_EVENTS:
            need = int(self.meta[M_NEED])
            size = max(2 * self.ev.shape[0], need)
            written = int(self.meta[M_NEV])
            grown = np.empty((size, EVENT_ROWS), dtype=np.int64)
            grown[:written] = self.ev[:written]
            self.ev = grown
        else:
            raise RuntimeError(f"unknown kernel status {status}")

    def _grow_pool(self, capacity: int) -> None:
        old = self.pool.shape[0]
        pool = np.zeros((capacity, POOL_FIELDS), dtype=np.int64)
        pool[:old] = self.pool
        pool[old:, P_ID] = -1
        pool[old : capacity - 1, P_NEXT] = np.arange(old + 1, capacity)
        pool[capacity - 1, P_NEXT] = self.meta[M_FREE]
        self.meta[M_FREE] = old
        self.pool = pool

    def _set_hash(self, size: int) -> None:
        """Move the order-id hash to a table of `size` (a power of two) entries."""
        table = np.full((size, 2), -1, dtype=np.int64)
        self.meta[M_HT_SHIFT] = 64 - size.bit_length() + 1
        ht_rebuild(self.ht, table, self.meta)
        self.ht = table

    def _fixed_window(self) -> tuple[int, int] | None:
        """(first tick, length) of the window a band pins (the band, rounded to 64 levels),
        or None without a band or with one wider than MAX_WINDOW levels."""
        low, high = int(self.meta[M_BAND_LO]), int(self.meta[M_BAND_HI])
        if high == 0:
            return None
        tick = int(self.meta[M_TICK])
        first = low // tick
        length = _round64(max(high // tick - first + 1, 64))
        return None if length > MAX_WINDOW else (first, length)

    def _set_window(self, first: int, length: int, far_rows: int) -> None:
        """Empty ladder: window rows at ticks [first, first + length), then `far_rows` free far
        rows; the best levels and the far trees empty."""
        meta, tick = self.meta, int(self.meta[M_TICK])
        meta[M_BASE] = first * tick
        meta[M_LEN] = length
        meta[M_WIN_END] = min((first + length) * tick, INT64_MAX)
        words = length // 64
        meta[M_BM2] = words
        self.lad = np.zeros((length + far_rows, LADDER_FIELDS), dtype=np.int64)
        self.lad[:length, [L_HEAD, L_TAIL, 4 + L_HEAD, 4 + L_TAIL]] = -1
        self.lad[length:-1, 0] = np.arange(1, far_rows)
        self.lad[-1, 0] = -1
        self.bm = np.zeros((2, words + (words + 63) // 64), dtype=np.uint64)
        meta[[M_BEST_BID, M_BEST_ASK, M_FAR_ROOT, M_FAR_ROOT_ASK]] = -1
        meta[[M_FAR_LEVELS, M_FAR_LEVELS_ASK]] = 0
        meta[M_FAR_FREE] = 0
        self._set_middle()

    def _set_middle(self) -> None:
        """The window's middle half (meta[M_MID_LO], meta[M_MID_HI]): the window moves when no
        best price lies in it. A window pinned to a band, or already at price 0 on the low
        side, has no edge there to move past."""
        meta, tick = self.meta, int(self.meta[M_TICK])
        first, length = int(meta[M_BASE]) // tick, int(meta[M_LEN])
        if self._fixed_window() is not None:
            meta[M_MID_LO], meta[M_MID_HI] = 0, INT64_MAX
            return
        meta[M_MID_LO] = 0 if first == 0 else (first + length // 4) * tick
        meta[M_MID_HI] = min((first + 3 * length // 4) * tick, INT64_MAX)

    def _relayout(self, first: int, length: int) -> None:
        """Move the window to ticks [first, first + length), every level with it (relayout.py)."""
        old_lad, old_meta = self.lad, self.meta.copy()
        tick = int(self.meta[M_TICK])
        low, end = first * tick, min((first + length) * tick, INT64_MAX)
        far = count_levels(old_lad, old_meta, low, end, False)
        self._set_window(first, length, max(MIN_FAR_ROWS, 2 * far))
        relay_levels(old_lad, old_meta, self.lad, self.bm, self.meta)

    def best_prices(self) -> tuple[int | None, int | None]:
        """Best bid and best ask prices (None for an empty side)."""
        meta = self.meta
        return tuple(  # type: ignore[return-value]
            None if meta[M_BEST_BID + side] < 0 else int(meta[M_BEST_BID_PX + side])
            for side in (0, 1)
        )

    def _anchor(self) -> int | None:
        """The tick to centre the window on, or None while it holds the touch: the mid of the
        best bid and ask when both fit in half a window, else whichever best is nearer the
        window's centre (the side the window followed), or the only one; an empty book
        centres on the price it was asked to hold."""
        meta, tick = self.meta, int(self.meta[M_TICK])
        bid, ask = self.best_prices()
        if bid is None and ask is None:
            need = int(meta[M_NEED])
            return need // tick if need > 0 else None
        low, high = int(meta[M_MID_LO]), int(meta[M_MID_HI])
        if any(p is not None and low <= p < high for p in (bid, ask)):
            return None
        if bid is None or ask is None:
            return (bid if ask is None else ask) // tick
        length = int(meta[M_LEN])
        if abs(ask - bid) // tick <= length // 2:
            return (bid + ask) // 2 // tick
        centre = int(meta[M_BASE]) // tick + length // 2
        return min((bid // tick, ask // tick), key=lambda t: abs(t - centre))

    def _window_length(self, anchor: int, length: int) -> int:
        """Double the window while the quarter windows just outside it, centred on `anchor`,
        hold more than one level per 16 ticks: far levels that close to the touch are cheaper
        as window rows (64 bytes per tick) than as tree nodes."""
        tick = int(self.meta[M_TICK])
        while length < MAX_WINDOW:
            lo, inner_lo = max(0, anchor - length), max(0, anchor - length // 2)
            inner_hi, hi = anchor + length // 2, anchor + length
            edges = ((lo, inner_lo), (inner_hi, hi))
            near = sum(
                count_levels(self.lad, self.meta, a * tick, min(b * tick, INT64_MAX), True)
                for a, b in edges
            )
            if near * 16 <= length:
                break
            length *= 2
        return min(length, MAX_WINDOW)

    def _grow_ladder(self) -> None:
        """NEED_LADDER: move the window to the touch (or to a band set since), growing it
        where levels crowd its edges, and make room in the far store."""
        fixed = self._fixed_window()
        tick = int(self.meta[M_TICK])
        first, length = int(self.meta[M_BASE]) // tick, int(self.meta[M_LEN])
        if fixed is not None:
            first, length = fixed
        else:
            anchor = self._anchor()
            if anchor is not None:
                length = self._window_length(anchor, length)
                first = max(0, anchor - length // 2)
        self._relayout(first, length)

    def far_levels(self) -> int:
        """Levels in the far store (both sides)."""
        return int(self.meta[M_FAR_LEVELS]) + int(self.meta[M_FAR_LEVELS_ASK])

    def nbytes(self) -> int:
        """Bytes held by the book's arrays."""
        return sum(a.nbytes for a in (self.pool, self.lad, self.bm, self.ht, self.meta, self.ev))
