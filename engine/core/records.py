"""The records a batch takes (engine.codec.COMMAND_DTYPE), checked before anything runs.

Invariants: `words_of` hands the compiled run only a run of NewOrder, CancelOrder and
AmendOrder records whose sequence numbers continue the exchange's, whose timestamps are not
negative (the stamps Exchange.apply_stamped takes) and whose ClOrdIDs are UTF-8 (what a
message could carry); anything else is a ValueError naming the first bad record, and nothing
has changed. A record's ClOrdID is its 32 key bytes less the trailing NULs
(`key_length`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.codec import COMMAND_DTYPE, REC_AMEND, REC_NEW_ORDER, RECORD_WORDS, W_KEY


@njit(cache=True, _nrt=False)
def key_length(words, i):
    """Bytes of the record's ClOrdID: its 32 bytes less the trailing NULs."""
    for w in range(3, -1, -1):
        word = np.uint64(words[i, W_KEY + w])
        if word != 0:
            n = 8
            while (word >> np.uint64(8 * (n - 1))) == 0:
                n -= 1
            return 8 * w + n
    return 0


@njit(cache=True, _nrt=False)
def _key_byte(words, i, k):
    return (words[i, W_KEY + k // 8] >> (8 * (k % 8))) & 0xFF


@njit(cache=True, _nrt=False)
def first_bad_key(words):
    """Index of the first record whose ClOrdID bytes are not UTF-8 (surrogates allowed, as
    the codec's 'surrogatepass' writes them), or -1: such a key is no message's ClOrdID."""
    for i in range(words.shape[0]):
        n = key_length(words, i)
        k = 0
        while k < n:
            lead = _key_byte(words, i, k)
            if lead < 0x80:
                k += 1
                continue
            if 0xC2 <= lead <= 0xDF:
                size, low, high = 2, 0x80, 0xBF
            elif 0xE0 <= lead <= 0xEF:
                size, low, high = 3, 0xA0 if lead == 0xE0 else 0x80, 0xBF
            elif 0xF0 <= lead <= 0xF4:
                size = 4
                low = 0x90 if lead == 0xF0 else 0x80
                high = 0x8F if lead == 0xF4 else 0xBF
            else:
                return i
            if k + size > n:
                return i
            second = _key_byte(words, i, k + 1)
            if not low <= second <= high:
                return i
            for c in range(k + 2, k + size):
                if not 0x80 <= _key_byte(words, i, c) <= 0xBF:
                    return i
            k += size
    return -1


def words_of(records: np.ndarray, last_seq: int) -> np.ndarray:
    """The records as int64 words, once they are known to be a run of order commands that
    follows sequence number `last_seq`; ValueError (nothing changed) otherwise."""
    if records.dtype != COMMAND_DTYPE:
        raise ValueError(f"records must be of engine.codec.COMMAND_DTYPE, not {records.dtype}")
    expected = np.arange(last_seq + 1, last_seq + 1 + len(records))
    wrong = np.flatnonzero(records["seq"] != expected)
    if wrong.size:
        i = int(wrong[0])
        raise ValueError(
            f"record {i}: sequence {int(records['seq'][i])} does not follow "
            f"{int(expected[i]) - 1}: records must continue the exchange's sequence"
        )
    early = np.flatnonzero(records["ts_ns"] < 0)
    if early.size:  # what Exchange.apply_stamped refuses as a stamp
        i = int(early[0])
        raise ValueError(
            f"record {i}: timestamp {int(records['ts_ns'][i])} is not int64 nanoseconds since 1970"
        )
    kinds = records["kind"]
    bad = np.flatnonzero((kinds < REC_NEW_ORDER) | (kinds > REC_AMEND))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"record {i}: kind {int(kinds[i])} is not NewOrder (1), CancelOrder (2) or "
            "AmendOrder (3)"
        )
    words = np.ascontiguousarray(records).view(np.int64).reshape(len(records), RECORD_WORDS)
    bad_key = first_bad_key(words)
    if bad_key >= 0:
        raise ValueError(
            f"record {bad_key}: ClOrdID {bytes(records['cl_ord_id'][bad_key])!r} is not UTF-8"
        )
    return words
