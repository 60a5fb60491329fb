"""Trades through a live engine for the trade stream's tests and bench: gateway "mm" (members 1
and 2) crosses its own orders at the reference price, so each pair of orders prints one trade
(and its clearing record)."""

from __future__ import annotations

import zmq

from engine.codec import records_of
from engine.config import default_market
from engine.gateway import wire
from engine.gateway.client import GatewayClient
from engine.protocol import Accepted, NewOrder, Rejected
from engine.types import Side

MARKET = default_market()
CODES = [i.code for i in MARKET.instruments]


def crossing_orders(prefix: str, trades: int, code: str = CODES[0]) -> list[NewOrder]:
    """2 x `trades` orders: member 1 sells 100 t at the reference, member 2 buys it."""
    price = MARKET.instrument(code).reference_price
    orders = []
    for i in range(trades):
        orders.append(NewOrder(f"{prefix}-s{i}", 1, code, Side.SELL, price, 100))
        orders.append(NewOrder(f"{prefix}-b{i}", 2, code, Side.BUY, price, 100))
    return orders


def trade(
    client: GatewayClient, prefix: str, trades: int, frame: int = 200, records: bool = False
) -> None:
    """Print `trades` trades in frames of `frame` orders (records frames, or messages frames);
    returns once the last is answered (a rejection fails the caller's test)."""
    orders = crossing_orders(prefix, trades)
    for start in range(0, len(orders), frame):
        chunk = orders[start : start + frame]
        if records:
            client.send_records(records_of(chunk, CODES, 0, [0] * len(chunk)))
        else:
            client.send(chunk)
    last = orders[-1].cl_ord_id
    replies = client.wait_for(lambda r: getattr(r, "cl_ord_id", "") == last, timeout_ms=60_000)
    refused = [r for r in replies if isinstance(r, Rejected | wire.SessionRejected)]
    assert not refused, refused[:3]
    assert any(isinstance(r, Accepted) for r in replies)


def mm_client(engine, context: zmq.Context | None = None) -> GatewayClient:
    return GatewayClient(engine.endpoints["orders"], "mm", heartbeat_ms=60_000, context=context)
