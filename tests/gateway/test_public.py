"""Market data and the trade stream from event rows (engine.gateway.public) against the
object path: for random flows through a real Exchange (batches and operator commands, turns
of several of each), the messages a MarketDataPublisher sends on its PUB socket (real
ZeroMQ, loopback) are those the events engine.core.rows.decode gives would be sent as, by
the publisher's rule restated here (one message per topic a turn, topics in the order of
their last event, split past max_batch, both sequence numbers), and DATA/trades.log holds
every clearing event framed as engine.protocol.encode writes it; the parts encoded from rows
carry each decoded event's bytes and stream number."""

from __future__ import annotations

import zlib
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.codec import EVENT_WORDS, ROW_DEPTH, ROW_PHASE, ROW_TRADE, T_DATE, date_text
from engine.core import Exchange
from engine.core.rows import decode
from engine.framing import frame
from engine.gateway.marketdata import HEADER, MARKET_TOPIC, MarketDataPublisher, topic_of
from engine.gateway.public import _CRC_TABLE, ClearingRun, PublicEncoder, PublicRows, _date, crc32
from engine.gateway.replies import scan
from engine.gateway.tradestream import StreamBroken, TradeStream
from engine.protocol import (
    AuctionResult,
    Audience,
    Indicative,
    PhaseChanged,
    TradePrint,
    encode,
)
from tests.core.test_batch import CODES, INSTRUMENTS, as_records, flows, start
from tests.gateway.test_replies import open_exchange

ENCODER = PublicEncoder(INSTRUMENTS)
LOOPBACK = "tcp://127.0.0.1:*"
DECODED_ONLY = (PhaseChanged, Indicative, AuctionResult)  # rows the encoder leaves


def public_rows(rows: bytes) -> bytes:
    """The rows of public and clearing events (engine.gateway.replies.Encoded.public_rows)."""
    words = np.frombuffer(rows, dtype=np.int64).reshape(-1, EVENT_WORDS)
    n = len(words)
    mask = np.zeros(n, dtype=np.bool_)
    scan(words, np.empty(n, np.int64), np.empty(n, np.int64), mask)
    return words[mask].tobytes()


def batch_part(exchange: Exchange, records: np.ndarray) -> tuple[object, list]:
    """Apply a batch: what the service would hand on (PublicRows, or the decoded events when
    the encoder leaves the rows to the decoder) and the decoded events."""
    positions = exchange.stream_positions()
    rows = exchange.apply_batch(records)
    events = decode(rows, INSTRUMENTS, positions)
    encoded = ENCODER.encode(public_rows(rows), positions["public"], positions["clearing"])
    if encoded is None:
        assert any(isinstance(e, DECODED_ONLY) for e in events)
        return events, events
    assert not any(isinstance(e, DECODED_ONLY) for e in events)
    public = [e for e in events if type(e).audience is Audience.PUBLIC]
    run = encoded.public
    assert len(run) == len(public)
    for k, event in enumerate(public):
        assert run.event(k) == encode(event), event
        assert (run.seqs[k], run.topics[k]) == (event.stream_seq, CODES.index(event.instrument))
        assert run.prints[k] == (type(event) is TradePrint)
    clearing = [e for e in events if type(e).audience is Audience.CLEARING]
    assert encoded.clearing.frames == b"".join(frame(encode(e)) for e in clearing)
    assert encoded.clearing.seqs.tolist() == [e.stream_seq for e in clearing]
    return encoded, events


def expected_messages(events: list, max_batch: int, topic_seq: dict) -> list[list[bytes]]:
    """The publisher's messages for a turn's events, by its rule (engine.gateway.marketdata)."""
    runs: dict[bytes, list] = {}
    for event in events:
        if type(event).audience is Audience.PUBLIC:
            code = getattr(event, "instrument", None)
            runs.setdefault(topic_of(code) if code else MARKET_TOPIC, []).append(event)
    messages = []
    for topic, run in sorted(runs.items(), key=lambda item: item[1][-1].stream_seq):
        for lo in range(0, len(run), max_batch):
            chunk = run[lo : lo + max_batch]
            first = topic_seq.get(topic, 0) + 1
            topic_seq[topic] = first + len(chunk) - 1
            header = HEADER.pack(chunk[0].stream_seq, first, len(chunk))
            messages.append([topic, header, msgspec.msgpack.encode(chunk)])
    return messages


def received(sub: zmq.Socket, count: int) -> list[list[bytes]]:
    got = []
    for _ in range(count):
        assert sub.poll(5000), f"{len(got)} of {count} messages arrived"
        got.append(sub.recv_multipart())
    assert not sub.poll(50)
    return got


def subscriber(publisher: MarketDataPublisher) -> zmq.Socket:
    sub = publisher.pub.context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(publisher.pub_endpoint)
    return sub


def run_turns(
    exchange: Exchange, steps: list, turn_ends: list[bool], max_batch: int, data_dir: Path
) -> None:
    context = zmq.Context.instance()
    encoded = MarketDataPublisher(context, LOOPBACK, LOOPBACK, exchange, max_batch=max_batch)
    plain = MarketDataPublisher(context, LOOPBACK, LOOPBACK, exchange, max_batch=max_batch)
    stream = TradeStream(context, LOOPBACK, data_dir, exchange)
    subs = [subscriber(encoded), subscriber(plain)]
    all_events: list = []
    topic_seq: dict[bytes, int] = {}
    try:
        for sub in subs:  # the subscriptions reach the publishers
            while not sub.poll(20):
                for publisher in (encoded, plain):
                    publisher.heartbeat()
            while sub.poll(20):
                sub.recv_multipart()
        parts: list = []
        events: list = []
        for k, step in enumerate(steps):
            if step[0] == "operator":
                applied = exchange.apply(step[1], step[2])
                parts.append(applied)
            else:
                part, applied = batch_part(exchange, as_records(step[1], step[2], exchange.seq + 1))
                parts.append(part)
            events += applied
            if not turn_ends[k % len(turn_ends)] and k < len(steps) - 1:
                continue
            expected = expected_messages(events, max_batch, topic_seq)
            encoded.publish_parts(parts)
            plain.publish(events)
            stream.publish_parts(parts)
            assert received(subs[0], len(expected)) == expected
            assert received(subs[1], len(expected)) == expected
            all_events += events
            parts, events = [], []
        state = exchange.state
        assert encoded.sequence == plain.sequence == state.public_seq
        assert encoded.stream_breaks == plain.stream_breaks == 0
        for code in CODES:
            prints = [e for e in all_events if type(e) is TradePrint and e.instrument == code]
            for publisher in (encoded, plain):
                assert publisher.instrument_state(code).last_trade == (
                    prints[-1] if prints else None
                )
        stream.close()
        clearing = [e for e in all_events if type(e).audience is Audience.CLEARING]
        assert stream.last == state.clearing_seq == len(clearing)
        written = (data_dir / "trades.log").read_bytes()
        assert written == b"".join(frame(encode(e)) for e in clearing)
    finally:
        for sub in subs:
            sub.close()
        encoded.close()
        plain.close()
        stream.router.close(0)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    flows(),
    st.lists(st.booleans(), min_size=1, max_size=4),
    st.sampled_from([1, 3, 256]),
    st.booleans(),
)
def test_market_data_and_the_trade_log_from_rows_are_the_object_paths(
    tmp_path_factory, steps, turn_ends, max_batch, scheduled
):
    """From the day's start through its calendar (calls: rows left to the decoder), or from
    an open continuous market (trades and depth: rows encoded)."""
    exchange = start(Exchange) if scheduled else open_exchange()
    run_turns(exchange, steps, turn_ends, max_batch, tmp_path_factory.mktemp("data"))


def test_long_runs_of_the_bench_workload(tmp_path):
    """Batches of hundreds of orders in both instruments (grown buffers, many trades and
    messages per turn)."""
    rng = np.random.default_rng(5)
    steps = []
    for batch in range(4):
        rows = []
        for k in range(300):
            instrument = k % 2
            price = (10_000, 3_000)[instrument] + (100, 30)[instrument] * int(rng.integers(-3, 4))
            member, side, qty = (
                int(rng.integers(1, 4)),
                int(rng.integers(0, 2)),
                int(rng.integers(1, 30)),
            )
            rows.append((1, member, instrument, side, 1, 0, 0, price, 10 * qty, 0, f"w{batch}-{k}"))
        steps.append(("records", rows, [0] * len(rows)))
    run_turns(open_exchange(), steps, [True, False], 256, tmp_path)


@given(st.binary(max_size=300))
def test_crc32_is_zlibs(data):
    buf = np.frombuffer(data + b"\0", dtype=np.uint8)
    assert crc32(buf, 0, len(data), _CRC_TABLE) == zlib.crc32(data)


@given(st.integers(0, 99_999_999))
def test_a_date_is_codec_date_text(number):
    buf = np.zeros(16, dtype=np.uint8)
    size = _date(buf, number)
    assert buf[:size].tobytes() == msgspec.msgpack.encode(date_text(number))


def test_rows_it_leaves_to_the_decoder_give_none():
    """A phase row, an instrument outside the market, a date of nine digits."""
    assert _date(np.zeros(16, dtype=np.uint8), 100_000_000) == -1
    empty = ENCODER.encode(b"", 0, 0)
    assert len(empty.public) == 0 and empty.clearing.frames == b""
    for kind, index in ((ROW_PHASE, 0), (ROW_DEPTH, len(CODES)), (ROW_TRADE, 0)):
        row = np.zeros((1, EVENT_WORDS), dtype=np.int64)
        row[0, 0] = kind | index << 32
        row[0, T_DATE] = 100_000_000
        assert ENCODER.encode(row.tobytes(), 0, 0) is None


def test_a_clearing_run_that_does_not_follow_is_refused_whole(tmp_path):
    """The trade log's invariant (record k is clearing event k): a run whose numbers do not
    follow the file's last raises StreamBroken and writes none of it."""
    exchange = open_exchange()
    context = zmq.Context.instance()
    stream = TradeStream(context, LOOPBACK, tmp_path, exchange)
    try:
        first = exchange.stream_positions()["clearing"] + 1
        run = ClearingRun(b"\0" * 32, np.array([0, 16, 32]), np.array([first, first + 2]))
        with pytest.raises(StreamBroken, match=f"clearing event {first + 2} does not follow"):
            stream.publish_parts([PublicRows(ENCODER.encode(b"", 0, 0).public, run)])
        assert stream.last == first - 1 and stream.writer.size == 0
    finally:
        stream.close()
