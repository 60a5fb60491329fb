"""A market data service stand-in and seeded multi-instrument order flow, for the tests of
the publisher and MarketDataClient (tests/gateway/test_marketdata.py).

`ServiceStandIn` is the engine service's shape in one thread: it owns an `Exchange` and a
`MarketDataPublisher`, applies what `submit` queues, publishes the events once per turn (or
after every command with `record=True`, which also keeps the engine's own view of every
instrument a command touched, for tests to compare with a client's) and answers snapshot
requests between turns; it is the only user of its sockets.

`order_flow` interleaves the seeded mixed workload (bench.workload) of several instruments;
the stand-in gives its cancels and amends the exchange's order ids (from each order's
Accepted), so the flow runs on any exchange state.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from bench.workload import DEFAULT_MID, mixed_workload
from engine.book.layout import CMD_ADD, CMD_AMEND, CMD_CANCEL
from engine.config import MarketConfig, Member
from engine.core import Exchange
from engine.gateway.marketdata import InstrumentState, MarketDataPublisher
from engine.instruments import Instrument
from engine.protocol import (
    Accepted,
    AmendOrder,
    Audience,
    CancelOrder,
    NewOrder,
    OpenCall,
    StartOfDay,
    Uncross,
)
from engine.types import Side

CODES = ("CEA2", "CEA25", "CCER")  # CEA2 is a prefix of CEA25: topics must tell them apart
MEMBERS = 50
DAY = "2026-11-24"
LOOPBACK = "tcp://127.0.0.1:*"
TURN = 256  # commands a turn applies before it publishes and looks at its sockets
HEARTBEAT = "heartbeat"  # an inbox item: send one now


def md_market(codes: tuple[str, ...] = CODES) -> MarketConfig:
    instruments = [
        Instrument(
            code=code,
            name=code,
            product="CCER" if code == "CCER" else "CEA",
            reference_price=DEFAULT_MID,
        )
        for code in codes
    ]
    holdings = dict.fromkeys(codes, 10**9)
    members = [Member(id=m, name=f"m{m}", cash=10**15, holdings=holdings) for m in range(MEMBERS)]
    return MarketConfig(name="md", instruments=instruments, members=members)


def opening(codes: tuple[str, ...] = CODES) -> list:
    """Start the day and open every market to continuous trading."""
    out: list = [StartOfDay(DAY)]
    for code in codes:
        out += [OpenCall(code), Uncross(code)]
    return out


@dataclass(frozen=True)
class FlowRow:
    """One workload row (engine.book.layout C_*) for one instrument; its order ids are the
    workload's own, mapped to the exchange's by the stand-in."""

    code: str
    row: tuple[int, ...]


def order_flow(n: int, seed: int = 1, codes: tuple[str, ...] = CODES) -> list[FlowRow]:
    """n rows of the mixed workload spread over `codes` in a seeded random interleaving."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(codes), n)
    counts = np.bincount(picks, minlength=len(codes))
    rows = {
        code: iter(mixed_workload(int(counts[i]), seed=seed + i, amend=0.1).tolist())
        for i, code in enumerate(codes)
    }
    return [FlowRow(codes[i], tuple(next(rows[codes[i]]))) for i in picks.tolist()]


@dataclass
class _Orders:
    """The workload's order ids -> (exchange order id, member), per instrument."""

    ids: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    count: int = 0

    def command(self, item: FlowRow):
        kind, oid, member, side, price, qty, _, tif, _, _ = item.row
        self.count += 1
        cl = f"f{self.count}"
        if kind == CMD_ADD:
            return NewOrder(cl, member, item.code, Side(side), price, qty, tif=tif)
        known = self.ids.get((item.code, oid))
        if known is None:
            return None  # traded away before the flow cancels or amends it
        order_id, owner = known
        if kind == CMD_CANCEL:
            return CancelOrder(cl, owner, item.code, order_id)
        if kind == CMD_AMEND:
            return AmendOrder(cl, owner, item.code, order_id, price, qty)
        return None

    def accepted(self, item: FlowRow, events: list) -> None:
        if item.row[0] != CMD_ADD:
            return
        for event in events:
            if type(event) is Accepted:
                self.ids[(item.code, item.row[1])] = (event.order_id, event.member)
                return


class ServiceStandIn(threading.Thread):
    """One thread owning an exchange and its publisher (see the module docstring)."""

    def __init__(
        self,
        config: MarketConfig | None = None,
        *,
        record: bool = False,
        heartbeat_every: float = 0.2,
        **publisher_options: int,
    ) -> None:
        super().__init__(daemon=True, name="service-stand-in")
        self.context = zmq.Context()
        self.exchange = Exchange(config or md_market())
        self.publisher = MarketDataPublisher(
            self.context, LOOPBACK, LOOPBACK, self.exchange, **publisher_options
        )
        self.record = record
        self.records: list[tuple[int, str, InstrumentState]] = []  # (public seq, code, state)
        self.heartbeat_every = heartbeat_every
        self.inbox: queue.Queue = queue.Queue()
        self._orders = _Orders()
        self._halt = threading.Event()
        self.failure: BaseException | None = None
        if record:
            self._keep(self.exchange.markets)

    @property
    def endpoints(self) -> tuple[str, str]:
        return self.publisher.pub_endpoint, self.publisher.snapshot_endpoint

    def submit(self, items: list, turn: int = TURN) -> None:
        """Queue commands or FlowRows, `turn` of them to a turn; they are applied in order."""
        for start in range(0, len(items), turn):
            self.inbox.put(items[start : start + turn])

    def beat(self) -> None:
        """Queue a heartbeat (sent in turn, after what was submitted before)."""
        self.inbox.put(HEARTBEAT)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until everything submitted has been applied and published."""
        deadline = time.monotonic() + timeout
        done = self.inbox.all_tasks_done
        with done:
            while self.inbox.unfinished_tasks:
                if self.failure is not None:
                    raise RuntimeError("the stand-in failed") from self.failure
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.inbox.unfinished_tasks} turns still queued")
                done.wait(min(left, 0.5))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.publisher.close()
        self.context.term()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.failure = exc
            raise

    def _loop(self) -> None:
        poller = zmq.Poller()
        for socket in self.publisher.sockets:
            poller.register(socket, zmq.POLLIN)
        last_beat = time.monotonic()
        while not self._halt.is_set():
            try:
                items = self.inbox.get(timeout=0 if self.inbox.qsize() else 0.002)
            except queue.Empty:
                items = None
            if items is HEARTBEAT:
                self.publisher.heartbeat()
                self.inbox.task_done()
            elif items is not None:
                self._apply(items)
                self.inbox.task_done()
            for socket, _ in poller.poll(0):
                self.publisher.handle(socket)
            now = time.monotonic()
            if items is None and now - last_beat >= self.heartbeat_every:
                self.publisher.heartbeat()
                last_beat = now

    def _apply(self, items: list) -> None:
        apply = self.exchange.apply
        out: list = []
        for item in items:
            command = self._orders.command(item) if type(item) is FlowRow else item
            if command is None:
                continue
            events = apply(command)
            if type(item) is FlowRow:
                self._orders.accepted(item, events)
            if self.record:
                self.publisher.publish(events)
                self._keep_after(events)
            else:
                out += events
        if out:
            self.publisher.publish(out)

    def _keep_after(self, events: list) -> None:
        self._keep({e.instrument for e in events if e.audience is Audience.PUBLIC})

    def _keep(self, codes) -> None:
        seq = self.exchange.state.public_seq
        for code in sorted(codes):
            self.records.append((seq, code, self.publisher.instrument_state(code)))
