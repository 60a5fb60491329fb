"""One turn of the service loop, driven by hand over real sockets (in process): what a turn
takes in when many frames wait."""

from __future__ import annotations

import time

import zmq

from engine.cli.serve import clock_start
from engine.config import default_market
from engine.gateway import wire
from engine.gateway.service import EngineService, Options
from engine.protocol import NewOrder, OpenCall, StartOfDay, Uncross
from tests.gateway.test_service_load import PER_FRAME, refused_orders
from tests.support.engine import CLOCK

MARKET = default_market()
CODE = MARKET.instruments[0].code


def test_a_turn_takes_at_most_its_budget_of_records_whatever_the_frames(tmp_path):
    options = Options(tmp_path, orders="tcp://127.0.0.1:*", admin="tcp://127.0.0.1:*",
                      market_data="tcp://127.0.0.1:*", snapshots="tcp://127.0.0.1:*",
                      trades="tcp://127.0.0.1:*",
                      clock_start_ns=clock_start(CLOCK), quiet=True)  # fmt: skip
    service = EngineService(MARKET, options, log=lambda line: None)
    service.open()
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
        while service.status.orders.get((3, "fair")) is None:
            service.turn(100)
        assert service.exchange.seq - start < 10 * PER_FRAME  # the broker's turn came early
    finally:
        service.close()
