"""The engine under load from gateways that misbehave: one that stops reading (the
high-water mark: ZeroMQ would drop silently on a ROUTER; ours keeps every frame, in order)
and one that floods (the others still get their share of each turn)."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from engine.codec import records_of
from engine.config import default_market
from engine.gateway import wire
from engine.gateway.client import GatewayClient
from engine.protocol import Accepted, NewOrder, Rejected
from engine.types import Side
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.slow
MARKET = default_market()
CODES = [i.code for i in MARKET.instruments]
FRAMES, PER_FRAME = 150, 400


def refused_orders(member: int, frame: int) -> np.ndarray:
    """Orders far outside the band: each is sequenced and answered with a worded Rejected,
    and nothing changes, so any number can be sent."""
    orders = [
        NewOrder(f"f{frame}-{i}", member, CODES[0], Side.BUY, 1, 100) for i in range(PER_FRAME)
    ]
    return records_of(orders, CODES, 0, [0] * PER_FRAME)


def logged_on(engine: EngineProcess, gateway: str, rcvhwm: int) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, rcvhwm)
    socket.setsockopt(zmq.RCVBUF, 4096)
    socket.connect(engine.endpoints["orders"])
    socket.send_multipart(wire.messages_frame([wire.Logon(gateway, heartbeat_ms=60_000)]))
    assert socket.poll(30_000)
    assert isinstance(wire.unpack(socket.recv_multipart()[1])[0], wire.LogonAccepted)
    return socket


def test_a_gateway_that_stops_reading_loses_nothing(tmp_path):
    orders = f"ipc://{tmp_path}/orders"  # a Unix socket: small kernel buffers behind the mark
    with EngineProcess(tmp_path / "data", "--sndhwm", "2", "--orders", orders) as engine:
        engine.open_market(CODES[0])
        slow = logged_on(engine, "entities", rcvhwm=2)
        for frame in range(FRAMES):
            slow.send_multipart([wire.RECORDS, refused_orders(5, frame).tobytes()])
        status = engine.status()
        while status.seq < 1 + 2 + FRAMES * PER_FRAME:  # the day, the call, the flood
            status = engine.status()
        assert status.gateways["entities"]["undeliverable"] > 0  # the mark was reached
        seqs = []
        while len(seqs) < FRAMES * PER_FRAME:
            assert slow.poll(30_000), f"{len(seqs)} answers of {FRAMES * PER_FRAME}"
            replies = wire.unpack(slow.recv_multipart()[1])
            seqs += [r.stream_seq for r in replies if isinstance(r, Rejected)]
        assert seqs == list(range(1, FRAMES * PER_FRAME + 1))  # every one, in order
        slow.close()


def test_a_flooding_gateway_does_not_starve_another(tmp_path):
    with EngineProcess(tmp_path / "data") as engine:
        engine.open_market(CODES[0])
        flood = logged_on(engine, "mm", rcvhwm=0)
        frames = [refused_orders(1, frame).tobytes() for frame in range(FRAMES)]
        with GatewayClient(engine.endpoints["orders"], "brokers") as broker:
            for frame in frames:  # all at once: the engine has a backlog of them
                flood.send_multipart([wire.RECORDS, frame])
            price = MARKET.instruments[0].reference_price
            broker.submit("fair-1", 3, CODES[0], Side.BUY, price, 100)  # behind the flood
            ack = broker.wait_for(lambda r: isinstance(r, Accepted))[-1]
        last = 3 + FRAMES * PER_FRAME + 1
        assert ack.seq < last - 10 * PER_FRAME  # taken in while most of the flood waited
        flood.close()
