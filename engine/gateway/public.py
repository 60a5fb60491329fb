"""Market data's and the trade stream's events encoded straight from a batch's event rows.

`PublicEncoder.encode(rows, public_seq, clearing_seq)` walks the public and clearing rows
of a batch (`engine.gateway.replies.Encoded.public_rows`) in compiled code: each depth row's
DepthUpdate and each trade row's TradePrint as msgpack (a `PublicRun`: the events back to
back, each with its instrument and public stream number), and each trade row's Trade framed
as DATA/trades.log holds it (a `ClearingRun`: engine.framing's frames back to back). The
bytes are what `engine.protocol.encode` writes for the events `engine.core.rows.decode`
gives for the rows, numbered on from the positions before the batch (property-tested
against it). `event_run` and `clearing_run` make the same runs from event objects, so
market data (`MarketDataPublisher.publish_parts`) and the trade stream
(`TradeStream.publish_parts`) take a turn's events in either form, in one order.
`topic_runs` groups a run's events into market data messages (one per topic, topics in the
order of their last event, split past `max_batch` events).

Invariants:
- a run's events come in row order; the public events of one batch number gap-free from
  public_seq + 1, its clearing events from clearing_seq + 1;
- `encode` returns None, having changed nothing, for rows it leaves to the decoder: a phase,
  indicative or auction row (rare, and what the service's `_observe` looks at), an
  instrument index outside the market, a side, venue or date no event carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
from numba import njit

from engine.codec import (
    D_ORDERS,
    D_PRICE,
    D_QTY,
    EVENT_WORDS,
    ROW_DEPTH,
    ROW_TRADE,
    T_DATE,
    T_PRICE,
    T_QTY,
    T_TRADE_ID,
    T_TS,
    VENUES,
)
from engine.core.packing import put_array_header, put_bytes, put_int
from engine.core.pipeline import fee_on
from engine.core.rows import put_trade, trade_head
from engine.framing import HEADER as FRAME_HEADER
from engine.framing import MAGIC, frame
from engine.instruments import Instrument
from engine.protocol import Audience, Event, TradePrint, encode

TAG_DEPTH, TAG_PRINT = 110, 112
INT_BYTES = 9  # msgpack's longest int
REFUSED = -1  # encode_public's count for rows it leaves to the decoder


def _crc_table() -> np.ndarray:
    """The table of the reflected CRC-32 (polynomial 0xEDB88320) zlib computes."""
    table = []
    for k in range(256):
        c = k
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        table.append(c)
    return np.asarray(table, dtype=np.int64)


_CRC_TABLE = _crc_table()
_MAGIC = np.frombuffer(MAGIC, dtype=np.uint8)
_encode = msgspec.msgpack.Encoder().encode


@njit(cache=True, _nrt=False)
def crc32(buf, lo, hi, table):
    """zlib's CRC-32 of buf[lo:hi]."""
    crc = 0xFFFFFFFF
    for k in range(lo, hi):
        crc = table[(crc ^ buf[k]) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@njit(cache=True, _nrt=False)
def _put_u32(buf, p, v):
    for k in range(4):
        buf[p + k] = (v >> (8 * k)) & 0xFF


@njit(cache=True, _nrt=False)
def _frame_header(buf, p, length, table):
    """engine.framing's header at buf[p] of the payload of `length` bytes after it."""
    for k in range(4):
        buf[p + k] = _MAGIC[k]
    _put_u32(buf, p + 4, length)
    _put_u32(buf, p + 8, crc32(buf, p + 16, p + 16 + length, table))
    _put_u32(buf, p + 12, crc32(buf, p, p + 12, table))


@njit(cache=True, _nrt=False)
def _date(buf, number):
    """engine.codec.date_text(number) as a msgpack str in buf; its size, or -1 for a number
    of more than eight digits."""
    if number == 0:
        buf[0] = 0xA0
        return 1
    if not 0 < number < 100_000_000:
        return -1
    buf[0] = 0xAA
    for k in range(8):
        at = 1 + k + (1 if k >= 4 else 0) + (1 if k >= 6 else 0)  # YYYY-MM-DD
        buf[at] = 0x30 + (number // 10 ** (7 - k)) % 10
    buf[5] = buf[8] = 0x2D
    return 11


@njit(cache=True, _nrt=False)
def encode_public(words, codes, venues, fee_ppm, head, positions, table, date, out, columns):
    """Write the public events of the rows `words` into buf (event e at offsets[e] up to
    offsets[e + 1], of instrument topics[e], numbered seqs[e], a TradePrint if prints[e])
    and their clearing events framed into frames (frame c at frame_offsets[c]); the stream
    numbers follow `positions` (public, clearing). `codes` and `venues`: strs as msgpack
    and their offsets; `out`: (buf, frames), `columns`: (offsets, topics, seqs, prints,
    frame_offsets). Returns (events, frames), or (REFUSED, 0) for rows left to the decoder
    (see the module)."""
    codes_buf, codes_off = codes
    venues_buf, venues_off = venues
    public_seq, clearing_seq = positions
    buf, frames = out
    offsets, topics, seqs, prints, frame_offsets = columns
    n_codes = codes_off.shape[0] - 1
    n_venues = venues_off.shape[0] - 1
    e = c = p = q = 0
    for r in range(words.shape[0]):
        w = words[r]
        kind = w[0] & 0xFF
        index = (w[0] >> 32) & 0xFFFFFFFF
        flag = ((w[0] >> 8) & 0xFF ^ 0x80) - 0x80
        venue = (w[0] >> 16) & 0xFFFF
        if index >= n_codes or kind not in (ROW_DEPTH, ROW_TRADE):
            return REFUSED, 0
        code = codes_buf[codes_off[index] : codes_off[index + 1]]
        offsets[e] = p
        topics[e] = index
        public_seq += 1
        seqs[e] = public_seq
        e += 1
        if kind == ROW_DEPTH:
            if flag != 0 and flag != 1:
                return REFUSED, 0
            prints[e - 1] = False
            buf[p] = 0x98  # a fixarray of eight: the tag and seven fields
            buf[p + 1] = TAG_DEPTH
            p = put_int(buf, p + 2, w[1])
            p = put_bytes(buf, p, code)
            p = put_int(buf, p, flag)
            p = put_int(buf, p, w[D_PRICE])
            p = put_int(buf, p, w[D_QTY])
            p = put_int(buf, p, w[D_ORDERS])
            p = put_int(buf, p, public_seq)
            continue
        size = _date(date, w[T_DATE])
        if venue >= n_venues or size < 0:
            return REFUSED, 0
        venue_str = venues_buf[venues_off[venue] : venues_off[venue + 1]]
        clearing_seq += 1
        fee = fee_on(w[T_PRICE] * w[T_QTY], fee_ppm[index], False)
        frame_offsets[c] = q
        c += 1
        end = put_trade(frames, q + 16, w, head, date[:size], code, venue_str, fee, clearing_seq)
        _frame_header(frames, q, end - q - 16, table)
        q = end
        prints[e - 1] = True
        buf[p] = 0x9A  # a fixarray of ten: the tag and nine fields
        buf[p + 1] = TAG_PRINT
        p = put_int(buf, p + 2, w[1])
        p = put_int(buf, p, w[T_TRADE_ID])
        p = put_int(buf, p, w[T_TS])
        p = put_bytes(buf, p, code)
        p = put_int(buf, p, w[T_PRICE])
        p = put_int(buf, p, w[T_QTY])
        p = put_int(buf, p, flag)
        p = put_bytes(buf, p, venue_str)
        p = put_int(buf, p, public_seq)
    offsets[e] = p
    frame_offsets[c] = q
    return e, c


@njit(cache=True, _nrt=False)
def group_topics(topics, buf, offsets, max_batch, scratch, order, out, messages):
    """Group the events (event i: buf[offsets[i]:offsets[i + 1]] of topic topics[i]) into
    messages: each topic's events in order, topics in the order of their last event, at most
    max_batch events a message; message m is a msgpack array of messages[2, m] events (the
    first is event messages[1, m]) of topic messages[0, m] in out, ending at messages[3, m].
    Scratch: (last, count, start), zeroed rows of a column per topic; order, one per event.
    Returns the number of messages."""
    last, count, start = scratch[0], scratch[1], scratch[2]
    msg_topic, msg_first, msg_count, msg_end = messages[0], messages[1], messages[2], messages[3]
    n = topics.shape[0]
    for i in range(n):
        last[topics[i]] = i
        count[topics[i]] += 1
    total = 0
    for t in range(count.shape[0]):
        start[t] = total
        total += count[t]
        count[t] = 0
    for i in range(n):
        t = topics[i]
        order[start[t] + count[t]] = i
        count[t] += 1
    m = p = 0
    for i in range(n):
        t = topics[i]
        if last[t] != i:
            continue
        for lo in range(start[t], start[t] + count[t], max_batch):
            hi = min(lo + max_batch, start[t] + count[t])
            p = put_array_header(out, p, hi - lo)
            for k in range(lo, hi):
                event = order[k]
                for j in range(offsets[event], offsets[event + 1]):
                    out[p] = buf[j]
                    p += 1
            msg_topic[m] = t
            msg_first[m] = order[lo]
            msg_count[m] = hi - lo
            msg_end[m] = p
            m += 1
    return m


@dataclass
class PublicRun:
    """Public events encoded: event i is buf[offsets[i]:offsets[i + 1]], of topic topics[i]
    (an instrument's index, or an index the publisher gives), public stream number seqs[i],
    a TradePrint when prints[i]."""

    buf: np.ndarray
    offsets: np.ndarray
    topics: np.ndarray
    seqs: np.ndarray
    prints: np.ndarray

    def __len__(self) -> int:
        return len(self.topics)

    @classmethod
    def join(cls, runs: Sequence[PublicRun]) -> PublicRun:
        """The runs one after the other, as one run."""
        if len(runs) == 1:
            return runs[0]
        ends = np.cumsum([0, *(int(r.offsets[len(r)]) for r in runs)])
        offsets = [r.offsets[: len(r)] + base for r, base in zip(runs, ends, strict=False)]
        return cls(
            np.concatenate([r.buf[: r.offsets[len(r)]] for r in runs]),
            np.concatenate([*offsets, ends[-1:]]).astype(np.int64),
            np.concatenate([r.topics for r in runs]),
            np.concatenate([r.seqs for r in runs]),
            np.concatenate([r.prints for r in runs]),
        )

    def event(self, i: int) -> bytes:
        return self.buf[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def messages(self, n_topics: int, max_batch: int) -> list[tuple[int, int, int, bytes]]:
        """The market data messages of the run (`group_topics`): (topic, first event's
        public stream number, events, payload) each."""
        n = len(self)
        out = np.empty(int(self.offsets[n]) + 5 * n, dtype=np.uint8)
        scratch = np.zeros((3, n_topics), dtype=np.int64)
        order = np.empty(n, dtype=np.int64)
        columns = np.empty((4, n), dtype=np.int64)
        m = group_topics(
            self.topics, self.buf, self.offsets, max_batch, scratch, order, out, columns
        )
        topics, firsts, counts, ends = columns[:, :m].tolist()
        seqs = self.seqs[firsts].tolist()
        starts = [0, *ends[:-1]]
        return [
            (t, seq, k, out[lo:hi].tobytes())
            for t, seq, k, lo, hi in zip(topics, seqs, counts, starts, ends, strict=True)
        ]


@dataclass
class ClearingRun:
    """Clearing events framed for the trade log: frame k is frames[offsets[k]:offsets[k + 1]],
    the event of clearing stream number seqs[k]."""

    frames: bytes
    offsets: np.ndarray
    seqs: np.ndarray


@dataclass
class PublicRows:
    """What one batch gives market data and the trade stream."""

    public: PublicRun
    clearing: ClearingRun


EMPTY_RUN = PublicRun(
    np.zeros(1, dtype=np.uint8),
    np.zeros(1, dtype=np.int64),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.int64),
    np.zeros(0, dtype=np.bool_),
)  # no events (shared: read only)
EMPTY_CLEARING = ClearingRun(b"", np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))
for _shared in (*vars(EMPTY_RUN).values(), EMPTY_CLEARING.offsets, EMPTY_CLEARING.seqs):
    _shared.setflags(write=False)


def event_run(events: Iterable[Event], topic_index) -> PublicRun:
    """The run of the public ones among `events`; `topic_index(event)` gives its topic."""
    public = [e for e in events if type(e).audience is Audience.PUBLIC]
    if not public:
        return EMPTY_RUN  # most of a quiet turn's parts: no numpy call for them
    encoded = list(map(_encode, public))
    return PublicRun(
        np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8),
        np.cumsum([0, *map(len, encoded)], dtype=np.int64),
        np.fromiter(map(topic_index, public), dtype=np.int64, count=len(public)),
        np.fromiter((e.stream_seq for e in public), dtype=np.int64, count=len(public)),
        np.fromiter((type(e) is TradePrint for e in public), dtype=np.bool_, count=len(public)),
    )


def clearing_run(events: Iterable[Event]) -> ClearingRun:
    """The run of the clearing ones among `events`."""
    framed, seqs = [], []
    for event in events:
        if type(event).audience is Audience.CLEARING:
            framed.append(frame(encode(event)))
            seqs.append(event.stream_seq)
    if not framed:
        return EMPTY_CLEARING
    offsets = np.cumsum([0, *map(len, framed)], dtype=np.int64)
    return ClearingRun(b"".join(framed), offsets, np.asarray(seqs, dtype=np.int64))


def _table(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strs as msgpack, back to back, and their offsets."""
    encoded = [msgspec.msgpack.encode(text) for text in texts]
    offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
    return np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8), offsets


class PublicEncoder:
    """The encoder for one market: its instruments' codes and fees."""

    def __init__(self, instruments: Sequence[Instrument]) -> None:
        self.codes = _table([i.code for i in instruments])
        self.venues = _table(VENUES)
        strs = int(np.diff(self.codes[1]).max(initial=1) + np.diff(self.venues[1]).max())
        self.event_bytes = 2 + 8 * INT_BYTES + strs  # a TradePrint or a DepthUpdate at most
        self.frame_bytes = FRAME_HEADER.size + 4 + 14 * INT_BYTES + 11 + strs  # a framed Trade
        self.fee_ppm = np.asarray([i.fee_ppm for i in instruments], dtype=np.int64)
        self.head = trade_head()
        self._date = np.empty(16, dtype=np.uint8)

    def encode(self, rows: bytes, public_seq: int, clearing_seq: int) -> PublicRows | None:
        """The public and clearing events of the public and clearing `rows`, numbered on
        from the positions before the batch; None for rows to decode instead (the module)."""
        words = np.frombuffer(rows, dtype=np.int64).reshape(-1, EVENT_WORDS)
        n = words.shape[0]
        buf = np.empty(n * self.event_bytes, dtype=np.uint8)
        offsets = np.empty(n + 1, dtype=np.int64)
        columns = np.empty((2, n), dtype=np.int64)
        prints = np.empty(n, dtype=np.bool_)
        frames = np.empty(n * self.frame_bytes, dtype=np.uint8)
        frame_offsets = np.empty(n + 1, dtype=np.int64)
        count, framed = encode_public(
            words,
            self.codes,
            self.venues,
            self.fee_ppm,
            self.head,
            (public_seq, clearing_seq),
            _CRC_TABLE,
            self._date,
            (buf, frames),
            (offsets, columns[0], columns[1], prints, frame_offsets),
        )
        if count == REFUSED:
            return None
        clearing = ClearingRun(
            frames[: frame_offsets[framed]].tobytes(),
            frame_offsets[: framed + 1],
            np.arange(clearing_seq + 1, clearing_seq + 1 + framed, dtype=np.int64),
        )
        topics, seqs = columns[:, :count]
        public = PublicRun(buf, offsets[: count + 1], topics, seqs, prints[:count])
        return PublicRows(public, clearing)
