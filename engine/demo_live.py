"""`cxe demo`: a complete trading day of the market with the real processes on loopback.

The demo process is the operator and the observer. It starts the engine service (`cxe serve`,
a subprocess, its data directory under OUT/engine), clearing's live capture (`cxe capture`,
a subprocess), a broker gateway process per gateway of the market config (engine.demo_gateway:
each plays its members' part of the seeded flow over ZeroMQ) and a market data subscriber
(MarketDataClient, on a thread here, keeping a local book). It runs the day over the admin
socket: start of day, opening calls, continuous trading, a halt and re-opening call, a
one-way auction, a block trade, closing calls, the close and end of day. The gateways take
continuous trading in step (LOCKSTEP steps at a time). When every gateway is KILL_AT of the
way through the second half it kills the engine with SIGKILL and restarts it from its
journal on the same ports; the gateways log on again and resend what was unanswered. After
the close clearing settles the day (`cxe clear`, a subprocess) from what capture stored.

What it checks (`LiveDay.checks`), from the files the processes wrote, not their word:
- every order or bid a gateway was told was accepted (Accepted: seq, member, ClOrdID) is
  that command at that seq of the journal, and no (member, ClOrdID) was accepted twice;
- a fresh replay of the journal ends at the engine's last sequence number with its state
  hash (the engine's StatusReport after the end of day);
- the subscriber's local book equals a fresh snapshot's at the end of continuous trading;
- capture stored every trade of the day (its count equals the end-of-day records'), and
  netting conserves (check_conservation) and the ledger settled the day.

Phases' figures come from the trades clearing captured (venue and command seq), prices in CNY
with two decimals, quantities in tonnes (engine.demo_report shows them; engine.demo_processes
runs the processes).
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.cli.clearing import STORE
from engine.config import MarketConfig
from engine.demo import (
    auction_lines,
    block_trade_line,
    block_trade_of,
    check_demo_market,
    demo_date,
    one_way_line,
    one_way_offer,
)
from engine.demo_processes import (
    Capture,
    Engine,
    Gateway,
    Subscriber,
    cxe_command,
    kernel_cached,
    snapshot_states,
)
from engine.demo_report import plots
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

DEFAULT_OUT = "out/demo"
MARKER = ".cxe-demo"  # marks a directory a demo wrote: a later demo may replace its contents
OWNED = ("engine", "logs", "gateways", "clearing", "plots", "summary.txt")
KILL_AT = 0.3  # share of the second half of continuous trading done when the engine is killed
CALL_ORDERS = {"opening": 60, "re-opening": 30, "closing": 20}  # per instrument, in all
BIDS = 12
LOCKSTEP = 10  # continuous steps the gateways take between two meetings


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
    missing = market.members_without_gateway()
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
    inbox: queue.Queue = queue.Queue()
    gateways = [Gateway(g.id, engine, day.seed, out, market_file, inbox) for g in market.gateways]
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
        """Every gateway does `task`; returns when all are done."""
        for gateway in gateways:
            gateway.tell(**task)
        waiting, shown = set(gateways), 0.0
        while waiting:
            try:
                gateway, message = inbox.get(timeout=0.1)
                if gateway.take(message):
                    waiting.discard(gateway)
            except queue.Empty:
                pass
            if on_progress is not None:
                on_progress()
            if time.monotonic() - shown > 0.1:
                view(day)
                shown = time.monotonic()
        day.gateway_counts = {g.name: g.counts for g in gateways}

    def trade(start: int, end: int, on_progress: Callable[[], None]) -> None:
        """Continuous steps [start, end), the gateways in step LOCKSTEP steps at a time (so
        each trades against the others' orders of the same moment)."""
        for first in range(start, end, LOCKSTEP):
            last = min(end, first + LOCKSTEP)
            together({"do": "continuous", "start": first, "end": last}, on_progress)

    def auctions(label: str, answer: list) -> None:
        results = [e for e in answer if type(e) is AuctionResult]
        day.auction_seqs.setdefault(label, []).extend(e.seq for e in results)
        for code in dict.fromkeys(e.instrument for e in results):
            day.log += auction_lines(results, code, f"{label} auction")

    phase = _begin(day, view, "opening calls")
    operate(StartOfDay(day.date), *(OpenCall(c) for c in codes))
    together({"do": "call", "codes": codes, "count": share, "step": 0})
    auctions("opening", operate(*(Uncross(c) for c in codes)))
    _end(day, view, phase, f"{len(codes)} instruments uncrossed")

    half = day.steps // 2
    phase = _begin(day, view, "continuous trading, first half")
    trade(0, half, _steps_note(day, phase, gateways, 0))
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

    trade(half, day.steps, crash_once)
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
    references = {code: state.reference for code, state in snapshot_states(engine).items()}
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


def settle(day: LiveDay, market_file: str | None) -> dict:
    """`cxe clear` settles the captured day; then the figures of the summary from the store:
    netting per member (conservation checked), efficiency."""
    import numpy as np

    from engine.clearing.capture import TradeStore
    from engine.clearing.netting import ConservationError, check_conservation, net
    from engine.clearing.settlement import Ledger, trade_arrays

    clearing = day.out / "clearing"
    ledger_path = clearing / "ledger.db"
    command = [*cxe_command(), "clear", "--date", day.date, "--store", str(clearing / STORE)]
    command += ["--ledger", str(ledger_path), "--out", str(clearing)]
    command += ["--market", market_file] if market_file else []
    with (day.out / "logs" / "clear.log").open("wb") as log:
        status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    store = TradeStore(clearing / STORE)
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
    day.written["trade store"] = str(clearing / STORE)
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


def passed(day: LiveDay) -> bool:
    return bool(day.checks) and all(ok for ok, _ in day.checks.values())
