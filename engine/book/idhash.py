"""The order-id hash: live order id -> pool slot, open addressing in one int64 array.

Data layout: `ht[h, 0 | 1]` int64 (key, slot) pairs; key -1 marks an empty entry. The capacity
is a power of two and `meta[M_HT_SHIFT]` = 64 - log2(capacity): Fibonacci hashing takes the
top bits of key * 2^64 / phi as the home entry. `meta[M_LIVE]` counts the entries.

Invariants: every live order's id is in the table exactly once, with its slot, and nothing
else is; linear probing finds a key before the first empty entry after its home (deletion
shifts later entries back instead of leaving tombstones, so this holds without rehashing);
the load stays <= 1/2 (the commands ask for a larger table, NEED_HASH, before an insert would
pass it; `ht_rebuild` moves the entries into it).

Complexity: O(1) expected per find, insert and delete at load <= 1/2.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.book.layout import M_HT_SHIFT, M_LIVE

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, _nrt=False)
def _home(meta, key):
    return np.int64((np.uint64(key) * GOLDEN) >> np.uint64(meta[M_HT_SHIFT]))


@njit(cache=True, _nrt=False)
def ht_find(ht, meta, key):
    """Slot of the live order `key`, or -1."""
    mask = ht.shape[0] - 1
    i = _home(meta, key)
    while True:
        k = ht[i, 0]
        if k == key:
            return ht[i, 1]
        if k == -1:
            return -1
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def ht_insert(ht, meta, key, slot):
    mask = ht.shape[0] - 1
    i = _home(meta, key)
    while ht[i, 0] != -1:
        i = (i + 1) & mask
    ht[i, 0] = key
    ht[i, 1] = slot
    meta[M_LIVE] += 1


@njit(cache=True, _nrt=False)
def ht_delete(ht, meta, key):
    mask = ht.shape[0] - 1
    i = _home(meta, key)
    while ht[i, 0] != key:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        k = ht[j, 0]
        if k == -1:
            break
        home = _home(meta, k)
        # the entry at j may fill the hole at i unless its home lies cyclically in (i, j]
        stays = (i < home <= j) if i <= j else (home > i or home <= j)
        if not stays:
            ht[i, 0] = k
            ht[i, 1] = ht[j, 1]
            i = j
    ht[i, 0] = -1
    meta[M_LIVE] -= 1


@njit(cache=True, _nrt=False)
def ht_rebuild(old, new, meta):
    """Re-insert every entry of `old` into the empty table `new` (meta's shift already set)."""
    meta[M_LIVE] = 0
    for i in range(old.shape[0]):
        if old[i, 0] != -1:
            ht_insert(new, meta, old[i, 0], old[i, 1])
