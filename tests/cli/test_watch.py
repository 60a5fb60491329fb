"""`cxe watch`: the pure rendering of books and status, and the real command against a real
engine driven by real gateways (orders, a trade, a reject, a call phase with an indicative),
directly and through `cxe relay` (the feed's fan-out), whose errors are tested here too."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time

import pytest
import zmq
from rich.console import Console

from engine.cli.watch import Tape, render
from engine.config import default_market
from engine.gateway import wire
from engine.gateway.client import GatewayClient
from engine.gateway.marketdata import InstrumentState
from engine.gateway.marketdata_client import LocalBook, MarketDataClient
from engine.protocol import Accepted, Filled, OpenCall, RejectCode, Rejected, TradePrint
from engine.types import Phase, Side, format_price
from tests.cli.test_cli import cxe, cxe_command
from tests.support.engine import EngineProcess
from tests.support.signals import ignore_sigint, wait_until_caught

MARKET = default_market()
CEA25 = MARKET.instrument("CEA25")
CEA24 = MARKET.instrument("CEA24")
REF = CEA25.reference_price
WIDE = {**os.environ, "COLUMNS": "200"}


def text_of(renderable) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def row_of(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first` (rich's box lines)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def book(phase: Phase, bids, asks, indicative=None, last_trade=None) -> LocalBook:
    low, high = CEA25.band()
    state = InstrumentState(CEA25, phase, REF, low, high, bids, asks, indicative, last_trade)
    return LocalBook.of(state)


def report(**gateways) -> wire.StatusReport:
    counters = {"turns": 9, "sequenced": 7, "fsyncs": 5, "malformed_frames": 0}
    return wire.StatusReport(41, "ab12cd34ef56" + "0" * 52, counters, gateways)


# -- the pure rendering -------------------------------------------------------------------------


def test_render_shows_the_best_five_levels_each_side_with_quantities_and_orders():
    bids = [(REF - i, 100 * (i + 1), i + 1) for i in range(1, 8)]
    asks = [(REF + i, 10 * i, 1) for i in range(1, 8)]
    text = text_of(render({"CEA25": book(Phase.CONTINUOUS, bids, asks)}, {}, None))
    assert "CONTINUOUS" in text and f"reference {format_price(REF)}" in text
    low, high = CEA25.band()
    assert f"band {format_price(low)} - {format_price(high)}" in text
    best = re.search(r"2\s+200\s+61\.99\s+62\.01\s+10\s+1", text)
    assert best, text
    fifth = re.search(r"6\s+600\s+61\.95\s+62\.05\s+50\s+1", text)
    assert fifth, text
    assert "61.94" not in text and "62.06" not in text  # the sixth levels
    assert "indicative" not in text  # continuous trading has none


def test_render_shows_the_indicative_in_a_call_and_says_when_nothing_crosses():
    crossing = book(Phase.CALL, [(REF + 2, 300, 1)], [(REF - 1, 200, 1)], (REF + 1, 200, 100))
    text = text_of(render({"CEA25": crossing}, {}, None))
    assert "CALL" in text and "indicative 62.01  volume 200 t  imbalance 100 t (buy)" in text
    selling = book(Phase.CALL, [(REF + 2, 200, 1)], [(REF - 1, 260, 2)], (REF + 1, 200, -60))
    assert "imbalance 60 t (sell)" in text_of(render({"CEA25": selling}, {}, None))
    apart = book(Phase.CLOSING_CALL, [(REF - 2, 300, 1)], [], (0, 0, 0))
    assert "indicative: no cross" in text_of(render({"CEA25": apart}, {}, None))


def test_render_lists_the_last_trades_newest_first_and_the_gateway_counters():
    tape = Tape(keep=2)
    for trade_id, price in ((1, REF), (2, REF + 3), (3, REF + 7)):
        tape.add(TradePrint(trade_id, trade_id, 0, "CEA25", price, 10 * trade_id, 0, "call"))
    status = report(mm={"commands": 12, "rejects": 3, "undeliverable": 2, "sessions": 1})
    text = text_of(render({"CEA25": book(Phase.CONTINUOUS, [], [])}, tape.trades, status))
    assert re.search(r"62\.07\s+30\s+buy[\s\S]*62\.03\s+20\s+buy", text), text
    assert "62.00 " not in text.split("last trades")[1]  # only the last two are kept
    assert "book empty" in text
    header = row_of(text, "gateway")
    assert dict(zip(header, row_of(text, "mm"), strict=True)) == {
        "gateway": "mm",
        "commands": "12",
        "rejects": "3",
        "undeliverable": "2",
        "sessions": "1",
    }
    assert "engine seq 41  state ab12cd34ef56 " in text and "sequenced 7" in text


def test_render_without_a_status_says_why():
    text = text_of(render({}, {}, None, error="no answer from admin tcp://x within 5 s"))
    assert "engine status: no answer from admin tcp://x within 5 s" in text


# -- the real command against a real engine -----------------------------------------------------


def wait_for(gateway: GatewayClient, kind: type, **fields) -> None:
    def match(reply) -> bool:
        return type(reply) is kind and all(getattr(reply, k) == v for k, v in fields.items())

    gateway.wait_for(match)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """CEA25 trading with a book, a trade and a refused order; CEA24 in its opening call
    with a crossing book."""
    data = tmp_path_factory.mktemp("watch") / "data"
    with EngineProcess(data) as process:
        process.open_market("CEA25")
        process.admin(OpenCall("CEA24"))
        endpoint = process.endpoints["orders"]
        with GatewayClient(endpoint, "mm") as maker, GatewayClient(endpoint, "brokers") as taker:
            for i in range(1, 7):
                maker.submit(f"s{i}", 1, "CEA25", Side.SELL, REF + i, 100 * i)
                maker.submit(f"b{i}", 2, "CEA25", Side.BUY, REF - i, 50 * i)
            maker.submit("s1b", 2, "CEA25", Side.SELL, REF + 1, 40)
            maker.submit("c1", 1, "CEA24", Side.BUY, CEA24.reference_price + 5, 300)
            maker.submit("c2", 2, "CEA24", Side.SELL, CEA24.reference_price, 200)
            wait_for(maker, Accepted, cl_ord_id="c2")
            taker.submit("t1", 3, "CEA25", Side.BUY, REF + 1, 70)
            wait_for(taker, Filled, member=3, leaves=0)
            taker.submit("t2", 1, "CEA25", Side.BUY, REF + 1, 10)  # not a member of brokers
            wait_for(taker, Rejected, cl_ord_id="t2", code=RejectCode.UNAUTHORISED)
        yield process


def watch(*args: str) -> subprocess.CompletedProcess:
    return cxe("watch", *args, env=WIDE)


@pytest.mark.slow
def test_watch_once_renders_the_live_engine_books_trade_call_and_counters(engine):
    result = watch("--once", "--data", str(engine.data))
    assert result.returncode == 0, result.stderr
    text = result.stdout  # panels side by side: each check names what only one shows
    assert f"CONTINUOUS  reference {format_price(REF)}" in text  # CEA25
    assert f"CALL  reference {format_price(CEA24.reference_price)}" in text  # CEA24
    # the best ask: 100 t of s1 less the 70 t traded, plus s1b's 40 t: 70 t in 2 orders
    assert re.search(r"1\s+50\s+61\.99\s+62\.01\s+70\s+2", text), text
    assert re.search(r"1\s+250\s+61\.95\s+62\.05\s+500\s+1", text), text
    assert "62.06" not in text and "61.94" not in text  # CEA25's sixth levels
    assert re.search(r"\d\d:\d\d:\d\d\s+62\.01\s+70\s+buy", text), text
    md = MarketDataClient(engine.endpoints["market_data"], engine.endpoints["snapshots"])
    while not md.synced:
        assert md.next_update(10.0) is not None
    price, volume, imbalance = md.books["CEA24"].indicative
    md.close()
    assert (volume, imbalance) == (200, 100) and price
    assert f"indicative {format_price(price)}  volume 200 t  imbalance 100 t (buy)" in text
    status = engine.status()
    header = row_of(text, "gateway")
    brokers = dict(zip(header, row_of(text, "brokers"), strict=True))
    assert brokers["rejects"] == str(status.gateways["brokers"]["rejects"]) == "1"
    assert brokers["commands"] == str(status.gateways["brokers"]["commands"])
    mm = dict(zip(header, row_of(text, "mm"), strict=True))
    assert mm["commands"] == str(status.gateways["mm"]["commands"]) == "15"
    caption = next(line for line in text.splitlines() if f"engine seq {status.seq:,}" in line)
    assert "state" not in caption  # the poll does not ask for the state hash (below)


@pytest.mark.slow
def test_a_status_asked_without_the_state_hash_leaves_it_empty(engine):
    """The state hash costs the loop time that grows with the day (0.3 s at 600,000
    ClOrdIDs): `cxe watch` polls every second, and asked for it each time."""
    (report,) = engine.admin(wire.Status(with_state_hash=False))
    full = engine.status()
    assert report.state_hash == "" and len(full.state_hash) == 64
    assert report.seq == full.seq and report.gateways == full.gateways


@pytest.mark.slow
def test_watch_once_shows_only_the_instruments_named(engine):
    result = watch("--once", "--data", str(engine.data), "--instrument", "CEA24")
    assert result.returncode == 0, result.stderr
    assert "CEA24" in result.stdout and "CEA25" not in result.stdout
    refused = watch("--once", "--data", str(engine.data), "--instrument", "NOPE")
    assert refused.returncode == 2 and "cxe watch:" in refused.stderr
    assert "NOPE" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_watch_once_with_an_admin_that_does_not_answer_shows_the_books_and_says_so(engine):
    nowhere = "tcp://127.0.0.1:1"
    result = watch(
        "--once", "--timeout", "1", "--admin", nowhere,
        "--market-data", engine.endpoints["market_data"],
        "--snapshots", engine.endpoints["snapshots"],
    )  # fmt: skip
    assert result.returncode == 1
    assert f"engine status: no answer from admin {nowhere} within 1 s" in result.stdout
    assert re.search(r"1\s+50\s+61\.99\s+62\.01\s+70\s+2", result.stdout), result.stdout
    assert f"cxe watch: no answer from admin {nowhere}" in result.stderr
    assert "Traceback" not in result.stderr


def live_watch(engine) -> subprocess.Popen:
    """`cxe watch` of the engine, started with SIGINT ignored: as under a CI runner that runs
    the suite as a background job (where the live view once ignored Ctrl-C)."""
    return subprocess.Popen(
        [*cxe_command(), "watch", "--data", str(engine.data), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=WIDE,
        preexec_fn=ignore_sigint,
    )


@pytest.mark.slow
def test_watch_live_follows_the_feed_until_interrupted(engine):
    process = live_watch(engine)
    try:
        time.sleep(6)  # started (imports, on a loaded machine), synchronised and refreshing
        with GatewayClient(engine.endpoints["orders"], "entities") as gateway:
            gateway.submit("live1", 5, "CEA25", Side.BUY, REF, 777)
            wait_for(gateway, Accepted, cl_ord_id="live1")
        time.sleep(2)  # several refreshes and Status polls later
        wait_until_caught(process, signal.SIGINT)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert re.search(r"1\s+777\s+62\.00\s+62\.01", out), out  # the new best bid
    assert re.search(r"entities\s+│\s+1\s+│", out), out  # its command, from a later Status


def stops_on_sigterm(process: subprocess.Popen) -> str:
    """SIGTERM `process` once it handles it: it must exit 0 without a traceback; what it
    printed."""
    try:
        wait_until_caught(process, signal.SIGINT, signal.SIGTERM)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    return out


@pytest.mark.slow
def test_watch_stops_on_sigterm_without_a_traceback(engine):
    stops_on_sigterm(live_watch(engine))


def start_relay(engine, *args: str) -> tuple[subprocess.Popen, str]:
    """`cxe relay` of the engine (SIGINT ignored, as in a background job), and the endpoint
    it says subscribers connect to."""
    process = subprocess.Popen(
        [*cxe_command(), "relay", "--data", str(engine.data), "--bind", "tcp://127.0.0.1:*",
         *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )  # fmt: skip
    for line in process.stdout:
        if "subscribers connect to " in line:
            return process, line.rsplit(" ", 1)[1].strip()
    raise AssertionError(f"cxe relay said no endpoint: {process.stderr.read()}")


@pytest.mark.slow
def test_watch_through_cxe_relay_shows_the_engine_books_and_relay_stops_on_sigterm(engine):
    process, endpoint = start_relay(engine, "--report", "1")
    try:
        result = watch(
            "--once", "--market-data", endpoint, "--snapshots", engine.endpoints["snapshots"],
            "--admin", engine.endpoints["admin"],
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert re.search(r"62\.01\s+70\s+2\s", result.stdout), result.stdout  # the best ask
        md = MarketDataClient(endpoint, engine.endpoints["snapshots"])
        try:
            with GatewayClient(engine.endpoints["orders"], "entities") as gateway:
                while not md.synced:
                    assert md.next_update(10.0) is not None
                gateway.submit("relay1", 5, "CEA25", Side.SELL, REF + 10, 321)
                wait_for(gateway, Accepted, cl_ord_id="relay1")
            deadline = time.monotonic() + 10
            while (REF + 10, 321, 1) not in md.books["CEA25"].depth(Side.SELL):
                assert time.monotonic() < deadline, md.books["CEA25"].depth(Side.SELL)
                md.poll(0.2)
            assert md.resyncs == 0
        finally:
            md.close()
    except BaseException:
        process.kill()
        process.wait(30)
        raise
    out = stops_on_sigterm(process)
    assert re.search(r"relay: stopped; [1-9][\d,]* messages? from the engine", out), out


def relay_given(engine, topics: list[bytes], field: str) -> tuple[float, str]:
    """A real `cxe relay` of `engine`, once a heartbeat has come through it, given `topics`
    by one subscriber that does not reconnect, which it disconnects: how much the relay's
    memory grew (`field` of its /proc status: VmRSS now, VmHWM its peak), and what it
    printed when stopped."""
    from tests.gateway.test_subscriptions import Peer, peak_from_now, rss_mb

    process, endpoint = start_relay(engine)
    peer = None
    try:
        heartbeat = zmq.Context.instance().socket(zmq.SUB)
        heartbeat.setsockopt(zmq.SUBSCRIBE, b"*HB")
        heartbeat.connect(endpoint)
        assert heartbeat.poll(10_000), "no heartbeat came through the relay"
        heartbeat.close(0)
        before = peak_from_now(process.pid)
        peer = Peer(endpoint)
        peer.subscribe(topics)
        assert peer.event(30) == zmq.EVENT_DISCONNECTED
        time.sleep(1.0)  # the rest of the queue read
        grown = rss_mb(process.pid, field) - before
    except BaseException:
        process.kill()
        process.wait(30)
        raise
    finally:
        if peer is not None:
            peer.close()
    return grown, stops_on_sigterm(process)


@pytest.mark.slow
def test_a_reader_making_up_topics_costs_cxe_relay_no_memory(engine):
    """300,000 made-up topics from one connection grew a relay by about 170 bytes each (its
    PUB socket kept them all); the relay now ends its subscribers after 101 and says so."""
    from tests.gateway.test_subscriptions import made_up

    grown, out = relay_given(engine, made_up(300_000), "VmRSS")
    assert grown < 25, f"the relay grew {grown:.0f} MB"
    assert "relay: relay subscribers: a plain-mode reader sent more than 100 subscriptions" in out
    assert "101 subscriptions to topics the feed does not have ended every subscriber's" in out


@pytest.mark.slow
def test_a_burst_of_long_made_up_topics_is_cut_off_before_it_grows_cxe_relay(engine):
    """Found by a probe: 6,000 topics of 4 KiB took a relay from 28 MB to 1.9 GB before its
    loop could judge them (libzmq files each first); the subscriber's connection now ends
    past what a reader may send, and the relay says so and counts it when it stops."""
    from tests.gateway.test_readerlimit import long_made_up

    grown, out = relay_given(engine, long_made_up(6_000, 4000), "VmHWM")
    assert grown < 100, f"the relay grew {grown:.0f} MB at its peak"
    assert "relay: relay subscribers: a reader at 127.0.0.1:" in out
    assert "1 subscriber connection ended for sending more than a reader may" in out


# -- errors -------------------------------------------------------------------------------------


def test_watch_without_an_engine_says_what_to_do(tmp_path):
    result = watch("--once", "--data", str(tmp_path))
    assert result.returncode == 2
    assert "no running engine found" in result.stderr and "cxe serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_of_an_engine_that_has_stopped_says_so(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    endpoints = {"admin": "tcp://127.0.0.1:1", "market_data": "tcp://127.0.0.1:1"}
    endpoints |= {"snapshots": "tcp://127.0.0.1:1", "pid": gone.pid}
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))
    result = watch("--once", "--data", str(tmp_path))
    assert result.returncode == 2
    assert f"its process {gone.pid} has stopped" in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_of_endpoints_where_nothing_answers_times_out_with_a_message():
    nowhere = "tcp://127.0.0.1:1"
    result = watch(
        "--once", "--market-data", nowhere, "--snapshots", nowhere, "--admin", nowhere,
        "--timeout", "0.5",
    )  # fmt: skip
    assert result.returncode == 2
    assert "no market data snapshot from tcp://127.0.0.1:1 within 0.5 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_refuses_half_the_endpoints_and_bad_numbers():
    half = watch("--once", "--market-data", "tcp://127.0.0.1:1")
    assert half.returncode == 2 and "give all three of --market-data" in half.stderr
    for option, value in (("--interval", "0"), ("--interval", "nan"), ("--trades", "0")):
        bad = watch("--once", option, value)
        assert bad.returncode == 2 and option in bad.stderr and "Traceback" not in bad.stderr


def test_help_of_watch_describes_every_option():
    text = watch("--help").stdout
    for option in ("--data", "--market-data", "--snapshots", "--admin", "--instrument"):
        assert option in text
    for option in ("--once", "--interval", "--trades", "--timeout", "--config"):
        assert option in text
    assert "best five" in text


def test_the_tape_takes_a_snapshots_last_trade_once_and_only_when_newer():
    from engine.gateway.marketdata_client import Synced

    def trade(trade_id: int) -> TradePrint:
        return TradePrint(trade_id, trade_id, 0, "CEA25", REF, trade_id, 0, "continuous")

    tape = Tape(keep=5)
    tape.add(trade(2))
    tape.take(Synced(9, resync=True), {"CEA25": book(Phase.CONTINUOUS, [], [], None, trade(2))})
    tape.take(trade(1), {})  # older than what the tape holds (replayed after a resync)
    assert [t.trade_id for t in tape.trades["CEA25"]] == [2]
    tape.take(Synced(12, resync=True), {"CEA25": book(Phase.CONTINUOUS, [], [], None, trade(4))})
    assert [t.trade_id for t in tape.trades["CEA25"]] == [4, 2]  # trade 3 fell in the gap


def test_relay_errors_say_what_to_do(tmp_path):
    nothing = cxe("relay", "--data", str(tmp_path))
    assert nothing.returncode == 2 and "no running engine found" in nothing.stderr
    assert "--upstream" in nothing.stderr
    exposed = cxe("relay", "--upstream", "tcp://127.0.0.1:1", "--bind", "tcp://0.0.0.0:*")
    assert exposed.returncode == 2 and "plain mode binds to loopback only" in exposed.stderr
    for option, value in (("--report", "0"), ("--report", "inf"), ("--report", "0.5"),
                          ("--hwm", "0"), ("--hwm", str(2**31))):  # fmt: skip
        bad = cxe("relay", option, value)
        assert bad.returncode == 2 and option in bad.stderr, (option, value, bad.stderr)
        assert "Traceback" not in bad.stderr
    empty = cxe("relay", "--upstream", "")
    assert empty.returncode == 2 and "--upstream is empty" in empty.stderr
    keyed = cxe("relay", "--upstream", "tcp://127.0.0.1:1", "--key", "feed.key_secret")
    assert keyed.returncode == 2 and "give --config a market with a [security]" in keyed.stderr
    for result in (nothing, exposed, empty, keyed):
        assert "Traceback" not in result.stderr


def test_serve_refuses_a_high_water_mark_zeromq_cannot_hold(tmp_path):
    """It was an OverflowError traceback after the warm-up (the HWM is a C int)."""
    result = cxe("serve", "--sndhwm", str(2**31), "--data", str(tmp_path / "d"))
    assert result.returncode == 2 and "--sndhwm" in result.stderr
    assert "at most 2,147,483,647" in result.stderr and "Traceback" not in result.stderr


def test_relay_warns_of_silence_follows_the_engine_to_new_ports_and_takes_sighup(tmp_path):
    """With --data, a relay whose engine went quiet and now publishes elsewhere (restarted on
    other ports, as endpoints.json says) moves to it; SIGHUP in plain mode is noted, not
    fatal (it was: exit 129)."""
    context = zmq.Context.instance()
    first, second = context.socket(zmq.PUB), context.socket(zmq.PUB)
    endpoints = tmp_path / "endpoints.json"

    def engine_at(socket: zmq.Socket) -> str:
        port = socket.bind_to_random_port("tcp://127.0.0.1")
        at = f"tcp://127.0.0.1:{port}"
        found = {"admin": "tcp://127.0.0.1:1", "market_data": at,
                 "snapshots": "tcp://127.0.0.1:1", "pid": os.getpid()}  # fmt: skip
        endpoints.write_text(json.dumps(found))
        return at

    engine_at(first)
    relay = subprocess.Popen(
        [*cxe_command(), "relay", "--data", str(tmp_path), "--bind", "tcp://127.0.0.1:*"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint,
    )  # fmt: skip
    reader = context.socket(zmq.SUB)
    try:
        line = relay.stdout.readline()
        while "subscribers connect to " not in line:
            assert line, relay.stderr.read()
            line = relay.stdout.readline()
        reader.setsockopt(zmq.SUBSCRIBE, b"")
        reader.connect(line.rsplit(" ", 1)[1].strip())

        def through_relay(publisher: zmq.Socket, body: bytes) -> None:
            deadline = time.monotonic() + 30
            while not reader.poll(100):
                assert time.monotonic() < deadline, f"{body!r} never came through the relay"
                publisher.send_multipart([b"CEA25.", b"h", body])
            assert reader.recv_multipart()[2] == body
            while reader.poll(200):
                reader.recv_multipart()

        through_relay(first, b"from the first")
        wait_until_caught(relay, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        relay.send_signal(signal.SIGHUP)
        first.close(0)
        moved = engine_at(second)
        through_relay(second, b"from the second")
        out = stops_on_sigterm(relay)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait(30)
        reader.close(0)
        second.close(0)
    assert "relay: SIGHUP: plain mode, no keys to reread" in out
    assert "relay: WARNING: nothing from the engine at " in out
    assert f"now publishes on {moved}: following it (its snapshots are on tcp://127.0.0.1:1" in out


def test_the_relays_figures_count_one_message_and_many():
    from engine.cli.relay import figures
    from engine.gateway.relay import RelayStatistics

    assert figures(RelayStatistics(1, 1, 1, 1)).startswith("1 message from the engine (1 byte),")
    many = figures(RelayStatistics(1200, 50_000, 1200, 50_000))
    assert many == "1,200 messages from the engine (50,000 bytes), 1,200 published to subscribers"
    reset = figures(RelayStatistics(5, 50, 5, 50, bad_subscriptions=101, resets=1))
    assert reset.endswith(
        "; 101 subscriptions to topics the feed does not have ended every subscriber's "
        "connection 1 time"
    )
    waited = figures(RelayStatistics(5, 50, 5, 50, readers_cut=2, readers_waited=30))
    assert waited.endswith(
        "; 2 subscriber connections ended for sending more than a reader may"
        "; 30 subscriber connections waited to be admitted"
    )


def test_the_live_footer_says_when_the_books_may_be_stale():
    """The books stayed on screen looking live while the engine was stopped."""
    from datetime import UTC

    from engine.cli.watch import footer

    client = MarketDataClient("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    try:
        assert not client.synced and "STALE" in footer(client, UTC)
        client.synced, client.seq = True, 1234
        shown = footer(client, UTC)
        assert "STALE" not in shown and "seq 1,234" in shown and "reconnects 0" in shown
    finally:
        client.close()
