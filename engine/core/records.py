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

from engine.codec import (
    COMMAND_DTYPE,
    REC_AMEND,
    REC_NEW_ORDER,
    RECORD_WORDS,
    W_FLAGS,
    W_KEY,
    W_SEQ,
    W_TS,
)


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


# why `first_bad_record` stopped at a record
BAD_SEQ, BAD_TS, BAD_KIND, BAD_KEY = 1, 2, 3, 4


@njit(cache=True, _nrt=False)
def first_bad_record(words, last_seq):
    """(index, reason) of the first record that breaks the run's rules (BAD_*), or (-1, 0):
    one compiled pass, so a run of one record costs what a call costs."""
    for i in range(words.shape[0]):
        if words[i, W_SEQ] != last_seq + 1 + i:
            return i, BAD_SEQ
        if words[i, W_TS] < 0:
            return i, BAD_TS
        kind = words[i, W_FLAGS] & 0xFF
        if kind < REC_NEW_ORDER or kind > REC_AMEND:
            return i, BAD_KIND
    bad_key = first_bad_key(words)
    if bad_key >= 0:
        return bad_key, BAD_KEY
    return -1, 0


def words_of(records: np.ndarray, last_seq: int) -> np.ndarray:
    """The records as int64 words, once they are known to be a run of order commands that
    follows sequence number `last_seq`; ValueError (nothing changed) otherwise."""
    if records.dtype != COMMAND_DTYPE:
        raise ValueError(f"records must be of engine.codec.COMMAND_DTYPE, not {records.dtype}")
    words = np.ascontiguousarray(records).view(np.int64).reshape(len(records), RECORD_WORDS)
    i, reason = first_bad_record(words, last_seq)
    if reason:
        raise ValueError(f"record {i}: {_wording(records[i], last_seq + 1 + i, reason)}")
    return words


def _wording(record: np.void, expected_seq: int, reason: int) -> str:
    if reason == BAD_SEQ:
        return (
            f"sequence {int(record['seq'])} does not follow {expected_seq - 1}: records must "
            "continue the exchange's sequence"
        )
    if reason == BAD_TS:  # what Exchange.apply_stamped refuses as a stamp
        return f"timestamp {int(record['ts_ns'])} is not int64 nanoseconds since 1970"
    if reason == BAD_KIND:
        return f"kind {int(record['kind'])} is not NewOrder (1), CancelOrder (2) or AmendOrder (3)"
    return f"ClOrdID {bytes(record['cl_ord_id'])!r} is not UTF-8"
