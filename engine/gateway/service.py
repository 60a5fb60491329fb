"""The engine service: the one process that owns the sockets, the journal and the exchange.

One thread runs `EngineService.run`: each turn it polls, drains up to `batch_limit` inbound
messages (order entry and admin), sequences what reaches the core (stamp, journal, apply,
one fsync) and only then sends what the turn produced (group commit). The parts, each in its
module with its invariants: start-up, recovery and shut-down (engine.gateway.startup);
order-entry intake and permission checks (engine.gateway.intake); the admin socket's operator
commands (engine.gateway.admin); sequence, journal and apply (engine.gateway.sequencing);
routing and sending, backlogs (engine.gateway.outbound). Invariants of the loop:
- a turn reads at most `batch_limit` commands and records per socket, then sequences, fsyncs
  and sends, in that order: nothing the core caused is sent before the journal holds the
  command durably (with `fsync` on); a failed write or fsync stops the service (exit status
  3) without sending;
- a client's frame can never stop the loop (engine.gateway.intake);
- the service's clock is the system clock at its start (or `clock_start_ns`, a rehearsal)
  plus the time elapsed since on CLOCK_BOOTTIME, which a stepped system clock does not
  move: a step (an NTP correction, an operator's `date -s`) changes neither the stamps nor
  the market's calendar while the engine runs, and is logged (`_watch_clock`) while the two
  differ by CLOCK_GAP_NS or more (a probe stepped the system clock an hour forward and back:
  every stamp stayed pinned an hour ahead); the clock never goes backwards across a restart
  (stamps are max(now, last)); a Clock command is sequenced after `clock_ms` without a
  command, when the market has a schedule and a day;
- a snapshot asked for (end of day, operator) is taken after the turn's sending, by a forked
  child that writes it while the loop goes on (engine.gateway.snapshotter); one asked for
  while another is being written is taken after it ends; stopping waits for it;
- with `busy_poll` the loop polls without sleeping; a turn that finds nothing to read does
  the idle work (session expiry, the Clock command, heartbeats, backlogs, snapshot requests)
  at most once per IDLE_WORK_NS, so an idle turn costs a poll and a clock read.
Sockets: orders (ROUTER, ROUTER_MANDATORY, non-blocking sends), admin (ROUTER), market data
(PUB and its snapshot ROUTER, engine.gateway.marketdata): public events are published after
the turn's fsync, like every other output; the trade stream (ROUTER,
engine.gateway.tradestream): clearing events into DATA/trades.log after the fsync, and from
it to clearing's consumers.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TextIO

import zmq

from engine.config import MarketConfig
from engine.core import Exchange
from engine.core.rows import reject_wording
from engine.gateway import security as curve
from engine.gateway.admin import Admin
from engine.gateway.intake import Intake, Item
from engine.gateway.marketdata import MarketDataPublisher
from engine.gateway.outbound import Outbound
from engine.gateway.public import PublicEncoder
from engine.gateway.readerlimit import ReaderByteLimit
from engine.gateway.replies import Pending, PrivateReplies
from engine.gateway.sequencing import JournalFailed, Sequencing, TradeLogFailed
from engine.gateway.sessions import Sessions
from engine.gateway.snapshotter import SnapshotWriter
from engine.gateway.startup import Startup
from engine.gateway.status import OrderStatusTable
from engine.gateway.tradestream import TradeStream
from engine.gateway.zap import ZapHandler
from engine.journal.acknowledged import AcknowledgedMark
from engine.journal.segments import Journal
from engine.logline import LogLines
from engine.protocol import Clock, encode

EXIT_JOURNAL_FAILED = 3
EXIT_TRADE_LOG_FAILED = 4
IDLE_WORK_NS = 1_000_000  # busy polling: the idle work of a turn that read nothing, this often
CLOCK_GAP_NS = 1_000_000_000  # the system clock this far from the engine's is logged
CLOCK_WATCH_NS = 1_000_000_000  # how often the engine compares the two
# the time elapsed since the engine started: CLOCK_BOOTTIME also counts a suspended machine
elapsed_ns = partial(time.clock_gettime_ns, getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))
SERVICE_COUNTERS = (  # the status report's counters of the service itself (docs/PROTOCOL.md)
    "turns",
    "sequenced",
    "fsyncs",
    "malformed_frames",
    "unknown_peers",
    "snapshots_written",  # by the snapshot writer's child, counted when it is reaped
    "snapshot_failures",
    "connections_cut",  # order entry's, admin's and the trade stream's caps (read at Status)
    "log_lines_lost",  # lines the log could not take, its pipe closed (read at Status)
)


@dataclass
class Options:
    data_dir: Path
    orders: str = "tcp://127.0.0.1:5555"
    admin: str = "tcp://127.0.0.1:5556"
    market_data: str = "tcp://127.0.0.1:5557"  # PUB: the public events
    snapshots: str = "tcp://127.0.0.1:5558"  # ROUTER: the book and state as of a position
    trades: str = "tcp://127.0.0.1:5559"  # ROUTER: clearing's events from a stream number
    fsync: bool = True
    # commands (messages and records) read per turn at most, across gateways: ZeroMQ's fair
    # queueing takes one frame from each gateway in turn, so a flood of big frames waits
    # behind the others' frames of the next turn
    batch_limit: int = 1024
    clock_ms: int = 1000  # a Clock command after this long without a command (if scheduled)
    sndhwm: int = 10_000
    quiet: bool = False
    clock_start_ns: int | None = None  # run the clock from this instant (a rehearsal, tests)
    config_path: Path | None = None  # reread for its [security] keys on SIGHUP / ReloadKeys
    insecure: bool = False  # plain mode may bind beyond loopback (never do this in production)
    busy_poll: bool = False  # poll without sleeping (one CPU kept busy, the lowest latency)
    # the orders (and amends) a trading day is expected to carry: the ClOrdID and order status
    # tables are sized for them at start, so they do not grow (doubling pauses the loop: 65 ms
    # at 131,072 keys, 256 ms at 524,288, measured) before the day passes this many
    day_orders: int = 100_000
    # snapshots kept (the newest and those before it, to fall back to if it is damaged); the
    # child that writes one removes the older ones; 0 keeps every one
    keep_snapshots: int = 7


class EngineService(Startup, Intake, Admin, Sequencing, Outbound):
    """The engine service: its state, the loop and one turn; the parts are its bases."""

    def __init__(
        self, config: MarketConfig, options: Options, log: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self.options = options
        # the log: one that cannot take a line never stops the engine (engine.logline)
        self.log = log or LogLines("cxe serve")
        self.data_dir = Path(options.data_dir)
        self.sessions = Sessions(config)
        self.counters = dict.fromkeys(SERVICE_COUNTERS, 0)
        self.stopping = False
        self.exchange: Exchange | None = None
        self.journal: Journal | None = None
        self.acknowledged: AcknowledgedMark | None = None  # DATA/acknowledged, once open
        self.context: zmq.Context | None = None
        self.market_data: MarketDataPublisher | None = None
        self.trade_stream: TradeStream | None = None
        self.endpoints: dict[str, str] = {}
        self.last_ts = 0
        start = options.clock_start_ns
        self._clock_origin_ns = time.time_ns() if start is None else start
        self._clock_base_ns = elapsed_ns()
        self._clock_gap_said = False
        self._clock_watch_due_ns = 0
        self.last_command_ns = self.last_heartbeat_ns = self.last_turn_ns = time.monotonic_ns()
        self._snapshot_wanted = False  # taken when no snapshot is being written
        self.snapshot_writer = SnapshotWriter()  # a child process writes each snapshot
        self.staged: list[Item] = []  # records frames of the turn, not yet applied
        self.turn_ts = 0  # the stamp of the turn's commands
        self.codes = [i.code for i in config.instruments]
        self.status = OrderStatusTable(self.codes)
        self.member_ids = [m.id for m in config.members]
        self.replies = PrivateReplies(self.codes, reject_wording(config.instruments))
        self.public_encoder = PublicEncoder(config.instruments)
        self.items: list[Item] | None = None
        self.taken = 0
        self.authenticator: curve.Authenticator | None = None  # CURVE mode's key table
        self.zap: ZapHandler | None = None  # the context's ZAP handler (both modes)
        self.caps: list[ReaderByteLimit] = []  # order entry's and admin's connection caps
        # the data directory's descriptor and DATA/engine.lock, both locked while it runs
        self._lock: tuple[int, TextIO] | None = None
        self._unwritten_market: dict[str, str] | None = None  # for a journal begun by this start
        self._snapshot_history = ""  # the history id the snapshot recovered from carries
        self._replayed = 0  # journal records the recovery applied past its snapshot
        self.history = ""  # the journal's history id (engine.journal.history), once open
        self.peer = ""  # the User-Id of the frame being read ("" in plain mode)
        self.peers: dict[bytes, str] = {}  # routing id -> User-Id, to end revoked keys' peers
        self.revoked_peers: set[bytes] = set()
        self._reload_wanted = False
        self._idle_work_due_ns = 0  # busy polling: when a turn that read nothing works again

    def stop(self, *_args) -> None:
        self.stopping = True

    def _want_reload(self, *_args) -> None:
        self._reload_wanted = True

    def run(self) -> int:
        """Serve until stopped (SIGINT/SIGTERM finish the turn in hand); the exit status."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.stop)
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGHUP, self._want_reload)
        timeout_ms = 0 if self.options.busy_poll else 100
        self.last_turn_ns = time.monotonic_ns()
        try:
            while not self.stopping:
                self.turn(timeout_ms)
        except JournalFailed as exc:
            self.log(f"{exc}, stopping without acknowledging")
            self.close(sync=False)
            return EXIT_JOURNAL_FAILED
        except TradeLogFailed as exc:
            self.log(
                f"trade log failed, stopping: {exc}; every acknowledged command is in the "
                f"journal, and a restart rebuilds trades.log from it: mend the cause (a full "
                f"disk?), then start the engine again"
            )
            self.close()
            return EXIT_TRADE_LOG_FAILED
        self._snapshot_before_stop()
        self.close()
        self.log(f"stopped at seq {self.exchange.seq}, state hash {self.exchange.state_hash()}")
        return 0

    def turn(self, timeout_ms: int) -> None:
        ready = dict(self.poller.poll(timeout_ms))
        if not ready and not self._reload_wanted:
            now = time.monotonic_ns()
            if now < self._idle_work_due_ns:
                return  # busy polling: the idle work was done less than IDLE_WORK_NS ago
            self._idle_work_due_ns = now + IDLE_WORK_NS
        self.counters["turns"] += 1
        self.outbox: dict[bytes, Pending] = defaultdict(Pending)
        self.admin_outbox: dict[bytes, list[bytes]] = defaultdict(list)
        self.absent_outbox: dict[str, Pending] = defaultdict(Pending)
        self.public: list = []  # the turn's events in parts (event lists, PublicRows)
        self.items = items = []  # in arrival order: answers keep their place among events
        if self._reload_wanted:  # SIGHUP
            self._reload_wanted = False
            self._reload_keys(items)
        for socket, admin in ((self.orders, False), (self.admin, True)):
            if socket not in ready:
                continue
            self.taken = 0  # commands and records read this turn: the turn's budget
            secured = self.authenticator is not None
            while self.taken < self.options.batch_limit:
                try:
                    frames = socket.recv_multipart(zmq.NOBLOCK, copy=not secured)
                except zmq.Again:
                    break
                self.taken += 1
                if secured:
                    self.peer = curve.user_id(frames[-1])  # once per frame
                    frames = [frame.bytes for frame in frames]
                    if not self._admitted(frames[0], admin):
                        continue
                self._take(frames, admin, items)
        now = time.monotonic_ns()
        self._expire_sessions(now, items)
        self._watch_clock(now)
        if self._clock_due(now):
            items.append(Item(None, True, Clock(), encode(Clock())))
        self.items = None
        if items:
            self._sequence(items)
        self._send()
        for component in (self.market_data, self.trade_stream):
            for socket in component.sockets:
                if socket in ready:
                    component.handle(socket)
        self.snapshot_writer.reap()
        if self._snapshot_wanted and not self.snapshot_writer.busy:
            self._snapshot_wanted = False
            self._snapshot()

    def _clock_due(self, now: int) -> bool:
        exchange = self.exchange
        return bool(
            self.config.schedule
            and exchange.date
            and now - self.last_command_ns >= self.options.clock_ms * 1_000_000
        )

    def _stamp(self) -> int:
        """The time of a turn's commands: the engine's clock, never before the last stamp (a
        restart on a system clock set back)."""
        self.last_ts = max(self._engine_now(), self.last_ts)
        return self.last_ts

    def _engine_now(self) -> int:
        return self._clock_origin_ns + elapsed_ns() - self._clock_base_ns

    def _watch_clock(self, now: int) -> None:
        """Once per CLOCK_WATCH_NS (`now`: monotonic), compare the system clock with the
        engine's; say when they first differ by CLOCK_GAP_NS or more, and when they agree
        again (not in a rehearsal, whose clock is meant to differ)."""
        if self.options.clock_start_ns is not None or now < self._clock_watch_due_ns:
            return
        self._clock_watch_due_ns = now + CLOCK_WATCH_NS
        gap = time.time_ns() - self._engine_now()
        apart = abs(gap) >= CLOCK_GAP_NS
        if apart and not self._clock_gap_said:
            self.log(
                f"WARNING: the system clock is {abs(gap) / 1e9:,.1f} s "
                f"{'ahead of' if gap > 0 else 'behind'} the engine's. The engine keeps its "
                f"own (the system clock at its start plus the time elapsed since), so its "
                f"stamps and the market's calendar do not follow the step; if the system "
                f"clock is now right, restart the engine at a quiet moment (after the close) "
                f"to take it"
            )
        elif not apart and self._clock_gap_said:
            self.log("the system clock agrees with the engine's again")
        self._clock_gap_said = apart


def serve(config: MarketConfig, options: Options, log: Callable[[str], None] | None = None) -> int:
    """Open the service and run it (its log `log`, a LogLines by default); a start-up that
    fails closes what it opened and raises (`cxe serve` says why, exit status 2)."""
    service = EngineService(config, options, log)
    try:
        service.open()
    except BaseException:
        service.close()
        raise
    return service.run()
