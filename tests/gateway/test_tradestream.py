"""The trade stream (engine.gateway.tradestream): its trade log levelled with the journal, its
consumers served from a stream number without ever blocking, and a real `cxe serve` that
serves exactly the events from N across a kill -9 and a restart."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import zmq

from engine.clearing.capture import TradeLogWriter, read_trade_log
from engine.cli.serve import clock_start
from engine.config import default_market
from engine.core import Exchange
from engine.framing import CorruptLog
from engine.gateway.tradestream import (
    ERROR,
    EVENTS,
    HEADER,
    HEARTBEAT,
    POSITION,
    REQUEST,
    TRADES_FILE,
    TradeStream,
)
from engine.journal.history import HISTORY_FILE, history_id
from engine.journal.segments import Journal, replay_events
from engine.protocol import (
    Audience,
    DayClosed,
    NewOrder,
    OpenCall,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import Side
from tests.support.engine import CLOCK, DAY, EngineProcess
from tests.support.trading import CODES, mm_client, trade

MARKET = default_market()
TS = clock_start(CLOCK)  # the trading day's 09:10
_events = msgspec.msgpack.Decoder(list[Trade | DayClosed])


def clearing(events) -> list:
    return [e for e in events if type(e).audience is Audience.CLEARING]


class JournaledExchange:
    """An exchange whose every command is journaled in DATA/journal, as the service does."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.exchange = Exchange(MARKET)
        self.journal = Journal(data / "journal")
        self.clearing: list = []

    def apply(self, *commands) -> list:
        events = []
        for command in commands:
            seq = self.exchange.seq + 1
            self.journal.append(seq, TS + seq, command)
            events += self.exchange.apply_stamped(seq, TS + seq, command)
        self.journal.flush()  # for the scratch replay that reads it (no power loss here)
        self.clearing += clearing(events)
        return events

    def day_with_trades(self, trades: int) -> list:
        code = CODES[0]
        events = self.apply(StartOfDay(DAY), OpenCall(code), Uncross(code))
        price = MARKET.instrument(code).reference_price
        for i in range(trades):
            events += self.apply(
                NewOrder(f"s{i}", 1, code, Side.SELL, price, 100),
                NewOrder(f"b{i}", 2, code, Side.BUY, price, 100),
            )
        return events


def trade_log_bytes(events: list, path: Path) -> bytes:
    with TradeLogWriter(path) as writer:
        writer.record(events)
    return path.read_bytes()


def consume(socket: zmq.Socket, until: int, pump=None, timeout_s: float = 30) -> list:
    """Events received on `socket` until stream number `until` (calling `pump` between
    polls, for an in-process stream)."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while (not got or got[-1].stream_seq < until) and time.monotonic() < deadline:
        if pump is not None:
            pump()
        if not socket.poll(10 if pump else 1000):
            continue
        frames = socket.recv_multipart()
        assert frames[0] in (EVENTS, HEARTBEAT), frames
        if frames[0] == EVENTS:
            first, count, _held = HEADER.unpack(frames[1])
            events = _events.decode(frames[2])
            assert [e.stream_seq for e in events] == list(range(first, first + count))
            got += events
    return got


def arrived(socket: zmq.Socket) -> list:
    """The events that have arrived on `socket` (without waiting)."""
    got: list = []
    while True:
        try:
            frames = socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return got
        if frames[0] == EVENTS:
            got += _events.decode(frames[2])


def dealer(context: zmq.Context, endpoint: str, first: int | None = None, **options):
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    for option, value in options.items():
        socket.setsockopt(getattr(zmq, option), value)
    socket.connect(endpoint)
    if first is not None:
        socket.send_multipart([REQUEST, POSITION.pack(first)])
    return socket


# -- the trade log, in process --------------------------------------------------------------


def test_the_trade_log_is_rebuilt_from_the_journal_byte_for_byte(tmp_path):
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(40)
    expected = trade_log_bytes(day.clearing, tmp_path / "expected.log")
    assert len(day.clearing) == 40
    path = day.data / TRADES_FILE
    context = zmq.Context()
    cases = {
        "no file": lambda: path.unlink(missing_ok=True),
        "missing records and a torn tail": lambda: path.write_bytes(expected[:-500]),
        "zeros after record 10": lambda: path.write_bytes(
            expected[: len(trade_log_bytes(day.clearing[:10], tmp_path / "ten.log"))] + b"\0" * 300
        ),
    }
    try:
        for n, (case, damage) in enumerate(cases.items()):
            damage()
            stream = TradeStream(context, f"inproc://level{n}", day.data, day.exchange)
            stream.close()
            assert path.read_bytes() == expected, case
            assert stream.regenerated > 0 and stream.set_aside is None, case
        stream = TradeStream(context, "inproc://level-again", day.data, day.exchange)
        stream.close()
        assert stream.regenerated == 0  # a level file is taken as it is
        path.write_bytes(expected + expected[:7])  # a torn record after the last: no trace kept
        stream = TradeStream(context, "inproc://torn-after", day.data, day.exchange)
        stream.close()
        assert path.read_bytes() == expected and stream.set_aside is None
        assert not list(day.data.glob(f"{TRADES_FILE}.past-*"))
    finally:
        context.destroy(linger=0)


def test_every_message_carries_the_journals_history_id_which_a_restart_keeps(tmp_path):
    """Stream numbers begin again at 1 in a fresh data directory: the history id, with each
    EVENTS and HB, tells a consumer whose stream it is (tests/cli/test_capture.py has the
    store that refuses another's)."""
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(3)
    context = zmq.Context()
    try:
        histories = []
        for n in range(2):  # a restart keeps it
            stream = TradeStream(context, f"inproc://history{n}", day.data, day.exchange)
            peer = dealer(context, f"inproc://history{n}", 1)
            kinds = []
            deadline = time.monotonic() + 10
            while len(kinds) < 2 and time.monotonic() < deadline:  # events, then a heartbeat
                stream.handle(stream.router)
                if peer.poll(10):
                    frames = peer.recv_multipart()
                    kinds.append(frames[0])
                    assert frames[-1] == stream.history, frames
            assert kinds == [EVENTS, HEARTBEAT]
            histories.append(stream.history)
            peer.close()
            stream.close()
        assert histories[0] == histories[1] == history_id(day.data / "journal").encode()
        other = JournaledExchange(tmp_path / "fresh")
        assert history_id(other.data / "journal").encode() != histories[0]
    finally:
        context.destroy(linger=0)


def test_a_history_file_that_holds_no_id_is_refused_not_replaced(tmp_path):
    journal = tmp_path / "journal"
    made = history_id(journal)
    assert len(made) == 32 and history_id(journal) == made
    (journal / HISTORY_FILE).write_text("not an id")
    with pytest.raises(ValueError, match=r"does not hold a history id .* restore it"):
        history_id(journal)
    assert (journal / HISTORY_FILE).read_text() == "not an id"


def test_records_past_what_the_exchange_recovered_are_cut(tmp_path):
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(30)
    path = day.data / TRADES_FILE
    trade_log_bytes(day.clearing, path)
    earlier = Exchange(MARKET)  # as if the journal had lost its last commands
    for _record, _ in replay_events(day.data / "journal", earlier):
        if earlier.state.clearing_seq == 12:
            break
    whole = path.read_bytes()
    context = zmq.Context()
    try:
        stream = TradeStream(context, "inproc://cut", day.data, earlier)
        stream.close()
        assert list(read_trade_log(path)) == day.clearing[:12]
        # what was cut is kept: the trace of what the journal lost (a helper's probe found it
        # cut without a word)
        assert stream.set_aside == day.data / f"{TRADES_FILE}.past-12"
        assert path.read_bytes() + stream.set_aside.read_bytes() == whole
        assert list(read_trade_log(stream.set_aside)) == day.clearing[12:]
        # a second loss back to the same event keeps the first one's trace (a probe's second
        # loss replaced it)
        path.write_bytes(whole)
        again = TradeStream(context, "inproc://cut-again", day.data, earlier)
        again.close()
    finally:
        context.destroy(linger=0)
    assert again.set_aside == day.data / f"{TRADES_FILE}.past-12.2"
    assert list(read_trade_log(stream.set_aside)) == day.clearing[12:]
    assert list(read_trade_log(again.set_aside)) == day.clearing[12:]


def test_a_consumer_that_does_not_read_never_blocks_and_resumes_from_its_position(tmp_path):
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(5)
    context = zmq.Context()
    stream = TradeStream(
        context, "inproc://slow", day.data, day.exchange, max_events=4, sndhwm=2, max_messages=8
    )
    try:
        slow = dealer(context, "inproc://slow", 1, RCVHWM=2)
        quick = dealer(context, "inproc://slow", 3)
        while len(stream.consumers) < 2:
            stream.handle(stream.router)
        code = CODES[0]
        price = MARKET.instrument(code).reference_price
        quick_got = []
        for i in range(300):  # 300 more trades while `slow` reads nothing
            events = day.apply(
                NewOrder(f"ls{i}", 1, code, Side.SELL, price, 100),
                NewOrder(f"lb{i}", 2, code, Side.BUY, price, 100),
            )
            started = time.perf_counter()
            stream.publish(events)
            assert time.perf_counter() - started < 0.5
            quick_got += arrived(quick)
        assert stream.blocked > 0  # `slow`'s queue filled and the loop went on
        assert min(c.next_seq for c in stream.consumers.values()) < 300
        slow_got = consume(slow, 305, pump=lambda: stream.publish([]))
        if quick_got[-1].stream_seq < 305:  # `quick` may have everything already (it waited
            quick_got += consume(quick, 305, pump=lambda: stream.publish([]))  # out 30 s)
        assert slow_got == day.clearing
        assert quick_got == day.clearing[2:]
        slow.close()
        quick.close()
    finally:
        stream.close()
        context.destroy(linger=0)


def test_bad_requests_are_answered_and_forgotten(tmp_path):
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(3)
    context = zmq.Context()
    stream = TradeStream(context, "inproc://bad", day.data, day.exchange)
    try:
        peer = dealer(context, "inproc://bad")
        for frames, expected in [
            ([REQUEST, POSITION.pack(0)], "not 0"),
            ([REQUEST, POSITION.pack(5)], "holds clearing events 1..3"),
            ([REQUEST, b"\x01"], "8 bytes"),
            ([b"GIVE", POSITION.pack(1)], "expected two frames"),
        ]:
            peer.send_multipart(frames)
            while not peer.poll(10):
                stream.handle(stream.router)
            kind, text, history = peer.recv_multipart()
            assert kind == ERROR and expected in text.decode(), text
            assert history == stream.history
        assert stream.consumers == {} and stream.bad_requests == 4
        peer.send_multipart([REQUEST, POSITION.pack(4)])  # level: only a heartbeat
        while not peer.poll(10):
            stream.handle(stream.router)
        assert peer.recv_multipart() == [HEARTBEAT, POSITION.pack(3), stream.history]
        peer.close()
    finally:
        stream.close()
        context.destroy(linger=0)


@pytest.mark.parametrize("damage", ["emptied", "flipped"])
def test_a_trade_log_damaged_under_the_engine_refuses_its_reader_and_the_stream_goes_on(
    tmp_path, damage
):
    """Found by a helper's probe: trades.log emptied while the engine ran (a log rotation's
    copytruncate) made the next read a short one, and its struct.error stopped the engine.
    A flipped byte was refused already. Either way the consumer is told to restart the engine
    (which rebuilds the file) and the stream goes on."""
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(3)
    context = zmq.Context()
    stream = TradeStream(context, "inproc://damaged", day.data, day.exchange)
    try:
        log = day.data / "trades.log"
        if damage == "emptied":
            log.write_bytes(b"")
        else:
            data = bytearray(log.read_bytes())
            data[-1] ^= 0x01
            log.write_bytes(bytes(data))
        peer = dealer(context, "inproc://damaged", 1)
        while not peer.poll(10):
            stream.handle(stream.router)
        kind, text, _history = peer.recv_multipart()
        assert kind == ERROR and "restart the engine (it rebuilds the file)" in text.decode()
        assert ("was cut while the engine ran" in text.decode()) == (damage == "emptied")
        stream.publish([])  # the loop goes on
        peer.close()
    finally:
        stream.close()
        context.destroy(linger=0)


# -- a real engine ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_consumer_from_n_gets_exactly_the_events_from_n_across_a_kill_and_restart(tmp_path):
    data = tmp_path / "data"
    context = zmq.Context()
    engine = EngineProcess(data).start()
    try:
        engine.open_market(*CODES)
        gateway = mm_client(engine, context)
        trade(gateway, "a", 300)
        from_one = dealer(context, engine.endpoints["trades"], 1)
        middle = dealer(context, engine.endpoints["trades"], 150)
        assert [e.stream_seq for e in consume(from_one, 300)] == list(range(1, 301))
        trade(gateway, "b", 100)  # live: both are sent the new ones
        got = consume(middle, 400)
        assert [e.stream_seq for e in got] == list(range(150, 401))
        assert consume(from_one, 400)[-1].stream_seq == 400
        gateway.close(logout=False)
        engine.kill()
        log = data / TRADES_FILE  # as if killed between the journal's fsync and the log's write
        log.write_bytes(log.read_bytes()[:-700])  # the last records gone, one torn
        engine.start()
        after = dealer(context, engine.endpoints["trades"], 200)
        served = consume(after, 400)
        assert served == got[50:]  # from the file, across the restart, exactly
        refused = dealer(context, engine.endpoints["trades"], 402)
        assert refused.poll(10_000)
        kind, text, _history = refused.recv_multipart()
        assert kind == ERROR and b"1..400" in text
        replayed = Exchange(MARKET)
        regenerated = []
        for _, events in replay_events(data / "journal", replayed):
            regenerated += clearing(events)
        assert list(read_trade_log(data / TRADES_FILE)) == regenerated
        assert len(regenerated) == 400
        for socket in (from_one, middle, after, refused):
            socket.close()
        assert engine.stop() == 0
    finally:
        if engine.process.poll() is None:
            engine.process.kill()
            engine.process.wait(30)
        context.destroy(linger=0)


def lose_the_journal(engine: EngineProcess) -> bytes:
    """Trade, stop, and delete the journal's files (a mistaken cleanup); trades.log as held."""
    engine.open_market(*CODES)
    with mm_client(engine) as gateway:
        trade(gateway, "a", 20)
    assert engine.stop() == 0
    for segment in (engine.data / "journal").iterdir():
        segment.unlink()
    return (engine.data / TRADES_FILE).read_bytes()


@pytest.mark.slow
def test_a_restart_that_lost_acknowledged_commands_is_refused_until_the_operator_decides(
    tmp_path,
):
    """Found by helpers' probes: journal files deleted (or a day's segment emptied or
    renamed), then a restart: it came back without acknowledged commands, first without a
    word, then with a WARNING only. With fsync on, trades.log past the state proves they
    were acknowledged: the engine does not start, and changes nothing, until the operator
    restores the journal or moves trades.log away."""
    data = tmp_path / "data"
    engine = EngineProcess(data)
    with engine:
        held = lose_the_journal(engine)
        with pytest.raises(RuntimeError, match="exited 2"):
            engine.start()  # refused by the acknowledged mark (tests/gateway/test_service_e2e)
        (data / "acknowledged").unlink()  # without it: refused by trades.log
        with pytest.raises(RuntimeError, match="exited 2"):
            engine.start()
        assert "come from commands that were acknowledged (fsync is on)" in engine.output()
        assert f"move {TRADES_FILE} away" in engine.output()
        assert (data / TRADES_FILE).read_bytes() == held  # nothing changed
        (data / TRADES_FILE).rename(tmp_path / "lost-trades.log")  # the operator decides
        engine.start()
        assert engine.status().seq == 0
        assert engine.stop() == 0


@pytest.mark.slow
def test_without_fsync_a_restart_that_lost_commands_says_so_and_keeps_their_trace(tmp_path):
    """With --no-fsync a machine crash may lose the journal's tail (that was the risk taken):
    the records past the state are kept aside, and said, and the engine starts."""
    data = tmp_path / "data"
    engine = EngineProcess(data, fsync=False)
    with engine:
        held = lose_the_journal(engine)
        engine.start()
        assert "WARNING: trades.log held clearing events past the state recovered" in (
            engine.output()
        )
        assert (data / f"{TRADES_FILE}.past-0").read_bytes() == held
        assert (data / TRADES_FILE).read_bytes() == b""
        assert engine.stop() == 0


def test_a_trade_log_that_cannot_be_rebuilt_says_why_and_is_not_made(tmp_path):
    """Found by a probe: with every segment archived after a snapshot and trades.log moved
    away (as messages allowed), the start said 'the journal is not the one recovered from'
    and left an empty trades.log behind. Only a replay from the first command rebuilds it."""
    day = JournaledExchange(tmp_path / "data")
    day.day_with_trades(3)
    day.journal.close()
    for segment in (day.data / "journal").glob("commands-*.log"):
        segment.unlink()
    context = zmq.Context()
    try:
        with pytest.raises(CorruptLog, match=r"clearing events 1\.\.3 .* holds no segment"):
            TradeStream(context, "inproc://none", day.data, day.exchange)
    finally:
        context.destroy(linger=0)
    assert not (day.data / TRADES_FILE).exists()
