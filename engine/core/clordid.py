"""The ClOrdIDs each member used on the open trading day: one compiled store for every path.

A key is (member, the ClOrdID's UTF-8 bytes). Keys of up to KEY_BYTES bytes (every ClOrdID
the wire or a batch record can carry) live in an open-addressing hash table that compiled
code probes and fills in place, so neither the per-command pipeline (engine.core.pipeline)
nor the batch (engine.core.batch) builds a Python object to check one. A longer key (only a
command built in process, or non-ASCII text, can be longer) lives in a Python set beside it;
the compiled code leaves such keys to the Python caller (`is_long`).

Invariants:
- `table[h]` is (member, length + 1, w0, w1, w2, w3): the key's bytes little-endian in four
  int64 words, zero-padded; 0 in the length column marks an empty entry, so a new table is
  `np.zeros` (pages the kernel hands over zeroed, touched only when a probe reaches them:
  filling a 25 MB table with a marker cost more than the batch's matching). Linear probing,
  capacity a power of two, load at most one half; nothing is ever deleted except by `clear`
  (a new day). `rows()` and `restore` speak the plain form (member, length, w0..w3).
  A table made with `values` has that many more columns, the owner's to fill per key (the
  core's store has none; engine.gateway.status keeps each order's id and instrument there);
  growth carries them over.
- `meta[CM_COUNT]` counts the keys in the table, `meta[CM_SHIFT]` is 64 - log2(capacity).
- A compiled insert that would pass the load limit returns NEED_CLORDIDS before changing
  anything; the caller grows the table (`ClOrdIds.grow`) and calls again.
- The store's content (`snapshot`) is independent of insertion order and capacity, so the
  state hash is the same whichever path, and in whichever batches, applied the commands.
  `canonical` is that content's msgpack, byte for byte what msgspec writes for `snapshot()`,
  built by a sort of the rows and one compiled pass instead of a Python tuple per key (a
  snapshot or a state hash of a busy day's 600,000 keys took 2 s in the engine's loop).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
from numba import njit

from engine.core.packing import put_array_header, put_int

KEY_BYTES = 32
KEY_WORDS = 4
K_MEMBER, K_LEN, K_WORD = 0, 1, 2  # table columns: member, length + 1, then the four words
EMPTY = 0  # the length column of an empty entry
TABLE_COLUMNS = K_WORD + KEY_WORDS
CM_COUNT, CM_SHIFT = 0, 1
NEED_CLORDIDS = -5  # a resource status beside the book's NEED_* (engine.book.layout)
MIN_CAPACITY = 1024
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_SHIFT = np.uint64(29)


@njit(cache=True, _nrt=False)
def _home(meta, member, n, w0, w1, w2, w3):
    h = np.uint64(member) * _GOLDEN
    for w in (n, w0, w1, w2, w3):
        h = (h ^ np.uint64(w)) * _GOLDEN
        h ^= h >> _MIX_SHIFT
    return np.int64(h >> np.uint64(meta[CM_SHIFT]))


@njit(cache=True, _nrt=False)
def clid_probe(table, meta, member, n, w0, w1, w2, w3):
    """Index of the key's entry, or of the empty entry where it would go."""
    mask = table.shape[0] - 1
    i = _home(meta, member, n, w0, w1, w2, w3)
    stored = n + 1
    while True:
        length = table[i, K_LEN]
        if length == EMPTY:
            return i
        if (
            length == stored
            and table[i, K_MEMBER] == member
            and table[i, K_WORD] == w0
            and table[i, K_WORD + 1] == w1
            and table[i, K_WORD + 2] == w2
            and table[i, K_WORD + 3] == w3
        ):
            return i
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def clid_home(meta, member, n, w0, w1, w2, w3):
    """The table row where the key's probe starts (a batch prefetches it ahead of use)."""
    return _home(meta, member, n, w0, w1, w2, w3)


@njit(cache=True, _nrt=False)
def is_long(n):
    """A key too long for the table: the Python caller checks and records it."""
    return n > KEY_BYTES


@njit(cache=True, _nrt=False)
def clid_used(table, meta, member, n, w0, w1, w2, w3):
    """True when the member used this key today (False for a long key: see is_long)."""
    if is_long(n):
        return False
    return table[clid_probe(table, meta, member, n, w0, w1, w2, w3), K_LEN] != EMPTY


@njit(cache=True, _nrt=False)
def clid_room(table, meta):
    """0, or NEED_CLORDIDS when one more key would pass the load limit."""
    if 2 * (meta[CM_COUNT] + 1) > table.shape[0]:
        return NEED_CLORDIDS
    return 0


@njit(cache=True, _nrt=False)
def clid_insert(table, meta, member, n, w0, w1, w2, w3):
    """Record a key unless it is there (room checked by clid_room; a long key is left to the
    caller: -1); returns its entry's index."""
    if is_long(n):
        return -1
    i = clid_probe(table, meta, member, n, w0, w1, w2, w3)
    if table[i, K_LEN] == EMPTY:
        table[i, K_MEMBER] = member
        table[i, K_LEN] = n + 1
        table[i, K_WORD] = w0
        table[i, K_WORD + 1] = w1
        table[i, K_WORD + 2] = w2
        table[i, K_WORD + 3] = w3
        meta[CM_COUNT] += 1
    return i


@njit(cache=True, _nrt=False)
def key_words(key):
    """(length, w0, w1, w2, w3) of a key's bytes: the first KEY_BYTES, little-endian."""
    n = len(key)
    w0 = w1 = w2 = w3 = np.int64(0)
    for i in range(min(n, KEY_BYTES)):
        byte = np.int64(key[i]) << np.int64(8 * (i % 8))
        if i < 8:
            w0 |= byte
        elif i < 16:
            w1 |= byte
        elif i < 24:
            w2 |= byte
        else:
            w3 |= byte
    return n, w0, w1, w2, w3


@njit(cache=True, _nrt=False)
def _rehash(old, new, meta, stored):
    """Insert the keys of `old` into `new`: a table's entries (`stored`: lengths + 1, empty
    entries skipped) or plain rows (every row a key), with the value columns both have."""
    meta[CM_COUNT] = 0
    values = min(old.shape[1], new.shape[1])
    for i in range(old.shape[0]):
        if not stored or old[i, K_LEN] != EMPTY:
            j = clid_insert(
                new, meta, old[i, K_MEMBER], old[i, K_LEN] - stored, old[i, K_WORD],
                old[i, K_WORD + 1], old[i, K_WORD + 2], old[i, K_WORD + 3],
            )  # fmt: skip
            for c in range(TABLE_COLUMNS, values):
                new[j, c] = old[i, c]


MAX_ENTRY_BYTES = 1 + 9 + 2 + KEY_BYTES  # a key's msgpack: 2-array, member, bin 8 + key
ARRAY_HEADER_BYTES = 5  # msgpack's largest array header


@njit(cache=True, _nrt=False)
def _encode_entries(rows, out, ends):
    """The rows (plain form) as a msgpack array of [member, key bytes] into `out` (room for
    the header and MAX_ENTRY_BYTES a row): the array's header, then each row as a 2-array
    (0x92), the member, then bin 8 (0xC4, length) and the key's bytes; `ends[r]` is where
    row r's ends. A long key's row (length past KEY_BYTES: its first bytes only, a place
    holder) writes nothing but counts in the header."""
    at = put_array_header(out, 0, rows.shape[0])
    for r in range(rows.shape[0]):
        if rows[r, K_LEN] > KEY_BYTES:
            ends[r] = at
            continue
        out[at] = 0x92
        at = put_int(out, at + 1, rows[r, K_MEMBER])
        n = rows[r, K_LEN]
        out[at] = 0xC4
        out[at + 1] = n
        at += 2
        for i in range(n):
            out[at + i] = (rows[r, K_WORD + i // 8] >> np.int64(8 * (i % 8))) & 0xFF
        at += n
        ends[r] = at


def key_of(cl_ord_id: str) -> bytes:
    """A ClOrdID's key bytes (a lone surrogate, possible in process, is kept, not refused)."""
    try:
        return cl_ord_id.encode()
    except UnicodeEncodeError:
        return cl_ord_id.encode("utf-8", "surrogatepass")


class ClOrdIds:
    """The day's used ClOrdIDs per member: the compiled table plus the rare long keys."""

    def __init__(self, capacity: int = MIN_CAPACITY, values: int = 0) -> None:
        self.meta = np.zeros(2, dtype=np.int64)
        self.table = np.empty((0, TABLE_COLUMNS + values), dtype=np.int64)
        self.long: set[tuple[int, bytes]] = set()
        self._rebind: list[Callable[[], None]] = []
        self._resize(capacity)

    def on_rebind(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever the table is replaced (growth), to rebind its array."""
        self._rebind.append(callback)

    def _resize(self, capacity: int) -> None:
        table = np.zeros((capacity, self.table.shape[1]), dtype=np.int64)
        self.meta[CM_SHIFT] = 64 - (capacity.bit_length() - 1)
        _rehash(self.table, table, self.meta, 1)
        self.table = table
        for callback in self._rebind:
            callback()

    def grow(self) -> None:
        self._resize(2 * self.table.shape[0])

    def reserve(self, more: int) -> None:
        """Room for `more` keys beyond those held, in at most one resize (a batch asks before
        it runs, so its compiled loop is not stopped again and again to grow)."""
        need, size = 2 * (int(self.meta[CM_COUNT]) + more), self.table.shape[0]
        if need > size:
            self._resize(1 << (need - 1).bit_length())

    def __len__(self) -> int:
        return int(self.meta[CM_COUNT]) + len(self.long)

    def used(self, member: int, cl_ord_id: str) -> bool:
        key = key_of(cl_ord_id)
        if len(key) > KEY_BYTES:
            return (member, key) in self.long
        return bool(clid_used(self.table, self.meta, member, *key_words(key)))

    def add(self, member: int, cl_ord_id: str) -> None:
        self.add_key(member, key_of(cl_ord_id))

    def add_key(self, member: int, key: bytes) -> None:
        if len(key) > KEY_BYTES:
            self.long.add((member, key))
            return
        if clid_room(self.table, self.meta):
            self.grow()
        clid_insert(self.table, self.meta, member, *key_words(key))

    def clear(self) -> None:
        """A new trading day: every ClOrdID may be used again (the capacity stays)."""
        self.table[:, K_LEN] = EMPTY
        self.meta[CM_COUNT] = 0
        self.long.clear()

    def rows(self) -> np.ndarray:
        """The table's used entries, (n, TABLE_COLUMNS) int64, in table order (a snapshot's
        form: `restore` takes them back, into a table of any capacity)."""
        rows = self.table[self.table[:, K_LEN] != EMPTY]
        rows[:, K_LEN] -= 1
        return rows

    def restore(self, rows: np.ndarray, long: list[tuple[int, bytes]]) -> None:
        """Hold exactly the keys of `rows` (as `rows()` gives them, value columns included)
        and the long keys."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, self.table.shape[1])
        if np.any(rows[:, K_MEMBER] < 0) or np.any(
            (rows[:, K_LEN] < 0) | (rows[:, K_LEN] > KEY_BYTES)
        ):
            raise ValueError("ClOrdID rows need a member and a key of at most 32 bytes")
        key_bytes = rows[:, K_WORD:TABLE_COLUMNS].astype("<i8").view(np.uint8)
        if np.any(key_bytes[np.arange(KEY_BYTES) >= rows[:, K_LEN, None]]):
            raise ValueError("a ClOrdID row has bytes past its key's length")
        if any(len(key) <= KEY_BYTES for _, key in long):
            raise ValueError("a ClOrdID of at most 32 bytes belongs in the table")
        self.clear()
        self.reserve(len(rows))
        _rehash(rows, self.table, self.meta, 0)
        if int(self.meta[CM_COUNT]) != len(rows):
            raise ValueError("ClOrdID rows repeat a key")
        self.long.update(long)

    def snapshot(self) -> list[tuple[int, bytes]]:
        """Every (member, key), sorted: what the state hash covers."""
        used = self.rows()
        words = np.ascontiguousarray(used[:, K_WORD:]).astype("<i8").tobytes()
        keys = [
            (int(member), words[KEY_BYTES * i : KEY_BYTES * i + int(n)])
            for i, (member, n) in enumerate(used[:, :K_WORD].tolist())
        ]
        return sorted(keys + list(self.long))

    def canonical(self) -> bytes:
        """`msgspec.msgpack.encode(self.snapshot())`, byte for byte, without a Python object
        per key: the rows sorted as Python sorts (member, key bytes) (the key's words read
        big-endian order it as bytes do; a shorter key first on equal words), encoded in one
        compiled pass. A long key sorts among them by its first KEY_BYTES bytes (a table key
        equal to those is a prefix of it, so first), then by its rank among the long keys,
        and is encoded by msgspec into its place."""
        long = sorted(self.long)
        heads = np.zeros((len(long), TABLE_COLUMNS), dtype=np.int64)
        if long:
            heads[:, K_MEMBER] = [member for member, _ in long]
            heads[:, K_LEN] = KEY_BYTES + 1
            firsts = b"".join(key[:KEY_BYTES] for _, key in long)
            heads[:, K_WORD:] = np.frombuffer(firsts, dtype="<i8").reshape(-1, KEY_WORDS)
        rows = np.concatenate([self.rows()[:, :TABLE_COLUMNS], heads])
        rank = np.zeros(len(rows), dtype=np.int64)
        rank[len(rows) - len(long) :] = np.arange(1, len(long) + 1)
        words = rows[:, K_WORD:TABLE_COLUMNS].byteswap().view(np.uint64).T
        keys = [w for w in words[::-1] if w.any()]  # a word no key reaches sorts nothing
        order = np.lexsort((rank, rows[:, K_LEN], *keys, rows[:, K_MEMBER]))
        ordered = rows[order]
        ends = np.empty(len(ordered), dtype=np.int64)
        out = np.empty(ARRAY_HEADER_BYTES + len(ordered) * MAX_ENTRY_BYTES, dtype=np.uint8)
        _encode_entries(ordered, out, ends)
        encoded = out[: ends[-1] if len(ends) else 1].tobytes()  # no rows: the header 0x90
        parts, start = [], 0
        for at in np.flatnonzero(rank[order]).tolist():
            stop = int(ends[at])
            parts += [encoded[start:stop], msgspec.msgpack.encode(long[rank[order[at]] - 1])]
            start = stop
        parts.append(encoded[start:])
        return b"".join(parts)
