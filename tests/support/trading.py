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
CODES = tuple(i.code for i in MARKET.instruments)


def crossing_orders(prefix: str, trades: int, codes: tuple[str, ...] = CODES[:1]) -> list:
    """2 x `trades` orders: one of members 1 and 2 sells 100 t at the reference and the other
    buys it, the roles swapped each trade and the instruments taken in turn (what a member
    sells is gone for the day, what it buys arrives at settlement: each member may sell a
    market's 2,000,000 t allowance once, 20,000 trades per member and instrument)."""
    orders = []
    for i in range(trades):
        code = codes[i % len(codes)]
        price = MARKET.instrument(code).reference_price
        seller = 1 + i // len(codes) % 2
        orders.append(NewOrder(f"{prefix}-s{i}", seller, code, Side.SELL, price, 100))
        orders.append(NewOrder(f"{prefix}-b{i}", 3 - seller, code, Side.BUY, price, 100))
    return orders


def trade(
    client: GatewayClient,
    prefix: str,
    trades: int,
    frame: int = 200,
    records: bool = False,
    codes: tuple[str, ...] = CODES[:1],
) -> None:
    """Print `trades` trades in frames of `frame` orders (records frames, or messages frames);
    returns once the last is answered (a rejection fails the caller's test)."""
    orders = crossing_orders(prefix, trades, codes)
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
