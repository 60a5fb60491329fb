"""A broker gateway process of `cxe demo`: one gateway of the market config, logged on to the
engine service over ZeroMQ (GatewayClient), playing its members' part of the demo's seeded
order flow (engine.demo.Flow) when the demo's operator process says so.

    python -m engine.demo_gateway ORDERS_ENDPOINT GATEWAY SEED ACKS_FILE [MARKET_FILE]

The operator process writes one JSON object a line on standard input ({"do": "call", "codes",
"count", "step"}, {"do": "continuous", "start", "end"}, {"do": "bids", "code", "reference",
"seller", "count"}, {"do": "stop"}); the gateway answers each with one JSON line of its
counts, and reports continuous trading's progress as {"progress": steps} lines (one a step).

Invariants:
- one command in flight: each order, cancel and bid waits for the engine's answer (Accepted,
  Rejected, Cancelled, or an OrderStatus to a resend) before the next is drawn, so the flow
  sees what the exchange did, as the in-process day does;
- every Accepted of an order or bid this gateway sent is appended to ACKS_FILE as "seq member
  cl_ord_id" (flushed at the end of each instruction): the demo checks each one against the
  journal after the engine's crash;
- an answer that does not come within ANSWER_TIMEOUT_MS is taken as the engine gone: the
  gateway logs on again until the engine is back (RECOVERY_S at most), and GatewayClient
  resends the NewOrder still unanswered, which the engine answers with its state (never a
  second order); a cancel in flight is not resent (the order is still cancelled later, or
  the cancel's answer says it is gone);
- while idle the gateway heartbeats, so its session stays open between instructions.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections import Counter
from pathlib import Path

from engine.config import MarketConfig, default_market, load_market
from engine.demo import Flow, clamp_price
from engine.gateway import wire
from engine.gateway.client import GatewayClient, LogonRefused
from engine.protocol import (
    Accepted,
    AuctionBid,
    Cancelled,
    CancelOrder,
    Filled,
    NewOrder,
    Rejected,
)
from engine.types import TimeInForce

ANSWER_TIMEOUT_MS = 2_000
RECOVERY_S = 300.0


class GatewayFlow(Flow):
    """The flow of one gateway's members, sent through `client`."""

    def __init__(
        self, market: MarketConfig, seed: int, gateway: str, client: GatewayClient, acks
    ) -> None:
        members = next(g.members for g in market.gateways if g.id == gateway)
        super().__init__(market, seed, list(members), stream=gateway)
        self.gateway = gateway
        self.prefix = f"{gateway[:12]}-"  # of the ClOrdIDs this gateway gives
        self.client = client
        self.acks = acks
        self.n = 0
        self.live: set[int] = set()  # this gateway's resting orders, by order id
        self.counts: Counter = Counter()

    def _next_id(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n}"

    def order(self, member: int, code: str, side: int, price: int, qty: int, phase: str,
              tif: int = TimeInForce.DAY) -> int | None:  # fmt: skip
        price = clamp_price(self.market, code, price, self.market.instrument(code).band())
        order = NewOrder(self._next_id(), member, code, side, price, qty, tif=tif)
        answer = self._ask(order, lambda r: _answers(r, member, order.cl_ord_id))
        self.counts["orders"] += 1
        if isinstance(answer, Accepted):
            return answer.order_id
        if isinstance(answer, wire.OrderStatus) and answer.state == "live":
            self.live.add(answer.order_id)
            return answer.order_id
        return None

    def cancel(self, member: int, code: str, order_id: int, phase: str) -> None:
        if order_id not in self.live:
            return
        cancel = CancelOrder(self._next_id(), member, code, order_id)

        def answered(reply) -> bool:
            if type(reply) is Cancelled:
                return reply.order_id == order_id
            return _answers(reply, member, cancel.cl_ord_id)

        self._ask(cancel, answered)
        self.counts["cancels"] += 1

    def send_bid(self, member: int, code: str, price: int, qty: int) -> None:
        bid = AuctionBid(self._next_id(), member, code, price, qty)
        self._ask(bid, lambda r: _answers(r, member, bid.cl_ord_id))
        self.counts["bids"] += 1

    def _ask(self, command, answered):
        """Send `command` and take replies until its answer (None: a cancel lost in a
        crash)."""
        self.client.send([command])
        while True:
            try:
                replies = self.client.wait_for(answered, ANSWER_TIMEOUT_MS)
            except TimeoutError:
                self._take(self.client.replies())
                if not self._recover() and type(command) is not NewOrder:
                    return None
                continue
            self._take(replies)
            return replies[-1]

    def _recover(self) -> bool:
        """Log on again until the engine answers; True if a NewOrder was resent."""
        deadline = time.monotonic() + RECOVERY_S
        resend = bool(self.client.unanswered)
        while True:
            try:
                self.client.reconnect()
                break
            except LogonRefused:
                if time.monotonic() > deadline:
                    raise
        self.counts["reconnects"] += 1
        self.counts["resent"] += len(self.client.unanswered) if resend else 0
        return resend

    def _take(self, replies: list) -> None:
        for reply in replies:
            kind = type(reply)
            if kind is Accepted:
                self.live.add(reply.order_id)
                if reply.cl_ord_id.startswith(self.prefix):  # not the operator's (one-way offer)
                    self.counts["accepted"] += 1
                    self.acks.write(f"{reply.seq} {reply.member} {reply.cl_ord_id}\n")
            elif kind is Rejected:
                self.counts[f"rejected {reply.code.name}"] += 1
            elif kind is wire.OrderStatus:
                self.counts[f"resend answered: {reply.state}"] += 1
            elif (kind is Filled and reply.leaves == 0) or kind is Cancelled:
                self.live.discard(reply.order_id)

    def idle(self) -> None:
        """Keep the session (heartbeats) and take what arrives."""
        self._take(self.client.replies())
        if time.monotonic() - self.client.last_sent >= self.client.heartbeat_ms / 1000:
            self.client.heartbeat()


def _answers(reply, member: int, cl_ord_id: str) -> bool:
    kind = type(reply)
    return (
        (kind is Accepted or kind is Rejected or kind is wire.OrderStatus)
        and reply.member == member
        and reply.cl_ord_id == cl_ord_id
    )


def instructions(flow: GatewayFlow):
    """The operator process's instructions, one JSON object a line, heartbeating meanwhile."""
    fd = sys.stdin.fileno()
    pending = b""
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield json.loads(line)
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            pending += chunk
        else:
            flow.idle()


def say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run(flow: GatewayFlow) -> None:
    for task in instructions(flow):
        kind = task["do"]
        if kind == "stop":
            break
        if kind == "call":
            for code in task["codes"]:
                flow.call_orders(code, task["count"], task["step"])
        elif kind == "continuous":
            for step in range(task["start"], task["end"]):
                for code in flow.codes:
                    flow.continuous_step(code, step)
                say({"progress": step + 1, "counts": flow.counts})
        elif kind == "bids":
            flow.auction_bids(task["code"], task["reference"], task["seller"], task["count"])
        flow.acks.flush()
        say({"done": kind, "counts": flow.counts})


def main(argv: list[str]) -> int:
    endpoint, gateway, seed, acks_path = argv[:4]
    market = load_market(argv[4]) if len(argv) > 4 else default_market()
    client = GatewayClient(endpoint, gateway, timeout_ms=ANSWER_TIMEOUT_MS)
    with client, Path(acks_path).open("a") as acks:
        run(GatewayFlow(market, int(seed), gateway, client, acks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
