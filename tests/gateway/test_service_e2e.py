"""The engine service end to end: a real `cxe serve` process, real clients over loopback TCP.

Acknowledgements, fills, drop copies, resend, mass cancel, cancel-on-disconnect, rejects of
every kind of bad input, frames kept for an absent gateway, a clean stop and a restart that
recovers the same state.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
import zmq

from engine.clearing.capture import read_trade_log
from engine.codec import records_of
from engine.config import default_market
from engine.gateway import wire
from engine.gateway.client import GatewayClient, LogonRefused, NotResent, _Session
from engine.journal import read_journal
from engine.protocol import (
    Accepted,
    Cancelled,
    Clock,
    EndOfDay,
    Filled,
    MassCancelled,
    NewOrder,
    OpenCall,
    RejectCode,
    Rejected,
    StartOfDay,
    Uncross,
)
from engine.types import CancelReason, Side
from tests.cli.test_cli import cxe_command
from tests.support.engine import DAY, EngineProcess

pytestmark = pytest.mark.slow
MARKET = default_market()
CODES = [i.code for i in MARKET.instruments]
BUY, SELL = Side.BUY, Side.SELL
NEXT_DAY = "2026-11-25"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("engine") / "data") as process:
        process.open_market(*CODES)
        yield process


def client(engine, gateway, **kwargs) -> GatewayClient:
    return GatewayClient(engine.endpoints["orders"], gateway, **kwargs)


def is_(kind, **fields):
    return lambda r: isinstance(r, kind) and all(getattr(r, k) == v for k, v in fields.items())


def test_acks_fills_and_drop_copies_reach_every_session_of_the_member(engine):
    code = CODES[0]
    price = MARKET.instruments[0].reference_price
    with (
        client(engine, "mm") as maker,
        client(engine, "mm", heartbeat_ms=60_000) as copy,
        client(engine, "brokers") as taker,
    ):
        maker.submit("e2e-s1", 1, code, SELL, price, 300)
        (ack,) = maker.wait_for(is_(Accepted, cl_ord_id="e2e-s1"))[-1:]
        taker.submit("e2e-b1", 3, code, BUY, price, 100)
        taker_replies = taker.wait_for(is_(Filled, member=3))
        assert any(is_(Accepted, cl_ord_id="e2e-b1")(r) for r in taker_replies)
        fill = maker.wait_for(is_(Filled, order_id=ack.order_id))[-1]
        assert (fill.qty, fill.leaves, fill.price) == (100, 200, price)
        copied = copy.wait_for(is_(Filled, order_id=ack.order_id))
        assert [type(r) for r in copied] == [Accepted, Filled]  # the drop copy, in order
        assert [r.stream_seq for r in copied] == [ack.stream_seq, fill.stream_seq]
        assert not [r for r in taker.replies(200) if getattr(r, "member", 3) != 3]


def test_bad_input_is_answered_and_changes_nothing(engine):
    before = engine.status()
    with client(engine, "brokers") as gateway:
        code = CODES[1]
        gateway.submit("e2e-x1", 1, code, BUY, 6_000, 100)  # member 1 is not a broker's
        reject = gateway.wait_for(is_(Rejected))[-1]
        assert reject.code == RejectCode.UNAUTHORISED and "not 1" in reject.text
        gateway.socket.send_multipart([wire.MESSAGES, b"\xc1 not msgpack"])
        refused = gateway.wait_for(is_(wire.SessionRejected))[-1]
        assert refused.code == RejectCode.MALFORMED and "msgpack" in refused.text
        gateway.socket.send_multipart([wire.MESSAGES, wire.pack([b"\x93\x01\x02\x03"])])
        assert "length" in gateway.wait_for(is_(Rejected))[-1].text
        gateway.socket.send_multipart([b"?", b""])
        assert "kind" in gateway.wait_for(is_(wire.SessionRejected))[-1].text
        gateway.socket.send_multipart([wire.RECORDS, b"x" * 87])
        assert "88-byte" in gateway.wait_for(is_(wire.SessionRejected))[-1].text
        gateway.send([OpenCall(code)])  # an operator command on the order socket
        assert "admin" in gateway.wait_for(is_(wire.SessionRejected))[-1].text
        big = wire.MAX_FRAME_BYTES + 1
        gateway.socket.send_multipart([wire.MESSAGES, b"\x90" + b"\0" * big])
        assert "limit" in gateway.wait_for(is_(wire.SessionRejected))[-1].text
        records = records_of([NewOrder("e2e-r1", 5, code, BUY, 6_000, 100)], CODES, 0, [0])
        gateway.send_records(records)  # member 5 is an entity's
        refused = gateway.wait_for(is_(wire.SessionRejected))[-1]
        assert refused.code == RejectCode.UNAUTHORISED and "not 5" in refused.text
        records = records_of([NewOrder("e2e-r2", 3, code, BUY, 6_000, 100)], CODES, 0, [0])
        records["kind"] = 9  # refused whole by the run's check, after intake took it
        gateway.send_records(records)
        assert (
            "nothing in the frame was taken" in gateway.wait_for(is_(wire.SessionRejected))[-1].text
        )
    after = engine.status()
    assert (after.seq, after.state_hash) == (before.seq, before.state_hash)
    # a probe: records of frames refused whole were counted as taken
    assert after.gateways["brokers"]["records"] == before.gateways["brokers"]["records"]
    assert after.gateways["brokers"]["malformed"] >= before.gateways["brokers"]["malformed"] + 4
    with pytest.raises(LogonRefused, match="unknown gateway"):
        client(engine, "nobody")
    (wrong_port,) = engine.admin(wire.Logon("brokers"))  # a listed gateway, the admin port
    assert isinstance(wrong_port, wire.SessionRejected)
    assert wrong_port.text == (
        "Logon is for the orders endpoint: this is the admin endpoint (operators)"
    )
    stranger = zmq.Context.instance().socket(zmq.DEALER)
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(engine.endpoints["orders"])
    stranger.send_multipart(wire.messages_frame([NewOrder("s", 3, code, BUY, 6_000, 100)]))
    assert stranger.poll(10_000)
    (answer,) = wire.unpack(stranger.recv_multipart()[1])
    assert answer.code == RejectCode.UNAUTHORISED and "log on" in answer.text
    stranger.close()


def test_records_frames_are_sequenced_as_one_batch(engine):
    code = CODES[2]
    price = MARKET.instruments[2].reference_price
    before = engine.status().seq
    orders = [NewOrder(f"e2e-rec{i}", 3 + i % 2, code, i % 2, price, 100) for i in range(6)]
    with client(engine, "brokers") as gateway:
        gateway.send_records(records_of(orders, CODES, 0, [0] * len(orders)))
        replies = gateway.wait_for(is_(Accepted, cl_ord_id="e2e-rec5"))
        replies += gateway.replies(500)
    accepted = [r.cl_ord_id for r in replies if isinstance(r, Accepted)]
    assert accepted == [o.cl_ord_id for o in orders]
    assert len([r for r in replies if isinstance(r, Filled)]) == 6  # three trades, both sides
    assert engine.status().seq == before + 6


def test_each_gateway_counts_the_orders_the_core_refused_it(engine):
    """Found by a newcomer's walk through the guides: the per-gateway `rejects` counter (in
    `cxe admin status` and `cxe watch`) counted only frames refused before the core, and
    stayed 0 after refused orders. Records frames of two gateways in one turn are told apart
    by their records' sequence numbers."""
    code = CODES[1]
    price = MARKET.instruments[1].reference_price
    outside = 10 * price  # far outside the band: PRICE_OUTSIDE_BAND
    before = engine.status().gateways
    with client(engine, "mm") as mm, client(engine, "brokers") as brokers:
        brokers.submit("cnt-m1", 3, code, BUY, outside, 100)  # a message
        brokers.wait_for(is_(Rejected, cl_ord_id="cnt-m1"))
        mm_orders = [NewOrder("cnt-a0", 1, code, BUY, price - 7, 100),
                     NewOrder("cnt-a1", 1, code, BUY, outside, 100)]  # fmt: skip
        broker_orders = [NewOrder(f"cnt-b{i}", 4, code, BUY, outside, 100) for i in range(2)]
        broker_orders.append(NewOrder("cnt-b2", 4, code, BUY, price - 7, 100))
        mm.send_records(records_of(mm_orders, CODES, 0, [0, 0]))
        brokers.send_records(records_of(broker_orders, CODES, 0, [0, 0, 0]))
        mm.wait_for(is_(Accepted, cl_ord_id="cnt-a0"))
        brokers.wait_for(is_(Accepted, cl_ord_id="cnt-b2"))
        # a frame it may not send (a record for member 1, mm's) is a reject, not malformed
        brokers.send_records(
            records_of([NewOrder("cnt-x", 1, code, BUY, price, 100)], CODES, 0, [0])
        )
        brokers.wait_for(is_(wire.SessionRejected))
    after = engine.status().gateways
    assert after["mm"]["rejects"] - before["mm"]["rejects"] == 1
    assert after["brokers"]["rejects"] - before["brokers"]["rejects"] == 4
    assert after["brokers"]["malformed"] == before["brokers"]["malformed"]


def test_resend_answers_the_order_state_and_never_makes_a_second_order(engine):
    code = CODES[3]
    price = MARKET.instruments[3].reference_price
    with client(engine, "entities") as gateway:
        order = gateway.submit("e2e-r1", 5, code, BUY, price - 10, 200)
        ack = gateway.wait_for(is_(Accepted, cl_ord_id="e2e-r1"))[-1]
        seq = engine.status().seq
        gateway.resend([order, NewOrder("e2e-r2", 5, code, BUY, price - 20, 100)])
        status = gateway.wait_for(is_(wire.OrderStatus))[-1]
        assert (status.state, status.order_id, status.leaves) == ("live", ack.order_id, 200)
        assert gateway.wait_for(is_(Accepted))[-1].cl_ord_id == "e2e-r2"  # new: taken
        assert engine.status().seq == seq + 1
        gateway.send([order])  # not marked as a resend: the core's duplicate check answers
        assert gateway.wait_for(is_(Rejected))[-1].code == RejectCode.DUPLICATE_CLORDID
        gateway.mass_cancel("e2e-mc", 5, code)
        done = gateway.wait_for(is_(MassCancelled))
        assert done[-1].cancelled == 2
        assert {r.order_id for r in done if isinstance(r, Cancelled)} >= {ack.order_id}
        gateway.resend([order])
        status = gateway.wait_for(is_(wire.OrderStatus))[-1]
        assert (status.state, status.leaves) == ("done", 0)


@pytest.mark.slow
def test_an_order_unanswered_when_the_day_changed_is_not_resent_into_the_next_day(tmp_path):
    """Found by the crash test under load: orders the engine took just before the day closed,
    whose answers a kill -9 lost, were resent at the gateway's reconnect after the next day
    opened and taken again as that day's orders (the engine keeps today's ClOrdIDs only)."""
    from engine.protocol import Close, EndOfDay
    from tests.support.engine import DAY

    with EngineProcess(tmp_path / "data") as process:
        process.open_market(CODES[0])
        price = MARKET.instruments[0].reference_price
        gateway = client(process, "mm", timeout_ms=2_000)
        assert gateway.logon.date == DAY
        process.stop()
        order = gateway.submit("eod-1", 1, CODES[0], BUY, price - 5, 100)  # nobody to take it
        assert set(gateway.unanswered) == {(1, "eod-1")}
        process.start()
        closed = process.admin(Close(CODES[0]), EndOfDay())
        assert not [e for e in closed if isinstance(e, Rejected)], closed
        process.kill()
        next_day = MARKET.next_trading_day(DAY)
        process.clock = f"{next_day}T09:10+08:00"
        process.start()
        process.open_market(CODES[0], day=next_day)
        seq = process.status().seq
        gateway.endpoint = process.endpoints["orders"]
        assert gateway.reconnect().date == next_day
        (answer,) = [r for r in gateway.replies(500) if getattr(r, "cl_ord_id", "") == "eod-1"]
        assert isinstance(answer, NotResent) and answer.order == order
        assert (answer.sent_on, answer.engine_day) == (DAY, next_day)
        assert gateway.unanswered == {} and process.status().seq == seq  # nothing was sent
        gateway.close()


def test_resends_keep_the_day_they_were_first_sent_under_and_go_between_days():
    session = _Session("tcp://127.0.0.1:1", "mm")
    session.logon = wire.LogonAccepted("mm", [1], 1000, False, {}, 0, CODES, "2026-11-24")
    order = NewOrder("d-1", 1, CODES[0], BUY, 100, 100)
    session._frames([order])
    session.logon = wire.LogonAccepted("mm", [1], 1000, False, {}, 0, CODES, "")
    session._frames([order], resend=True)
    assert session.sent_on[(1, "d-1")] == "2026-11-24"
    assert session._not_resent("") == []  # between days the day's ClOrdIDs are still known
    assert session._not_resent("2026-11-24") == []
    (stale,) = session._not_resent("2026-11-25")
    assert (stale.cl_ord_id, stale.sent_on) == ("d-1", "2026-11-24") and not session.unanswered


def test_cancel_on_disconnect(engine):
    code = CODES[4]
    price = MARKET.instruments[4].reference_price
    with client(engine, "entities", heartbeat_ms=60_000) as watcher:
        quitter = client(engine, "entities", cancel_on_disconnect=True, heartbeat_ms=200)
        quitter.submit("e2e-cod1", 6, code, SELL, price + 10, 100)
        ack = quitter.wait_for(is_(Accepted, cl_ord_id="e2e-cod1"))[-1]
        quitter.close(logout=False)  # gone without a word: three heartbeats later, orders go
        cancelled = watcher.wait_for(is_(Cancelled, order_id=ack.order_id))[-1]
        assert cancelled.reason == CancelReason.MASS_CANCEL


def test_what_a_gateway_misses_while_away_is_kept_and_sent_at_its_next_logon(engine):
    code = CODES[5]
    price = MARKET.instruments[5].reference_price
    with client(engine, "entities", heartbeat_ms=200) as resting:
        resting.submit("e2e-k1", 5, code, SELL, price, 300)
        ack = resting.wait_for(is_(Accepted, cl_ord_id="e2e-k1"))[-1]
    with client(engine, "mm") as maker:  # the entities gateway has no session now
        for i in range(3):
            maker.submit(f"e2e-k{i}", 2, code, BUY, price, 100)
            maker.wait_for(is_(Filled, member=2))
    back = client(engine, "entities")
    assert back.logon.undelivered >= 3
    fills = back.wait_for(lambda r: isinstance(r, Filled) and r.leaves == 0)
    fills = [r for r in fills if isinstance(r, Filled)]
    assert [f.order_id for f in fills] == [ack.order_id] * 3
    assert [f.leaves for f in fills] == [200, 100, 0]
    seqs = [f.stream_seq for f in fills]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    back.close()


def test_sigterm_stops_cleanly_and_a_restart_recovers_the_same_state(tmp_path):
    with EngineProcess(tmp_path / "data") as process:
        process.open_market(CODES[0])
        price = MARKET.instruments[0].reference_price
        with client(process, "mm") as gateway:
            for i in range(20):
                gateway.submit(f"o{i}", 1 + i % 2, CODES[0], i % 2, price + (i % 5), 100)
            gateway.wait_for(lambda r: isinstance(r, Accepted) and r.cl_ord_id == "o19")
        before = process.status()
        assert process.stop() == 0
        assert "stopped at seq" in process.output()
        process.start()
        after = process.status()
        assert (after.seq, after.state_hash) == (before.seq, before.state_hash)


def test_market_data_from_the_live_engine_matches_a_late_joiners_snapshot(engine):
    from engine.gateway.marketdata_client import MarketDataClient
    from engine.protocol import TradePrint

    code = CODES[1]
    price = MARKET.instruments[1].reference_price
    early = MarketDataClient(engine.endpoints["market_data"], engine.endpoints["snapshots"])
    while early.next_update(5.0) is not None and not early.synced:
        pass
    assert early.synced
    with client(engine, "mm") as maker, client(engine, "brokers") as taker:
        for i in range(5):
            maker.submit(f"md-s{i}", 1, code, SELL, price + i, 200)
            maker.submit(f"md-b{i}", 2, code, BUY, price - 1 - i, 200)
        maker.wait_for(is_(Accepted, cl_ord_id="md-b4"))
        taker.submit("md-t1", 3, code, BUY, price + 1, 300)
        taker.wait_for(is_(Filled, member=3, leaves=0))
    prints = []
    while (update := early.next_update(1.0)) is not None:
        if isinstance(update, TradePrint) and update.instrument == code:
            prints.append(update)
    assert [(p.price, p.qty) for p in prints] == [(price, 200), (price + 1, 100)]
    late = MarketDataClient(engine.endpoints["market_data"], engine.endpoints["snapshots"])
    while not late.synced:
        assert late.next_update(10.0) is not None
    assert late.books[code].state() == early.books[code].state()
    assert early.books[code].depth(SELL, 1) == [(price + 1, 100, 1)]
    early.close()
    late.close()


def test_market_data_heartbeats_every_second_while_the_market_is_busy(engine):
    """Heartbeats were sent only after a second without public events: a subscriber to one
    instrument heard nothing while others traded, and could not tell that from a dead
    connection (MarketDataClient reconnects after SILENCE_S without anything)."""
    context = zmq.Context.instance()
    readers = {}
    for topic in (b"*HB", CODES[0].encode() + b"."):
        reader = readers[topic] = context.socket(zmq.SUB)
        reader.setsockopt(zmq.LINGER, 0)
        reader.setsockopt(zmq.SUBSCRIBE, topic)
        reader.connect(engine.endpoints["market_data"])
    counts = dict.fromkeys(readers, 0)
    price = MARKET.instruments[0].reference_price - 50
    try:
        time.sleep(0.5)  # the subscriptions reach the engine
        with client(engine, "mm") as mm:
            started = time.monotonic()
            order = 0
            while time.monotonic() - started < 3.0:
                mm.submit(f"busy-{order}", 1, CODES[0], BUY, price, 1)
                order += 1
                for topic, reader in readers.items():
                    while reader.poll(0):
                        reader.recv_multipart()
                        counts[topic] += 1
                time.sleep(0.01)
            mm.mass_cancel("busy-end", 1, CODES[0])  # the other tests' book as it was
            mm.wait_for(is_(MassCancelled, cl_ord_id="busy-end"))
    finally:
        for reader in readers.values():
            reader.close(0)
    assert counts[CODES[0].encode() + b"."] >= 100  # the market was busy throughout
    assert counts[b"*HB"] >= 2


def test_a_pause_of_the_engine_itself_ends_no_session(tmp_path):
    """A VM pause or swapping stops the whole process. Once it resumed, its loop found no
    frame from a gateway that had sent heartbeats all along (its I/O thread had not handed
    them over yet) and ended every session: "silent for three heartbeats". Silence is now
    counted on the engine's running time, so even a gateway that sent nothing while the
    engine was stopped (here, for a red test every time) keeps its session."""
    price = MARKET.instruments[0].reference_price
    with EngineProcess(tmp_path / "data") as engine:
        engine.open_market(CODES[0])
        with client(engine, "mm", heartbeat_ms=300) as mm:
            engine.process.send_signal(signal.SIGSTOP)
            try:
                time.sleep(3.0)  # ten of the session's heartbeat intervals
            finally:
                engine.process.send_signal(signal.SIGCONT)
            mm.submit("after-pause", 1, CODES[0], BUY, price, 1)
            answer = mm.wait_for(lambda r: isinstance(r, (Accepted, wire.SessionRejected)))[-1]
            assert isinstance(answer, Accepted), (answer, engine.output())
        output = engine.output()
    assert "silent for three heartbeats" not in output
    assert "the loop stalled for" in output


def test_a_journal_that_cannot_be_written_stops_the_engine_before_it_acknowledges(tmp_path):
    """The journal's disk refuses a write (here: the process may not write files past 256 KiB,
    as a full disk refuses): the engine exits 3 and everything it acknowledged is in the
    journal a restart recovers."""
    process = EngineProcess(tmp_path / "data", max_file_bytes=256 << 10)
    with process:
        process.open_market(CODES[0])
        price = MARKET.instruments[0].reference_price
        acked = []
        with client(process, "mm", timeout_ms=5_000) as gateway:
            try:
                for i in range(100_000):
                    gateway.submit(f"full-{i}", 1, CODES[0], BUY, price - 1 - i % 50, 100)
                    if i % 50 == 49:
                        replies = gateway.wait_for(is_(Accepted, cl_ord_id=f"full-{i}"))
                        acked += [r.seq for r in replies if isinstance(r, Accepted)]
            except TimeoutError:
                pass
        assert process.process.wait(30) == 3
        assert "journal failed" in process.output()
    assert acked
    restarted = EngineProcess(tmp_path / "data")
    with restarted:
        assert restarted.status().seq >= max(acked)


def test_the_sequencer_clock_runs_the_calendar_on_an_idle_market(tmp_path):
    import msgspec

    from engine.config import MARKET_HOURS

    market = msgspec.structs.replace(MARKET, schedule=MARKET_HOURS)
    path = tmp_path / "market.json"  # as clearing exports a market
    path.write_bytes(msgspec.json.encode(market))
    process = EngineProcess(tmp_path / "data", "--config", str(path))
    process.extra += ["--clock", "2026-11-24T09:14:58+08:00"]  # two seconds before the call
    with process:
        process.admin(StartOfDay("2026-11-24"))
        deadline = time.monotonic() + 60
        while "CEA21 CALL" not in process.output():
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.2)
        assert process.status().seq >= 2  # the day, then a Clock command that opened the call
    commands = [r.command for r in read_journal(tmp_path / "data" / "journal")]
    assert isinstance(commands[0], StartOfDay) and isinstance(commands[-1], Clock)


def test_snapshots_on_request_and_at_end_of_day_and_a_restart_from_them(tmp_path):
    from engine.protocol import Close, EndOfDay

    with EngineProcess(tmp_path / "data") as process:
        process.open_market(CODES[0])
        price = MARKET.instruments[0].reference_price
        with client(process, "mm") as gateway:
            order = gateway.submit("snap-1", 1, CODES[0], BUY, price - 5, 100)
            ack = gateway.wait_for(is_(Accepted, cl_ord_id="snap-1"))[-1]
        process.snapshot()
        before = process.status()
        process.kill()  # the snapshot, then nothing after it in the journal
        process.start()
        assert f"(seq {before.seq})" in process.output()
        after = process.status()
        assert (after.seq, after.state_hash) == (before.seq, before.state_hash)
        with client(process, "mm") as gateway:  # a resend after the restart: the live order
            gateway.resend([order])
            status = gateway.wait_for(is_(wire.OrderStatus))[-1]
            assert (status.state, status.order_id, status.leaves) == ("live", ack.order_id, 100)
        closed = process.admin(Close(CODES[0]), EndOfDay())
        assert not [e for e in closed if isinstance(e, Rejected)], closed
        day_end = process.status()
        assert process.stop() == 0
        snapshots = sorted((tmp_path / "data" / "snapshots").glob("snapshot-*.snap"))
        assert len(snapshots) == 2
        process.start()
        assert f"(seq {day_end.seq})" in process.output()
        assert process.status().state_hash == day_end.state_hash


def test_a_restart_after_an_operators_refused_command_and_a_snapshot(tmp_path):
    """Found by a helper's probe: an operator's refused command went into the order status
    table, whose next snapshot the engine could then not read: every restart failed."""
    with EngineProcess(tmp_path / "data") as process:
        process.open_market(CODES[0])
        (refused,) = process.admin(Uncross(CODES[0]))  # trading already: nothing to uncross
        assert isinstance(refused, Rejected) and refused.member == -1
        process.admin(wire.SnapshotNow())
        before = process.status()
        assert process.stop() == 0
        process.start()
        assert f"(seq {before.seq})" in process.output()
        assert process.status().state_hash == before.state_hash
        assert process.stop() == 0


def test_a_refused_start_or_end_of_day_changes_nothing_a_gateway_is_told(tmp_path):
    """Found by a helper's probe: a refused StartOfDay cleared the order status table, so a
    resent live order was answered 'done' ('not kept across the engine's last restart'),
    which invites a broker to enter it again; and a refused EndOfDay was logged as the end
    of the day."""
    with EngineProcess(tmp_path / "data") as process:
        process.open_market(CODES[0])
        price = MARKET.instruments[0].reference_price
        with client(process, "mm") as gateway:
            order = gateway.submit("kept-1", 1, CODES[0], BUY, price - 5, 100)
            gateway.wait_for(is_(Accepted, cl_ord_id="kept-1"))
            # the day runs; a market is open; the next day's date is not the sequencer's
            for command in (StartOfDay(DAY), EndOfDay(), StartOfDay(NEXT_DAY)):
                (refused,) = process.admin(command)
                assert isinstance(refused, Rejected), refused
            gateway.resend([order])
            status = gateway.wait_for(is_(wire.OrderStatus))[-1]
            assert (status.state, status.leaves) == ("live", 100), status
        assert "end of day at seq" not in process.output()
        assert process.stop() == 0
        segments = list((tmp_path / "data" / "journal").glob("commands-*.log"))
        assert segments and not [p for p in segments if NEXT_DAY in p.name]  # a probe's F11


def test_an_engine_whose_log_pipe_is_closed_goes_on_trading_and_counts_the_lines(tmp_path):
    """Found by trying `cxe serve | tee log` with tee gone: the engine stopped at its next log
    line with exit status 0 and no word (the CLI took the broken pipe for a reader that had
    all it wanted), leaving the operator's commands unanswered."""
    with EngineProcess(tmp_path / "data", stdout_pipe=True) as process:
        process.process.stdout.close()
        process.open_market(CODES[0])  # phase changes: lines for the closed log
        price = MARKET.instruments[0].reference_price
        with client(process, "mm") as gateway:
            gateway.submit("after-close", 1, CODES[0], BUY, price - 5, 100)
            gateway.wait_for(is_(Accepted, cl_ord_id="after-close"))
        assert process.status().counters["log_lines_lost"] >= 1
        assert process.stop() == 0
    assert "cxe serve: its log (standard output) was closed; it goes on" in process.output()


def test_snapshot_files_a_crash_left_unfinished_are_removed_at_start(tmp_path):
    """A probe: an order status table's temporary file, left by a kill -9 while it was
    written, stayed in snapshots/ for ever (only a snapshot's own were ever removed)."""
    snapshots = tmp_path / "data" / "snapshots"
    snapshots.mkdir(parents=True)
    unfinished = [snapshots / "orders-0000000000000007.msgpack.tmp",
                  snapshots / "snapshot-0000000000000007.snap.tmp"]  # fmt: skip
    for path in unfinished:
        path.write_bytes(b"half")
    kept = snapshots / "notes.txt"
    kept.write_text("the operator's")
    with EngineProcess(tmp_path / "data") as process:
        assert process.status().seq == 0
        assert not any(path.exists() for path in unfinished) and kept.exists()
        output = process.output()
    assert "removed orders-0000000000000007.msgpack.tmp, a snapshot file left" in output


def test_a_snapshot_that_cannot_be_taken_or_written_leaves_the_engine_trading(tmp_path):
    """Found by trying the commands as a newcomer: `cxe admin snapshot` on an engine that had
    sequenced nothing stopped it (the snapshot writer refuses seq 0), and so did a snapshot
    directory that could not be written; the journal had everything all along."""
    data = tmp_path / "data"
    with EngineProcess(data) as process:
        (refused,) = process.admin(wire.SnapshotNow())
        assert isinstance(refused, wire.SessionRejected), refused
        assert refused.code == RejectCode.UNSUPPORTED_IN_PHASE
        assert "nothing sequenced yet (seq 0)" in refused.text
        answers = process.admin(StartOfDay(DAY), wire.SnapshotNow())  # in one turn: taken
        assert [a.seq for a in answers if isinstance(a, wire.SnapshotRequested)] == [0]
        snapshots = data / "snapshots"
        deadline = time.monotonic() + 30
        while not (snapshots / "snapshot-0000000000000001.snap").exists():
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.1)
        process.admin(OpenCall(CODES[0]), Uncross(CODES[0]))
        shutil.rmtree(snapshots)
        snapshots.write_text("a file where the directory belongs")
        (requested,) = process.admin(wire.SnapshotNow())
        assert isinstance(requested, wire.SnapshotRequested)
        while process.status().counters["snapshot_failures"] < 1:
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.1)
        assert f"snapshot at seq {requested.seq} NOT written" in process.output()
        price = MARKET.instruments[0].reference_price
        with client(process, "mm") as gateway:  # still trading
            gateway.submit("after-1", 1, CODES[0], BUY, price - 5, 100)
            gateway.wait_for(is_(Accepted, cl_ord_id="after-1"))
        snapshots.unlink()  # the operator clears the way and asks again
        process.admin(wire.SnapshotNow())
        while not list(snapshots.glob("snapshot-*.snap")):
            assert time.monotonic() < deadline + 30, process.output()
            time.sleep(0.1)
        assert process.status().counters["snapshot_failures"] == 1
        assert process.stop() == 0


def test_a_records_only_gateway_keeps_its_session_and_the_engine_heartbeats(engine):
    """RECORDS frames count as heard (the session is not ended, its orders not cancelled by
    cancel-on-disconnect), and the engine sends a Heartbeat to a session it has nothing for."""
    code = CODES[3]
    price = MARKET.instruments[3].reference_price
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(engine.endpoints["orders"])
    logon = wire.Logon("brokers", cancel_on_disconnect=True, heartbeat_ms=200)
    socket.send_multipart(wire.messages_frame([logon]))
    assert socket.poll(30_000)
    assert isinstance(wire.unpack(socket.recv_multipart()[1])[0], wire.LogonAccepted)
    heard = []
    for i in range(12):  # 1.2 s: four heartbeat intervals, records only
        order = NewOrder(f"ro-{i}", 3, code, BUY, price - 30 - i, 100)
        socket.send_multipart([wire.RECORDS, records_of([order], CODES, 0, [0]).tobytes()])
        while socket.poll(100):
            heard += wire.unpack(socket.recv_multipart()[1])
    accepted = [r for r in heard if isinstance(r, Accepted)]
    assert len(accepted) == 12 and not [r for r in heard if isinstance(r, Cancelled)]
    time.sleep(0.5)  # silence from us: the engine's heartbeats still come
    beats = []
    while socket.poll(100):
        beats += wire.unpack(socket.recv_multipart()[1])
    assert any(isinstance(r, wire.Heartbeat) for r in beats)
    socket.send_multipart(wire.messages_frame([wire.Logout()]))
    socket.close()


def test_the_status_report_counts_what_market_data_and_the_trade_stream_sent(engine):
    before = engine.status().counters
    code = CODES[4]
    price = MARKET.instruments[4].reference_price
    with client(engine, "mm") as maker, client(engine, "brokers") as taker:
        maker.submit("st-s1", 1, code, SELL, price, 100)
        maker.wait_for(is_(Accepted, cl_ord_id="st-s1"))
        taker.submit("st-b1", 3, code, BUY, price, 100)
        taker.wait_for(is_(Filled, member=3))
    after = engine.status().counters
    # a depth update for the resting sell, then the trade's print and depth update at least
    assert after["market_data_events_sent"] >= before["market_data_events_sent"] + 3
    assert after["market_data_messages_sent"] > before["market_data_messages_sent"]
    for name in ("send_failures", "stream_breaks", "snapshot_failures", "bad_requests"):
        assert after[f"market_data_{name}"] == 0
    assert {"consumers", "messages_sent", "events_sent", "blocked", "bad_requests"} <= {
        name.removeprefix("trade_stream_") for name in after
    }


def test_a_busy_polling_engine_answers_heartbeats_and_stops(tmp_path):
    """`cxe serve --busy-poll`: orders are answered, an idle session still hears the engine's
    heartbeats (the idle work runs while the loop spins) and SIGTERM stops it cleanly."""
    with EngineProcess(tmp_path / "data", "--busy-poll") as process:
        assert "busy poll" in process.output()
        process.open_market(CODES[0])
        with client(process, "brokers", heartbeat_ms=200) as gateway:
            price = MARKET.instruments[0].reference_price
            gateway.submit("busy-1", 3, CODES[0], BUY, price - 10, 100)
            gateway.wait_for(is_(Accepted, cl_ord_id="busy-1"))
            time.sleep(0.45)  # two heartbeat intervals of silence from this side (three end it)
            socket = gateway.socket
            beats = []
            while socket.poll(100):
                beats += wire.unpack(socket.recv_multipart()[1])
            assert any(isinstance(r, wire.Heartbeat) for r in beats)
        assert process.stop() == 0


def test_the_asyncio_client_submits_reads_and_mass_cancels(engine):
    import asyncio

    from engine.gateway.client import AsyncGatewayClient

    code = CODES[5]
    price = MARKET.instruments[5].reference_price

    async def session() -> list:
        gateway = await AsyncGatewayClient.open(engine.endpoints["orders"], "entities")
        try:
            await gateway.submit("async-1", 6, code, BUY, price - 40, 100)
            await gateway.mass_cancel("async-mc", 6, code)
            replies = []
            while not any(isinstance(r, MassCancelled) for r in replies):
                more = await gateway.next_replies(10_000)
                assert more, f"no answer; got {replies}"
                replies += more
            return replies
        finally:
            gateway.close()

    replies = asyncio.run(session())
    accepted = [r for r in replies if isinstance(r, Accepted)]
    cancelled = [r for r in replies if isinstance(r, Cancelled)]
    assert [a.cl_ord_id for a in accepted] == ["async-1"]
    assert accepted[0].order_id in {c.order_id for c in cancelled}


@pytest.mark.slow
def test_a_trade_log_that_cannot_be_written_stops_the_engine_in_order(tmp_path):
    """Found by a helper's probe: a trades.log that could not be written (a full disk) ended
    the engine with a bare errno, outside the journal's orderly stop. Now it stops saying
    what happened and what to do (exit 4); the restart rebuilds the file from the journal,
    which holds everything acknowledged."""
    from engine.protocol import BlockTrade

    data = tmp_path / "data"
    engine = EngineProcess(data, max_file_bytes=4_096)  # a trade's record outgrows its command's
    engine.start()
    try:
        engine.open_market(CODES[0])
        price = MARKET.instruments[0].reference_price
        acknowledged = 0
        for n in range(200):
            try:
                ids = [m.id for m in MARKET.members]
                buyer, seller = ids[(n + 1) % len(ids)], ids[n % len(ids)]  # sellers in turn
                trade = BlockTrade(f"b{n}", CODES[0], buyer, seller, price, 100_000)
                answers = engine.admin(trade, timeout_s=8)  # a stopped engine: 8 s, not 30
            except TimeoutError:
                break
            assert any(type(a).__name__ == "Trade" for a in answers), answers
            acknowledged = n + 1
        assert engine.process.wait(60) == 4, engine.output()
        assert "trade log failed, stopping: [Errno 27] File too large" in engine.output()
        assert "Traceback" not in engine.output()
        assert acknowledged > 10
    finally:
        if engine.process.poll() is None:
            engine.process.kill()
    engine.max_file_bytes = None
    with engine:  # started: the journal has every block trade answered, the rebuilt file too
        trades = [r for r in read_trade_log(data / "trades.log") if type(r).__name__ == "Trade"]
        assert len(trades) >= acknowledged
        assert engine.stop() == 0


def test_an_engine_started_with_its_log_on_a_full_disk_runs(tmp_path):
    """Found by a helper's probe: the first lines (the market, --no-fsync's warning) were
    plain prints, so `cxe serve > /dev/full` stopped at start with a bare errno, and
    `cxe serve | true` exited 0 without a word: a supervisor could never bring it back."""
    data = tmp_path / "data"
    free = "tcp://127.0.0.1:*"
    ports = [f"--{name}={free}" for name in ("orders", "admin", "market-data", "snapshots")]
    command = [*cxe_command(), "serve", "--data", str(data), "--no-fsync", *ports,
               f"--trades={free}"]  # fmt: skip
    with open("/dev/full", "w") as full:
        process = subprocess.Popen(command, stdout=full, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (data / "endpoints.json").exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def acknowledged_then_cut(engine: EngineProcess, torn: int = 0) -> tuple[int, int]:
    """Open the market, have 20 resting orders acknowledged, stop, and cut the journal back
    to before them (an older copy of its last segment restored, with the first `torn` bytes
    of the next record: a partial copy); (seq kept, seq acknowledged)."""
    from engine.framing import FrameReader
    from engine.journal.commandlog import record_span

    engine.open_market(CODES[0])
    kept = engine.status().seq
    price = MARKET.instruments[0].reference_price
    with client(engine, "mm") as gateway:
        for i in range(20):
            gateway.submit(f"rest-{i}", 1, CODES[0], BUY, price - 10 - i, 100)
        gateway.wait_for(is_(Accepted, cl_ord_id="rest-19"))
    acknowledged = engine.status().seq
    assert engine.stop() == 0
    segment = sorted((engine.data / "journal").glob("commands-*.log"))[-1]
    cut = next(offset for offset, payload in FrameReader(segment)
               if record_span(payload)[0] > kept)  # fmt: skip
    with open(segment, "r+b") as file:
        file.truncate(cut + torn)
    return kept, acknowledged


def test_a_journal_short_of_acknowledged_orders_that_never_traded_is_refused(tmp_path):
    """Found by a helper's probe: 20 acknowledged resting orders cut from the journal's tail
    (an older copy of the segment restored): the engine started without them and said
    nothing (they had printed no trade for trades.log to show). DATA/acknowledged holds the
    last seq acknowledged; a journal short of it is refused until the operator decides."""
    engine = EngineProcess(tmp_path / "data")
    with engine:
        kept, acknowledged = acknowledged_then_cut(engine, torn=18)
        journal = sorted((engine.data / "journal").iterdir())
        files = {path: path.read_bytes() for path in [*journal, engine.data / "trades.log"]}
        with pytest.raises(RuntimeError, match="exited 2"):
            engine.start()
        said = f"acknowledged commands up to seq {acknowledged}, but the journal holds them "
        assert said + f"only to seq {kept}: 20 acknowledged commands" in engine.output()
        # the refusal changed nothing (a probe: the partial record was cut first, and logged
        # as a crash's torn tail)
        assert {path: path.read_bytes() for path in files} == files
        assert "cut a torn tail" not in engine.output()
        (engine.data / "acknowledged").unlink()  # the operator goes on without them
        engine.start()
        assert "journal: cut a torn tail of 18 bytes" in engine.output()
        assert engine.status().seq == kept
        assert engine.stop() == 0


def test_without_fsync_a_journal_short_of_acknowledged_orders_is_said(tmp_path):
    engine = EngineProcess(tmp_path / "data", fsync=False)
    with engine:
        kept, acknowledged = acknowledged_then_cut(engine)
        engine.start()
        assert engine.status().seq == kept
        assert f"WARNING: the engine acknowledged commands up to seq {acknowledged}" in (
            engine.output()
        )
        assert engine.stop() == 0
