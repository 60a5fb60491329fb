"""Private replies encoded straight from a batch's event rows: no Python object per event.

`PrivateReplies.encode(rows, private_seq)` walks the event rows `Exchange.apply_batch`
returned (engine.codec) in compiled code and writes each private event (Accepted, Rejected,
the buyer's and the seller's Filled of a trade, Cancelled, Amended) as msgpack, byte for byte
what `engine.protocol.encode` writes for the event `engine.core.rows.decode` gives for the
row (property-tested against it), numbered on its member's private stream from
`private_seq` (the exchange's positions before the batch). `Encoded.select(members)` gathers
the events of some members, in order, into one run for a MESSAGES body (`Outbox`); the rows
of public and clearing events are picked out (`Encoded.public_rows`) for market data and the
trade stream (engine.gateway.public encodes them; what it leaves is decoded).

Invariants:
- the events come in row order, as the decoded events do; a ROW_REJECTED's text is worded
  by the caller's `word` (engine.core.rows.reject_wording: the per-command path's words), a
  ROW_REJECTED_TEXT's text is the bytes its rows carry;
- `encode` returns None, having changed nothing, when a row names a member with no private
  stream position and no account, or an instrument index outside the market: the caller then
  decodes the rows (engine.core.rows.decode), which handles any row;
- ClOrdIDs are copied as the rows hold them: they are UTF-8 without surrogates (a records
  frame with any other ClOrdID is refused before it is applied: `first_surrogate_key`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
from numba import njit

from engine.codec import (
    A_MEMBER,
    A_ORDER_ID,
    A_PRICE,
    A_QTY,
    EVENT_BYTES,
    EVENT_WORDS,
    KEY_WORD,
    M_ORDER_ID,
    M_PRICE,
    M_QTY,
    R_DETAIL_A,
    R_DETAIL_B,
    R_MEMBER,
    ROW_ACCEPTED,
    ROW_AMENDED,
    ROW_AUCTION,
    ROW_CANCELLED,
    ROW_DEPTH,
    ROW_INDICATIVE,
    ROW_PHASE,
    ROW_REJECTED,
    ROW_REJECTED_TEXT,
    ROW_TRADE,
    T_BUY_LEAVES,
    T_BUY_OID,
    T_MEMBERS,
    T_PRICE,
    T_QTY,
    T_SELL_LEAVES,
    T_SELL_OID,
    T_TRADE_ID,
    W_KEY,
    X_LEAVES,
    X_ORDER_ID,
)
from engine.core.packing import put_int, put_marked
from engine.core.pipeline import find_row
from engine.gateway.wire import array_header
from engine.protocol import RejectCode

TAG_ACCEPTED, TAG_REJECTED, TAG_FILLED, TAG_CANCELLED, TAG_AMENDED = 101, 102, 103, 104, 105
assert (T_SELL_OID, T_SELL_LEAVES) == (T_BUY_OID + 1, T_BUY_LEAVES + 1)  # a side indexes
MAX_EVENT_BYTES = 2 * 160  # a row's private events (a trade's two Filled), texts aside
REFUSED = -1  # encode's status for rows it leaves to the decoder
_REJECT_CODES = {int(code): code for code in RejectCode}
_encode = msgspec.msgpack.Encoder().encode


@njit(cache=True, _nrt=False)
def _put_str_header(buf, p, n):
    """msgpack's header of a str of n bytes (fixstr, str8, str16 or str32, as msgspec)."""
    if n < 32:
        buf[p] = 0xA0 | n
        return p + 1
    if n < 1 << 8:
        return put_marked(buf, p, 0xD9, n, 1)
    if n < 1 << 16:
        return put_marked(buf, p, 0xDA, n, 2)
    return put_marked(buf, p, 0xDB, n, 4)


@njit(cache=True, _nrt=False)
def key_length(words, r):
    """The length of row r's ClOrdID: its 32 key bytes less the trailing NULs."""
    n = 0
    for k in range(32):
        if (words[r, KEY_WORD + k // 8] >> (8 * (k % 8))) & 0xFF:
            n = k + 1
    return n


@njit(cache=True, _nrt=False)
def _put_key(buf, p, words, r):
    """The ClOrdID of row r (its key words less the trailing NULs) as a msgpack str."""
    n = key_length(words, r)
    p = _put_str_header(buf, p, n)
    for k in range(n):
        buf[p + k] = (words[r, KEY_WORD + k // 8] >> (8 * (k % 8))) & 0xFF
    return p + n


@njit(cache=True, _nrt=False)
def _put_slice(buf, p, src, lo, hi):
    for k in range(hi - lo):
        buf[p + k] = src[lo + k]
    return p + hi - lo


@njit(cache=True, _nrt=False)
def scan(words, rejects, accepted, public):
    """Mark the rows of public and clearing events in `public` (all False on entry; a
    ROW_REJECTED_TEXT's text rows are no events), list the ROW_REJECTED rows in `rejects`
    and the ROW_ACCEPTED rows in `accepted`; returns how many of each."""
    n = words.shape[0]
    r = k = a = 0
    while r < n:
        kind = words[r, 0] & 0xFF
        if kind in (ROW_TRADE, ROW_DEPTH, ROW_PHASE, ROW_INDICATIVE, ROW_AUCTION):
            public[r] = True
        elif kind == ROW_ACCEPTED:
            accepted[a] = r
            a += 1
        elif kind == ROW_REJECTED:
            rejects[k] = r
            k += 1
        elif kind == ROW_REJECTED_TEXT:
            r += (words[r, R_DETAIL_A] + EVENT_BYTES - 1) // EVENT_BYTES
        r += 1
    return k, a


@njit(cache=True, _nrt=False)
def _stream(ids, counts, member):
    """The next private stream number of `member`, or -1 when it has no position."""
    row = find_row(ids, member)
    if row < 0:
        return -1
    counts[row] += 1
    return counts[row]


@njit(cache=True, _nrt=False)
def _filled(buf, p, w, member, codes_buf, lo, hi, side, aggressor, number):
    """The Filled of one side (0 buy, 1 sell) of the trade row w."""
    buf[p] = 0x9C  # a fixarray of twelve: the tag and eleven fields
    buf[p + 1] = TAG_FILLED
    p = put_int(buf, p + 2, w[1])
    p = put_int(buf, p, w[T_TRADE_ID])
    p = put_int(buf, p, member)
    p = _put_slice(buf, p, codes_buf, lo, hi)
    p = put_int(buf, p, w[T_BUY_OID + side])
    p = put_int(buf, p, side)
    p = put_int(buf, p, w[T_PRICE])
    p = put_int(buf, p, w[T_QTY])
    p = put_int(buf, p, w[T_BUY_LEAVES + side])
    buf[p] = 0xC3 if aggressor else 0xC2
    return put_int(buf, p + 1, number)


@njit(cache=True, _nrt=False)
def encode_rows(words, ids, counts, codes_buf, codes_off, texts_buf, texts_off, buf, offsets,
                members):  # fmt: skip
    """Write the private events of the rows `words` into buf (event e at offsets[e] up to
    offsets[e + 1], its member in members[e]), numbered on from counts (per ids row); the
    k-th ROW_REJECTED's text is texts_buf[texts_off[k]:texts_off[k + 1]], a msgpack str.
    Returns the number of events, or REFUSED (a member with no position, an instrument
    outside the codes)."""
    n = words.shape[0]
    n_codes = codes_off.shape[0] - 1
    r = e = k = p = 0
    while r < n:
        w = words[r]
        kind = w[0] & 0xFF
        index = (w[0] >> 32) & 0xFFFFFFFF
        flag = ((w[0] >> 8) & 0xFF ^ 0x80) - 0x80
        code = (w[0] >> 16) & 0xFFFF
        r += 1
        if kind in (ROW_DEPTH, ROW_PHASE, ROW_INDICATIVE, ROW_AUCTION):
            continue
        if kind not in (ROW_REJECTED, ROW_REJECTED_TEXT) and index >= n_codes:
            return REFUSED
        lo, hi = codes_off[min(index, n_codes - 1)], codes_off[min(index, n_codes - 1) + 1]
        if kind == ROW_TRADE:  # the buyer's Filled, then the seller's
            both = w[T_MEMBERS]
            for side in range(2):
                member = (both << 32) >> 32 if side == 0 else both >> 32
                number = _stream(ids, counts, member)
                if number < 0:
                    return REFUSED
                offsets[e] = p
                members[e] = member
                e += 1
                p = _filled(buf, p, w, member, codes_buf, lo, hi, side, flag == side, number)
            continue
        member = w[A_MEMBER]  # the member word of every private row (A = R = X = M)
        number = _stream(ids, counts, member)
        if number < 0:
            return REFUSED
        offsets[e] = p
        members[e] = member
        e += 1
        if kind == ROW_ACCEPTED:
            buf[p] = 0x9A
            buf[p + 1] = TAG_ACCEPTED
            p = put_int(buf, p + 2, w[1])
            p = _put_key(buf, p, words, r - 1)
            p = put_int(buf, p, member)
            p = _put_slice(buf, p, codes_buf, lo, hi)
            p = put_int(buf, p, w[A_ORDER_ID])
            p = put_int(buf, p, flag)
            p = put_int(buf, p, w[A_PRICE])
            p = put_int(buf, p, w[A_QTY])
        elif kind in (ROW_REJECTED, ROW_REJECTED_TEXT):
            buf[p] = 0x97
            buf[p + 1] = TAG_REJECTED
            p = put_int(buf, p + 2, w[1])
            p = _put_key(buf, p, words, r - 1)
            p = put_int(buf, p, w[R_MEMBER])
            p = put_int(buf, p, code)
            if kind == ROW_REJECTED:
                p = _put_slice(buf, p, texts_buf, texts_off[k], texts_off[k + 1])
                k += 1
            else:
                size = w[R_DETAIL_A]
                p = _put_str_header(buf, p, size)
                for j in range(size):
                    row = r + j // EVENT_BYTES
                    word = words[row, (j % EVENT_BYTES) // 8]
                    buf[p + j] = (word >> (8 * (j % 8))) & 0xFF
                p += size
                r += (size + EVENT_BYTES - 1) // EVENT_BYTES
        elif kind == ROW_CANCELLED:
            buf[p] = 0x98
            buf[p + 1] = TAG_CANCELLED
            p = put_int(buf, p + 2, w[1])
            p = put_int(buf, p, member)
            p = _put_slice(buf, p, codes_buf, lo, hi)
            p = put_int(buf, p, w[X_ORDER_ID])
            p = put_int(buf, p, w[X_LEAVES])
            p = put_int(buf, p, code)
        elif kind == ROW_AMENDED:
            buf[p] = 0x99
            buf[p + 1] = TAG_AMENDED
            p = put_int(buf, p + 2, w[1])
            p = put_int(buf, p, member)
            p = _put_slice(buf, p, codes_buf, lo, hi)
            p = put_int(buf, p, w[M_ORDER_ID])
            p = put_int(buf, p, w[M_PRICE])
            p = put_int(buf, p, w[M_QTY])
            buf[p] = 0xC3 if flag else 0xC2
            p += 1
        else:
            return REFUSED
        p = put_int(buf, p, number)
    offsets[e] = p
    return e


@njit(cache=True, _nrt=False)
def gather(buf, offsets, members, n, wanted, out):
    """Copy the events (of the n in buf) whose member is in `wanted` into out, in order;
    returns (events copied, bytes written)."""
    count = q = 0
    for e in range(n):
        member = members[e]
        for m in wanted:
            if m == member:
                lo, hi = offsets[e], offsets[e + 1]
                for j in range(hi - lo):
                    out[q + j] = buf[lo + j]
                q += hi - lo
                count += 1
                break
    return count, q


@njit(cache=True, _nrt=False)
def first_surrogate_key(words):
    """Index of the first record (COMMAND_DTYPE as int64 words) whose ClOrdID holds an
    encoded surrogate (ED A0-BF): UTF-8 to the core's check (engine.core.records), but no
    str a message can carry; -1 if none."""
    for i in range(words.shape[0]):
        for k in range(31):
            lead = (words[i, W_KEY + k // 8] >> (8 * (k % 8))) & 0xFF
            if lead == 0xED:
                second = (words[i, W_KEY + (k + 1) // 8] >> (8 * ((k + 1) % 8))) & 0xFF
                if 0xA0 <= second <= 0xBF:
                    return i
    return -1


@dataclass
class Encoded:
    """A batch's private events, encoded (`buf[offsets[e]:offsets[e + 1]]`, of member
    `members[e]`), a mask of the rows of its public and clearing events and the indices of
    its ROW_ACCEPTED rows."""

    buf: np.ndarray
    offsets: np.ndarray
    members: np.ndarray
    count: int
    public: np.ndarray
    accepted: np.ndarray

    def select(self, wanted: Sequence[int]) -> tuple[int, bytes]:
        """The events of the members `wanted`, in order: (how many, their bytes)."""
        out = np.empty(int(self.offsets[self.count]), dtype=np.uint8)
        count, size = gather(
            self.buf, self.offsets, self.members, self.count, np.asarray(wanted, np.int64), out
        )
        return int(count), out[:size].tobytes()

    def public_rows(self, rows: bytes) -> bytes:
        """The rows of the public and clearing events (for engine.core.rows.decode)."""
        if not self.public.any():
            return b""
        words = np.frombuffer(rows, dtype=np.int64).reshape(-1, EVENT_WORDS)
        return words[self.public].tobytes()


class PrivateReplies:
    """The encoder for one market: its instruments' codes and the reject wording."""

    def __init__(self, codes: Sequence[str], word: Callable[..., str]) -> None:
        encoded = [msgspec.msgpack.encode(code) for code in codes]
        self.codes_buf = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
        self.codes_off = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
        self.codes = list(codes)
        self.word = word
        self._no_texts = (np.zeros(1, dtype=np.uint8), np.zeros(1, dtype=np.int64))

    def encode(
        self, rows: bytes, private_seq: dict[int, int], known: Sequence[int]
    ) -> Encoded | None:
        """The private events of `rows`, numbered on from `private_seq` (the positions before
        the batch); members with no position start from 0 if they are in `known` (the
        market's members). None if a row is one to decode instead (see the module)."""
        words = np.frombuffer(rows, dtype=np.int64).reshape(-1, EVENT_WORDS)
        n = words.shape[0]
        public = np.zeros(n, dtype=np.bool_)
        reject_rows = np.empty(n, dtype=np.int64)
        accepted = np.empty(n, dtype=np.int64)
        rejects, n_accepted = scan(words, reject_rows, accepted, public)
        texts_buf, texts_off = (
            self._texts(words, reject_rows[:rejects]) if rejects else self._no_texts
        )
        ids = np.asarray(sorted({*private_seq, *known}), dtype=np.int64)
        get = private_seq.get
        counts = np.asarray([get(m, 0) for m in ids.tolist()], dtype=np.int64)
        buf = np.empty(n * MAX_EVENT_BYTES + len(texts_buf) + 8 * n, dtype=np.uint8)
        offsets = np.empty(2 * n + 1, dtype=np.int64)
        members = np.empty(2 * n, dtype=np.int64)
        count = encode_rows(words, ids, counts, self.codes_buf, self.codes_off, texts_buf,
                            texts_off, buf, offsets, members)  # fmt: skip
        if count == REFUSED:
            return None
        return Encoded(buf, offsets, members, count, public, accepted[:n_accepted])

    def _texts(self, words: np.ndarray, rejects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ROW_REJECTED rows' texts (worded as the per-command path words them), each a
        msgpack str, back to back, and their offsets."""
        chosen = words[rejects]
        heads = chosen[:, 0]
        keys = np.ascontiguousarray(chosen[:, KEY_WORD:]).view("S32").ravel().tolist()
        columns = zip(
            ((heads >> 16) & 0xFFFF).tolist(),
            ((heads >> 32) & 0xFFFFFFFF).tolist(),
            chosen[:, R_DETAIL_A].tolist(),
            chosen[:, R_DETAIL_B].tolist(),
            keys,
            chosen[:, R_MEMBER].tolist(),
            strict=True,
        )
        word, codes, encode = self.word, _REJECT_CODES, _encode
        encoded = [
            encode(word(codes[code], index, a, b, key.decode("utf-8", "surrogatepass"), member))
            for code, index, a, b, key, member in columns
        ]
        offsets = np.cumsum([0, *map(len, encoded)]).astype(np.int64)
        return np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8), offsets


class Pending:
    """What a turn has for one peer: encoded messages and runs of them (`Encoded.select`),
    in order, sent as one MESSAGES body."""

    __slots__ = ("count", "parts")

    def __init__(self) -> None:
        self.count = 0
        self.parts: list[bytes] = []

    def __len__(self) -> int:
        return self.count

    def append(self, message: bytes) -> None:
        self.parts.append(message)
        self.count += 1

    def extend(self, messages: list[bytes]) -> None:
        self.parts.extend(messages)
        self.count += len(messages)

    def add_run(self, count: int, data: bytes) -> None:
        if count:
            self.parts.append(data)
            self.count += count

    def body(self) -> bytes:
        return array_header(self.count) + b"".join(self.parts)
