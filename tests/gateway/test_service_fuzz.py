"""Hostile input at a live engine (a real `cxe serve` process): random bytes, random frame
kinds, well-formed messages with wrong types and values, records with bad fields, operator
commands on the order socket. After every example the engine still answers (a Heartbeat
round trip behind the bad frame), and at the end its state hash equals a fresh replay of its
journal: nothing a client sent made the loop stop or the state drift from the journal."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.codec import COMMAND_DTYPE
from engine.config import default_market
from engine.core import Exchange
from engine.gateway import wire
from engine.journal import replay
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.slow
MARKET = default_market()
CODES = [i.code for i in MARKET.instruments]
HEARTBEAT = wire.messages_frame([wire.Heartbeat()])


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("fuzz") / "data") as process:
        process.open_market(*CODES)
        yield process


@pytest.fixture(scope="module")
def gateway(engine):
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(engine.endpoints["orders"])
    socket.send_multipart(wire.messages_frame([wire.Logon("brokers", heartbeat_ms=60_000)]))
    assert socket.poll(30_000)
    assert isinstance(wire.unpack(socket.recv_multipart()[1])[0], wire.LogonAccepted)
    yield socket
    socket.close()


def still_answers(socket: zmq.Socket) -> list:
    """Send a Heartbeat and read until its answer: everything the engine sent before it."""
    socket.send_multipart(HEARTBEAT)
    seen = []
    while True:
        assert socket.poll(30_000), "the engine stopped answering"
        kind, body = socket.recv_multipart()
        assert kind == wire.MESSAGES
        replies = wire.unpack(body)
        seen += replies
        if isinstance(replies[-1], wire.Heartbeat):
            return seen


scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what msgpack can carry
    st.text(max_size=40),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.sampled_from(CODES),
    st.sampled_from([3, 4, 5]),  # a broker's members and one that is not
)
messages = st.builds(
    lambda tag, fields: msgspec.msgpack.encode([tag, *fields]),
    st.one_of(st.integers(min_value=0, max_value=260), st.sampled_from([1, 2, 3, 4, 5, 20, 27])),
    st.lists(scalars, max_size=10),
)
record_fields = st.fixed_dictionaries(
    {
        "kind": st.integers(0, 255),
        "side": st.integers(0, 255),
        "order_type": st.integers(0, 255),
        "tif": st.integers(0, 255),
        "member": st.sampled_from([3, 4, 3, 7]),
        "instrument": st.integers(-2, 7),
        "price": st.integers(-(2**63), 2**63 - 1),
        "qty": st.integers(-(2**63), 2**63 - 1),
        "order_id": st.integers(-(2**63), 2**63 - 1),
        "cl_ord_id": st.binary(max_size=32),
    }
)


def records(fields: list[dict]) -> bytes:
    out = np.zeros(len(fields), COMMAND_DTYPE)
    for row, values in zip(out, fields, strict=True):
        for name, value in values.items():
            row[name] = value
    return out.tobytes()


frames = st.one_of(
    st.lists(st.binary(max_size=200), min_size=0, max_size=4),  # any frames at all
    st.tuples(st.sampled_from(wire.KINDS), st.binary(max_size=300)).map(list),
    st.lists(messages, min_size=1, max_size=6).map(lambda m: [wire.MESSAGES, wire.pack(m)]),
    st.lists(messages, min_size=1, max_size=6).map(lambda m: [wire.RESEND, wire.pack(m)]),
    st.lists(record_fields, min_size=1, max_size=5).map(lambda f: [wire.RECORDS, records(f)]),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=frames)
def test_whatever_a_gateway_sends_the_engine_answers_and_goes_on(gateway, frames):
    if frames:
        gateway.send_multipart(frames)
    still_answers(gateway)


def test_after_the_fuzz_the_state_is_exactly_a_replay_of_the_journal(engine, gateway):
    status = engine.status()
    exchange = Exchange(MARKET)
    for _ in replay(engine.data / "journal", exchange):
        pass
    assert (exchange.seq, exchange.state_hash()) == (status.seq, status.state_hash)
    assert status.counters["malformed_frames"] > 0
