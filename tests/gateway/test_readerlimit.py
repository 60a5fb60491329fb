"""A feed reader's connection may send so much (engine.gateway.readerlimit): libzmq files each
subscription before the socket's owner can judge it, at about 80 bytes of memory per byte of
made-up topic, so a reader sending without pause grew the owner without bound (a probe: 6,000
topics of 4 KiB took a relay from 28 MB to 1.9 GB). Past its allowance a connection is ended
from the limit's own thread, whatever the owner is doing. The real engine's and the real
relay's cases are in test_subscriptions and tests/cli/test_watch."""

from __future__ import annotations

import contextlib
import os
import random
import socket as sockets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import engine.gateway.readerlimit as readerlimit
import engine.gateway.zap as zap
from engine.config import default_market
from engine.gateway import wire
from engine.gateway.client import GatewayClient
from engine.gateway.readerlimit import (
    HANDSHAKE_BYTES,
    MAX_READER_BURST,
    READER_BYTES_PER_S,
    READER_RCVBUF,
    Allowance,
    ReaderByteLimit,
    _Accepted,
    allowance,
    over_allowance,
)
from engine.gateway.zap import ZapHandler
from engine.protocol import Accepted, Close, DayClosed, EndOfDay, StartOfDay
from engine.types import Side
from tests.gateway.test_subscriptions import UNSUBSCRIBE, Peer
from tests.gateway.test_zap import reader_of
from tests.support.engine import EngineProcess

SECOND_NS = 1_000_000_000
CODE = default_market().instruments[0].code
PRICE = default_market().instruments[0].reference_price


def long_made_up(count: int, size: int, seed: int = 7) -> list[bytes]:
    """`count` topics of `size` random bytes: each makes libzmq's trie a chain of its own."""
    chance = random.Random(seed)
    return [chance.randbytes(size) for _ in range(count)]


class Feed:
    """An XPUB bound at `endpoint` with a ReaderByteLimit, and an owner that reads its
    subscription notices when asked (as the engine's loop does each turn)."""

    def __init__(
        self, endpoint: str, admission: bool = False, max_connections: int | None = None
    ) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.lines: list[str] = []
        # with `admission`, readers come in through a ZAP handler and the limit's gate
        self.zap = ZapHandler(self.context, None) if admission else None
        self.limit = ReaderByteLimit(
            self.socket, "test feed", self.lines.append, self.zap, max_connections=max_connections
        )
        self.socket.bind(endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def read(self, seconds: float) -> int:
        """Read notices for `seconds`; how many."""
        notices = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.socket.poll(20):
                while True:
                    try:
                        self.socket.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    notices += 1
        return notices

    def close(self) -> None:
        if self.zap is not None:
            self.zap.stop()
        self.limit.stop()
        self.context.destroy(linger=0)


@pytest.fixture
def feed():
    made = Feed("tcp://127.0.0.1:*")
    yield made
    made.close()


def test_the_allowance_is_the_burst_and_a_rate_with_its_boundaries_exact():
    assert allowance(0) == MAX_READER_BURST
    assert not over_allowance(MAX_READER_BURST, 0)
    assert over_allowance(MAX_READER_BURST + 1, 0)
    assert not over_allowance(MAX_READER_BURST + READER_BYTES_PER_S, SECOND_NS)
    assert over_allowance(MAX_READER_BURST + READER_BYTES_PER_S + 1, SECOND_NS)
    assert allowance(SECOND_NS // 2) == MAX_READER_BURST + READER_BYTES_PER_S // 2
    assert allowance(60 * SECOND_NS) == MAX_READER_BURST + 60 * READER_BYTES_PER_S


def test_the_shared_allowance_stops_at_zero_and_refills_at_its_rate():
    """Found by a probe: what did not fit was owed, with no floor, so after a short attack
    every reader the limit looked at (idle ones too, and a relay's own connection) was
    ended for minutes. A reader that does not fit is ended; nothing is owed."""
    shared = Allowance(capacity=1000, rate=100, now_ns=0)
    assert shared.take(1000, 0) and shared.tokens == 0  # exactly all of it fits
    assert not shared.take(1, 0) and shared.tokens == 0  # one more does not; nothing owed
    assert not shared.take(10**9, 0) and shared.tokens == 0
    assert shared.take(0, 0)  # a reader that sent nothing always fits
    assert shared.take(1, SECOND_NS // 100) and shared.tokens == 0  # a byte back in 10 ms
    for k in range(1, 10):  # a tenth of a byte at a time, nothing lost to the division
        shared.take(0, SECOND_NS // 100 + k * SECOND_NS // 1000)
    assert shared.take(0, SECOND_NS // 50) and shared.tokens == 1
    assert shared.take(0, 100 * SECOND_NS) and shared.tokens == 1000  # never above capacity


def test_what_did_not_fit_is_remembered_until_the_refill_has_made_it_up():
    shared = Allowance(capacity=1000, rate=100, now_ns=0)
    assert not shared.take(1300, 0) and (shared.tokens, shared.overdrawn) == (0, 300)
    assert not shared.take(5000, 0) and shared.overdrawn == 1000  # at most the capacity
    assert shared.take(0, 0)  # a reader that sends nothing still fits
    shared.available(9 * SECOND_NS)
    assert (shared.tokens, shared.overdrawn) == (900, 100)
    shared.available(10 * SECOND_NS)
    assert (shared.tokens, shared.overdrawn) == (1000, 0)


def test_nobody_new_comes_in_while_the_readers_are_overdrawn(monkeypatch):
    """Found by a probe: readers let in one after another, each ended only after it had sent
    its own 16 KiB and more, got 2.5 MB/s into the engine (against 256 KiB/s) and stopped it
    for 30 s, since what they sent past the shared allowance was forgotten."""
    monkeypatch.setattr(readerlimit, "READERS_BYTES_PER_S", 1024)
    feed = Feed("tcp://127.0.0.1:*")
    try:
        limit = feed.limit
        limit._shared.take(readerlimit.READERS_BURST + 100, time.monotonic_ns())
        limit._shared.tokens = readerlimit.READERS_BURST  # as if refilled, not made up for
        assert not limit.open()
        time.sleep(0.15)  # 100 bytes at 1 KiB a second
        assert limit.open()
    finally:
        feed.close()


def test_the_feed_socket_queues_little_of_a_readers_bytes(feed):
    """What a connection shut down still delivers is what the kernel queued for it."""
    assert feed.socket.getsockopt(zmq.RCVBUF) == READER_RCVBUF


def test_readers_each_within_their_allowance_are_ended_past_the_shared_one(monkeypatch):
    monkeypatch.setattr(readerlimit, "READERS_BURST", 24 * 1024)
    monkeypatch.setattr(readerlimit, "READERS_BYTES_PER_S", 1)
    feed = Feed("tcp://127.0.0.1:*")
    peers = [Peer(feed.endpoint) for _ in range(3)]
    try:
        for seed, peer in enumerate(peers):
            peer.subscribe(long_made_up(10, 1024, seed=seed))  # 10 KiB each: within
            feed.read(0.3)
        ended = disconnected(peers, 5, lambda count: count >= 1 and count == feed.limit.cut)
        assert ended >= 1 and feed.limit.cut == ended, (ended, feed.limit.cut)
        assert "while the readers together had sent more than they may" in feed.lines[0]
    finally:
        for peer in peers:
            peer.close()
        feed.close()


def test_a_readers_bytes_are_taken_from_the_shared_allowance_once(monkeypatch):
    """However often its connection is looked at, a reader's bytes count once. (The readers
    may send 32 KiB: if its 10 KiB were taken when it is accepted, a burst is still left, or
    it would be ended there; taken four times they do not fit.)"""
    monkeypatch.setattr(readerlimit, "READERS_BURST", 32 * 1024)
    monkeypatch.setattr(readerlimit, "READERS_BYTES_PER_S", 1)
    feed = Feed("tcp://127.0.0.1:*")
    peer = Peer(feed.endpoint)
    try:
        peer.subscribe(long_made_up(10, 1024))
        feed.read(0.5)
        (descriptor,) = feed.limit._accepted
        for _ in range(5):
            feed.limit._check(descriptor)
        assert peer.event(0.5) == 0 and feed.limit.cut == 0
    finally:
        peer.close()
        feed.close()


def test_a_reader_within_its_allowance_keeps_its_connection(feed):
    peer = Peer(feed.endpoint)
    try:
        peer.subscribe(long_made_up(12, 1024))  # 12 KiB and the handshake: within
        feed.read(1.0)
        assert peer.event(0.5) == 0
        assert feed.limit.cut == 0 and feed.lines == []
    finally:
        peer.close()


def test_a_reader_past_its_allowance_is_ended_and_the_log_says_who(feed):
    peer = Peer(feed.endpoint)
    try:
        peer.subscribe(long_made_up(12, 1024))
        feed.read(0.5)
        assert peer.event(0.2) == 0
        peer.subscribe(long_made_up(64, 1024, seed=8))  # 76 KiB in all: past the burst
        feed.read(1.0)
        assert peer.event(5) == zmq.EVENT_DISCONNECTED
        assert feed.limit.cut == 1
        assert len(feed.lines) == 1 and "more than a reader may" in feed.lines[0]
        assert feed.lines[0].startswith("test feed: a reader at 127.0.0.1:")
    finally:
        peer.close()


def test_a_reader_sending_without_pause_is_ended_while_the_owner_is_busy(feed):
    """The owner reads nothing until the reader has sent 12 MB: libzmq files what reaches
    the socket meanwhile, so only the limit's thread can end it. It ends it long before."""
    peer = Peer(feed.endpoint)
    try:
        peer.subscribe(long_made_up(3_000, 4096))
        assert peer.event(10) == zmq.EVENT_DISCONNECTED  # the owner has read nothing yet
        assert feed.limit.cut == 1
        assert feed.read(1.0) < 3_000  # the notices of what reached it, not all it sent
    finally:
        peer.close()


def zmtp_frame(body: bytes, command: bool = False) -> bytes:
    flags = 0x04 if command else 0x00
    if len(body) < 256:
        return bytes([flags, len(body)]) + body
    return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body


def raw_subscriber(endpoint: str, kind: bytes = b"SUB") -> sockets.socket:
    """A SUB peer (or another `kind`) spoken by hand (ZMTP 3.0, NULL): it sends whatever
    frames it is given, unsubscriptions from topics it never held too, which libzmq's own SUB
    never sends."""
    host, port = endpoint[len("tcp://") :].rsplit(":", 1)
    connection = sockets.create_connection((host, int(port)))
    connection.sendall(b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32))
    ready = b"\x05READY" + b"\x0bSocket-Type" + len(kind).to_bytes(4, "big") + kind
    connection.sendall(zmtp_frame(ready, command=True))
    return connection


def test_a_flood_of_unsubscriptions_is_ended_as_well(feed):
    """An unsubscription from a topic never held costs the trie nothing, but its notice
    waits in the socket for the owner (a probe: 180 MB/s queued): it is bytes sent too."""
    connection = raw_subscriber(feed.endpoint)
    connection.settimeout(10)
    try:
        for topic in long_made_up(3_000, 4000):
            connection.sendall(zmtp_frame(UNSUBSCRIBE + topic))
        while connection.recv(1 << 16):  # libzmq's greeting and READY, then the end
            pass
    except (ConnectionResetError, BrokenPipeError):  # the end, while sending
        pass
    finally:
        connection.close()
    assert feed.limit.cut == 1


def test_ipc_readers_are_not_watched(tmp_path: Path):
    """The kernel counts no bytes of a Unix socket; an ipc endpoint is the engine user's."""
    feed = Feed(f"ipc://{tmp_path}/feed")
    peer = Peer(feed.endpoint)
    try:
        peer.subscribe(long_made_up(100, 1024))
        feed.read(1.0)
        assert peer.event(0.5) == 0
        assert feed.limit.cut == 0 and feed.limit.watching
    finally:
        peer.close()
        feed.close()


def having_received(count: int) -> tuple[sockets.socket, ...]:
    """A tcp connection that has received `count` bytes: (it, its peer, listener)."""
    listener = sockets.create_server(("127.0.0.1", 0))
    connection = sockets.create_connection(listener.getsockname())
    sender, _ = listener.accept()
    sender.sendall(b"x" * count)
    received = 0
    while received < count:
        received += len(connection.recv(1 << 16))
    return connection, sender, listener


def past_allowance() -> tuple[sockets.socket, ...]:
    """A tcp connection that has received more than a reader may: (it, its peer, listener)."""
    return having_received(MAX_READER_BURST + 1)


@pytest.mark.parametrize("received, taken", [(1024, 0), (1025, 1)])  # a CURVE one is ~500
def test_a_connections_handshake_is_not_taken_from_the_shared_allowance(
    feed, monkeypatch, received, taken
):
    """Found by a probe: handshakes refused for unknown keys (some 500 bytes each, 900 a
    second) spent the readers' shared allowance, and every reader was kept out."""
    monkeypatch.setattr(feed.limit._shared, "rate", 0)
    connection, sender, listener = having_received(received)
    try:
        before = feed.limit._shared.available(time.monotonic_ns())
        here = f"tcp://127.0.0.1:{connection.getsockname()[1]}".encode()
        feed.limit._accept(connection.fileno(), here)
        assert feed.limit._shared.tokens == before - taken and feed.limit.cut == 0
    finally:
        for made in (connection, sender, listener):
            made.close()


def test_a_connection_past_its_allowance_when_accepted_is_ended_at_once(feed):
    """What a reader sent before the limit watched it counts: it may send no more."""
    connection, sender, listener = past_allowance()
    try:
        elsewhere = f"tcp://127.0.0.1:{listener.getsockname()[1] + 1}".encode()
        feed.limit._accept(connection.fileno(), elsewhere)  # another listener's number
        assert feed.limit.cut == 0
        here = f"tcp://127.0.0.1:{connection.getsockname()[1]}".encode()
        feed.limit._accept(connection.fileno(), here)
        assert feed.limit.cut == 1
        assert connection.recv(64) == b""  # shut down
    finally:
        for made in (connection, sender, listener):
            made.close()


def test_a_number_that_names_another_socket_now_is_not_ended(feed):
    """libzmq may close a connection and give its number to another: the limit acts only
    on the socket it accepted (its inode), whatever has the number since. Here the number
    names a connection past the allowance that the limit never accepted."""
    other, sender, listener = past_allowance()
    try:
        descriptor = other.fileno()
        feed.limit._accepted[descriptor] = _Accepted(inode=0, accepted_ns=time.monotonic_ns())
        feed.limit._check(descriptor)
        assert feed.limit.cut == 0
        assert descriptor not in feed.limit._accepted  # the one accepted is gone: its place too
        sender.sendall(b"still open")
        assert other.recv(64) == b"still open"  # not shut down
    finally:
        for made in (other, sender, listener):
            made.close()


def test_stop_ends_the_thread_and_may_be_called_twice(feed):
    feed.limit.stop()
    feed.limit.stop()
    assert not feed.limit._thread.is_alive()


def test_a_feed_closed_leaves_its_context_serving_the_next():
    """Found by the suite: libzmq's end of a monitor whose reader had gone blocked the
    context's I/O thread at its next event (the closed feed's listener closing), and every
    socket of the context stopped (a second publisher's subscriber never heard it)."""
    context = zmq.Context()
    try:
        for _ in range(3):
            feed = context.socket(zmq.XPUB)
            feed.setsockopt(zmq.LINGER, 0)
            limit = ReaderByteLimit(feed, "test feed")
            feed.bind("tcp://127.0.0.1:*")
            reader = context.socket(zmq.SUB)
            reader.setsockopt(zmq.LINGER, 0)
            reader.setsockopt(zmq.SUBSCRIBE, b"")
            reader.connect(feed.getsockopt_string(zmq.LAST_ENDPOINT))
            deadline = time.monotonic() + 10
            while not reader.poll(20):
                assert time.monotonic() < deadline, "the context no longer serves"
                feed.send(b"hello")
            reader.close(0)
            limit.stop()
            feed.close(0)
    finally:
        context.destroy(linger=0)


def test_a_fault_of_the_limits_own_is_logged_once_and_it_goes_on(feed, monkeypatch):
    """A bug in the thread must not end it: nobody would read the monitor, and libzmq
    blocks the socket's I/O thread when its monitor's queue is full."""

    def broken(descriptor: int, endpoint: bytes) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(feed.limit, "_accept", broken)
    peers = [Peer(feed.endpoint) for _ in range(2)]  # two accepts: two faults
    try:
        deadline = time.monotonic() + 5
        while feed.limit.faults < 2:
            assert time.monotonic() < deadline, feed.limit.faults
            time.sleep(0.02)
        assert feed.limit._thread.is_alive()
        assert feed.lines == [
            "test feed: the reader limit failed (RuntimeError('a bug')); it goes on, report it"
        ]
    finally:
        for peer in peers:
            peer.close()


def counted_soon(feed: Feed, done: Callable[[], bool]) -> None:
    """Wait for the limit's thread to have counted what the test saw it do."""
    deadline = time.monotonic() + 5
    while not done():
        assert time.monotonic() < deadline, f"cut {feed.limit.cut}: {feed.lines}"
        time.sleep(0.01)


def exhausted_feed(monkeypatch) -> Feed:
    """A feed whose readers together may send 24 KiB and next to nothing more, spent."""
    monkeypatch.setattr(readerlimit, "READERS_BURST", 24 * 1024)
    monkeypatch.setattr(readerlimit, "READERS_BYTES_PER_S", 1)
    return Feed("tcp://127.0.0.1:*")


def disconnected(peers: list[Peer], timeout: float, enough: Callable[[int], bool]) -> int:
    """How many of `peers` are disconnected, watched together until `enough(count)` holds
    and 0.3 s more pass without another, or `timeout` s (one at a time, each connected one
    cost its whole wait: 10 s a test)."""
    poller = zmq.Poller()
    for peer in peers:
        poller.register(peer.monitor, zmq.POLLIN)
    count, deadline, settled = 0, time.monotonic() + timeout, None
    while (now := time.monotonic()) < deadline and (settled is None or now < settled):
        for monitor, _ in poller.poll(100):
            if recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED:
                count, settled = count + 1, None
        if settled is None and enough(count):
            settled = time.monotonic() + 0.3
    return count


def spend(feed: Feed) -> None:
    """Readers each within their own allowance spend the shared one: one or more ended."""
    attackers = [Peer(feed.endpoint) for _ in range(3)]
    try:
        for seed, attacker in enumerate(attackers):
            attacker.subscribe(long_made_up(10, 1024, seed=seed))
            feed.read(0.3)
        assert disconnected(attackers, 5, lambda count: count >= 1)
    finally:
        for attacker in attackers:
            attacker.close()


def test_an_idle_reader_is_not_ended_when_the_others_spent_the_shared_allowance(monkeypatch):
    """Found by a probe: after a short attack every reader looked at was ended, idle ones
    too ("sent 0 bytes"), a relay's own connection to the engine among them."""
    feed = exhausted_feed(monkeypatch)
    idle = Peer(feed.endpoint)
    try:
        feed.read(0.3)
        (descriptor,) = feed.limit._accepted
        spend(feed)
        for _ in range(3):
            feed.limit._check(descriptor)  # as the sweep does
        # (not `cut`: an attacker's reconnection may be ended at accept meanwhile)
        assert idle.event(0.5) == 0 and descriptor in feed.limit._accepted
    finally:
        idle.close()
        feed.close()


def test_a_connection_while_the_shared_allowance_is_spent_is_ended_at_once(
    monkeypatch,
):
    """Found by a probe: connections that each sent one long topic and reconnected got
    21.5 MB into the engine in a second and froze it for minutes (libzmq tearing their
    topics down); while nothing more may be sent, a new connection ends at once, having
    sent nothing (a raw connection here: it sends nothing at all)."""
    feed = exhausted_feed(monkeypatch)
    try:
        spend(feed)
        cut = feed.limit.cut
        port = int(feed.endpoint.rsplit(":", 1)[1])
        with sockets.create_connection(("127.0.0.1", port), timeout=5) as connection:
            while connection.recv(64):  # libzmq's greeting perhaps, then the end
                pass  # (a timeout here: the connection was let in)
        # an attacker's reconnection may be cut too
        counted_soon(feed, lambda: feed.limit.cut > cut)
        assert "while the readers together had sent more than they may" in feed.lines[-1]
    finally:
        feed.close()


def test_a_connection_with_no_descriptor_left_to_watch_it_is_ended(feed, monkeypatch):
    """Found by a probe: with the process out of descriptors the limit could not duplicate
    a new connection's and left it unwatched, silently (a burst through it: 569 MB)."""

    def out_of_descriptors(descriptor: int) -> sockets.socket:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(readerlimit, "_duplicate", out_of_descriptors)
    port = int(feed.endpoint.rsplit(":", 1)[1])
    with sockets.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            while connection.recv(64):  # libzmq's greeting, perhaps, then the end
                pass
        except ConnectionResetError:
            pass
    assert feed.limit.cut == 1
    assert "out of file descriptors (raise its limit: ulimit -n)" in feed.lines[0]


class ShutdownSeen(sockets.socket):
    """A connection that records, when it is shut down, what the limit had said and counted."""

    seen: tuple[int, int] | None = None
    feed: Feed

    def shutdown(self, how: int) -> None:
        self.seen = (len(self.feed.lines), self.feed.limit.cut)
        super().shutdown(how)


def test_a_cut_is_said_and_counted_before_its_connection_ends(feed):
    """Found by CI (34bcffc): the count and the end came before the line, so a peer that
    saw its end, and a test that then read the log, could find no line yet."""
    listener = sockets.create_server(("127.0.0.1", 0))
    with listener, sockets.create_connection(listener.getsockname(), timeout=5) as peer:
        accepted, _ = listener.accept()
        connection = ShutdownSeen(fileno=accepted.detach())
        connection.feed = feed
        with connection:
            feed.limit._end(connection, 100, readerlimit.ALONE)
        assert connection.seen == (1, 1)  # said and counted before the end
        assert peer.recv(64) == b""
    assert feed.limit.cut == 1 and "sent 100 bytes" in feed.lines[0]


def ended_at_the_handshake_or_after(endpoint: str, wait: float) -> bool:
    """Is a new reader's connection ended, during its handshake (CI: the limit cut it before
    its READY was written, BrokenPipeError) or within `wait` s after it?"""
    try:
        connection = raw_subscriber(endpoint)
    except (BrokenPipeError, ConnectionResetError):
        return True
    with connection:
        return ended(connection, wait)


def ended(connection: sockets.socket, wait: float) -> bool:
    """Did the other end end `connection` within `wait` s (it sends nothing itself)?"""
    connection.settimeout(wait)
    try:
        while connection.recv(64):  # libzmq's greeting and READY
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_a_socket_holds_its_cap_of_connections_and_one_gone_frees_its_place():
    """Found by a probe: readers admitted and then silent are never ended, and holding them
    took every descriptor of an engine (1,024), whose next day's journal segment could then
    not be opened: it stopped. At the cap the next connection is ended at once; the cap
    counts live connections (one that ends frees its place)."""
    feed = Feed("tcp://127.0.0.1:*", max_connections=3)
    held = [raw_subscriber(feed.endpoint) for _ in range(3)]
    try:
        counted_soon(feed, lambda: len(feed.limit._accepted) == 3)
        assert not any(ended(connection, 0.3) for connection in held)  # the cap is 3: all in
        assert ended_at_the_handshake_or_after(feed.endpoint, 10)  # the fourth
        counted_soon(feed, lambda: feed.limit.cut == 1 and len(feed.lines) == 1)
        assert "while the socket held its 3 connections" in feed.lines[0]
        held.pop().close()
        counted_soon(feed, lambda: len(feed.limit._accepted) == 2)
        held.append(raw_subscriber(feed.endpoint))
        assert not ended(held[-1], 0.5) and feed.limit.cut == 1
    finally:
        for connection in held:
            connection.close()
        feed.close()


def test_each_socket_caps_its_share_of_the_descriptors_and_the_limit_is_raised_to_the_hard_one(
    monkeypatch,
):
    monkeypatch.setattr(readerlimit.resource, "getrlimit", lambda _: (1024, 4096))
    assert readerlimit.connection_cap() == 256  # the feed's and the snapshot socket's
    shares = (readerlimit.ORDERS_SHARE, readerlimit.ADMIN_SHARE, readerlimit.TRADES_SHARE)
    assert [readerlimit.connection_cap(share) for share in shares] == [128, 64, 64]
    monkeypatch.setattr(readerlimit.resource, "getrlimit", lambda _: (100, 4096))
    assert readerlimit.connection_cap() == 25
    assert readerlimit.connection_cap(16) == readerlimit.MIN_CONNECTIONS == 16
    monkeypatch.undo()
    raised = subprocess.run(
        [sys.executable, "-c",
         "import resource; from engine.gateway.readerlimit import raise_descriptor_limit; "
         "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
         "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)); "
         "raised = raise_descriptor_limit(); "
         "print(raised == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0])"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert raised.stdout.strip() == "True", raised.stderr


@contextlib.contextmanager
def held_open(engine: EngineProcess, plan: tuple[tuple[str, bytes, int], ...]):
    """Connections that complete the handshake and then say nothing: `count` of socket type
    `kind` to each named endpoint (those the engine ends at once are let go)."""
    held: list[sockets.socket] = []
    try:
        for name, kind, count in plan:
            for _ in range(count):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    held.append(raw_subscriber(engine.endpoints[name], kind))
        yield
    finally:
        for connection in held:
            connection.close()


def within_a_minute(engine: EngineProcess, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, engine.output()
        time.sleep(0.2)


def cut(engine: EngineProcess, counter: str) -> int:
    return engine.status().counters[counter]


def snapshots_written(engine: EngineProcess) -> int:
    return len(list((engine.data / "snapshots").glob("snapshot-*.snap")))


@pytest.mark.slow
def test_an_engine_keeps_descriptors_of_its_own_whoever_holds_connections(tmp_path):
    """The probe above against a real engine with 320 descriptors: readers' connections held
    open on the feed and on the snapshot socket, more than the process could hold. Before
    the cap its snapshots could not be written and its next journal segment not opened (it
    stopped, exit 3); now each socket keeps 80 (a quarter) and the engine goes on. (With
    256 the engine's own descriptors and the connections accepted before the cap ends them
    left so little that on a loaded machine every reader past the cap met 'no descriptor
    left' first: the cap's line was never said.)"""
    with EngineProcess(tmp_path / "data", max_descriptors=320) as engine:
        engine.open_market(CODE)
        with held_open(engine, (("market_data", b"SUB", 150), ("snapshots", b"DEALER", 150))):
            beyond = 2 * (150 - 80)  # past each socket's cap
            within_a_minute(engine, lambda: cut(engine, "market_data_readers_cut") >= beyond)
            assert "while the socket held its 80 connections" in engine.output()
            engine.admin(wire.SnapshotNow())
            with GatewayClient(engine.endpoints["orders"], "mm") as gateway:  # a newcomer
                gateway.submit("held-1", 1, CODE, Side.BUY, PRICE - 5, 100)
                gateway.wait_for(lambda r: type(r) is Accepted and r.cl_ord_id == "held-1")
            closed = engine.admin(Close(CODE), EndOfDay())
            assert any(type(answer) is DayClosed for answer in closed), closed
            within_a_minute(engine, lambda: snapshots_written(engine) == 2)  # asked, the day's
            assert engine.status().counters["snapshot_failures"] == 0
        assert engine.stop() == 0


def test_admission_lets_a_burst_of_readers_in_then_its_rate(monkeypatch):
    monkeypatch.setattr(readerlimit, "ADMISSIONS_BURST", 3)
    monkeypatch.setattr(readerlimit, "ADMISSIONS_PER_S", 1)
    feed = Feed("tcp://127.0.0.1:*")
    try:
        came_in = []
        for _ in range(4):
            came_in.append(feed.limit.open())
            if came_in[-1]:
                feed.limit.took()
        assert came_in == [True, True, True, False]
    finally:
        feed.close()


def test_no_reader_is_admitted_while_the_readers_together_may_send_less_than_a_burst(
    monkeypatch,
):
    """Boundary: exactly one reader's burst left admits; a byte less does not."""
    monkeypatch.setattr(readerlimit, "READERS_BYTES_PER_S", 1)
    monkeypatch.setattr(readerlimit, "ADMISSIONS_PER_S", 1)
    feed = Feed("tcp://127.0.0.1:*")
    try:
        limit = feed.limit
        limit._shared.take(readerlimit.READERS_BURST - MAX_READER_BURST, time.monotonic_ns())
        assert limit.open()
        limit._shared.take(1, time.monotonic_ns())
        assert not limit.open()
    finally:
        feed.close()


def test_a_reader_past_its_own_allowance_spends_the_shared_one_too(feed, monkeypatch):
    """Found by a probe: readers ended for their own allowance took nothing from the shared
    one, so connections admitted one after another sent 3.4 MB/s against 256 KiB/s."""
    monkeypatch.setattr(feed.limit._shared, "rate", 1)
    connection, sender, listener = past_allowance()
    try:
        descriptor = connection.fileno()
        inode = os.fstat(descriptor).st_ino
        feed.limit._accepted[descriptor] = _Accepted(inode, time.monotonic_ns())
        before = feed.limit._shared.available(time.monotonic_ns())
        feed.limit._check(descriptor)
        assert feed.limit.cut == 1
        assert feed.limit._shared.tokens <= before - (MAX_READER_BURST + 1 - HANDSHAKE_BYTES)
    finally:
        for made in (connection, sender, listener):
            made.close()


def test_a_crowd_past_the_admission_burst_comes_in_as_it_refills(monkeypatch):
    """Readers turned away wait in the ZAP handler and come in, none ended."""
    monkeypatch.setattr(readerlimit, "ADMISSIONS_BURST", 2)
    monkeypatch.setattr(readerlimit, "ADMISSIONS_PER_S", 20)
    feed = Feed("tcp://127.0.0.1:*", admission=True)
    readers = [reader_of(feed.context, feed.endpoint) for _ in range(6)]
    try:
        waiting = set(readers)
        deadline = time.monotonic() + 10
        while waiting:
            assert time.monotonic() < deadline, f"{len(waiting)} readers never came in"
            feed.socket.send(b"tick")
            feed.read(0.02)
            waiting = {reader for reader in waiting if not reader.poll(0)}
        assert feed.zap.held >= 4 and feed.zap.unanswered == 0 and feed.limit.cut == 0
    finally:
        feed.close()


def test_a_reader_left_waiting_is_ended_by_libzmq_and_connects_again(monkeypatch):
    """A handshake the handler lets go of ends at the socket's HANDSHAKE_IVL (libzmq's
    default is 30 s), and the reader's ZeroMQ connects again by itself."""
    monkeypatch.setattr(readerlimit, "ADMISSIONS_BURST", 0)
    monkeypatch.setattr(readerlimit, "ADMISSIONS_PER_S", 0)
    monkeypatch.setattr(readerlimit, "ADMISSION_WAIT_MS", 300)
    monkeypatch.setattr(zap, "HOLD_MS", 100)
    feed = Feed("tcp://127.0.0.1:*", admission=True)
    reader = reader_of(feed.context, feed.endpoint)
    try:
        deadline = time.monotonic() + 5
        while feed.zap.held < 3 and not reader.closed:
            assert time.monotonic() < deadline, f"waited {feed.zap.held} times"
            time.sleep(0.05)
        assert feed.zap.unanswered >= 2 and feed.zap.admitted == 0
    finally:
        feed.close()


@pytest.mark.slow
def test_connections_held_on_order_entry_and_the_trade_stream_leave_the_engine_its_own(tmp_path):
    """Found by a helper's probe: connections that complete the handshake and never log on
    stay open, and 20,000 of them to order entry took every descriptor: the next StartOfDay
    could not open its journal segment and the engine stopped (exit 3). Each socket now holds
    its share (with 256 descriptors: order entry 32, the trade stream 16); the rest are ended
    at accept and counted, and the operator's day goes on."""
    with EngineProcess(tmp_path / "data", max_descriptors=256) as engine:
        engine.open_market(CODE)
        with held_open(engine, (("orders", b"DEALER", 150), ("trades", b"DEALER", 100))):
            beyond = (150 - 32) + (100 - 16)  # past each socket's cap; 250 past 256 together
            within_a_minute(engine, lambda: cut(engine, "connections_cut") >= beyond)
            assert "orders: a connection from 127.0.0.1:" in engine.output()
            assert "while the socket held its 32 connections" in engine.output()
            closed = engine.admin(Close(CODE), EndOfDay())
            assert any(type(answer) is DayClosed for answer in closed), closed
            (refused,) = engine.admin(StartOfDay("2026-11-25"))  # its segment is opened
            assert type(refused).__name__ == "Rejected"  # not the sequencer's date
            within_a_minute(engine, lambda: snapshots_written(engine) == 1)  # the day's end's
            assert engine.status().counters["snapshot_failures"] == 0
        assert engine.stop() == 0
