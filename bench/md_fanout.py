"""Market data under load: a service stand-in, seeded multi-instrument order flow, md_fanout.

`ServiceStandIn` is the engine service's shape in one thread: it owns an `Exchange` and a
`MarketDataPublisher`, applies what `submit` queues, publishes the events once per turn (or
after every command with `record=True`, which also keeps the engine's own view of every
instrument a command touched, for tests to compare with a client's) and answers snapshot
requests between turns; it is the only user of its sockets.

`order_flow` interleaves the seeded mixed workload (bench.workload) of several instruments;
the stand-in gives its cancels and amends the exchange's order ids (from each order's
Accepted), so the flow runs on any exchange state.

md_fanout: the flow through the stand-in with 1, 10 and 50 subscriber processes
(bench/md_subscriber.py, each a `MarketDataClient` over every instrument), the engine's
commands per second in each run and the updates per second the subscribers applied;
every subscriber must end at the engine's public position with its books (its final depth
is checked). Beside them, the publisher's own cost: the turns in one thread with and
without publishing.
"""

from __future__ import annotations

import gc
import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from bench.book import WrongResult
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
        publishing: bool = True,
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
        self.publishing = publishing
        self.records: list[tuple[int, str, InstrumentState]] = []  # (public seq, code, state)
        self.heartbeat_every = heartbeat_every
        self.inbox: queue.Queue = queue.Queue()
        self.commands = 0  # applied
        self.busy_seconds = 0.0  # spent applying and publishing
        self.publish_seconds = 0.0  # of which publishing (turns, not `record`'s per command)
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
                start = time.perf_counter()
                self._apply(items)
                self.busy_seconds += time.perf_counter() - start
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
            self.commands += 1
            if type(item) is FlowRow:
                self._orders.accepted(item, events)
            if self.record:
                self.publisher.publish(events)
                self._keep_after(events)
            elif self.publishing:
                out += events
        if out:
            start = time.perf_counter()
            self.publisher.publish(out)
            self.publish_seconds += time.perf_counter() - start

    def _keep_after(self, events: list) -> None:
        self._keep({e.instrument for e in events if e.audience is Audience.PUBLIC})

    def _keep(self, codes) -> None:
        seq = self.exchange.state.public_seq
        for code in sorted(codes):
            self.records.append((seq, code, self.publisher.instrument_state(code)))


# -- md_fanout --------------------------------------------------------------------------------

SUBSCRIBER = [sys.executable, "-m", "bench.md_subscriber"]
SUBSCRIBER_COUNTS = (1, 10, 50)


def _levels(state: InstrumentState) -> list:
    return [[list(level) for level in state.bids], [list(level) for level in state.asks]]


def fanout_run(flow: list[FlowRow], subscribers: int, publishing: bool = True) -> dict:
    """The flow through a fresh stand-in with `subscribers` processes: the engine's commands
    per second (time spent applying and publishing) and each subscriber's updates per
    second; every subscriber must end at the engine's public position with its depth."""
    service = ServiceStandIn(publishing=publishing)
    service.start()
    service.submit(opening())
    service.drain()
    sub, snap = service.endpoints
    procs = [
        subprocess.Popen(
            [*SUBSCRIBER, sub, snap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(subscribers)
    ]
    for proc in procs:  # each says "ready" once it holds its snapshot
        if proc.stdout.readline().strip() != "ready":
            raise WrongResult(f"a subscriber did not start: {proc.communicate()[1]}")
    busy, commands = service.busy_seconds, service.commands
    service.submit(flow)
    service.drain(timeout=900)
    busy = service.busy_seconds - busy
    commands = service.commands - commands
    final = service.exchange.state.public_seq
    depth = {c: _levels(service.publisher.instrument_state(c)) for c in service.exchange.markets}
    results = []
    for proc in procs:
        out, err = proc.communicate(f"{final}\n", timeout=900)
        if proc.returncode:
            raise WrongResult(f"a subscriber failed: {err}")
        results.append(json.loads(out))
    service.stop()
    for result in results:
        if result["seq"] != final or result["depth"] != depth:
            raise WrongResult(f"a subscriber ended at {result['seq']} without the engine's books")
    events = sum(r["events"] for r in results)
    window = max(r["last"] for r in results) - min(r["first"] for r in results) if results else 0.0
    return {
        "subscribers": subscribers,
        "cmd_per_s": round(commands / busy),
        "public_events": final,
        "updates_per_s_each": [
            round(r["events"] / max(r["last"] - r["first"], 1e-9)) for r in results
        ],
        "updates_per_s_all": round(events / window) if window else 0,
        "resyncs": sum(r["resyncs"] for r in results),
        "messages_sent": service.publisher.messages_sent,
    }


def loop_rate(flow: list[FlowRow], publishing: bool) -> tuple[int, float]:
    """Commands per second through the stand-in's turns in this thread, with or without
    publishing (no subscriber, no other thread running Python), and the share of the time
    spent in `publish`."""
    service = ServiceStandIn(publishing=publishing)
    try:
        service._apply(opening())
        service.publish_seconds = 0.0
        gc.collect()
        start = time.perf_counter()
        for at in range(0, len(flow), TURN):
            service._apply(flow[at : at + TURN])
        elapsed = time.perf_counter() - start
        rate = round((service.commands - len(opening())) / elapsed)
        return rate, service.publish_seconds / elapsed
    finally:
        service.publisher.close()
        service.context.term()


def fanout_benchmark(
    commands: int, counts: tuple[int, ...] = SUBSCRIBER_COUNTS, rounds: int = 5
) -> dict:
    """md_fanout: updates/s applied by 1, 10 and 50 subscriber processes together, and the
    engine's commands per second in each run (the stand-in's thread, sharing the cores with
    the subscribers). The publisher's own cost: the share of the loop's time spent in
    `publish` (median of `rounds`; measured within each run, so the load of a shared
    machine moves it less than comparing runs), and the best of `rounds` runs without and
    with publishing, alternately. No reference implementation: `reference` is None."""
    flow = order_flow(commands, seed=7)
    fanout_run(flow[:2000], 1)  # compile, warm up and start a subscriber outside the timer
    bare, alone, shares = [], [], []
    for _ in range(rounds):
        bare.append(loop_rate(flow, publishing=False)[0])
        rate, share = loop_rate(flow, publishing=True)
        alone.append(rate)
        shares.append(share)
    runs = {n: fanout_run(flow, n) for n in counts if n}
    top = runs[max(counts)]
    return {
        "bench": "md_fanout",
        "value": top["updates_per_s_all"],
        "unit": "updates/s",
        "reference": None,
        "subscribers": max(counts),
        "updates_per_s_all": {n: run["updates_per_s_all"] for n, run in runs.items()},
        "loop_cmd_per_s": {"no publisher": max(bare), "publisher": max(alone)},
        "engine_cmd_per_s": {n: run["cmd_per_s"] for n, run in runs.items()},
        "publish_share": round(float(np.median(shares)), 3),
        "resyncs": {n: run["resyncs"] for n, run in runs.items()},
        "public_events": top["public_events"],
        "messages": top["messages_sent"],
        "commands": commands,
    }
