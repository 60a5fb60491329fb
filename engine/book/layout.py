"""Array layout of the compiled book: the indices every kernel function agrees on.

The book state is six numpy arrays (few arguments keep numba's call overhead low):

- `pool[slot, P_*]` int64, the order pool, one 64-byte row (a cache line) per order slot:
  price, remaining qty, order id, owner (member), flags (bit 0 side, bits 1-2 STP mode),
  next and prev slot in the level's FIFO (-1 ends), and the entry sequence (time priority
  stamp, for views). Free slots are chained through P_NEXT. Rows, not columns: matching and
  cancels touch every field of one order at a random slot, so one cache miss instead of eight.
- `lad[row, side * 4 + L_*]` int64, the price levels: per level and side the FIFO head and
  tail slot, total remaining qty and order count. Rows [0, M_LEN) are the dense window around
  the touch: row idx is price `base + idx * tick`, both sides of a price share one 64-byte row.
  Rows from M_LEN on are the far store (far.py): one row per occupied level outside the
  window, its side's block as in the window and the other block holding its price and its
  links in the side's search tree (F_*). A "row" names a level either way: the best levels in
  meta and every kernel function that walks levels use rows.
- `bm[side, w]` uint64, two-level occupancy bitmap of the window: words [0, W) hold one bit per
  window level,
  words [W, W + W2) one bit per non-zero level-one word; `meta[M_BM2]` holds W.
- `ht[h, 0 | 1]` int64 (key, slot) pairs: open-addressing hash of live order id -> slot
  (key -1 = empty), linear probing with backward-shift deletion, capacity a power of two,
  load <= 1/2.
- `meta[M_*]` int64 scalars (listed below).
- `ev[i, E_*]` int64, the event buffer the caller reads (one row per event, written in order).

Batch commands are `cmds[i, C_*]` int64 (one row per command).
"""

from __future__ import annotations

from engine.types import MAX_QTY as MAX_QTY  # the limits the book enforces, defined with the units
from engine.types import MAX_TICKS as MAX_TICKS

# pool fields
P_PRICE, P_QTY, P_ID, P_OWNER, P_FLAGS, P_NEXT, P_PREV, P_SEQ = range(8)
POOL_FIELDS = 8

# ladder fields within one side's block of four
L_HEAD, L_TAIL, L_TOTAL, L_COUNT = range(4)
LADDER_FIELDS = 8
# a far row's other block: the level's price and its tree links (far-store rows, -1 = none)
F_PRICE, F_LEFT, F_RIGHT, F_PARENT = range(4)

# meta slots
(
    M_BASE,  # price of ladder index 0
    M_TICK,  # price increment
    M_LEN,  # ladder length (levels)
    M_BM2,  # offset of the second bitmap level in bm rows (= number of level-one words)
    M_BEST_BID,  # ladder index of the best bid, -1 when none
    M_BEST_ASK,  # ladder index of the best ask, -1 when none
    M_FREE,  # head of the free slot list, -1 when the pool is full
    M_LIVE,  # resting orders
    M_COUNT_BID,  # resting bids
    M_COUNT_ASK,  # resting asks
    M_BAND_LO,  # lowest price allowed, 0 = no band
    M_BAND_HI,  # highest price allowed, 0 = no band
    M_HT_SHIFT,  # 64 - log2(hash capacity)
    M_NEV,  # events written in the buffer
    M_EV_MODE,  # EV_ALL, EV_FILLS or EV_NONE
    M_NEED,  # on a resource status: the price (ladder) or number of events needed
    M_STP_HIT,  # scratch: the last match stopped on self-trade prevention
    M_FILLS,  # running count of fills
    M_FILL_QTY,  # running traded quantity
    M_REJECTS,  # running count of rejects
    M_SEQ,  # entries into a level so far: the next P_SEQ stamp
    M_COLLECT,  # 1 during a call phase: orders rest without matching (the book may cross)
    M_BEST_BID_PX,  # price of the best bid level (when M_BEST_BID >= 0)
    M_BEST_ASK_PX,  # price of the best ask level
    M_WIN_END,  # the first price above the window (saturating at INT64_MAX)
    M_MID_LO,  # the window's middle half, [M_MID_LO, M_MID_HI): while a best price lies in it
    M_MID_HI,  # (or either best does), the window stays; else the book asks to re-centre it
    M_FAR_ROOT,  # far-store tree root per side (M_FAR_ROOT + side), far row or -1
    M_FAR_ROOT_ASK,
    M_FAR_LEVELS,  # far levels per side (M_FAR_LEVELS + side)
    M_FAR_LEVELS_ASK,
    M_FAR_FREE,  # first free far row, -1 when the far store is full
) = range(32)
META_LEN = 32

# event rows
E_KIND, E_OID, E_OID2, E_PRICE, E_QTY, E_LEAVES, E_LEAVES2, E_CODE, E_SIDE, E_OWNER, E_OWNER2 = (
    range(11)
)
EVENT_ROWS = 11

# event recording modes
EV_ALL, EV_FILLS, EV_NONE = 0, 1, 2

# command rows (batch input) and kinds
C_KIND, C_OID, C_OWNER, C_SIDE, C_PRICE, C_QTY, C_TYPE, C_TIF, C_STP, C_OID2 = range(10)
COMMAND_ROWS = 10
CMD_ADD, CMD_CANCEL, CMD_AMEND, CMD_PICK, CMD_UNCROSS = 1, 2, 3, 4, 5

# resource statuses returned by the kernel (negative; nothing was changed)
NEED_POOL, NEED_HASH, NEED_LADDER, NEED_EVENTS = -1, -2, -3, -4

# limits shared with the reference book
MAX_ORDER_ID = 1 << 62
MAX_PRICE = 1 << 62  # the highest price a book holds, in price units, whatever its tick
MAX_OWNER = 1 << 31
PICK_LEVELS = 5


def check_side(side: int) -> None:
    """ValueError unless `side` is 0 (buy) or 1 (sell): a side indexes the book's arrays."""
    if side not in (0, 1):
        raise ValueError(f"side must be 0 (buy) or 1 (sell), got {side!r}")


def check_band(low: int, high: int, tick: int) -> None:
    """ValueError unless [low, high] is a band both books can hold: on tick, 0 < low <= high,
    high at most MAX_PRICE."""
    if not 0 < low <= high or low % tick or high % tick or high > MAX_PRICE:
        raise ValueError(f"band [{low}, {high}] must be on tick {tick} with 0 < low <= high")
