"""BookState: the arrays of one compiled book, and how they grow.

Invariants: the arrays follow `engine.book.layout`; growth happens here, in Python, between
kernel calls (the kernel returns a NEED_* status before it changes anything), so the compiled
loop never allocates. Every growth at least doubles, so its cost is amortised O(1) per order.
The ladder re-bases around the occupied levels and the new price: it covers at most four times
the occupied span (or its previous length), never a fixed range chosen in advance.

Memory per resting order: 64 bytes in the pool (one cache line) plus 32-64 bytes of hash
(load 1/4 to 1/2), plus the ladder (64 bytes per price level in range) and the event buffer.
"""

from __future__ import annotations

import numpy as np

from engine.book.bitmap import find_ge, find_le, rebuild_bitmap
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
    M_BM2,
    M_EV_MODE,
    M_FREE,
    M_HT_SHIFT,
    M_LEN,
    M_NEED,
    M_NEV,
    M_TICK,
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

MIN_LADDER = 1024
MIN_EVENTS = 1024


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
        first = 1 if band is None else band[0] // tick
        length = MIN_LADDER if band is None else band[1] // tick - first + 1
        self._set_ladder(first, _round64(max(length, 64)))
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

    def clear_band(self) -> None:
        self.meta[M_BAND_LO] = 0
        self.meta[M_BAND_HI] = 0

    # -- growth -----------------------------------------------------------------------------------

    def grow(self, status: int) -> None:
        """Satisfy a NEED_* status returned by the kernel."""
        if status == NEED_POOL:
            self._grow_pool(2 * self.pool.shape[0])
        elif status == NEED_HASH:
            self._set_hash(2 * self.ht.shape[0])
        elif status == NEED_LADDER:
            self._grow_ladder(int(self.meta[M_NEED]))
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

    def _set_ladder(self, first_tick: int, length: int) -> None:
        self.meta[M_BASE] = first_tick * int(self.meta[M_TICK])
        self.meta[M_LEN] = length
        words = length // 64
        self.meta[M_BM2] = words
        self.lad = np.zeros((length, LADDER_FIELDS), dtype=np.int64)
        self.lad[:, [L_HEAD, L_TAIL, 4 + L_HEAD, 4 + L_TAIL]] = -1
        self.bm = np.zeros((2, words + (words + 63) // 64), dtype=np.uint64)

    def occupied_range(self) -> tuple[int, int] | None:
        """Lowest and highest occupied ladder index over both sides, or None."""
        lows = [find_ge(self.bm, self.meta, s, 0) for s in (0, 1)]
        highs = [find_le(self.bm, self.meta, s, int(self.meta[M_LEN]) - 1) for s in (0, 1)]
        lows = [x for x in lows if x >= 0]
        if not lows:
            return None
        return min(lows), max(highs)

    def _grow_ladder(self, price: int) -> None:
        """Re-base the ladder so it covers the occupied levels and `price`."""
        tick = int(self.meta[M_TICK])
        old_first = int(self.meta[M_BASE]) // tick
        old_len = int(self.meta[M_LEN])
        want = price // tick
        occupied = self.occupied_range()
        low, high = want, want
        if occupied is not None:
            low = min(low, old_first + occupied[0])
            high = max(high, old_first + occupied[1])
        span = high - low + 1
        length = max(old_len, MIN_LADDER)
        while length < 2 * span:
            length *= 2
        limit = _round64(MAX_TICKS + 1)
        length = min(_round64(length), limit)
        first = max(0, low - (length - span) // 2)
        first = min(first, limit - length)
        old_lad = self.lad
        self._set_ladder(first, length)
        if occupied is not None:
            lo, hi = occupied
            shift = old_first - first
            self.lad[lo + shift : hi + shift + 1] = old_lad[lo : hi + 1]
        rebuild_bitmap(self.lad, self.bm, self.meta)

    def nbytes(self) -> int:
        """Bytes held by the book's arrays."""
        return sum(a.nbytes for a in (self.pool, self.lad, self.bm, self.ht, self.meta, self.ev))
