"""The context's ZAP handler (engine.gateway.zap): who may connect, and when. A handshake its
gate does not admit waits, and is never refused: libzmq 4.3 terminates a connecting session
the server refused (300, 400 or 500 alike) and never reconnects it, so an honest reader turned
away once would be gone for good."""

from __future__ import annotations

import errno
import socket as sockets
import time

import pytest
import zmq

import engine.gateway.zap as zap
from engine.gateway.security import (
    KeyPair,
    ask_zap,
    create_key_pair,
    read_key,
    secure_client,
    secure_server,
    user_id,
)
from engine.gateway.zap import ZAP_VERSION, ZapHandler, source_of


class Feed:
    """An XPUB asking the context's ZAP handler (if any) in domain "market_data"; a CURVE
    server with `keys`."""

    def __init__(
        self, context: zmq.Context, handshake_ms: int | None = None, keys: KeyPair | None = None
    ) -> None:
        self.socket = context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        if handshake_ms is not None:
            self.socket.setsockopt(zmq.HANDSHAKE_IVL, handshake_ms)
        if keys is not None:
            secure_server(self.socket, keys, "market_data")
        ask_zap(self.socket, "market_data")
        self.socket.bind("tcp://127.0.0.1:*")
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.identities: list[str] = []  # the User-Id of each subscription notice read

    def reaches(self, reader: zmq.Socket, seconds: float) -> bool:
        """Whether `reader` receives what the feed publishes within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            while self.socket.poll(0):
                self.identities.append(user_id(self.socket.recv(copy=False)))
            self.socket.send(b"tick")
            if reader.poll(20):
                return True
        return False


def reader_of(context: zmq.Context, endpoint: str) -> zmq.Socket:
    reader = context.socket(zmq.SUB)
    reader.setsockopt(zmq.LINGER, 0)
    reader.setsockopt(zmq.RECONNECT_IVL, 50)
    reader.subscribe(b"")
    reader.connect(endpoint)
    return reader


@pytest.fixture
def context():
    made = zmq.Context()
    yield made
    made.destroy(linger=0)


class Switch:
    """A gate (engine.gateway.zap.Gate) a test turns on and off, or gives `tokens`
    admissions; it counts how often it was asked and how many came in."""

    def __init__(self, on: bool = False, tokens: int | None = None) -> None:
        self.on, self.tokens = on, tokens
        self.asked = self.came_in = 0

    def open(self) -> bool:
        self.asked += 1
        return self.on and (self.tokens is None or self.tokens > 0)

    def took(self) -> None:
        self.came_in += 1
        if self.tokens is not None:
            self.tokens -= 1


def test_a_plain_peer_comes_in_and_the_handler_counts_it(context):
    handler = ZapHandler(context, None)
    try:
        feed = Feed(context)
        reader = reader_of(context, feed.endpoint)
        assert feed.reaches(reader, 5)
        assert (handler.admitted, handler.refused, handler.held) == (1, 0, 0)
    finally:
        handler.stop()


def test_with_no_handler_no_handshake_completes(context):
    """Failing closed: ZMQ_ZAP_ENFORCE_DOMAIN (libzmq's default would admit every peer). The
    peer does not come back when a handler starts later (seen here): the engine and a relay
    start theirs before they bind."""
    feed = Feed(context)
    reader = reader_of(context, feed.endpoint)
    assert not feed.reaches(reader, 0.5)


def test_a_gate_that_says_no_keeps_the_handshake_waiting_until_it_says_yes(context):
    gate = Switch()
    handler = ZapHandler(context, None)
    handler.gate("market_data", gate)
    try:
        feed = Feed(context)
        reader = reader_of(context, feed.endpoint)
        assert not feed.reaches(reader, 0.5)
        assert handler.held == 1 and gate.asked > 1  # asked again while it waits
        gate.on = True
        assert feed.reaches(reader, 2)
        assert (handler.admitted, handler.held, handler.unanswered) == (1, 1, 0)
    finally:
        handler.stop()


def test_a_gate_only_holds_its_own_domain(context):
    handler = ZapHandler(context, None)
    handler.gate("snapshots", Switch())
    try:
        feed = Feed(context)
        assert feed.reaches(reader_of(context, feed.endpoint), 5)
    finally:
        handler.stop()


def test_a_handshake_waiting_too_long_is_left_for_its_peer_to_connect_again(context, monkeypatch):
    """Past HOLD_MS the handler lets go; libzmq ends the handshake at the socket's
    HANDSHAKE_IVL and the reader's ZeroMQ connects again, to be admitted this time."""
    monkeypatch.setattr(zap, "HOLD_MS", 100)
    gate = Switch()
    handler = ZapHandler(context, None)
    handler.gate("market_data", gate)
    try:
        feed = Feed(context, handshake_ms=300)
        reader = reader_of(context, feed.endpoint)
        assert not feed.reaches(reader, 1.0)
        assert handler.unanswered >= 1 and handler.held >= 2  # it came back
        gate.on = True
        assert feed.reaches(reader, 3)
    finally:
        handler.stop()


def test_a_key_that_is_not_admitted_is_refused_and_a_listed_one_comes_in(context, tmp_path):
    identities = {}
    for name in ("server", "listed", "stranger"):
        _, secret = create_key_pair(tmp_path, name)
        identities[name] = read_key(str(secret), name)
    listed = identities["listed"].public

    def identify(domain: str, key: bytes) -> str | None:
        return "md:listed" if key == listed and domain == "market_data" else None

    handler = ZapHandler(context, identify)
    try:
        feed = Feed(context, keys=identities["server"])
        readers = {}
        for name in ("stranger", "listed"):
            reader = context.socket(zmq.SUB)
            reader.setsockopt(zmq.LINGER, 0)
            secure_client(reader, identities[name], identities["server"].public)
            reader.subscribe(b"")
            reader.connect(feed.endpoint)
            readers[name] = reader
        assert feed.reaches(readers["listed"], 5)
        assert not feed.reaches(readers["stranger"], 0.5)
        assert handler.refused >= 1 and handler.admitted == 1
        assert feed.identities == ["md:listed"]  # the identity named is the User-Id
    finally:
        handler.stop()


def test_a_null_peer_is_refused_when_keys_are_asked_for(context):
    """With a key table (CURVE mode) a peer without a key has no identity."""
    handler = ZapHandler(context, lambda domain, key: "md:anyone")
    try:
        feed = Feed(context)
        reader = reader_of(context, feed.endpoint)
        assert not feed.reaches(reader, 0.5)
        assert handler.refused == 1 and handler.admitted == 0
    finally:
        handler.stop()


class Recorded:
    """A stand-in for the handler's socket: what would have been sent; sessions in `ended`
    are gone (ROUTER_MANDATORY's error)."""

    def __init__(self, ended: tuple[bytes, ...] = ()) -> None:
        self.sent: list[list[bytes]] = []
        self.ended = ended

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        if frames[0] in self.ended:
            raise zmq.ZMQError(errno.EHOSTUNREACH)
        self.sent.append(frames)


def request(
    request_id: bytes, domain: bytes = b"market_data", address: bytes = b"127.0.0.1"
) -> list[bytes]:
    """A NULL handshake's request as the handler's ROUTER receives it."""
    return [b"peer-" + request_id, b"", ZAP_VERSION, request_id, domain, address, b"", b"NULL"]


class Scripted:
    """A gate that answers `answers` in turn (then no), counting who came in."""

    def __init__(self, *answers: bool) -> None:
        self.answers = iter(answers)
        self.came_in = 0

    def open(self) -> bool:
        return next(self.answers, False)

    def took(self) -> None:
        self.came_in += 1


def stopped_handler(context: zmq.Context) -> ZapHandler:
    """A handler whose thread has ended: its methods are called by the test."""
    handler = ZapHandler(context, None)
    handler.stop()
    return handler


def test_waiting_handshakes_are_admitted_oldest_first_as_the_gate_opens(context):
    handler = stopped_handler(context)
    handler.gate("market_data", Scripted(False, True, False, True, True))
    socket = Recorded()
    for request_id in (b"1", b"2", b"3"):
        handler._serve(socket, request(request_id))
    assert socket.sent == [] and handler.held == 3
    handler._serve_waiting(socket)  # one admitted, then the gate shuts
    handler._serve_waiting(socket)  # both
    assert [frames[3] for frames in socket.sent] == [b"1", b"2", b"3"]
    assert all(frames[4] == b"200" for frames in socket.sent)
    assert socket.sent[0][:2] == [b"peer-1", b""]  # back to the session that asked


def test_at_most_max_held_wait_and_one_more_is_left_unanswered(context, monkeypatch):
    monkeypatch.setattr(zap, "MAX_HELD", 2)
    handler = stopped_handler(context)
    handler.gate("market_data", Switch())
    socket = Recorded()
    for request_id, address in ((b"1", b"10.0.0.1"), (b"2", b"10.0.0.2"), (b"3", b"10.0.0.3")):
        handler._serve(socket, request(request_id, address=address))
    assert handler._waiting == 2 and handler.unanswered == 1 and socket.sent == []


def test_a_request_that_is_not_zaps_is_counted_and_answered_400_when_it_can_be(context):
    handler = stopped_handler(context)
    socket = Recorded()
    handler._serve(socket, [b"peer", b"", b"2.0", b"7", b"market_data", b"", b"", b"NULL"])
    handler._serve(socket, [b"peer", b"", ZAP_VERSION, b"8"])
    handler._serve(socket, [b"peer", b""])
    assert handler.malformed == 3
    assert [(frames[3], frames[4]) for frames in socket.sent] == [(b"7", b"400"), (b"8", b"400")]


def test_a_fault_of_the_handlers_own_is_logged_once_and_it_goes_on(context):
    lines: list[str] = []
    handler = ZapHandler(context, None, lines.append)

    class Broken(Switch):
        def open(self) -> bool:
            if not self.asked:
                self.asked += 1
                raise RuntimeError("broken gate")
            return True

    handler.gate("market_data", Broken())
    try:
        feed = Feed(context, handshake_ms=300)
        reader = reader_of(context, feed.endpoint)
        assert feed.reaches(reader, 5)  # the next handshake, after libzmq ended the first
        assert handler.faults == 1 and len(lines) == 1 and "broken gate" in lines[0]
    finally:
        handler.stop()


def test_a_context_has_one_handler(context):
    handler = ZapHandler(context, None)
    try:
        with pytest.raises(zmq.ZMQError):
            ZapHandler(context, None)
    finally:
        handler.stop()


def test_a_handshake_does_not_pass_those_waiting(context):
    handler = stopped_handler(context)
    gate = Switch()
    handler.gate("market_data", gate)
    socket = Recorded()
    handler._serve(socket, request(b"1"))
    gate.on, gate.tokens = True, 1
    handler._serve(socket, request(b"2"))  # the gate is open, but 1 waits
    assert socket.sent == [] and handler.held == 2
    handler._serve_waiting(socket)
    assert [frames[3] for frames in socket.sent] == [b"1"] and gate.came_in == 1


def test_those_waiting_come_in_by_source_in_turn(context):
    """A source that floods waits behind its own handshakes, not behind others'."""
    handler = stopped_handler(context)
    gate = Switch(on=True, tokens=0)
    handler.gate("market_data", gate)
    socket = Recorded()
    for request_id in (b"a1", b"a2", b"a3"):
        handler._serve(socket, request(request_id, address=b"10.0.0.1"))
    handler._serve(socket, request(b"b1", address=b"10.0.0.2"))
    gate.tokens = 2
    handler._serve_waiting(socket)
    assert [frames[3] for frames in socket.sent] == [b"a1", b"b1"]
    gate.tokens = 5
    handler._serve_waiting(socket)
    assert [frames[3] for frames in socket.sent][2:] == [b"a2", b"a3"]


def test_one_source_may_fill_only_its_share_of_the_waiting_room(context, monkeypatch):
    monkeypatch.setattr(zap, "MAX_HELD_PER_SOURCE", 2)
    handler = stopped_handler(context)
    handler.gate("market_data", Switch())
    socket = Recorded()
    for request_id in (b"a1", b"a2", b"a3"):
        handler._serve(socket, request(request_id, address=b"10.0.0.1"))
    handler._serve(socket, request(b"b1", address=b"10.0.0.2"))
    assert handler.unanswered == 1 and handler._waiting == 3


def test_an_answer_to_a_session_that_ended_costs_no_admission(context):
    """Found by a probe: handshakes abandoned while they waited used up the admissions, and
    2,000 a second kept honest readers out for as long as they came."""
    handler = stopped_handler(context)
    gate = Switch(on=True, tokens=0)
    handler.gate("market_data", gate)
    socket = Recorded(ended=(b"peer-gone",))
    handler._serve(socket, request(b"gone"))
    handler._serve(socket, request(b"here"))
    gate.tokens = 1
    handler._serve_waiting(socket)
    assert [frames[3] for frames in socket.sent] == [b"here"]
    assert (handler.gone, handler.admitted, gate.came_in) == (1, 1, 1)


def test_a_peer_that_hangs_up_while_it_waits_leaves_its_admission_to_the_next(context):
    """The same with real sessions: libzmq ends the session of a peer that hung up, and the
    handler's ROUTER_MANDATORY tells it so."""
    from tests.gateway.test_readerlimit import raw_subscriber

    gate = Switch(on=False, tokens=1)
    handler = ZapHandler(context, None)
    handler.gate("market_data", gate)
    try:
        feed = Feed(context)
        quitter = raw_subscriber(feed.endpoint)  # greeting and READY: its request waits
        deadline = time.monotonic() + 5
        while handler.held < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        quitter.setsockopt(sockets.SOL_SOCKET, sockets.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        quitter.close()  # reset
        time.sleep(0.3)
        reader = reader_of(context, feed.endpoint)
        while handler.held < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        gate.on = True
        assert feed.reaches(reader, 3)
        assert (handler.gone, handler.admitted) == (1, 1)
    finally:
        handler.stop()


def test_a_source_is_an_identity_else_an_address():
    assert source_of(b"10.1.2.3", "md:feed") == "md:feed"
    assert source_of(b"10.1.2.3", "") == "10.1.2.3"
    assert source_of(b"127.0.0.1", "") == source_of(b"127.9.9.9", "") == "loopback"
    assert source_of(b"::1", "") == "loopback"
    assert source_of(b"2001:db8::1", "") == source_of(b"2001:db8::ffff", "") == "2001:db8::/64"
    assert source_of(b"", "") == source_of(b"\xff", "") == "local"
