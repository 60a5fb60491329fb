"""`cxe demo`: a complete trading day of the market with the real processes on loopback.

The demo process is the operator and the observer. It starts the engine service (`cxe serve`,
a subprocess, its data directory under OUT/engine), clearing's live capture (`cxe capture`,
a subprocess), a broker gateway process per gateway of the market config (engine.demo_gateway:
each plays its members' part of the seeded flow over ZeroMQ) and a market data subscriber
(MarketDataClient, on a thread here, keeping a local book). It runs the day over the admin
socket: start of day, opening calls, continuous trading, a halt and re-opening call, a
one-way auction, a block trade, closing calls, the close and end of day. Halfway through the
second half of continuous trading it kills the engine with SIGKILL and restarts it from its
journal on the same ports; the gateways log on again and resend what was unanswered. After
the close clearing settles the day (`cxe clear`, a subprocess) from what capture stored.

What it checks (`Checks`), from the files the processes wrote, not from their word:
- every order a gateway was told was accepted (Accepted: seq, member, ClOrdID) is that
  NewOrder at that seq of the journal, and no (member, ClOrdID) was accepted twice;
- a fresh replay of the journal ends at the engine's last sequence number with its state
  hash (the engine's StatusReport after the end of day);
- the subscriber's local book equals a fresh snapshot's at the end of continuous trading;
- capture stored every trade of the day (its count equals the end-of-day records'), and
  netting conserves (check_conservation) and the ledger settled the day.

Phases' figures come from the trades clearing captured (venue and command seq), prices in CNY
with two decimals, quantities in tonnes.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import MarketConfig
from engine.demo import (
    Figures,
    block_trade_line,
    block_trade_of,
    check_demo_market,
    demo_date,
    one_way_line,
    one_way_offer,
)
from engine.protocol import (
    AuctionResult,
    Close,
    CloseCall,
    DayClosed,
    EndOfDay,
    Halt,
    OneWayAuctionClose,
    OpenCall,
    Rejected,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import format_price

DEFAULT_OUT = "cxe-demo"
MARKER = ".cxe-demo"  # marks a directory a demo wrote: a later demo may replace its contents
OWNED = ("engine", "logs", "gateways", "clearing", "plots", "summary.txt")
KILL_AT = 0.3  # share of the second half of continuous trading done when the engine is killed
CALL_ORDERS = {"opening": 60, "re-opening": 30, "closing": 20}  # per instrument, in all
BIDS = 12


def cxe_command() -> list[str]:
    return [sys.executable, "-m", "engine.cli"]


def prepare_out(out: Path) -> None:
    """OUT ready for a fresh day: created, or a previous demo's outputs removed; refused if it
    holds anything else (nothing is deleted that a demo did not write)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ValueError(
            f"--out {out} holds files a demo did not write: choose an empty or new directory"
        )
    for name in OWNED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for name in ("engine", "logs", "gateways", "clearing"):
        (out / name).mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by cxe demo; a later cxe demo replaces this directory\n")


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (the engine binds them; a restart binds the same)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def kernel_cached() -> bool:
    """Numba's cache holds compiled kernels of this install (else the engine compiles them
    at its start: a first run)."""
    import engine

    package = Path(engine.__file__).parent
    places = [package]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    places.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "numba")
    return any(next(place.rglob("*.nbi"), None) for place in places if place.is_dir())


def stop_process(process: subprocess.Popen, wait_s: float = 60) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it is still running after `wait_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


class Engine:
    """The `cxe serve` subprocess on fixed loopback ports, so a restart listens where the
    gateways, the subscriber and capture already connect."""

    def __init__(self, data: Path, log: Path, date: str, market_file: str | None) -> None:
        self.data, self.log = data, log
        ports = free_ports(5)
        names = ("orders", "admin", "market-data", "snapshots", "trades")
        self.endpoints = {n: f"tcp://127.0.0.1:{p}" for n, p in zip(names, ports, strict=True)}
        clock = f"{date}T09:10+08:00"  # a rehearsal clock on the day: any day can be shown
        self.command = [*cxe_command(), "serve", "--data", str(data), "--clock", clock]
        for name, endpoint in self.endpoints.items():
            self.command += [f"--{name}", endpoint]
        if market_file:
            self.command += ["--config", market_file]
        self.process: subprocess.Popen | None = None

    def start(self, waiting: Callable[[float], None], timeout: float = 900) -> float:
        """Start and wait until it listens; the seconds that took."""
        started = time.monotonic()
        (self.data / "endpoints.json").unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"cxe serve exited with status {self.process.returncode}; its output is in "
                    f"{self.log}"
                )
            try:
                found = json.loads((self.data / "endpoints.json").read_text())
            except (OSError, ValueError):
                found = {}
            if found.get("pid") == self.process.pid:
                return time.monotonic() - started
            waiting(time.monotonic() - started)
            time.sleep(0.1)
        raise TimeoutError(f"cxe serve did not start within {timeout:.0f} s: see {self.log}")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Gateway:
    """A broker gateway process (engine.demo_gateway) and its answers."""

    def __init__(self, name: str, engine: Engine, seed: int, out: Path, market: str | None):
        self.name = name
        self.acks = out / "gateways" / f"acks-{name}.log"
        command = [sys.executable, "-m", "engine.demo_gateway", engine.endpoints["orders"]]
        command += [name, str(seed), str(self.acks), *([market] if market else [])]
        with (out / "logs" / f"gateway-{name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        self.lines: queue.Queue = queue.Queue()
        self.counts: Counter = Counter()
        self.progress = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def tell(self, **task) -> None:
        self.process.stdin.write((json.dumps(task) + "\n").encode())
        self.process.stdin.flush()

    def poll(self, timeout: float) -> bool:
        """Take the messages (progress, done) that came, waiting up to `timeout` for the
        first; True when the instruction is done."""
        try:
            message = self.lines.get(timeout=timeout)
            while True:
                if message is None:
                    status = self.process.wait()
                    raise RuntimeError(
                        f"gateway {self.name} stopped (status {status}): see its log"
                    )
                self.counts = Counter(message["counts"])
                self.progress = message.get("progress", self.progress)
                if "done" in message:
                    return True
                message = self.lines.get_nowait()
        except queue.Empty:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.tell(do="stop")
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(30)


class Subscriber:
    """The market data subscriber: a MarketDataClient read on a thread, keeping its local
    books, and the public trades per instrument for the live view."""

    def __init__(self, engine: Engine) -> None:
        from engine.gateway.marketdata_client import MarketDataClient

        self.client = MarketDataClient(
            engine.endpoints["market-data"], engine.endpoints["snapshots"]
        )
        self.lock = threading.Lock()
        self.trades: dict[str, Figures] = {}
        self.last: dict[str, int] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from engine.protocol import TradePrint

        while not self.stopping.is_set():
            with self.lock:
                update = self.client.next_update(0.05)
            if type(update) is TradePrint:
                self.trades.setdefault(update.instrument, Figures()).add(update)
                self.last[update.instrument] = update.price
            elif update is None:
                time.sleep(0.01)

    def matches_snapshot(self, engine: Engine, timeout: float = 30) -> tuple[bool, str]:
        """The local books equal a fresh snapshot's (taken now, while nothing trades)."""
        from engine.gateway.marketdata_client import MarketDataClient

        fresh = MarketDataClient(engine.endpoints["market-data"], engine.endpoints["snapshots"])
        try:
            synced = fresh.next_update(timeout)
            if synced is None:
                return False, "no snapshot from the engine"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with self.lock:
                    if self.client.seq >= fresh.seq:
                        mine = {c: b.state() for c, b in self.client.books.items()}
                        break
                time.sleep(0.05)
            else:
                return False, "the subscriber did not catch up with the snapshot"
            theirs = {c: b.state() for c, b in fresh.books.items()}
            differ = [
                c
                for c in theirs
                if (mine[c].bids, mine[c].asks) != (theirs[c].bids, theirs[c].asks)
            ]
            levels = sum(len(s.bids) + len(s.asks) for s in theirs.values())
            if differ:
                return False, f"the local book differs on {', '.join(differ)}"
            return True, f"{levels} price levels of {len(theirs)} instruments equal"
        finally:
            fresh.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.client.close()


@dataclass
class Phase:
    name: str
    state: str = "waiting"  # waiting, running, done
    note: str = ""


@dataclass
class LiveDay:
    """The run's state: what the view shows and the summary reports."""

    market: MarketConfig
    seed: int
    steps: int
    date: str
    out: Path
    phases: list[Phase] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    auction_seqs: dict[str, list[int]] = field(default_factory=dict)  # phase -> uncross seqs
    started: float = field(default_factory=time.monotonic)
    engine_ready_s: float = 0.0
    compiled: bool = False
    restart_s: float = 0.0
    killed_at_seq: int = 0
    recovered_seq: int = 0
    final_seq: int = 0
    final_hash: str = ""
    day_records: list[DayClosed] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # moments the view shows at once
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    gateway_counts: dict[str, Counter] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    settlement: dict | None = None
    written: dict[str, str] = field(default_factory=dict)
    subscriber: Subscriber | None = None

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


PHASES = [
    "start the engine",
    "opening calls",
    "continuous trading, first half",
    "halt and re-opening call",
    "continuous trading, second half (kill -9 and restart)",
    "one-way auction",
    "block trade",
    "closing calls and the close",
    "clearing: capture and settlement",
    "checks: journal replay, acknowledgements",
]


def run_live(
    market: MarketConfig,
    seed: int,
    steps: int,
    out: Path,
    date: str | None,
    market_file: str | None,
    view: Callable[[LiveDay], None],
) -> LiveDay:
    """Run the day; `view(day)` is called whenever something changed (and while waiting)."""
    check_demo_market(market)
    check_live_market(market)
    if steps < 2:
        raise ValueError(f"the real-system demo needs at least 2 continuous steps, got {steps}")
    day = LiveDay(market, seed, steps, demo_date(market, date), out)
    day.phases = [Phase(name) for name in PHASES]
    prepare_out(out)
    engine = Engine(out / "engine", out / "logs" / "engine.log", day.date, market_file)
    processes: list = []
    try:
        _run(day, engine, processes, market_file, view)
    finally:
        for process in reversed(processes):
            process.stop()
        engine.stop()
    return day


def check_live_market(market: MarketConfig) -> None:
    """ValueError unless every member trades through a gateway of the config and the engine
    runs without CURVE keys (the demo's processes hold none)."""
    covered = {m for g in market.gateways for m in g.members}
    missing = sorted(m.id for m in market.members if m.id not in covered)
    if missing:
        raise ValueError(
            f"members {missing} are in no [[gateways]] of the market: the demo sends each "
            "member's orders through its gateway; list them in a gateway, or run "
            "cxe demo --in-process"
        )
    if market.security is not None:
        raise ValueError(
            "the market has a [security] section: the demo's processes hold no CURVE keys; "
            "run it without that section, or cxe demo --in-process"
        )


def _begin(day: LiveDay, view, name: str, note: str = "") -> Phase:
    phase = day.phase(name)
    phase.state, phase.note = "running", note
    view(day)
    return phase


def _end(day: LiveDay, view, phase: Phase, note: str | None = None) -> None:
    phase.state = "done"
    if note is not None:
        phase.note = note
    view(day)


def _run(day: LiveDay, engine: Engine, processes: list, market_file, view) -> None:
    from engine.gateway.admin_client import AdminClient

    market, out = day.market, day.out
    day.compiled = not kernel_cached()
    phase = _begin(
        day,
        view,
        "start the engine",
        "first run: compiling the kernel (once, about 1-2 minutes)" if day.compiled else "",
    )

    def waiting(elapsed: float) -> None:
        phase.note = (
            f"compiling the kernel (first run): {elapsed:.0f} s"
            if day.compiled
            else f"loading the compiled kernel from the cache: {elapsed:.0f} s"
        )
        view(day)

    day.engine_ready_s = engine.start(waiting)
    did = "compiled the kernel" if day.compiled else "loaded the kernel from the cache"
    _end(day, view, phase, f"ready in {day.engine_ready_s:.1f} s ({did})")
    admin = AdminClient(engine.endpoints["admin"])
    capture = Capture(engine, out)
    processes.append(capture)
    gateways = [Gateway(g.id, engine, day.seed, out, market_file) for g in market.gateways]
    processes.extend(gateways)
    day.subscriber = Subscriber(engine)
    processes.append(day.subscriber)
    codes = [i.code for i in market.instruments]
    share = -(-CALL_ORDERS["opening"] // len(gateways))

    def operate(*commands) -> list:
        answer = admin.ask(*commands)
        refused = [a for a in answer if type(a) is Rejected]
        if refused:
            raise RuntimeError(f"the engine refused an operator command: {refused[0].text}")
        return answer

    def together(task: dict, on_progress: Callable[[], None] | None = None) -> None:
        for gateway in gateways:
            gateway.tell(**task)
        waiting = list(gateways)
        while waiting:
            for gateway in list(waiting):
                if gateway.poll(0.05):
                    waiting.remove(gateway)
            if on_progress is not None:
                on_progress()
            view(day)
        day.gateway_counts = {g.name: g.counts for g in gateways}

    def auctions(label: str, answer: list) -> None:
        results = [e for e in answer if type(e) is AuctionResult]
        day.auction_seqs.setdefault(label, []).extend(e.seq for e in results)
        for code in dict.fromkeys(e.instrument for e in results):
            result = next(e for e in results if e.instrument == code)
            price = format_price(result.price) if result.volume else "-"
            day.log.append(
                f"  {label + ' auction':<22} {code:<6} price {price:>7} CNY   volume "
                f"{result.volume:>9,} t"
            )

    phase = _begin(day, view, "opening calls")
    operate(StartOfDay(day.date), *(OpenCall(c) for c in codes))
    together({"do": "call", "codes": codes, "count": share, "step": 0})
    auctions("opening", operate(*(Uncross(c) for c in codes)))
    _end(day, view, phase, f"{len(codes)} instruments uncrossed")

    half = day.steps // 2
    phase = _begin(day, view, "continuous trading, first half")
    together({"do": "continuous", "start": 0, "end": half}, _steps_note(day, phase, gateways, 0))
    _end(day, view, phase)

    halt_code = codes[-2] if len(codes) > 1 else codes[0]
    phase = _begin(day, view, "halt and re-opening call", halt_code)
    operate(Halt(halt_code), OpenCall(halt_code))
    count = -(-CALL_ORDERS["re-opening"] // len(gateways))
    together({"do": "call", "codes": [halt_code], "count": count, "step": half})
    auctions("re-opening", operate(Uncross(halt_code)))
    _end(day, view, phase, f"{halt_code} halted, re-opened by a call")

    phase = _begin(day, view, "continuous trading, second half (kill -9 and restart)")
    kill_step = half + max(1, int((day.steps - half) * KILL_AT))
    note = _steps_note(day, phase, gateways, half)

    def crash_once() -> None:
        note()
        if day.killed_at_seq or min(g.progress for g in gateways) < kill_step:
            return
        day.killed_at_seq = admin.status().seq
        engine.kill()
        phase.note = f"engine killed (SIGKILL) after seq {day.killed_at_seq:,}; restarting"
        day.notices.append(f"killed the engine with SIGKILL after seq {day.killed_at_seq:,}")
        view(day)
        day.restart_s = engine.start(lambda _: None)
        day.recovered_seq = admin.status().seq
        day.notices.append(
            f"restarted it from its journal at seq {day.recovered_seq:,} in {day.restart_s:.1f} "
            "s; the gateways log on again and resend what is unanswered"
        )
        view(day)

    together({"do": "continuous", "start": half, "end": day.steps}, crash_once)
    resent = sum(g.counts["resent"] for g in gateways)
    _end(
        day,
        view,
        phase,
        f"killed after seq {day.killed_at_seq:,}, recovered to seq {day.recovered_seq:,} in "
        f"{day.restart_s:.1f} s; gateways resent {resent} unanswered order(s)",
    )
    day.checks["local book"] = day.subscriber.matches_snapshot(engine)

    offer = one_way_offer(market)
    phase = _begin(day, view, "one-way auction")
    references = {code: state.reference for code, state in _snapshot_states(engine).items()}
    if offer is None:
        _end(day, view, phase, "none: the market lists no CEA vintage")
    else:
        day.log.append(one_way_line(offer))
        operate(offer)
        per = -(-BIDS // len(gateways))
        reference = references[offer.instrument]
        together({"do": "bids", "code": offer.instrument, "reference": reference,
                  "seller": offer.seller, "count": per})  # fmt: skip
        auctions("one-way", operate(OneWayAuctionClose(offer.instrument)))
        _end(day, view, phase, offer.instrument)

    phase = _begin(day, view, "block trade")
    block = block_trade_of(market, references[codes[0]])
    if any(type(e) is Trade for e in operate(block)):
        day.log.append(block_trade_line(block))
    _end(day, view, phase, f"{block.instrument} {block.qty:,} t")

    phase = _begin(day, view, "closing calls and the close")
    operate(*(CloseCall(c) for c in codes))
    count = -(-CALL_ORDERS["closing"] // len(gateways))
    together({"do": "call", "codes": codes, "count": count, "step": day.steps})
    auctions("closing", operate(*(Close(c) for c in codes)))
    day.day_records = [e for e in operate(EndOfDay()) if type(e) is DayClosed]
    status = admin.status()
    day.final_seq, day.final_hash = status.seq, status.state_hash
    _end(day, view, phase, f"day closed at seq {day.final_seq:,}")
    for gateway in gateways:
        gateway.stop()
    admin.close()

    phase = _begin(day, view, "clearing: capture and settlement")
    capture.wait_day_closed(lambda: view(day))
    engine.stop()
    day.settlement = settle(day, market_file)
    _end(day, view, phase, "settled" if day.checks["clearing"][0] else "FAILED")

    phase = _begin(day, view, "checks: journal replay, acknowledgements")
    check_journal(day, [g.acks for g in gateways])
    day.written.update(plots(day))
    _end(day, view, phase, "passed" if all(ok for ok, _ in day.checks.values()) else "FAILED")


def _steps_note(day: LiveDay, phase: Phase, gateways: list[Gateway], start: int):
    total = max(1, (day.steps // 2 if start == 0 else day.steps - start))

    def note() -> None:
        done = min(g.progress for g in gateways) - start
        acked = sum(g.counts["accepted"] for g in gateways)
        prefix = phase.note.split(";")[0] if "killed" in phase.note else ""
        text = f"{max(0, done) / total:.0%} of steps, {acked:,} orders acknowledged"
        phase.note = f"{prefix}; {text}" if prefix else text

    return note


def _snapshot_states(engine: Engine) -> dict:
    from engine.gateway.marketdata_client import MarketDataClient

    client = MarketDataClient(engine.endpoints["market-data"], engine.endpoints["snapshots"])
    try:
        if client.next_update(30) is None:
            raise RuntimeError("no market data snapshot from the engine")
        return {code: book.state() for code, book in client.books.items()}
    finally:
        client.close()


class Capture:
    """`cxe capture` following the engine's trade stream into OUT/clearing/trades.db."""

    def __init__(self, engine: Engine, out: Path) -> None:
        self.store = out / "clearing" / "trades.db"
        command = [*cxe_command(), "capture", "--data", str(engine.data)]
        command += ["--store", str(self.store), "--until-day-closed"]
        with (out / "logs" / "capture.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait_day_closed(self, waiting: Callable[[], None], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            waiting()
            time.sleep(0.1)
        if self.process.poll() is None:
            raise RuntimeError("cxe capture did not store the day's close in time")
        if self.process.returncode != 0:
            raise RuntimeError(f"cxe capture failed ({self.process.returncode}): see its log")

    def stop(self) -> None:
        stop_process(self.process)


def settle(day: LiveDay, market_file: str | None) -> dict:
    """`cxe clear` settles the captured day; then the figures of the summary from the store:
    netting per member (conservation checked), efficiency."""
    import numpy as np

    from engine.clearing.capture import TradeStore
    from engine.clearing.netting import ConservationError, check_conservation, net
    from engine.clearing.settlement import Ledger, trade_arrays

    clearing = day.out / "clearing"
    ledger_path = clearing / "ledger.db"
    command = [*cxe_command(), "clear", "--date", day.date, "--store", str(clearing / "trades.db")]
    command += ["--ledger", str(ledger_path), "--out", str(clearing)]
    command += ["--market", market_file] if market_file else []
    with (day.out / "logs" / "clear.log").open("wb") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    store = TradeStore(clearing / "trades.db")
    try:
        day.trades = store.trades_of(day.date)
    finally:
        store.close()
    codes = [i.code for i in day.market.instruments]
    fees = np.array([i.fee_ppm for i in day.market.instruments], dtype=np.int64)
    netting = net(trade_arrays(day.trades, codes), fees)
    try:
        check_conservation(netting)
        conserved = True
    except ConservationError:
        conserved = False
    settled = ledger_path.exists() and Ledger(ledger_path).settled(day.date)
    recorded = sum(r.trades for r in day.day_records)
    ok = status == 0 and conserved and settled and recorded == len(day.trades)
    day.checks["clearing"] = (
        ok,
        f"{len(day.trades):,} trades captured live (the day records say {recorded:,}); "
        f"netting {'conserves' if conserved else 'DOES NOT conserve'}; "
        f"cxe clear {'settled the day' if settled and status == 0 else 'FAILED'}",
    )
    day.written["ledger"] = str(ledger_path)
    day.written["statements"] = str(clearing / f"statements-{day.date}.csv")
    day.written["trade store"] = str(clearing / "trades.db")
    members = {m.id: m.name for m in day.market.members}
    return {
        "efficiency": netting.efficiency(),
        "fees": netting.total_fees,
        "members": [
            (
                int(member),
                members.get(int(member), ""),
                int(netting.net_cash[row].sum()),
                int(netting.bought[row].sum()),
                int(netting.sold[row].sum()),
            )
            for row, member in enumerate(netting.members.tolist())
        ],
    }


def check_journal(day: LiveDay, ack_files: list[Path]) -> None:
    """Replay the journal on a fresh exchange: the engine's last seq and state hash; every
    acknowledged order (or one-way auction bid) at its seq; nothing accepted twice."""
    from engine.core import Exchange
    from engine.journal.segments import replay
    from engine.protocol import Accepted, AuctionBid, NewOrder

    journal = day.out / "engine" / "journal"
    exchange = Exchange(day.market)
    orders: dict[int, tuple[int, str]] = {}
    accepted: Counter = Counter()
    for record, events in replay(journal, exchange):
        if type(record.command) in (NewOrder, AuctionBid):
            orders[record.seq] = (record.command.member, record.command.cl_ord_id)
            accepted.update((e.member, e.cl_ord_id) for e in events if type(e) is Accepted)
    same = exchange.seq == day.final_seq and exchange.state_hash() == day.final_hash
    day.checks["state hash"] = (
        same,
        f"a fresh replay of the journal ({exchange.seq:,} commands) gives the engine's state "
        f"hash{'' if same else ': IT DOES NOT'}",
    )
    acks = lost = 0
    for path in ack_files:
        for line in path.read_text().splitlines():
            seq, member, cl_ord_id = line.split()
            acks += 1
            lost += orders.get(int(seq)) != (int(member), cl_ord_id)
    twice = sum(1 for n in accepted.values() if n > 1)
    day.checks["restart lost nothing"] = (
        lost == 0 and twice == 0 and day.killed_at_seq > 0,
        f"{acks:,} acknowledged orders, {lost} missing from the journal, {twice} accepted "
        f"twice; the engine was killed after seq {day.killed_at_seq:,}",
    )
    day.written["journal"] = str(journal)


def plots(day: LiveDay) -> dict[str, str]:
    """A price chart of the day's trades per instrument, when matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"plots": "none (pip install -e '.[research]' adds matplotlib for them)"}
    path = day.out / "plots" / f"prices-{day.date}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(10, 5))
    for code in [i.code for i in day.market.instruments]:
        mine = [t for t in day.trades if t.instrument == code and t.venue != "block"]
        axes.plot([t.seq for t in mine], [t.price / 100 for t in mine], ".", ms=2, label=code)
    axes.set_xlabel("command sequence number")
    axes.set_ylabel("price, CNY per tonne")
    axes.set_title(f"{day.market.name}, {day.date}")
    axes.legend(markerscale=5)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return {"plots": str(path)}


def phase_figures(day: LiveDay) -> list[tuple[str, str, Figures]]:
    """(phase, instrument, figures) from the captured trades, by venue and sequence."""
    opening = max(day.auction_seqs.get("opening", [0]))
    reopening = set(day.auction_seqs.get("re-opening", []))
    rows: dict[tuple[str, str], Figures] = {}
    for t in day.trades:
        if t.venue == "call":
            name = (
                "opening call"
                if t.seq <= opening
                else "re-opening call"
                if t.seq in reopening
                else "closing call"
            )
        else:
            name = {"one_way": "one-way auction", "block": "block trade"}.get(t.venue, t.venue)
        rows.setdefault((name, t.instrument), Figures()).add(t)
    order = ["opening call", "continuous", "pick", "re-opening call", "one-way auction",
             "block trade", "closing call"]  # fmt: skip
    codes = [i.code for i in day.market.instruments]
    return sorted(
        ((p, c, f) for (p, c), f in rows.items()),
        key=lambda r: (order.index(r[0]) if r[0] in order else 99, codes.index(r[1])),
    )


def render_live(day: LiveDay) -> str:
    """The summary printed at the end (and written to OUT/summary.txt)."""
    cny = format_price
    lines = [
        f"{day.market.name}: trading day {day.date} with the real processes on loopback "
        f"(seed {day.seed}, {day.steps:,} continuous steps)",
        "prices in CNY per tonne, quantities in tonnes, money in CNY",
        "",
        *day.log,
        "",
        f"{'phase':<16} {'instrument':<10} {'trades':>7} {'volume t':>11} {'VWAP':>7} "
        f"{'high':>7} {'low':>7}",
    ]
    for name, code, f in phase_figures(day):
        lines.append(
            f"{name:<16} {code:<10} {f.trades:>7,} {f.volume:>11,} {cny(f.vwap):>7} "
            f"{cny(f.high):>7} {cny(f.low):>7}"
        )
    lines += [
        "",
        f"{'the close':<10} {'trades':>7} {'volume t':>11} {'open':>7} {'high':>7} {'low':>7} "
        f"{'close':>7}   (close = VWAP of the day's listed trades)",
    ]
    for r in day.day_records:
        lines.append(
            f"{r.instrument:<10} {r.trades:>7,} {r.volume:>11,} "
            + " ".join(f"{cny(p):>7}" for p in (r.open, r.high, r.low, r.close))
        )
    if day.settlement:
        eff = day.settlement["efficiency"]
        lines += [
            "",
            f"settlement (net, delivery versus payment): netting removes {eff['cash']:.1%} of "
            f"the gross cash legs and {eff['qty']:.1%} of the allowance legs; fees "
            f"{cny(day.settlement['fees'], grouped=True)} CNY",
            f"  {'member':<24} {'bought t':>11} {'sold t':>11} {'net cash CNY':>18}",
        ]
        for member, name, net_cash, bought, sold in day.settlement["members"]:
            lines.append(
                f"  {member:>2} {name:<21} {bought:>11,} {sold:>11,} "
                f"{cny(net_cash, grouped=True):>18}"
            )
    counts = Counter()
    for c in day.gateway_counts.values():
        counts.update(c)
    rejected = ", ".join(
        f"{n:,} {k.removeprefix('rejected ')}" for k, n in sorted(counts.items())
        if k.startswith("rejected ")
    )  # fmt: skip
    lines += [
        "",
        f"gateways ({', '.join(day.gateway_counts)}): {counts['orders']:,} orders, "
        f"{counts['accepted']:,} acknowledged, {counts['cancels']:,} cancels, {counts['bids']} "
        f"auction bids; rejected: {rejected or 'none'}",
        f"engine: ready in {day.engine_ready_s:.1f} s"
        + (" (first run: compiled the kernel)" if day.compiled else " (kernel from the cache)")
        + f"; killed with SIGKILL after seq {day.killed_at_seq:,}, restarted from its journal "
        f"at seq {day.recovered_seq:,} in {day.restart_s:.1f} s; gateways logged on again and "
        f"resent {counts['resent']} "
        f"unanswered order(s) ({_resend_answers(counts)})",
        "",
        "checks:",
    ]
    for name, (ok, text) in day.checks.items():
        lines.append(f"  {'ok    ' if ok else 'FAILED'} {name}: {text}")
    lines += ["", f"state hash {day.final_hash}", ""]
    lines += [f"{name + ':':<13} {path}" for name, path in day.written.items()]
    lines.append(f"{'logs:':<13} {day.out / 'logs'}")
    return "\n".join(lines)


def _resend_answers(counts: Counter) -> str:
    """How the engine answered the resent orders: with their state (an OrderStatus: it had
    them), or as new orders (it had not)."""
    if not counts["resent"]:
        return "none was in flight at the kill"
    answers = [f"{n} {k.split(': ')[1]}" for k, n in counts.items() if k.startswith("resend ")]
    return "answered: " + ", ".join(answers) if answers else "each answered as a new order"


def passed(day: LiveDay) -> bool:
    return bool(day.checks) and all(ok for ok, _ in day.checks.values())


class Progress:
    """What the demo shows while it runs: a live rich view on a terminal (phases with their
    state and notes, each instrument's public trades so far), else a plain line per change
    of a phase (and at most one every few seconds while it runs)."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.live = None
        self.shown: dict[str, tuple[str, str]] = {}
        self.last_line = 0.0
        self.notices = 0  # of day.notices printed

    def __call__(self, day: LiveDay) -> None:
        if self.terminal:
            self._live(day)
        else:
            self._plain(day)

    def _plain(self, day: LiveDay) -> None:
        now = time.monotonic()
        for notice in day.notices[self.notices :]:
            print(f"[{now - day.started:6.1f} s] {notice}", flush=True)
            self.notices += 1
        for phase in day.phases:
            if phase.state == "waiting":
                continue
            seen = self.shown.get(phase.name)
            changed_state = seen is None or seen[0] != phase.state
            if changed_state or (seen[1] != phase.note and now - self.last_line >= 3):
                mark = "done" if phase.state == "done" else "..."
                note = f": {phase.note}" if phase.note else ""
                print(f"[{now - day.started:6.1f} s] {phase.name} {mark}{note}", flush=True)
                self.shown[phase.name] = (phase.state, phase.note)
                self.last_line = now

    def _live(self, day: LiveDay) -> None:
        from rich.live import Live

        if self.live is None:
            self.live = Live(self._render(day), refresh_per_second=4, transient=False)
            self.live.start()
        self.live.update(self._render(day))

    def _render(self, day: LiveDay):
        from rich.console import Group
        from rich.table import Table

        phases = Table(title=f"cxe demo: {day.market.name}, {day.date}", expand=False)
        phases.add_column("phase")
        phases.add_column("", width=7)
        phases.add_column("")
        for phase in day.phases:
            state = {"done": "[green]done", "running": "[yellow]running"}.get(phase.state, "")
            phases.add_row(phase.name, state, phase.note)
        market = Table(title="public trades (market data subscriber)", expand=False)
        for name in ("instrument", "trades", "volume t", "last CNY", "high", "low"):
            market.add_column(name, justify="left" if name == "instrument" else "right")
        trades = day.subscriber.trades if day.subscriber is not None else {}
        for code in [i.code for i in day.market.instruments]:
            f = trades.get(code)
            if f is None:
                market.add_row(code, "0", "0", "-", "-", "-")
                continue
            last = day.subscriber.last.get(code)
            market.add_row(
                code,
                f"{f.trades:,}",
                f"{f.volume:,}",
                format_price(last) if last else "-",
                format_price(f.high),
                format_price(f.low),
            )
        elapsed = f"elapsed {time.monotonic() - day.started:.0f} s; output under {day.out}"
        return Group(phases, market, *day.notices, elapsed)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
