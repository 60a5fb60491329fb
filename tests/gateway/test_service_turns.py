"""One turn of the service loop, driven by hand over real sockets (in process): what a turn
takes in when many frames wait."""

from __future__ import annotations

import time
from dataclasses import replace

import msgspec
import numpy as np
import pytest
import zmq

from engine.cli.serve import clock_start
from engine.codec import records_of
from engine.config import Gateway, MarketConfig, default_market
from engine.core import Exchange
from engine.gateway import wire
from engine.gateway.sequencing import SMALL_RUN
from engine.gateway.service import CLOCK_WATCH_NS, EngineService, Options
from engine.journal.segments import catch_up
from engine.protocol import Accepted, Filled, NewOrder, OpenCall, StartOfDay, Uncross
from tests.gateway.test_service_load import PER_FRAME, refused_orders
from tests.support.engine import CLOCK

MARKET = default_market()
CODE = MARKET.instruments[0].code


def open_service(tmp_path, market: MarketConfig = MARKET) -> EngineService:
    options = Options(tmp_path, orders="tcp://127.0.0.1:*", admin="tcp://127.0.0.1:*",
                      market_data="tcp://127.0.0.1:*", snapshots="tcp://127.0.0.1:*",
                      trades="tcp://127.0.0.1:*",
                      clock_start_ns=clock_start(CLOCK), quiet=True)  # fmt: skip
    service = EngineService(market, options, log=lambda line: None)
    service.open()
    return service


def logged_on(service: EngineService, gateway: str) -> zmq.Socket:
    """A DEALER logged on as `gateway` (the service turned until it answered)."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(service.endpoints["orders"])
    socket.send_multipart(wire.messages_frame([wire.Logon(gateway, heartbeat_ms=60_000)]))
    while not socket.poll(0):
        service.turn(10)
    assert isinstance(wire.unpack(socket.recv_multipart()[1])[0], wire.LogonAccepted)
    return socket


def test_a_turn_takes_at_most_its_budget_of_records_whatever_the_frames(tmp_path):
    service = open_service(tmp_path)
    try:
        context = zmq.Context.instance()
        admin = context.socket(zmq.DEALER)
        admin.connect(service.endpoints["admin"])
        admin.send_multipart(wire.messages_frame([StartOfDay("2026-11-24"), OpenCall(CODE),
                                                  Uncross(CODE)]))  # fmt: skip
        flood, broker = (context.socket(zmq.DEALER) for _ in range(2))
        for socket, gateway in ((flood, "mm"), (broker, "brokers")):
            socket.connect(service.endpoints["orders"])
            socket.send_multipart(wire.messages_frame([wire.Logon(gateway, heartbeat_ms=60_000)]))
        while service.exchange.seq < 3 or len(service.sessions.by_routing_id) < 2:
            service.turn(100)
        for frame in range(20):
            flood.send_multipart([wire.RECORDS, refused_orders(1, frame).tobytes()])
        order = NewOrder("fair", 3, CODE, 0, MARKET.instruments[0].reference_price, 100)
        broker.send_multipart(wire.messages_frame([order]))
        time.sleep(1.0)  # everything has arrived: the engine has a backlog of 20 frames
        start = service.exchange.seq
        service.turn(100)
        taken = service.exchange.seq - start
        assert taken <= service.options.batch_limit + PER_FRAME  # not 20 frames at once
        while service.status.lookup(3, "fair") is None:
            service.turn(100)
        assert service.exchange.seq - start < 10 * PER_FRAME  # the broker's turn came early
    finally:
        service.close()


def test_a_bad_records_frame_among_good_ones_in_one_turn_is_refused_alone(tmp_path):
    """A turn checks its records frames as one run; when one frame has a bad record (a
    ClOrdID that is not UTF-8 or holds a surrogate, a member the gateway may not act for, in
    a frame small and large) only that frame is refused, with the record named, and the
    others are numbered without a gap, journaled and applied: a replay of the journal gives
    the same state."""
    service = open_service(tmp_path)
    try:
        context = zmq.Context.instance()
        admin = context.socket(zmq.DEALER)
        admin.connect(service.endpoints["admin"])
        admin.send_multipart(wire.messages_frame([StartOfDay("2026-11-24"), OpenCall(CODE),
                                                  Uncross(CODE)]))  # fmt: skip
        broker = context.socket(zmq.DEALER)
        broker.connect(service.endpoints["orders"])
        broker.send_multipart(wire.messages_frame([wire.Logon("brokers", heartbeat_ms=60_000)]))
        while service.exchange.seq < 3 or not service.sessions.by_routing_id:
            service.turn(100)
        while broker.poll(0):
            broker.recv_multipart()
        price = MARKET.instruments[0].reference_price
        codes = [i.code for i in MARKET.instruments]

        def frame(name: str, n: int, member: int = 3) -> np.ndarray:
            orders = [NewOrder(f"{name}{i}", member, CODE, i % 2, price, 100) for i in range(n)]
            return records_of(orders, codes, 0, [0] * n)

        bad_key = frame("k", 3)
        bad_key["cl_ord_id"][1] = b"ok\xff"
        surrogate = frame("s", 2)  # UTF-8 to the core's check, but no str: it once crashed
        surrogate["cl_ord_id"][0] = "s\udc80".encode("utf-8", "surrogatepass")  # the reply
        frames = [frame("a", 2), bad_key, frame("b", 40), frame("m", 2, member=1),
                  frame("big", 20, member=1), surrogate, frame("c", 1)]  # fmt: skip
        for records in frames:
            broker.send_multipart([wire.RECORDS, records.tobytes()])
        time.sleep(1.0)  # everything has arrived: one turn takes it all
        start = service.exchange.seq
        service.turn(100)
        assert service.exchange.seq == start + 2 + 40 + 1  # a run the encoder answers
        replies = []
        while broker.poll(1000):
            replies += wire.unpack(broker.recv_multipart()[1])
            if sum(type(r) is Accepted for r in replies) == 43:
                break
        refusals = [r.text for r in replies if type(r) is wire.SessionRejected]
        assert len(refusals) == 4
        assert "record 1: ClOrdID b'ok\\xff' is not UTF-8" in refusals[0]
        assert "record 0:" in refusals[1] and "not 1" in refusals[1]
        assert "record 0:" in refusals[2] and "not 1" in refusals[2]
        assert "record 0: ClOrdID b's\\xed\\xb2\\x80' holds a surrogate" in refusals[3]
        accepted = [r for r in replies if type(r) is Accepted]
        assert [r.seq for r in accepted] == list(range(start + 1, start + 44))
        assert [r.cl_ord_id for r in accepted][-1] == "c0"
        service.journal.flush()
        replayed = Exchange(MARKET)
        catch_up(tmp_path / "journal", replayed)
        assert replayed.seq == service.exchange.seq
        assert replayed.state_hash() == service.exchange.state_hash()
    finally:
        service.close()


def test_an_encoded_run_goes_to_every_session_and_is_kept_for_an_absent_gateway(tmp_path):
    """A run of records the encoder answers (more than SMALL_RUN) for member 3, listed by
    two gateways: both sessions of the sender's gateway get the same events (drop copy), and
    the other gateway, not connected, gets them when it logs on (kept, not lost)."""
    gateways = [Gateway(id="brokers", members=[3, 4]), Gateway(id="copy", members=[3])]
    market = msgspec.structs.replace(MARKET, gateways=gateways)
    service = open_service(tmp_path, market)
    try:
        admin = zmq.Context.instance().socket(zmq.DEALER)
        admin.connect(service.endpoints["admin"])
        admin.send_multipart(wire.messages_frame([StartOfDay("2026-11-24"), OpenCall(CODE),
                                                  Uncross(CODE)]))  # fmt: skip
        while service.exchange.seq < 3:
            service.turn(100)
        first, second = logged_on(service, "brokers"), logged_on(service, "brokers")
        price = MARKET.instruments[0].reference_price
        n = SMALL_RUN + 8
        orders = [NewOrder(f"r{i}", 3, CODE, i % 2, price + 1 - 2 * (i % 2), 100)
                  for i in range(n)]  # fmt: skip
        codes = [i.code for i in market.instruments]
        first.send_multipart([wire.RECORDS, records_of(orders, codes, 0, [0] * n).tobytes()])
        while service.exchange.seq < 3 + n:
            service.turn(100)
        bodies = []
        for socket in (first, second):
            assert socket.poll(5000)
            bodies.append(socket.recv_multipart()[1])
        assert bodies[0] == bodies[1]
        events = wire.unpack(bodies[0])
        assert sum(type(e) is Accepted for e in events) == n
        assert {e.member for e in events} == {3}
        assert [e.stream_seq for e in events] == list(range(1, len(events) + 1))
        copy = zmq.Context.instance().socket(zmq.DEALER)
        copy.setsockopt(zmq.LINGER, 0)
        copy.connect(service.endpoints["orders"])
        copy.send_multipart(wire.messages_frame([wire.Logon("copy", heartbeat_ms=60_000)]))
        replies = []
        while len(replies) < 2:
            service.turn(10)
            while copy.poll(0):
                replies.append(copy.recv_multipart()[1])
        assert wire.unpack(replies[0])[0].undelivered == 1
        assert replies[1] == bodies[0]
    finally:
        service.close()


def test_a_turn_that_reads_nothing_does_the_idle_work_once_per_interval(tmp_path):
    """Busy polling: a turn that finds nothing to read right after one that did the idle work
    returns at once (it is not counted); after IDLE_WORK_NS the idle work runs again."""
    from engine.gateway.service import IDLE_WORK_NS

    service = open_service(tmp_path)
    try:
        service.turn(0)
        turns = service.counters["turns"]
        service.turn(0)
        assert service.counters["turns"] == turns  # within the interval: nothing done
        time.sleep(2 * IDLE_WORK_NS / 1e9)
        service.turn(0)
        assert service.counters["turns"] == turns + 1
    finally:
        service.close()


def test_a_turn_answers_the_member_before_it_publishes(tmp_path, monkeypatch):
    """An acknowledgement waits for no publishing: the turn hands its reply to ZeroMQ before
    its market data and before its trade log record (both sockets and the file real, their
    send and write calls watched in order)."""
    service = open_service(tmp_path)
    try:
        admin = zmq.Context.instance().socket(zmq.DEALER)
        admin.setsockopt(zmq.LINGER, 0)
        admin.connect(service.endpoints["admin"])
        admin.send_multipart(wire.messages_frame([StartOfDay("2026-11-24"), OpenCall(CODE),
                                                  Uncross(CODE)]))  # fmt: skip
        while service.exchange.seq < 3:
            service.turn(100)
        broker = logged_on(service, "brokers")
        price = MARKET.instruments[0].reference_price
        broker.send_multipart(wire.messages_frame([NewOrder("rest", 3, CODE, 0, price, 100)]))
        while not broker.poll(0):
            service.turn(10)
        broker.recv_multipart()
        sent: list[str] = []

        def watched(name: str, send):
            def watching(*args, **kwargs):
                sent.append(name)
                return send(*args, **kwargs)

            return watching

        watch = ((service.orders, "send_multipart", "reply"),
                 (service.market_data.pub, "send_multipart", "market data"),
                 (service.trade_stream.writer, "write_framed", "trade log"))  # fmt: skip
        for target, method, name in watch:
            monkeypatch.setattr(target, method, watched(name, getattr(target, method)))
        broker.send_multipart(wire.messages_frame([NewOrder("take", 4, CODE, 1, price, 100)]))
        while not broker.poll(0):
            service.turn(10)
        assert [e for e in wire.unpack(broker.recv_multipart()[1]) if isinstance(e, Filled)]
        assert sent.index("reply") < sent.index("market data")
        assert sent.index("reply") < sent.index("trade log")
    finally:
        service.close()


FIRST_ORDERS_AFTER_WARMING = """
import json, sys
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher
from engine.codec import records_of
from engine.gateway import wire
from engine.protocol import BlockTrade, Close, EndOfDay, NewOrder, OpenCall, StartOfDay, Uncross
from tests.gateway.test_service_turns import CODE, MARKET, SMALL_RUN, logged_on, open_service

def overloads():
    return {f"{module}.{name}": len(value.overloads)
            for module, loaded in list(sys.modules.items()) if module.startswith("engine")
            for name, value in vars(loaded).items() if isinstance(value, CPUDispatcher)}

service = open_service(sys.argv[1])  # recovers, warms, binds
warmed = overloads()
admin = logged_on.__globals__["zmq"].Context.instance().socket(logged_on.__globals__["zmq"].DEALER)
admin.connect(service.endpoints["admin"])
admin.send_multipart(wire.messages_frame([StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)]))
while service.exchange.seq < 3:
    service.turn(100)
gateway = logged_on(service, "mm")
price = MARKET.instruments[0].reference_price
for size in (1, 4 * SMALL_RUN):  # a small run, then one the encoders take
    orders = [NewOrder(f"{size}-{i}", 1 + i % 2, CODE, i % 2, price, 10) for i in range(size)]
    records = records_of(orders, [i.code for i in MARKET.instruments], 0, [0] * size)
    gateway.send_multipart([wire.RECORDS, records.tobytes()])
    while not gateway.poll(0):
        service.turn(10)
    gateway.recv_multipart()
operator = [BlockTrade("blk", CODE, 3, 4, price, 100_000), Close(CODE), EndOfDay()]
admin.send_multipart(wire.messages_frame(operator))  # a block trade, then the day's end
answered = ""
while "DayClosed" not in answered:
    service.turn(10)
    while admin.poll(0):
        answered += repr(wire.unpack(admin.recv_multipart()[1]))
assert "Trade(" in answered, answered
new = {name: n for name, n in overloads().items() if n > warmed.get(name, 0)}
print(json.dumps({"new": new, "trades": service.exchange.state.clearing_seq}))
service.close()
"""


def test_warming_compiles_every_kernel_the_first_orders_take(tmp_path):
    """`cxe serve` compiles (or loads from numba's cache) before it binds: the first orders,
    a small run and a run the encoders take, trading, then a block trade and the day's end,
    load no kernel nor compile one (in a fresh interpreter: nothing compiled by other tests;
    a helper's probe saw the block trade's and the end of day's load inside the loop)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", FIRST_ORDERS_AFTER_WARMING, str(tmp_path)],
        capture_output=True, text=True, cwd=root, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["trades"] > 4 * SMALL_RUN // 4  # the orders traded: every path was taken
    assert seen["new"] == {}


def test_the_clordid_tables_are_sized_for_the_day_at_start_and_kept_across_days(tmp_path):
    """Each doubling of a table keyed by ClOrdID paused the loop (65 ms at 131,072 keys, 256
    ms at 524,288): the service sizes both for Options.day_orders before it binds."""
    options = Options(tmp_path, orders="tcp://127.0.0.1:*", admin="tcp://127.0.0.1:*",
                      market_data="tcp://127.0.0.1:*", snapshots="tcp://127.0.0.1:*",
                      trades="tcp://127.0.0.1:*", clock_start_ns=clock_start(CLOCK),
                      quiet=True, day_orders=5_000)  # fmt: skip
    lines: list[str] = []
    service = EngineService(MARKET, options, log=lines.append)
    service.open()
    try:
        tables = (service.exchange.state.cl_ord_ids, service.status.accepted)
        assert [t.table.shape[0] for t in tables] == [16_384, 16_384]  # 5,000 at load 1/2
        assert "ClOrdID tables sized for 5,000 orders a day (2 MB)" in lines
        service.exchange.apply(StartOfDay("2026-11-24"))
        service.status.clear()
        assert [t.table.shape[0] for t in tables] == [16_384, 16_384]
    finally:
        service.close()
    absurd = EngineService(MARKET, replace(options, day_orders=10**12), log=lambda line: None)
    with pytest.raises(ValueError, match="--day-orders 1,000,000,000,000: not enough memory"):
        absurd.open()  # 96 TiB asked: a message, not numpy's MemoryError traceback
    absurd.close()
    assert absurd.endpoints == {}  # nothing was bound


def test_a_stepped_system_clock_moves_neither_the_stamps_nor_the_calendar_and_is_logged(
    tmp_path, monkeypatch
):
    """Found by a probe: the stamps were the system clock (never going back), so a system
    clock stepped an hour forward and back pinned every stamp, and the market's calendar, an
    hour ahead until real time caught up. The engine's clock is the system clock at its
    start plus the time elapsed since; a step is logged, and so is the end of it."""
    lines: list[str] = []
    service = EngineService(MARKET, Options(tmp_path), log=lines.append)
    system_time_ns = time.time_ns
    step = [0]
    monkeypatch.setattr(time, "time_ns", lambda: system_time_ns() + step[0])
    first = service._stamp()
    service._watch_clock(1)
    assert lines == []  # the two agree
    step[0] = 3_600 * 1_000_000_000  # an hour forward
    service._watch_clock(1)  # not yet due: compared once a second
    assert lines == []
    service._watch_clock(1 + CLOCK_WATCH_NS)
    assert lines[0].startswith("WARNING: the system clock is 3,600.0 s ahead of the engine's")
    assert 0 <= service._stamp() - first < 60 * 1_000_000_000  # the stamps did not follow
    service._watch_clock(1 + 2 * CLOCK_WATCH_NS)
    assert len(lines) == 1  # said once
    step[0] = 0  # and back
    service._watch_clock(1 + 3 * CLOCK_WATCH_NS)
    assert lines[1:] == ["the system clock agrees with the engine's again"]
    assert service._stamp() >= first
