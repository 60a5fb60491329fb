"""The engine service: the one process that owns the sockets, the journal and the exchange.

One thread runs `EngineService.run`: each turn it polls, drains up to `batch_limit` inbound
messages (order entry and admin), and for everything that reaches the core it stamps
(sequence, time from the service's clock), journals the wire bytes it received, applies
(`Exchange.apply_stamped` for a message, one `Exchange.apply_batch` for each run of records
frames: checked as a run, journaled as one batch record of the bodies as received, its
private replies encoded from the event rows by engine.gateway.replies), fsyncs once, and
only then sends what the turn produced (group commit). Invariants:
- nothing the core caused is sent before the journal holds the command durably (with
  `fsync` on); a failed write or fsync stops the service (exit status 3) without sending;
- a client's frame can never stop the loop: what cannot be decoded, is not permitted, or is
  too large is answered to its sender (or counted where there is no one to answer) and nothing
  is sequenced for it; a message is only sequenced once it has decoded as a command;
- a gateway acts only for the members its config lists; a member's private events go to each
  session of each gateway listing the member (drop copy); a send that fails, and what is for
  a gateway with no session, is kept for the gateway (engine.gateway.sessions);
- the core is a pure function of the journal: restart = latest snapshot + journal after it,
  and the state hash equals an uninterrupted run's;
- the service's clock never goes backwards across a restart (stamps are max(now, last));
- with a [security] config every socket is a CURVE server failing closed (`_secure`,
  engine.gateway.security); a frame is read only if its connection's key (ZMQ User-Id) is
  a gateway's on orders or an operator's on admin and not revoked since it connected, and a
  Logon must name the key's own gateway; without it the service says so loudly and binds to
  loopback only (unless `insecure`).
Sockets: orders (ROUTER, ROUTER_MANDATORY, non-blocking sends), admin (ROUTER), market data
(PUB and its snapshot ROUTER, engine.gateway.marketdata): public events are published after
the turn's fsync, like every other output; the trade stream (ROUTER,
engine.gateway.tradestream): clearing events into DATA/trades.log after the fsync, and from
it to clearing's consumers.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import zmq

from engine.codec import COMMAND_DTYPE
from engine.config import MarketConfig, load_market
from engine.core import Exchange
from engine.core.events import rejected
from engine.core.records import words_of
from engine.core.rows import decode as decode_rows
from engine.core.rows import reject_wording
from engine.core.snapshot import restore, snapshot_exchange
from engine.core.validation import reject_text
from engine.gateway import security as curve
from engine.gateway import wire
from engine.gateway.marketdata import MarketDataPublisher
from engine.gateway.replies import Encoded, Pending, PrivateReplies, first_surrogate_key
from engine.gateway.sessions import Session, Sessions
from engine.gateway.status import OrderStatusTable
from engine.gateway.tradestream import TradeStream
from engine.journal.commandlog import BatchRecord
from engine.journal.recovery import restore_latest
from engine.journal.segments import Journal, replay
from engine.journal.snapshot import write_atomically
from engine.protocol import (
    AmendOrder,
    AuctionBid,
    Audience,
    CancelOrder,
    Clock,
    Command,
    DayClosed,
    EndOfDay,
    MalformedMessage,
    MassCancel,
    NewOrder,
    PhaseChanged,
    PickOrder,
    RejectCode,
    StartOfDay,
    encode,
)
from engine.types import Phase

MEMBER_COMMANDS = (NewOrder, CancelOrder, AmendOrder, PickOrder, MassCancel, AuctionBid)
EXIT_JOURNAL_FAILED = 3
HEARTBEAT_BODY = wire.pack([wire.encode_message(wire.Heartbeat())])
HEARTBEAT_NS = 1_000_000_000  # market data says where it is after a second without events
SMALL_FRAME = 8  # records frames up to this size are checked record by record, not with numpy
# a run of at most this many records is answered by decoding its rows into events (one decode
# costs less than the encoder's fixed costs plus the public rows' decode: `bench.e2e steps`)
SMALL_RUN = 32


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


@dataclass
class Item:
    """One thing to sequence: a decoded command (`wire_bytes` as received) or a records
    frame; `origin` is the routing id of the session (or admin peer) that sent it."""

    origin: bytes | None
    admin: bool
    command: Command | None = None
    wire_bytes: bytes = b""
    records: int = 0  # a records frame: how many (its body is `wire_bytes`)
    resend: bool = False
    replies: list[bytes] | None = None  # an answer that needs no sequencing, kept in order


def status_path(snapshots: Path, seq: int) -> Path:
    """The order status table written beside the snapshot at `seq`."""
    return snapshots / f"orders-{seq:016d}.msgpack"


class JournalFailed(RuntimeError):
    pass


class EngineService:
    def __init__(
        self, config: MarketConfig, options: Options, log: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self.options = options
        self.log = log or (lambda line: print(line, flush=True))
        self.data_dir = Path(options.data_dir)
        self.sessions = Sessions(config)
        self.status = OrderStatusTable()
        self.counters = dict.fromkeys(
            ("turns", "sequenced", "fsyncs", "malformed_frames", "unknown_peers"), 0
        )
        self.stopping = False
        self.exchange: Exchange | None = None
        self.journal: Journal | None = None
        self.context: zmq.Context | None = None
        self.trade_stream: TradeStream | None = None
        self.endpoints: dict[str, str] = {}
        self.last_ts = 0
        self.last_command_ns = self._started_ns = time.monotonic_ns()
        self.last_published_ns = self._started_ns
        self._snapshot_wanted = False
        self.staged: list[Item] = []  # records frames of the turn, not yet applied
        self.turn_ts = 0  # the stamp of the turn's commands
        self.codes = [i.code for i in config.instruments]
        self.member_ids = [m.id for m in config.members]
        self.replies = PrivateReplies(self.codes, reject_wording(config.instruments))
        self.items: list[Item] | None = None
        self.taken = 0
        self.authenticator: curve.Authenticator | None = None
        self.peer = ""  # the User-Id of the frame being read ("" in plain mode)
        self.peers: dict[bytes, str] = {}  # routing id -> User-Id, to end revoked keys' peers
        self.revoked_peers: set[bytes] = set()
        self._reload_wanted = False

    # -- start and stop ----------------------------------------------------------------------------

    def open(self) -> None:
        """Recover the state, warm the compiled code, then bind (in that order: nothing is
        accepted before the engine can answer at speed)."""
        self._check_mode()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self.exchange = self._recover()
        self.log(
            f"recovered seq {self.exchange.seq} in {time.perf_counter() - started:.2f} s, "
            f"state hash {self.exchange.state_hash()}"
        )
        warm(self.config)
        self.journal = Journal(self.data_dir / "journal")
        if self.journal.discarded:
            self.log(f"journal: cut a torn tail of {self.journal.discarded} bytes (a crash)")
        self._bind()

    def _check_mode(self) -> None:
        """With [security]: every key file there and readable, every key well formed and none
        shared (before anything is recovered or bound). Without: say so loudly, and bind to
        loopback only unless insecure."""
        options = self.options
        if self.config.security is not None:
            curve.check(self.config.security)
            return
        self.log(curve.PLAIN_WARNING)
        exposed = curve.off_loopback(
            [options.orders, options.admin, options.market_data, options.snapshots, options.trades]
        )
        if exposed and not options.insecure:
            raise ValueError(
                f"plain mode binds to loopback only, not {exposed}: give the config a "
                "[security] section (docs/SECURITY.md), or --insecure to accept the risk"
            )

    def _recover(self) -> Exchange:
        """The latest snapshot (and the order status table written beside it), then the
        journal after it, whose events the status table takes in."""
        journal, snapshots = self.data_dir / "journal", self.data_dir / "snapshots"
        journal.mkdir(exist_ok=True)
        exchange, snapshot = restore_latest(
            snapshots, partial(Exchange, self.config), partial(restore, self.config)
        )
        if snapshot is not None:
            self.log(f"snapshot {snapshot.path.name} (seq {snapshot.seq})")
            table = status_path(snapshots, snapshot.seq)
            if table.exists():
                self.status.load(table.read_bytes())
        codes = [i.code for i in self.config.instruments]
        for record, result in replay(journal, exchange):
            if type(record) is BatchRecord:
                self.status.record_rows(result, codes)
            else:
                self._observe(record.command, result, replaying=True)
        self.last_ts = exchange.state.ts_ns
        return exchange

    def _secure(self, socket: zmq.Socket, domain: str) -> None:
        """Harden a server socket before it binds: a CURVE server in ZAP `domain`
        (security.DOMAINS), failing closed; nothing in plain mode."""
        if self.authenticator is not None:
            curve.secure_server(socket, self.server_keys, domain)

    def _bind(self) -> None:
        options = self.options
        self.context = context = zmq.Context()
        security = self.config.security
        if security is not None:
            self.server_keys = curve.server_keys(security)
            self.authenticator = curve.start_authenticator(context, security)
            self.log(f"CURVE on every socket: {len(self.authenticator.table)} keys admitted")
        self.orders = context.socket(zmq.ROUTER)
        self._secure(self.orders, "orders")
        self.orders.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.orders.setsockopt(zmq.SNDHWM, options.sndhwm)
        self.orders.setsockopt(zmq.LINGER, 0)
        self.orders.bind(options.orders)
        self.admin = context.socket(zmq.ROUTER)
        self._secure(self.admin, "admin")
        self.admin.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.admin.setsockopt(zmq.LINGER, 0)
        self.admin.bind(options.admin)
        self.market_data = MarketDataPublisher(
            context, options.market_data, options.snapshots, self.exchange,
            secure=partial(self._secure, domain="market_data"),
        )  # fmt: skip
        self.trade_stream = TradeStream(
            context, options.trades, self.data_dir, self.exchange,
            secure=partial(self._secure, domain="admin"),  # clearing records: operators only
        )  # fmt: skip
        self.endpoints = {
            "orders": self.orders.getsockopt_string(zmq.LAST_ENDPOINT),
            "admin": self.admin.getsockopt_string(zmq.LAST_ENDPOINT),
            "market_data": self.market_data.pub_endpoint,
            "snapshots": self.market_data.snapshot_endpoint,
            "trades": self.trade_stream.endpoint,
        }
        self.poller = zmq.Poller()
        components = (self.market_data, self.trade_stream)
        for socket in (self.orders, self.admin, *(s for c in components for s in c.sockets)):
            self.poller.register(socket, zmq.POLLIN)
        path = self.data_dir / "endpoints.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({**self.endpoints, "pid": os.getpid()}))
        os.replace(temporary, path)
        for name, endpoint in self.endpoints.items():
            self.log(f"{name.replace('_', ' ')} on {endpoint}")

    def close(self, sync: bool = True) -> None:
        """Close the sockets and the journal (synced first unless it has failed: then
        nothing more is written, recovery takes it from its last whole record)."""
        if self.journal is not None:
            if sync:
                self.journal.sync()
                self.journal.close()
            self.journal = None
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self.context is not None:
            if self.trade_stream is not None:
                self.trade_stream.close()
            self.context.destroy(linger=0)  # every socket bound so far, whichever they are
            self.context = None

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
        try:
            while not self.stopping:
                self.turn(100)
        except JournalFailed as exc:
            self.log(f"journal failed, stopping without acknowledging: {exc}")
            self.close(sync=False)
            return EXIT_JOURNAL_FAILED
        self.close()
        self.log(f"stopped at seq {self.exchange.seq}, state hash {self.exchange.state_hash()}")
        return 0

    # -- one turn ----------------------------------------------------------------------------------

    def turn(self, timeout_ms: int) -> None:
        ready = dict(self.poller.poll(timeout_ms))
        self.counters["turns"] += 1
        self.outbox: dict[bytes, Pending] = defaultdict(Pending)
        self.admin_outbox: dict[bytes, list[bytes]] = defaultdict(list)
        self.absent_outbox: dict[str, Pending] = defaultdict(Pending)
        self.public: list = []
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
        if self._snapshot_wanted:
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
        """The time of a turn's commands: now (or the rehearsal clock), never before the
        last stamp (a restart, a clock stepped back)."""
        start = self.options.clock_start_ns
        elapsed = time.monotonic_ns() - self._started_ns
        now = time.time_ns() if start is None else start + elapsed
        self.last_ts = max(now, self.last_ts)
        return self.last_ts

    # -- inbound -----------------------------------------------------------------------------------

    def _admitted(self, rid: bytes, admin: bool) -> bool:
        """Whether the frame's key (self.peer) may use this socket: its kind of identity,
        and not revoked since it connected. A refused frame is answered and not read."""
        prefix = "operator:" if admin else "gateway:"
        self.peers[rid] = self.peer
        if self.peer.startswith(prefix) and rid not in self.revoked_peers:
            return True
        why = "was revoked" if rid in self.revoked_peers else f"is {self.peer or 'unknown'!r}"
        endpoint = "admin" if admin else "orders"
        text = f"this connection's key {why}: the {endpoint} endpoint takes {prefix[:-1]} keys"
        self._refuse(rid, admin, text, RejectCode.UNAUTHORISED)
        return False

    def _reload_keys(self, items: list[Item], rid: bytes | None = None) -> None:
        """Reread the [security] keys (the config file's, if the service was started from
        one): revoked keys are refused from now on and their open sessions end."""
        try:
            if self.authenticator is None:
                raise ValueError("the engine runs in plain mode (no [security]): no keys")
            fresh = None
            if self.options.config_path is not None:
                fresh = load_market(self.options.config_path).security
                if fresh is None:
                    raise ValueError(f"{self.options.config_path} has no [security] section now")
            revoked = self.authenticator.reload(fresh)
        except ValueError as exc:
            self.log(f"keys not reloaded: {exc}")
            if rid is not None:
                self._refuse(rid, True, f"keys not reloaded: {exc}")
            return
        for peer, identity in list(self.peers.items()):
            if identity in revoked:
                self.revoked_peers.add(peer)
                self._end_session(peer, f"key of {identity} revoked", items)
        admitted = len(self.authenticator.table)
        self.log(f"keys reloaded: {admitted} admitted, revoked {sorted(revoked)}")
        if rid is not None:
            self._reply(rid, True, [wire.encode_message(wire.KeysReloaded(sorted(revoked)))])

    def _take(self, frames: list[bytes], admin: bool, items: list[Item]) -> None:
        """Read one inbound message: queue what is to be sequenced, answer the rest."""
        if len(frames) != 3 or frames[1] not in wire.KINDS:
            self.counters["malformed_frames"] += 1
            if frames:
                kinds = b", ".join(wire.KINDS).decode()
                self._refuse(frames[0], admin, f"expected two frames, a kind ({kinds}) and a body")
            return
        rid, kind, body = frames
        session = None if admin else self.sessions.by_routing_id.get(rid)
        if session is not None:
            session.last_heard_ns = time.monotonic_ns()  # any frame: a records flow too
        try:
            if kind == wire.RECORDS:
                if session is None:
                    raise wire.FrameRefused("log on first (Logon), then send records")
                n = wire.records_count(body)
                self._permit_records(session, body, n)
                items.append(Item(rid, False, records=n, wire_bytes=body))
                self.taken += n
                self.sessions.count(session.gateway.id, "records", n)
                return
            messages = wire.split_messages(body)
        except wire.FrameRefused as exc:
            self.counters["malformed_frames"] += 1
            if session is not None:
                self.sessions.count(session.gateway.id, "malformed")
            self._refuse(rid, admin, str(exc), exc.code)
            return
        self.taken += len(messages)
        for raw in messages:
            self._take_message(rid, admin, session, bytes(raw), kind == wire.RESEND, items)
            if session is None and not admin:
                session = self.sessions.by_routing_id.get(rid)  # a Logon just now

    def _take_message(
        self,
        rid: bytes,
        admin: bool,
        session: Session | None,
        raw: bytes,
        resend: bool,
        items: list[Item],
    ) -> None:
        try:
            message = wire.decode_message(raw)
        except MalformedMessage as exc:
            self.counters["malformed_frames"] += 1
            if session is not None:
                self.sessions.count(session.gateway.id, "malformed")
            reply = rejected(
                0, None, RejectCode.MALFORMED, reject_text(RejectCode.MALFORMED, str(exc))
            )
            self._reply(rid, admin, [encode(reply)])
            return
        if isinstance(message, wire.Logon):
            self._log_on(rid, admin, message)
            return
        if isinstance(message, wire.Heartbeat):
            self._reply(rid, admin, [wire.encode_message(wire.Heartbeat())])
            return
        if isinstance(message, wire.Logout):
            if session is not None:
                self._end_session(rid, "logged out", items)
            return
        if admin:
            self._take_operator(rid, message, raw, items)
            return
        if session is None:
            self._refuse(rid, False, "log on first (Logon)", RejectCode.UNAUTHORISED)
            return
        if not isinstance(message, MEMBER_COMMANDS):
            name = type(message).__name__
            self.sessions.count(session.gateway.id, "rejects")
            text = f"{name} is an operator command: send it to the admin endpoint"
            self._refuse(rid, False, text, RejectCode.UNAUTHORISED)
            return
        if message.member not in session.gateway.members:
            self.sessions.count(session.gateway.id, "rejects")
            text = reject_text(
                RejectCode.UNAUTHORISED,
                f"gateway {session.gateway.id!r} may act for members "
                f"{session.gateway.members}, not {message.member}",
            )
            self._reply(rid, False, [encode(rejected(0, message, RejectCode.UNAUTHORISED, text))])
            return
        self.sessions.count(session.gateway.id, "commands")
        items.append(Item(rid, False, message, raw, resend=resend))

    def _take_operator(self, rid: bytes, message, raw: bytes, items: list[Item]) -> None:
        if isinstance(message, wire.ReloadKeys):
            self._reload_keys(items, rid)
        elif isinstance(message, wire.Status):
            self._reply(rid, True, [wire.encode_message(self._status_report())])
        elif isinstance(message, wire.SnapshotNow):
            self._snapshot_wanted = True
            self._reply(rid, True, [wire.encode_message(wire.Heartbeat())])
        elif isinstance(message, MEMBER_COMMANDS):
            name = type(message).__name__
            self._refuse(rid, True, f"{name} is a member's command: gateways send it",
                         RejectCode.UNAUTHORISED)  # fmt: skip
        else:
            items.append(Item(rid, True, message, raw))

    def _permit_records(self, session: Session, body: bytes, n: int) -> None:
        """FrameRefused unless every record's member is one the session's gateway lists (a
        lookup per record: no set operation on a frame of one or a few records)."""
        allowed = self.sessions.allowed(session.gateway.id)
        table = self.sessions.allowed_table(session.gateway.id)
        if n <= SMALL_FRAME or table is None:
            members = wire.record_members(body, n)
            bad = [i for i, m in enumerate(members) if m not in allowed]
        else:
            members = np.frombuffer(body, COMMAND_DTYPE)["member"]
            inside = (members >= 0) & (members < len(table))
            bad = np.flatnonzero(~inside | ~table[np.where(inside, members, 0)]).tolist()
        if bad:
            i = bad[0]
            raise wire.FrameRefused(
                f"record {i}: gateway {session.gateway.id!r} may act for members "
                f"{session.gateway.members}, not {int(members[i])}; nothing in the "
                "frame was taken",
                RejectCode.UNAUTHORISED,
            )

    def _log_on(self, rid: bytes, admin: bool, logon: wire.Logon) -> None:
        gateway = self.config.gateway(logon.gateway)
        if admin or gateway is None:
            self._refuse(rid, admin, f"unknown gateway {logon.gateway!r}", RejectCode.UNAUTHORISED)
            return
        if self.authenticator is not None and self.peer != f"gateway:{gateway.id}":
            text = f"this connection's key is {self.peer!r}: it may not log on as {gateway.id!r}"
            self._refuse(rid, admin, text, RejectCode.UNAUTHORISED)
            return
        cancel = gateway.cancel_on_disconnect
        if logon.cancel_on_disconnect is not None:
            cancel = logon.cancel_on_disconnect
        heartbeat_ms = min(max(logon.heartbeat_ms, 100), 60_000)
        now = time.monotonic_ns()
        self.sessions.log_off(rid)  # a second logon on one connection: its backlog is kept
        self.sessions.log_on(Session(rid, gateway, cancel, heartbeat_ms * 1_000_000, now))
        private = self.exchange.state.private_seq
        kept = self.sessions.kept.pop(gateway.id, ())
        accepted = wire.LogonAccepted(
            gateway.id, list(gateway.members), heartbeat_ms, cancel,
            {m: private.get(m, 0) for m in gateway.members}, len(kept),
            [i.code for i in self.config.instruments], self.exchange.date,
        )  # fmt: skip
        self.outbox[rid].append(wire.encode_message(accepted))
        self._flush_session(rid)
        session = self.sessions.by_routing_id[rid]
        session.backlog.extend(kept)
        self._drain_backlog(session)
        self.log(f"gateway {gateway.id} logged on ({len(kept)} kept frames sent)")

    def _expire_sessions(self, now: int, items: list[Item]) -> None:
        for rid, session in list(self.sessions.by_routing_id.items()):
            if now - session.last_heard_ns > 3 * session.heartbeat_ns:
                self._end_session(rid, "silent for three heartbeats", items)

    def _end_session(self, rid: bytes, why: str, items: list[Item]) -> None:
        session = self.sessions.log_off(rid)
        if session is None:
            return
        self.log(f"gateway {session.gateway.id} session ended: {why}")
        if session.cancel_on_disconnect:
            for member in session.gateway.members:
                command = MassCancel(f"cancel-on-disconnect-{self.exchange.seq}", member)
                items.append(Item(None, False, command, encode(command)))

    # -- sequence, journal, apply ------------------------------------------------------------------

    def _sequence(self, items: list[Item]) -> None:
        exchange, journal = self.exchange, self.journal
        self.turn_ts = ts = self._stamp()
        first = exchange.seq
        self.staged: list[Item] = []
        try:
            for item in items:
                if item.records:
                    self.staged.append(item)  # checked, journaled and applied with its run
                    continue
                self._apply_staged()  # what follows comes after the records' events
                if item.replies is not None:
                    self._reply(item.origin, item.admin, item.replies)
                    continue
                command = item.command
                if item.resend and isinstance(command, NewOrder):
                    known = self.status.status(exchange, command)
                    if known is not None:
                        self._reply(item.origin, False, [wire.encode_message(known)])
                        continue
                seq = exchange.seq + 1
                day = command.date if isinstance(command, StartOfDay) else None
                journal.append_encoded(seq, ts, item.wire_bytes, day)
                events = exchange.apply_stamped(seq, ts, command)
                self.counters["sequenced"] += 1
                self._observe(command, events)
                self._route(item, events)
            self._apply_staged()
            if exchange.seq == first:
                return
            self.last_command_ns = time.monotonic_ns()
            if self.options.fsync:
                journal.sync()
                self.counters["fsyncs"] += 1
            else:
                journal.flush()
        except OSError as exc:
            raise JournalFailed(str(exc)) from exc

    def _checked_run(self) -> tuple[np.ndarray, list[Item]]:
        """The staged records frames that pass the record checks (engine.core.records), as
        one run stamped to follow the exchange's seq with the turn's time. The run is checked
        as a whole; only when that fails is each frame checked alone, and a frame with a bad
        record is refused (nothing in it is taken) and left out."""
        staged, self.staged = self.staged, []
        seq = self.exchange.seq
        run = writable_records(bytearray().join(i.wire_bytes for i in staged))
        try:
            check_records(stamped(run, seq, self.turn_ts), seq)
        except ValueError:
            good = []
            for item in staged:
                try:
                    check_records(stamped(writable_records(bytearray(item.wire_bytes)), 0, 0), 0)
                except ValueError as exc:
                    session = self.sessions.by_routing_id.get(item.origin)
                    if session is not None:
                        self.sessions.count(session.gateway.id, "malformed")
                    self._refuse(item.origin, False, f"{exc}; nothing in the frame was taken")
                    continue
                good.append(item)
            staged = good
            if not staged:
                return run[:0], staged
            joined = bytearray().join(i.wire_bytes for i in staged)
            run = stamped(writable_records(joined), seq, self.turn_ts)
        return run, staged

    def _apply_staged(self) -> None:
        """Apply the staged records frames of the turn (consecutive in arrival order) in one
        compiled call, after journaling them as one batch record: the frames' bodies as
        received, back to back (recovery applies consecutive batch records as one run)."""
        if not self.staged:
            return
        records, staged = self._checked_run()
        if not staged:
            return
        exchange, state = self.exchange, self.exchange.state
        body = staged[0].wire_bytes if len(staged) == 1 else b"".join(i.wire_bytes for i in staged)
        self.journal.append_batch(exchange.seq + 1, self.turn_ts, body)
        positions = {"public": state.public_seq, "clearing": state.clearing_seq,
                     "private": dict(state.private_seq)}  # fmt: skip
        rows = exchange.apply_batch(records)
        self.counters["sequenced"] += len(records)
        encoded = None
        if len(records) > SMALL_RUN:
            encoded = self.replies.encode(rows, positions["private"], self.member_ids)
        if encoded is None:  # a small run, or a row the encoder leaves to the decoder
            events = decode_rows(rows, self.config.instruments, positions)
            self._observe(None, events)
            self._route(None, events)
            return
        if encoded.accepted.size:
            self.status.record_accepted(encoded.accepted_rows(rows), self.codes)
        self._route_encoded(encoded)
        public_rows = encoded.public_rows(rows)
        if not public_rows:
            return
        positions["private"] = {}  # the private events are encoded: decode the others only
        public = decode_rows(public_rows, self.config.instruments, positions)
        public = [e for e in public if type(e).audience is not Audience.PRIVATE]
        self._observe(None, public)
        self.public.extend(public)

    def _observe(self, command, events: list, replaying: bool = False) -> None:
        """What the service keeps from each command's events: the order status table, the
        phase log, the end-of-day snapshot."""
        if isinstance(command, StartOfDay):
            self.status.clear()
        self.status.record(events)
        if replaying:
            return
        for event in events:
            kind = type(event)
            if kind is PhaseChanged and not self.options.quiet:
                self.log(f"{event.instrument} {Phase(event.phase).name}")
            elif kind is DayClosed:
                self._snapshot_wanted = True
        if isinstance(command, EndOfDay) and not self.options.quiet:
            self.log(f"end of day at seq {self.exchange.seq}")

    # -- outbound ----------------------------------------------------------------------------------

    def _route(self, item: Item | None, events: list) -> None:
        """Queue each event for its audience: private events to every session of the
        member's gateways; the admin who sent a command gets all its events."""
        outbox, absent, routes = self.outbox, self.absent_outbox, self.sessions.routes
        encoded = [encode(e) for e in events]
        self.public.extend(events)  # the publisher takes the public ones
        for event, data in zip(events, encoded, strict=True):
            if type(event).audience is not Audience.PRIVATE:
                continue
            rids, gateways = routes(event.member)
            for rid in rids:
                outbox[rid].append(data)
            for gateway in gateways:
                absent[gateway].append(data)
        if item is not None and item.admin and item.origin is not None:
            self.admin_outbox[item.origin].extend(encoded)

    def _route_encoded(self, encoded: Encoded) -> None:
        """Queue a batch's encoded private events (engine.gateway.replies) as _route does:
        to each session of each gateway listing the member, or kept for a gateway with
        none; one run of events per peer."""
        sessions: dict[bytes, list[int]] = defaultdict(list)
        absent: dict[str, list[int]] = defaultdict(list)
        for member in set(encoded.members[: encoded.count].tolist()):
            rids, gateways = self.sessions.routes(member)
            for rid in rids:
                sessions[rid].append(member)
            for gateway in gateways:
                absent[gateway].append(member)
        for rid, members in sessions.items():
            self.outbox[rid].add_run(*encoded.select(members))
        for gateway, members in absent.items():
            self.absent_outbox[gateway].add_run(*encoded.select(members))

    def _reply(self, rid: bytes, admin: bool, encoded: list[bytes]) -> None:
        """Answer `rid`: after what it sent before in this turn (while the turn's messages are
        being read), or at once (while they are being applied)."""
        if self.items is not None:
            self.items.append(Item(rid, admin, replies=encoded))
        else:
            (self.admin_outbox if admin else self.outbox)[rid].extend(encoded)

    def _refuse(
        self, rid: bytes, admin: bool, text: str, code: RejectCode = RejectCode.MALFORMED
    ) -> None:
        self._reply(rid, admin, [wire.encode_message(wire.SessionRejected(int(code), text))])

    def _flush_session(self, rid: bytes) -> None:
        messages = self.outbox.pop(rid, None)
        if messages:
            self._send_body(rid, messages.body())

    def _send(self) -> None:
        self.trade_stream.publish(self.public)  # clearing events into trades.log, then sent
        if self.public:
            self.market_data.publish(self.public)
            self.last_published_ns = time.monotonic_ns()
        elif time.monotonic_ns() - self.last_published_ns > HEARTBEAT_NS:
            self.market_data.heartbeat()
            self.last_published_ns = time.monotonic_ns()
        for session in self.sessions.by_routing_id.values():
            if session.backlog:
                self._drain_backlog(session)
        for rid in list(self.outbox):
            self._flush_session(rid)
        now = time.monotonic_ns()
        for session in self.sessions.by_routing_id.values():
            if now - session.last_sent_ns >= session.heartbeat_ns and not session.backlog:
                self._send_body(session.routing_id, HEARTBEAT_BODY)
        for gateway, messages in self.absent_outbox.items():
            self.sessions.keep(gateway, messages.body())
        for rid, messages in self.admin_outbox.items():
            try:
                self.admin.send_multipart([rid, wire.MESSAGES, wire.pack(messages)], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counters["unknown_peers"] += 1  # an operator tool that has gone away
        self.admin_outbox.clear()

    def _drain_backlog(self, session: Session) -> None:
        backlog = session.backlog
        while backlog:
            try:
                self.orders.send_multipart(
                    [session.routing_id, wire.MESSAGES, backlog[0]], zmq.NOBLOCK
                )
            except zmq.ZMQError:
                return
            backlog.popleft()

    def _send_body(self, rid: bytes, body: bytes) -> None:
        session = self.sessions.by_routing_id.get(rid)
        if session is not None and session.backlog:
            self.sessions.defer(session, body)  # behind what is waiting: order is kept
            return
        try:
            self.orders.send_multipart([rid, wire.MESSAGES, body], zmq.NOBLOCK)
        except zmq.ZMQError:  # EAGAIN at the high-water mark, EHOSTUNREACH once gone
            if session is None:
                self.counters["unknown_peers"] += 1
                return
            self.sessions.defer(session, body)
            return
        if session is not None:
            session.last_sent_ns = time.monotonic_ns()

    # -- operator's views --------------------------------------------------------------------------

    def _status_report(self) -> wire.StatusReport:
        gateways = {
            gateway_id: {**counters, "sessions": len(self.sessions.of_gateway(gateway_id))}
            for gateway_id, counters in self.sessions.counters.items()
        }
        return wire.StatusReport(
            self.exchange.seq, self.exchange.state_hash(), dict(self.counters), gateways
        )

    def _snapshot(self) -> None:
        """A snapshot of the state after the turn's fsync (end of day, or asked for)."""
        snapshots = self.data_dir / "snapshots"
        path = snapshot_exchange(self.exchange, snapshots)
        write_atomically(status_path(snapshots, self.exchange.seq), self.status.dump())
        self.log(f"snapshot at seq {self.exchange.seq}: {path}")


def check_records(records: np.ndarray, last_seq: int) -> None:
    """ValueError naming the first bad record: the core's checks (engine.core.records), and
    no ClOrdID holding a surrogate (replies carry ClOrdIDs as msgpack strs)."""
    i = first_surrogate_key(words_of(records, last_seq))
    if i >= 0:
        key = bytes(records["cl_ord_id"][i])
        raise ValueError(f"record {i}: ClOrdID {key!r} holds a surrogate: it is not UTF-8")


def writable_records(data: bytearray) -> np.ndarray:
    """Records bodies joined, as a writable array of records (no copy)."""
    return np.frombuffer(data, COMMAND_DTYPE)


def stamped(records: np.ndarray, last_seq: int, ts_ns: int) -> np.ndarray:
    """`records` numbered on from `last_seq` and stamped `ts_ns`, in place."""
    records["seq"] = np.arange(last_seq + 1, last_seq + 1 + len(records))
    records["ts_ns"] = ts_ns
    return records


def warm(config: MarketConfig) -> None:
    """Compile (or load from the cache) every path an order can take, on a scratch exchange."""
    from engine.codec import records_of
    from engine.protocol import OpenCall, Uncross

    scratch = Exchange(config)
    day = config.next_trading_day(config.last_trading_day or "2026-01-01")
    scratch.apply(StartOfDay(day))
    code = config.instruments[0].code
    scratch.apply(OpenCall(code))
    scratch.apply(Uncross(code))
    members = [m.id for m in config.members] or [0]
    price = scratch.markets[code].reference
    size = config.instruments[0].min_qty
    orders = [
        NewOrder(f"w{i}", members[i % len(members)], code, i % 2, price, size) for i in range(4)
    ]
    for order in orders[:2]:
        scratch.apply(order)
    codes = [i.code for i in config.instruments]
    private = dict(scratch.state.private_seq)
    rows = scratch.apply_batch(records_of(orders[2:], codes, scratch.seq + 1, [0, 0]))
    encoded = PrivateReplies(codes, reject_wording(config.instruments)).encode(
        rows, private, members
    )
    if encoded is not None:
        encoded.select(members)


def serve(config: MarketConfig, options: Options) -> int:
    service = EngineService(config, options)
    try:
        service.open()
    except (OSError, ValueError, zmq.ZMQError) as exc:
        print(f"cxe serve: {exc}", file=sys.stderr)
        service.close()
        return 2
    return service.run()
