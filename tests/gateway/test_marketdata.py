"""Market data over real ZeroMQ sockets on loopback: a service stand-in (bench.md_standin: an
Exchange and its MarketDataPublisher in one thread) driven by seeded order flow, and
MarketDataClients that must hold the engine's own books (the exchange's depth views, phase,
band, indicative, last trade) after every command, however they joined or fell behind."""

from __future__ import annotations

import bisect
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import msgspec
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from bench.md_standin import CODES, ServiceStandIn, md_market, opening, order_flow
from engine.core import Exchange
from engine.gateway.marketdata import (
    HEADER,
    MAX_REQUEST_BYTES,
    SNAP_END,
    SNAP_ERROR,
    SNAP_REQUEST,
    SNAP_STATE,
    MarketDataPublisher,
    SnapshotEnd,
)
from engine.gateway.marketdata_client import MarketDataClient, SnapshotRefused, Synced
from engine.gateway.subscriptions import MAX_SUBSCRIPTION_BYTES
from engine.gateway.zap import ZapHandler
from engine.protocol import (
    AuctionResult,
    Audience,
    Close,
    CloseCall,
    DaySummary,
    EndOfDay,
    Indicative,
    NewOrder,
    OpenCall,
    PhaseChanged,
    StartOfDay,
    TradePrint,
    Uncross,
)
from engine.types import Phase, Side

LOOPBACK = "tcp://127.0.0.1:*"


@pytest.fixture
def service_factory():
    started: list[ServiceStandIn] = []

    def make(**options) -> ServiceStandIn:
        service = ServiceStandIn(**options)
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        failure = service.failure
        service.stop()
        assert failure is None, f"the stand-in's loop raised {failure!r}"


@pytest.fixture
def clients():
    made: list[MarketDataClient] = []

    def make(service: ServiceStandIn, **options) -> MarketDataClient:
        client = MarketDataClient(*service.endpoints, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def read_all(client: MarketDataClient, idle: float = 1.0) -> list:
    updates = []
    while (update := client.next_update(idle)) is not None:
        updates.append(update)
    return updates


class EngineHistory:
    """The engine's state of every instrument after each command (the stand-in's records),
    looked up by public stream position."""

    def __init__(self, service: ServiceStandIn) -> None:
        self.records = service.records
        self.positions = [seq for seq, _, _ in self.records]

    def boundaries(self) -> set[int]:
        return set(self.positions)

    def at(self, seq: int) -> dict:
        state = {}
        for _, code, record in self.records[: bisect.bisect_right(self.positions, seq)]:
            state[code] = record
        return state


def engine_now(service: ServiceStandIn, codes=CODES) -> dict:
    return {code: service.publisher.instrument_state(code) for code in codes}


def client_now(client: MarketDataClient) -> dict:
    return {code: book.state() for code, book in client.books.items()}


def joined(
    client: MarketDataClient, timeout: float = 30.0
) -> tuple[MarketDataClient, Synced | None]:
    """`client` once its feed connection is up and its snapshot asked for (it asks only
    then, and acts only inside its calls), so that a test's flow goes on after it joined;
    and its Synced if the call that brought the feed up also took the snapshot's answer
    (CI, on a fast machine: the assertion once allowed no update in that call)."""
    deadline = time.monotonic() + timeout
    first = None
    while not client.feed_up and time.monotonic() < deadline:
        first = client.next_update(0.01)
        assert first is None or client.feed_up  # no snapshot before the feed is up
    assert client.feed_up, "the feed never admitted the client"
    return client, first


def check_every_update(
    client: MarketDataClient, history: EngineHistory, synced: Synced | None = None
) -> tuple[list, list]:
    """Read a client that has just joined until idle; after its snapshot and after every
    update that ends a command the client's books must be the engine's at that point.
    Returns the updates and the public positions compared. `synced`: the client's first
    update, when the caller has read it (and nothing after it)."""
    boundaries = history.boundaries()
    updates, compared = [], []
    if synced is not None:
        updates.append(synced)
        expected = history.at(synced.seq)
        assert client_now(client) == {c: expected[c] for c in client.books}
        compared.append(synced.seq)
    while (update := client.next_update(1.0)) is not None:
        updates.append(update)
        if isinstance(update, Synced) or client.seq in boundaries:
            expected = history.at(client.seq)
            assert client_now(client) == {c: expected[c] for c in client.books}, client.seq
            compared.append(client.seq)
    synced = updates[0]
    assert isinstance(synced, Synced) and client.resyncs == 0
    # the snapshot, then every command after it, was a point of comparison
    assert compared == [synced.seq, *sorted(p for p in boundaries if p > synced.seq)]
    return updates, compared


# -- (a) a late joiner ------------------------------------------------------------------------


def test_late_joiner_holds_the_engine_books_after_every_update(service_factory, clients):
    service = service_factory(record=True)
    service.submit(opening())
    service.submit(order_flow(1500, seed=3))
    service.drain()
    before = service.exchange.state.public_seq
    flow = order_flow(3000, seed=4)
    service.submit(flow[:1000])
    client, synced = joined(clients(service))  # joins while the flow runs
    service.submit(flow[1000:])
    service.drain()
    history = EngineHistory(service)
    _, compared = check_every_update(client, history, synced)
    final = service.exchange.state.public_seq
    assert client.seq == final and client.resyncs == 0
    assert client_now(client) == engine_now(service)
    # it joined late, its snapshot taken in the middle of the market's day
    assert before < compared[0] < final and len(compared) > 1000
    books = client.books
    assert all(books[c].bids and books[c].asks and books[c].last_trade for c in CODES)


# -- (b) a slow subscriber --------------------------------------------------------------------


def a_burst_makes_it_resync(service: ServiceStandIn, client: MarketDataClient, instruments):
    """A burst while `client` (synced, small queues) reads nothing: a message or more for
    every command. It must see the gap, resync by itself and end with the engine's books of
    its instruments, which it returns."""
    first = client.next_update(5.0)
    assert isinstance(first, Synced) and not first.resync
    service.submit(order_flow(6000, seed=5), turn=1)
    service.drain()
    time.sleep(0.3)
    updates = read_all(client)
    assert client.resyncs >= 1
    assert any(isinstance(u, Synced) and u.resync for u in updates)
    codes = instruments or CODES
    assert set(client.books) == set(codes)
    assert client_now(client) == engine_now(service, codes)
    return codes


@pytest.mark.parametrize("instruments", [None, ["CEA25"]], ids=["all", "one"])
def test_slow_subscriber_detects_the_gap_and_resyncs_by_itself(
    service_factory, clients, instruments
):
    service = service_factory(sndhwm=20, sndbuf=4096)
    service.submit(opening())
    service.drain()
    client = clients(service, instruments=instruments, rcvhwm=20, rcvbuf=4096)
    codes = a_burst_makes_it_resync(service, client, instruments)
    if instruments is None:
        assert client.seq == service.exchange.state.public_seq
    # it goes on from there with no further loss while it keeps up (a pace its queues of 20
    # messages hold)
    resyncs = client.resyncs
    flow = order_flow(300, seed=6)
    for start in range(0, len(flow), 10):
        service.submit(flow[start : start + 10])
        service.drain()
        read_all(client, idle=0.05)
    read_all(client, idle=0.5)
    assert client.resyncs == resyncs
    assert client_now(client) == engine_now(service, codes)


@contextmanager
def deaf(client: MarketDataClient):
    """Messages published inside are lost to `client` (it unsubscribes, then subscribes
    again), as a PUB socket loses them at the high-water mark."""
    prefixes = [b""] if client.instruments is None else [b"CEA25.", b"*"]
    for prefix in prefixes:
        client.sub.setsockopt(zmq.UNSUBSCRIBE, prefix)
    time.sleep(0.3)  # the publisher has seen the change
    yield
    for prefix in prefixes:
        client.sub.setsockopt(zmq.SUBSCRIBE, prefix)
    time.sleep(0.3)


@pytest.mark.parametrize("instruments", [None, ["CEA25"]], ids=["all", "one"])
@pytest.mark.parametrize("revealed_by", ["next message", "heartbeat"])
def test_a_loss_is_seen_by_the_next_message_or_the_heartbeat(
    service_factory, clients, instruments, revealed_by
):
    service = service_factory(heartbeat_every=1e9)  # heartbeats only when asked
    service.submit(opening())
    service.drain()
    client = clients(service, instruments=instruments)
    assert isinstance(client.next_update(5.0), Synced)
    with deaf(client):
        service.submit(order_flow(200, seed=11))
        service.drain()
    if revealed_by == "heartbeat":
        service.beat()
    else:
        service.submit(order_flow(200, seed=12))
    service.drain()
    updates = read_all(client, idle=0.5)
    assert client.resyncs == 1 and [u for u in updates if isinstance(u, Synced)]
    codes = instruments or CODES
    assert client_now(client) == engine_now(service, codes)


# -- (c) one instrument -----------------------------------------------------------------------


def test_one_instrument_subscription_takes_its_topic_only(service_factory, clients):
    service = service_factory()
    service.submit(opening())
    service.drain()
    every = clients(service)
    one = clients(service, instruments=["CEA2"])  # a prefix of CEA25's code
    for client in (every, one):
        assert isinstance(client.next_update(5.0), Synced)
    service.submit(order_flow(2000, seed=8))
    service.drain()
    all_events = [u for u in read_all(every) if not isinstance(u, Synced)]
    mine = [u for u in read_all(one) if not isinstance(u, Synced)]
    assert {e.instrument for e in all_events} == set(CODES)
    assert mine == [e for e in all_events if e.instrument == "CEA2"] and mine
    assert list(one.books) == ["CEA2"] and one.resyncs == 0
    assert one.books["CEA2"].state() == service.publisher.instrument_state("CEA2")


def test_an_unlisted_instrument_is_refused_with_its_name(service_factory):
    service = service_factory()
    client = MarketDataClient(*service.endpoints, instruments=["CEA9"])
    try:
        with pytest.raises(SnapshotRefused, match="no such instrument: CEA9"):
            client.next_update(5.0)
    finally:
        client.close()


# -- (d) the day's public events --------------------------------------------------------------


def test_phases_indicative_auctions_and_day_summary_reach_the_client(service_factory, clients):
    service = service_factory(record=True)
    client = clients(service)
    synced = client.next_update(5.0)  # before the day starts
    assert isinstance(synced, Synced)
    code = "CEA25"
    service.submit([StartOfDay("2026-11-24"), OpenCall(code)])
    service.submit(
        [
            NewOrder("b1", 1, code, Side.BUY, 6010, 10),
            NewOrder("s1", 2, code, Side.SELL, 5990, 6),
            NewOrder("s2", 3, code, Side.SELL, 6000, 8),
        ]
    )
    service.drain()
    late = clients(service)  # joins during the call: the snapshot carries the indicative
    assert isinstance(late.next_update(5.0), Synced)
    assert late.books[code].indicative == (6000, 10, -4)  # 10 t bid, 14 t offered at 6000
    assert late.books[code].phase == Phase.CALL
    service.submit(
        [
            Uncross(code),
            CloseCall(code),
            NewOrder("b2", 1, code, Side.BUY, 6050, 5),
            NewOrder("s3", 2, code, Side.SELL, 6040, 5),
            Close(code),
            *(Close(c) for c in CODES if c != code),
            EndOfDay(),
        ]
    )
    service.drain()
    history = EngineHistory(service)
    updates, compared = check_every_update(client, history, synced)
    assert len(compared) > 10  # opening and closing, order by order
    kinds = {type(e) for e in [*updates, *read_all(late, 0.3)]}
    assert {PhaseChanged, Indicative, AuctionResult, TradePrint, DaySummary} <= kinds
    book = client.books[code]
    auctions = [u for u in updates if type(u) is AuctionResult and u.instrument == code]
    assert [(a.auction, a.price, a.volume) for a in auctions] == [
        ("call", 6000, 10),
        ("closing_call", 6040, 5),
    ]
    indicatives = [u for u in updates if type(u) is Indicative and u.instrument == code]
    assert indicatives and indicatives[-1].price == 6040
    assert book.last_auction.auction == "closing_call" and book.last_auction.volume == 5
    assert book.phase == Phase.CLOSED and book.indicative is None
    market = service.exchange.markets[code]
    assert book.day.close == market.reference == book.reference
    assert book.band == market.band and book.day.volume == 15
    assert client_now(client) == client_now(late) == engine_now(service)


# -- (e) bad snapshot requests ----------------------------------------------------------------


def received(socket: zmq.Socket, timeout_ms: int = 5000) -> list[bytes]:
    """The next message on `socket`, failing (not waiting for good) when none comes."""
    assert socket.poll(timeout_ms), f"nothing arrived in {timeout_ms} ms"
    return socket.recv_multipart()


def ask(socket: zmq.Socket, *frames: bytes) -> list[bytes]:
    socket.send_multipart(frames)
    return received(socket)


def test_bad_snapshot_requests_are_answered_and_counted(service_factory):
    service = service_factory()
    service.submit(opening())
    service.drain()
    context = zmq.Context.instance()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(service.endpoints[1])
    codes = msgspec.msgpack.encode(["CEA25"])
    bad = [
        (b"garbage",),
        (SNAP_REQUEST,),
        (SNAP_REQUEST, b"t1"),
        (SNAP_REQUEST, b"", codes),
        (SNAP_REQUEST, b"x" * 33, codes),
        (SNAP_REQUEST, b"t2", b"\xc1"),  # never valid msgpack
        (SNAP_REQUEST, b"t3", msgspec.msgpack.encode([1, 2])),
        (SNAP_REQUEST, b"t4", msgspec.msgpack.encode({"a": 1})),
        (SNAP_REQUEST, b"t5", msgspec.msgpack.encode(["NOPE"])),
        (SNAP_REQUEST, b"t6", codes, b"extra"),
        (b"\x00" * 1000, b"\xff" * 3, b""),
    ]
    try:
        for frames in bad:
            reply = ask(dealer, *frames)
            assert reply[0] == SNAP_ERROR and reply[2], frames
            if len(frames) == 3 and 0 < len(frames[1]) <= 32:
                assert reply[1] == frames[1]
        assert service.publisher.bad_requests == len(bad)
        oversize = context.socket(zmq.DEALER)
        oversize.setsockopt(zmq.LINGER, 0)
        oversize.connect(service.endpoints[1])
        oversize.send_multipart((SNAP_REQUEST, b"big", b"\x90" * (MAX_REQUEST_BYTES + 1)))
        assert not oversize.poll(300)  # dropped with its connection, not answered
        oversize.close()
        # the service goes on answering proper requests
        reply = ask(dealer, SNAP_REQUEST, b"ok", codes)
        assert reply[0] == SNAP_STATE and reply[1] == b"ok"
        end = received(dealer)
        assert end[0] == SNAP_END
        assert msgspec.msgpack.decode(end[2], type=SnapshotEnd).seq == (
            service.exchange.state.public_seq
        )
        assert service.publisher.bad_requests == len(bad)
    finally:
        dealer.close()
    assert service.failure is None


# -- the publisher on its own (in this thread) ------------------------------------------------


@pytest.fixture
def publisher():
    context = zmq.Context()
    exchange = Exchange(md_market())
    pub = MarketDataPublisher(context, LOOPBACK, LOOPBACK, exchange)
    yield pub
    pub.close()
    context.term()


def dealer_for(publisher: MarketDataPublisher) -> zmq.Socket:
    socket = publisher.router.context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(publisher.snapshot_endpoint)
    return socket


def serve(publisher: MarketDataPublisher, rounds: int = 20) -> None:
    for _ in range(rounds):
        if publisher.router.poll(20):
            publisher.handle(publisher.router)


def test_a_snapshot_waits_until_the_published_stream_catches_up(publisher):
    exchange = publisher.exchange
    publisher.publish(exchange.apply(StartOfDay("2026-11-24")))
    events = exchange.apply(OpenCall("CEA25"))  # applied, not yet published
    dealer = dealer_for(publisher)
    try:
        dealer.send_multipart((SNAP_REQUEST, b"w", msgspec.msgpack.encode([])))
        serve(publisher)
        assert not dealer.poll(100)  # its last trade and topic numbers would be behind
        publisher.publish(events)
        frames = [received(dealer) for _ in range(len(CODES) + 1)]
        assert [f[0] for f in frames] == [SNAP_STATE] * len(CODES) + [SNAP_END]
        end = msgspec.msgpack.decode(frames[-1][2], type=SnapshotEnd)
        assert end.seq == exchange.state.public_seq == events[-1].stream_seq
        assert end.topics["CEA25."] == 1 and end.topics["CEA2."] == 0
    finally:
        dealer.close()


def test_a_reply_to_a_peer_gone_is_counted_not_raised(publisher):
    dealer = dealer_for(publisher)
    dealer.setsockopt(zmq.LINGER, 1000)
    dealer.send_multipart((SNAP_REQUEST, b"gone", msgspec.msgpack.encode([])))
    dealer.close()
    time.sleep(0.3)
    serve(publisher, rounds=5)
    assert publisher.snapshot_failures == 1 and publisher.snapshots_sent == 0


def test_messages_carry_topic_and_both_sequence_numbers(publisher):
    exchange = publisher.exchange
    sub = publisher.pub.context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"CEA2.")
    sub.connect(publisher.pub_endpoint)
    time.sleep(0.3)  # the subscription reaches the publisher
    try:
        events = []
        for command in opening():
            events += exchange.apply(command)
        publisher.publish(events)
        public = [e for e in events if e.audience is Audience.PUBLIC]
        mine = [e for e in public if e.instrument == "CEA2"]
        topic, header, payload = received(sub)
        assert not sub.poll(100)  # one message: CEA2's events are consecutive, no other topic
        first, topic_first, n = HEADER.unpack(header)
        assert topic == b"CEA2." and topic_first == 1 and n == len(mine) == 3
        assert first == mine[0].stream_seq and payload == msgspec.msgpack.encode(mine)
    finally:
        sub.close()


def test_a_turn_sends_one_message_per_topic_and_ends_at_its_last_event(publisher):
    exchange = publisher.exchange
    for command in opening():
        publisher.publish(exchange.apply(command))
    sub = publisher.pub.context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(publisher.pub_endpoint)
    time.sleep(0.3)
    try:
        events = []
        for n, code in enumerate(("CEA2", "CEA25", "CEA2")):  # CEA2 first and last
            events += exchange.apply(NewOrder(f"t{n}", 1, code, Side.BUY, 5900 + n, 10))
        publisher.publish(events)
        messages = [received(sub) for _ in range(2)]
        assert not sub.poll(100)
        assert [m[0] for m in messages] == [b"CEA25.", b"CEA2."]
        last = msgspec.msgpack.decode(messages[-1][2])[-1]
        assert last[-1] == exchange.state.public_seq  # the turn's final position comes last
        assert [HEADER.unpack(m[1])[2] for m in messages] == [1, 2]
    finally:
        sub.close()


def test_an_unanswered_snapshot_is_asked_again_and_stale_replies_ignored(publisher):
    exchange = publisher.exchange
    for command in opening():
        publisher.publish(exchange.apply(command))
    client = MarketDataClient(
        publisher.pub_endpoint, publisher.snapshot_endpoint, snapshot_timeout=0.2
    )
    try:
        assert client.next_update(0.5) is None  # nobody answered yet
        assert client.snapshot_retries >= 1
        serve(publisher)  # now every request is answered, the given-up ones too
        assert publisher.snapshots_sent == client.snapshot_requests >= 1
        assert client.next_update(1.0) == Synced(exchange.state.public_seq, False)
        assert client.next_update(0.3) is None  # one snapshot installed, not one per reply
        assert client.books["CEA25"].phase == Phase.CONTINUOUS
    finally:
        client.close()


class Admitting:
    """A reader admission (engine.gateway.zap.Gate) that holds every reader until `open`."""

    def __init__(self) -> None:
        self.admits = threading.Event()

    def open(self) -> bool:
        return self.admits.is_set()

    def took(self) -> None:
        pass


def test_a_snapshot_is_asked_for_only_once_the_feed_has_admitted_the_client():
    """A client whose feed connection waits to be admitted (the engine's and a relay's reader
    admission) while its snapshot connection does not: a snapshot taken before the feed let
    it in was followed by updates it never received, a gap and a resync (seen as a flaky
    relay test)."""
    context = zmq.Context()
    zap = ZapHandler(context, None)
    exchange = Exchange(md_market())
    publisher = MarketDataPublisher(context, LOOPBACK, LOOPBACK, exchange, zap=zap)
    admission = Admitting()
    zap.gate("market_data", admission)
    for command in opening():
        publisher.publish(exchange.apply(command))
    client = MarketDataClient(publisher.pub_endpoint, publisher.snapshot_endpoint)
    prices = iter(range(5800, 5900))

    def order() -> None:
        publisher.publish(exchange.apply(NewOrder(f"o{next(prices)}", 1, "CEA25", Side.BUY,
                                                  5800, 10)))  # fmt: skip

    try:
        assert client.next_update(0.3) is None and not client.feed_up
        serve(publisher)  # answers any request there is
        order()  # published while the feed holds the client out: it never gets this
        admission.admits.set()
        synced, deadline = None, time.monotonic() + 30
        while synced is None and time.monotonic() < deadline:
            synced = client.next_update(0.05)
            serve(publisher, rounds=2)
        assert synced == Synced(exchange.state.public_seq, False)
        order()
        order()
        updates = client.poll(2.0)
        while client.seq < exchange.state.public_seq and (more := client.poll(1.0)):
            updates += more
        assert client.seq == exchange.state.public_seq and client.resyncs == 0
        assert publisher.snapshots_sent == 1
    finally:
        client.close()
        publisher.close()
        zap.stop()
        context.term()


def test_events_the_service_did_not_publish_are_counted_as_a_stream_break(publisher):
    exchange = publisher.exchange
    publisher.publish(exchange.apply(StartOfDay("2026-11-24")))
    publisher.publish(exchange.apply(OpenCall("CEA25")))
    exchange.apply(OpenCall("CEA2"))  # never published
    assert publisher.stream_breaks == 0
    publisher.publish(exchange.apply(OpenCall("CCER")))
    assert publisher.stream_breaks == 1
    assert publisher.sequence == exchange.state.public_seq


def test_a_reply_to_a_request_given_up_is_not_installed(publisher):
    exchange = publisher.exchange
    closed = publisher.instrument_state("CEA25")
    for command in opening():
        publisher.publish(exchange.apply(command))
    trading = publisher.instrument_state("CEA25")
    service = publisher.router.context.socket(zmq.ROUTER)  # answers as the test says
    service.setsockopt(zmq.LINGER, 0)
    port = service.bind_to_random_port("tcp://127.0.0.1")
    client = MarketDataClient(
        publisher.pub_endpoint,
        f"tcp://127.0.0.1:{port}",
        instruments=["CEA25"],
        snapshot_timeout=0.2,
    )
    try:
        assert client.next_update(0.5) is None and client.snapshot_retries >= 1
        # the client acts only inside its calls: it has sent exactly this many requests (one
        # per retry only if its feed came up before the first timeout: CI's did not, and a
        # blocking read of retries + 1 requests waited for good)
        requests = [received(service) for _ in range(client.snapshot_requests)]
        assert requests and not service.poll(100)
        assert len({token for _, _, token, _ in requests}) == len(requests)  # fresh tokens
        # every request but the newest is answered with the stale (closed) state; on a loaded
        # machine the client may give up the newest too before reading its answer (its
        # snapshot timeout is 0.2 s), so each request it sends meanwhile is answered the same way
        synced, deadline = None, time.monotonic() + 60
        while synced is None and time.monotonic() < deadline:
            for n, (peer, _, token, _) in enumerate(requests):  # the stale ones first
                current = n == len(requests) - 1
                state, seq = (trading, exchange.state.public_seq) if current else (closed, 0)
                service.send_multipart((peer, SNAP_STATE, token, msgspec.msgpack.encode(state)))
                end = SnapshotEnd(seq, {"CEA25.": 0, "*.": 0})
                service.send_multipart((peer, SNAP_END, token, msgspec.msgpack.encode(end)))
            synced = client.next_update(1.0)
            requests = requests[-1:]  # the newest again, as stale, if the client moved on
            while service.poll(0):
                requests.append(received(service))
        assert synced == Synced(exchange.state.public_seq, False)
        assert client.books["CEA25"].state() == trading != closed
    finally:
        client.close()
        service.close()


def test_snapshot_requests_count_only_the_requests_that_went_out(tmp_path):
    """Requests asked again while the feed is not up yet are counted as retries but not
    sent; `snapshot_requests` says how many the service can expect (a test that read
    retries + 1 requests from its service waited for good on CI, whose feed came up late)."""
    feed, snapshots = f"ipc://{tmp_path}/feed", f"ipc://{tmp_path}/snapshots"
    context = zmq.Context.instance()
    client = MarketDataClient(feed, snapshots, instruments=["CEA25"], snapshot_timeout=0.2)
    pub, service = context.socket(zmq.PUB), context.socket(zmq.ROUTER)
    for socket in (pub, service):
        socket.setsockopt(zmq.LINGER, 0)
    try:
        service.bind(snapshots)
        assert client.next_update(0.5) is None
        assert client.snapshot_retries >= 2 and client.snapshot_requests == 0
        assert not service.poll(100)
        pub.bind(feed)  # the feed comes up: the request goes out now
        deadline = time.monotonic() + 30
        while not client.feed_up and time.monotonic() < deadline:
            client.next_update(0.05)
        assert client.snapshot_requests >= 1
        requests = [received(service) for _ in range(client.snapshot_requests)]
        assert all(frames[1] == SNAP_REQUEST for frames in requests)
        assert not service.poll(100)
    finally:
        client.close()
        pub.close()
        service.close()


def test_a_client_for_no_instrument_is_refused_before_it_connects():
    with pytest.raises(ValueError, match="name at least one code"):
        MarketDataClient("tcp://127.0.0.1:1", "tcp://127.0.0.1:1", instruments=[])


def an_oversized_subscription_disconnects(endpoint: str) -> None:
    """A peer of a PUB socket at `endpoint` that sends a frame past MAX_SUBSCRIPTION_BYTES
    loses its connection (without the limit a peer announcing a 1 GiB frame had the socket
    reserve it)."""
    peer = zmq.Context.instance().socket(zmq.XSUB)
    peer.setsockopt(zmq.LINGER, 0)
    monitor = peer.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        peer.connect(endpoint)
        assert monitor.poll(5000) and recv_monitor_message(monitor)["event"] == zmq.EVENT_CONNECTED
        peer.send(b"\x01" + b"A" * MAX_SUBSCRIPTION_BYTES)
        assert monitor.poll(5000), "the connection was kept"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    finally:
        peer.disable_monitor()
        peer.close(0)


def test_a_subscriber_sending_an_oversized_frame_is_disconnected(publisher):
    an_oversized_subscription_disconnects(publisher.pub_endpoint)


@pytest.mark.parametrize("silence", [0, -1, 0.9, 1.99, None, float("nan"), "5"])
def test_a_silence_timeout_shorter_than_two_heartbeats_is_refused(silence):
    """0 reconnected on every pass (870 reconnects/s, a snapshot served for each); under the
    heartbeat's second a healthy feed looked gone; None failed at the first read."""
    with pytest.raises(ValueError, match="silence_timeout: at least 2 s"):
        MarketDataClient("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", silence_timeout=silence)
    for accepted in (2, 2.0, float("inf")):  # the boundary itself, and never
        MarketDataClient("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", silence_timeout=accepted).close()


UNCLOSED_IN_A_CYCLE = """
import gc
from engine.gateway.marketdata_client import MarketDataClient
client = MarketDataClient("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
client.itself = client  # a reference cycle: only the garbage collector frees it
del client
gc.collect()
print("collected")
"""


def test_a_client_left_unclosed_in_a_reference_cycle_is_collected_without_hanging():
    """Found when a full test run hung in a later test's garbage collection: an unclosed
    client's own context was finalized before its sockets, and its term() waited for them
    for ever."""
    done = subprocess.run(
        [sys.executable, "-c", UNCLOSED_IN_A_CYCLE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "collected\n", done.stderr


@pytest.mark.slow
def test_a_client_whose_handshake_event_was_missed_still_syncs(tmp_path):
    """CI saw `next_update(30)` return None against a real engine, now and then: the client
    attached its connection monitor after connecting, so a handshake done first was never
    seen; the feed then counted as not up, no snapshot request went out, and the engine's
    heartbeats kept the client from reconnecting. Here the event is taken away on purpose:
    the feed's messages show the connection is up, and the client syncs."""
    from tests.support.engine import EngineProcess

    with EngineProcess(tmp_path / "data") as engine:
        engine.open_market("CEA25")
        endpoints = engine.endpoints
        client = MarketDataClient(endpoints["market_data"], endpoints["snapshots"], ["CEA25"])
        try:
            while True:  # what the client would have missed
                assert client.feed_monitor.poll(30_000), "the feed's connection never came up"
                event = recv_monitor_message(client.feed_monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    break
            synced = client.next_update(10.0)
            assert isinstance(synced, Synced), (client.feed_up, client.snapshot_requests)
            assert client.reconnects == 0
        finally:
            client.close()
        assert engine.stop() == 0
