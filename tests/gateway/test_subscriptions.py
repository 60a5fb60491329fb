"""Subscriptions cannot grow the engine's memory without bound (engine.gateway.marketdata):
ZeroMQ keeps every distinct subscription of every connection, so a reader that makes up topics
made a PUB socket's memory grow without limit (300,000 made-up topics: 51 MB). A subscription
that is no prefix of a topic the feed has is counted per identity; past MAX_MADE_UP_TOPICS
every feed connection ends (which frees them), and under CURVE the identity is refused on
market data until the keys are reloaded. The secured engine's case is in test_security."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from bench.md_standin import md_market
from engine.config import default_market
from engine.core import Exchange
from engine.gateway.client import GatewayClient
from engine.gateway.marketdata import (
    HEARTBEAT_TOPIC,
    MARKET_TOPIC,
    MARKET_WIDE,
    MAX_MADE_UP_TOPICS,
    MarketDataPublisher,
    topic_of,
)
from engine.gateway.marketdata_client import MarketDataClient
from engine.gateway.security import secure_client
from engine.protocol import Accepted
from engine.types import Side
from tests.support.engine import EngineProcess

LOOPBACK = "tcp://127.0.0.1:*"
SUBSCRIBE, UNSUBSCRIBE = b"\x01", b"\x00"


@pytest.fixture
def publisher():
    context = zmq.Context()
    exchange = Exchange(md_market())
    lines: list[str] = []
    pub = MarketDataPublisher(context, LOOPBACK, LOOPBACK, exchange, log=lines.append)
    pub.lines = lines
    yield pub
    pub.close()
    context.term()


class Peer:
    """A raw subscriber (XSUB: it sends whatever subscription frames it is given, with no
    queue limit) that does not reconnect, and a monitor of its connection."""

    def __init__(self, endpoint: str, curve=None) -> None:
        self.socket = zmq.Context.instance().socket(zmq.XSUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RECONNECT_IVL, -1)
        if curve is not None:
            secure_client(self.socket, *curve)
        self.monitor = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self.socket.connect(endpoint)
        assert self.event(10) == zmq.EVENT_HANDSHAKE_SUCCEEDED

    def event(self, timeout: float) -> int:
        """The next connection event (0: none within `timeout` s)."""
        if not self.monitor.poll(int(timeout * 1000)):
            return 0
        return recv_monitor_message(self.monitor)["event"]

    def subscribe(self, topics: list[bytes], kind: bytes = SUBSCRIBE) -> None:
        for topic in topics:
            self.socket.send(kind + topic)

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)


def drain(publisher: MarketDataPublisher, quiet: float = 0.3) -> None:
    """Let the publisher read its subscriptions until none arrives for `quiet` s."""
    while publisher.pub.poll(int(quiet * 1000)):
        publisher.handle(publisher.pub)


def made_up(count: int, start: int = 0) -> list[bytes]:
    return [b"CEA25.x%08d" % i for i in range(start, start + count)]


def test_prefixes_of_the_feed_topics_are_free_and_the_101st_made_up_one_ends_the_feed(publisher):
    reader = zmq.Context.instance().socket(zmq.SUB)  # an honest reader: it reconnects
    reader.setsockopt(zmq.LINGER, 0)
    reader.setsockopt(zmq.SUBSCRIBE, b"")
    reader.connect(publisher.pub_endpoint)
    peer = Peer(publisher.pub_endpoint)
    try:
        code = md_market().instruments[0].code
        honest = [b"", b"C", topic_of(code), topic_of(code)[:-1], MARKET_WIDE, MARKET_TOPIC,
                  HEARTBEAT_TOPIC]  # fmt: skip
        peer.subscribe(honest)
        peer.subscribe(made_up(500), UNSUBSCRIBE)  # only subscriptions take memory
        peer.subscribe(made_up(MAX_MADE_UP_TOPICS))
        drain(publisher)
        assert publisher.made_up_subscriptions == MAX_MADE_UP_TOPICS
        assert (publisher.feed_resets, peer.event(0.5)) == (0, 0)  # the limit is allowed
        peer.subscribe(made_up(1, start=MAX_MADE_UP_TOPICS))
        drain(publisher)
        assert publisher.feed_resets == 1
        assert peer.event(5) == zmq.EVENT_DISCONNECTED
        assert any(
            "a plain-mode reader subscribed to more than 100 topics" in line
            and "may connect again" in line
            for line in publisher.lines
        ), publisher.lines
        deadline = time.monotonic() + 10  # the honest reader is served again
        while not reader.poll(100):
            assert time.monotonic() < deadline, "the honest reader was not served again"
            publisher.heartbeat()
            drain(publisher, 0.05)
        assert reader.recv_multipart()[0] == HEARTBEAT_TOPIC
    finally:
        peer.close()
        reader.close(0)


def test_notifications_queued_before_the_feed_ended_are_not_counted_again(publisher):
    """3,000 made-up topics at once: the first 101 end the connection; those read after it
    belong to a connection that has gone (counting them ended every reader's feed again)."""
    peer = Peer(publisher.pub_endpoint)
    try:
        peer.subscribe(made_up(3000))
        time.sleep(0.5)  # all of them at the publisher
        drain(publisher)
        assert (publisher.feed_resets, publisher.made_up_subscriptions) == (
            1,
            MAX_MADE_UP_TOPICS + 1,
        )
        # a new offence is counted again
        second = Peer(publisher.pub_endpoint)
        try:
            second.subscribe(made_up(MAX_MADE_UP_TOPICS + 1))
            drain(publisher)
            assert publisher.feed_resets == 2
        finally:
            second.close()
    finally:
        peer.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def test_a_reader_making_up_topics_costs_the_engine_no_memory_and_others_resync(tmp_path: Path):
    """A real engine in plain mode: 300,000 made-up topics from one connection (51 MB of the
    engine's memory before) end the feed's connections after 101; a reader synced before it
    holds the engine's book after, having resynced; the status report counts both."""
    market = default_market()
    with EngineProcess(tmp_path / "data") as engine:
        code = market.instruments[0].code
        engine.open_market(code)
        endpoints = engine.endpoints
        reader = MarketDataClient(endpoints["market_data"], endpoints["snapshots"],
                                  snapshot_timeout=1.0, silence_timeout=2.0)  # fmt: skip
        peer = None
        try:
            deadline = time.monotonic() + 30
            while not reader.synced:
                assert time.monotonic() < deadline, "the reader never synced"
                reader.poll(0.2)
            before = rss_mb(engine.process.pid)
            peer = Peer(endpoints["market_data"])
            peer.subscribe(made_up(300_000))
            assert peer.event(30) == zmq.EVENT_DISCONNECTED
            deadline = time.monotonic() + 30
            while "subscribed to more than 100 topics" not in engine.output():
                assert time.monotonic() < deadline, engine.output()
                time.sleep(0.1)
            time.sleep(1.0)  # the rest of the queue read
            grown = rss_mb(engine.process.pid) - before
            assert grown < 25, f"the engine grew {grown:.0f} MB"
            counters = engine.status().counters
            assert counters["market_data_feed_resets"] == 1
            assert counters["market_data_made_up_subscriptions"] == MAX_MADE_UP_TOPICS + 1
            price = market.instruments[0].reference_price
            with GatewayClient(endpoints["orders"], "mm") as mm:
                mm.submit("after-reset", 1, code, Side.BUY, price, 7)
                mm.wait_for(lambda r: isinstance(r, Accepted))
            deadline = time.monotonic() + 30
            while (price, 7, 1) not in reader.books[code].depth(Side.BUY):
                assert time.monotonic() < deadline, "the reader lost the feed"
                reader.poll(0.2)
            assert reader.resyncs + reader.reconnects >= 1
        finally:
            reader.close()
            if peer is not None:
                peer.close()
