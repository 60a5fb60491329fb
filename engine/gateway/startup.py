"""Start-up and shut-down of the engine service (engine.gateway.service): recovery, the
mode check, the sockets bound, and closing.

Invariants:
- nothing is bound before the state is recovered and the compiled code warmed (`open`):
  nothing is accepted before the engine can answer at speed;
- the core is a pure function of the journal: recovery = latest snapshot (and the order status
  table written beside it, `status_path`) + the journal after it, and the state hash equals an
  uninterrupted run's; the service's clock resumes from the last stamp (never backwards);
- with a [security] config every socket is a CURVE server failing closed (`_secure`,
  engine.gateway.security) and every key is checked before anything is recovered or bound;
  without it the service says so loudly and binds to loopback only (unless `insecure`);
- orders is a ROUTER with ROUTER_MANDATORY and non-blocking sends; admin a ROUTER; market data
  (engine.gateway.marketdata) and the trade stream (engine.gateway.tradestream) bind their own;
  order entry's connections and market data's are served by ZeroMQ I/O threads of their own,
  so the feed's fan-out to many subscribers does not hold up the gateways' replies;
  the bound endpoints are written to DATA/endpoints.json atomically (temp file, rename);
- a journal is recovered only under the market it was written under (journal/market.json,
  `_bind_journal`), as a snapshot is; a journal holding segments without that file is
  refused, never taken as the config given's;
- a start that refuses changes nothing it could not prove: every check that can refuse
  (snapshot, market, acknowledged mark, journal reaching its snapshot, trade log past the
  state, a port in use) runs before the journal's torn tail is cut, journal/market.json and
  DATA/endpoints.json are written or DATA/acknowledged made (trades.log's missing records,
  derived from the journal, may have been rebuilt; journal/history made for a journal
  without one);
- one engine per data directory: `open` locks the directory (flock; DATA/engine.lock names
  the holder) before it recovers anything, or refuses to start naming the holder; `close`
  lets it go;
- `close` syncs the journal unless it has failed (then nothing more is written).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from functools import partial
from pathlib import Path

import zmq

from engine.config import MarketConfig
from engine.core import Exchange
from engine.core.rows import decode as decode_rows
from engine.core.rows import reject_wording
from engine.core.snapshot import fingerprint, restore
from engine.durable import write_atomically
from engine.framing import require_regular_file
from engine.gateway import security as curve
from engine.gateway.endpointsfile import ENDPOINTS_FILE, write_endpoints
from engine.gateway.marketdata import MAX_BATCH, MarketDataPublisher
from engine.gateway.public import PublicEncoder, event_run
from engine.gateway.readerlimit import (
    ADMIN_SHARE,
    FEED_SHARE,
    ORDERS_SHARE,
    SNAPSHOTS_SHARE,
    TRADES_SHARE,
    ReaderByteLimit,
    connection_cap,
    raise_descriptor_limit,
)
from engine.gateway.replies import PrivateReplies
from engine.gateway.sequencing import check_records
from engine.gateway.status import OrderStatusTable
from engine.gateway.tradestream import TRADES_FILE, TradeStream
from engine.gateway.zap import ZapHandler
from engine.journal.acknowledged import AcknowledgedMark
from engine.journal.commandlog import BatchRecord
from engine.journal.history import HISTORY_FILE, history_id, read_history_id
from engine.journal.recovery import restore_latest
from engine.journal.segments import Journal, last_journal_seq, list_segments, replay
from engine.journal.snapshot import Snapshot
from engine.protocol import NewOrder, StartOfDay

# the context's two I/O threads (AFFINITY bit masks): order entry's connections on one, the
# market data feed's on the other
ORDER_ENTRY_IO, MARKET_DATA_IO = 1, 2
LOCK_NAME = "engine.lock"  # in the data directory: held by the engine that runs on it
JOURNAL_MARKET = "market.json"  # in the journal directory: the market it was written under


def status_path(snapshots: Path, seq: int) -> Path:
    """The order status table written beside the snapshot at `seq`."""
    return snapshots / f"orders-{seq:016d}.msgpack"


class Startup:
    """The EngineService's start-up and shut-down (a part of it: the state is its own)."""

    def open(self) -> None:
        """Recover the state, warm the compiled code, then bind (in that order: nothing is
        accepted before the engine can answer at speed)."""
        self._check_mode()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for kept in (LOCK_NAME, ENDPOINTS_FILE):  # refused now, not once everything is bound
            require_regular_file(self.data_dir / kept)
        self._lock_data_dir()
        started = time.perf_counter()
        self.exchange = self._recover()
        self.log(
            f"recovered seq {self.exchange.seq} in {time.perf_counter() - started:.2f} s, "
            f"state hash {self.exchange.state_hash()}"
        )
        self._size_tables(self.options.day_orders)
        warm(self.config)
        self.acknowledged = AcknowledgedMark(self.data_dir)
        self._check_acknowledged()  # the checks first: a refused start changes nothing
        self._check_journal_reaches(self.exchange.seq)
        self.history = history_id(self.data_dir / "journal", self._snapshot_history or None)
        descriptors = raise_descriptor_limit()
        self.log(
            f"{descriptors:,} file descriptors; connections held at most: market data "
            f"{connection_cap(FEED_SHARE):,}, snapshots {connection_cap(SNAPSHOTS_SHARE):,}, "
            f"orders {connection_cap(ORDERS_SHARE):,}, admin {connection_cap(ADMIN_SHARE):,}, "
            f"trades {connection_cap(TRADES_SHARE):,}"
        )
        self._bind()  # the trade log's check, and a port in use, may still refuse
        self.journal = Journal(self.data_dir / "journal")
        if self.journal.discarded:
            self.log(f"journal: cut a torn tail of {self.journal.discarded} bytes (a crash)")
        self._write_journal_market()
        self._publish_endpoints()

    def _bind_journal(self, journal: Path) -> None:
        """A journal's commands mean what they did only under the market they were written
        under: `journal/market.json` names it (config name and fingerprint, its keys left
        out), and a journal that holds segments is refused under another, or without the
        file: a probe narrowed the block band in the config and restarted, and an
        acknowledged block trade was gone from the state; another removed the file and
        started under the wrong config, which replayed every order as a reject. A journal
        without segments is this config's: the file is written once the start has succeeded
        (`_write_journal_market`)."""
        path = journal / JOURNAL_MARKET
        require_regular_file(path)  # a FIFO there hung the start for good, holding the lock
        mine = {"name": self.config.name, "fingerprint": fingerprint(self.config)}
        self._unwritten_market = None
        if not list_segments(journal):
            self._unwritten_market = mine
            return
        if_known = (
            f"if you know it was written under the config given ({self.config.name!r}), "
            f"write its line into the file: {json.dumps(mine)}"
        )
        try:
            bound = json.loads(path.read_text())
            theirs = bound["fingerprint"]
            name = bound["name"]
        except FileNotFoundError:
            raise ValueError(
                f"{path} is missing: it names the market config the journal was written "
                f"under, and replayed under another, acknowledged commands could come out "
                f"otherwise. Restore it from a backup of this data directory; {if_known}"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path} cannot be read ({exc!r}): it names the market config the journal "
                f"was written under; restore it from a backup of this data directory; "
                f"{if_known}"
            ) from None
        if theirs != mine["fingerprint"]:
            raise ValueError(
                f"{journal} was written under market config {name!r} (fingerprint "
                f"{str(theirs)[:12]}), not the one given, {self.config.name!r} "
                f"({mine['fingerprint'][:12]}): replayed under other rules, commands "
                f"already acknowledged could come out otherwise. Start the engine "
                f"with the config the journal was written under (--config); a new "
                f"config begins in a fresh --data directory"
            )

    def _write_journal_market(self) -> None:
        """Name this config in journal/market.json, for a journal begun by this start."""
        if self._unwritten_market is not None:
            path = self.data_dir / "journal" / JOURNAL_MARKET
            write_atomically(path, json.dumps(self._unwritten_market).encode())
            self._unwritten_market = None

    def _cap(self, socket: zmq.Socket, name: str, share: int) -> None:
        """Hold `socket` to its share of the descriptors (engine.gateway.readerlimit's cap,
        without the readers' byte allowances), before it binds."""
        cap = ReaderByteLimit(
            socket, name, self.log, max_connections=connection_cap(share), allowances=False
        )
        self.caps.append(cap)

    def _check_journal_reaches(self, seq: int) -> None:
        """ValueError unless the journal is empty (begun after a snapshot, its old days
        archived) or ends at the state recovered: one ending before its snapshot cannot take
        the next command (a probe: the engine started, answered status, and stopped at the
        first command, at every restart). Read without writing; only a recovery that
        replayed nothing past its snapshot needs to look."""
        if self._replayed:
            return
        journal = self.data_dir / "journal"
        last = last_journal_seq(journal)
        if 0 < last < seq:
            raise ValueError(
                f"{journal}: the journal ends at seq {last}, before the snapshot recovered "
                f"(seq {seq}): records {last + 1}..{seq} are missing. Restore the journal's "
                f"missing segments from a backup or a replica; or, to go on from the snapshot "
                f"alone, move every segment out of the journal directory (an empty journal "
                f"may begin after a snapshot)"
            )

    def _check_acknowledged(self) -> None:
        """Refuse to start (fsync on) when the journal recovers to a seq short of the last one
        the engine acknowledged (engine.journal.acknowledged); with fsync off, say so (a
        machine crash may lose the journal's unsynced tail: the risk --no-fsync takes)."""
        missing = self.acknowledged.missing(self.exchange.seq)
        if not missing:
            return
        what = (
            f"the engine acknowledged commands up to seq {missing[-1]}, but the journal holds "
            f"them only to seq {missing[0] - 1}: {missing[-1] - missing[0] + 1:,} acknowledged "
            f"commands ({missing[0]}..{missing[-1]}) are missing"
        )
        if not self.options.fsync:
            self.log(f"WARNING: {what} (--no-fsync: a machine crash loses the unsynced tail)")
            return
        raise ValueError(
            f"{self.acknowledged.path}: {what} (a segment deleted, emptied or renamed, or an "
            f"older copy of the journal restored?). Restore the journal's missing records "
            f"and start again; or, to go on without them, remove {self.acknowledged.path} and "
            f"move {self.data_dir / TRADES_FILE} away (the engine rebuilds it from the "
            f"journal; keep it as the trace of what they traded)"
        )

    def _lock_data_dir(self) -> None:
        """Hold an advisory lock on the data directory itself and on DATA/engine.lock (the
        kernel drops both when the process ends, kill -9 too) for as long as the service
        runs: a second engine on the same directory would sequence under the same numbers
        into the same journal, and neither's could be recovered (a probe: both acknowledged
        seq 14-23). The directory's lock cannot be lost: engine.lock can be removed (the
        usual clean-up of a "stale lock"), and a second engine then locked a new file of
        that name while the first ran (a probe: both acknowledged seq 69-74); engine.lock's
        is the one engines before the directory's lock take (a probe ran one beside a newer
        one during an upgrade), and the file names the holder."""
        directory = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        lock = None
        try:
            fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock = open(self.data_dir / LOCK_NAME, "a+")  # noqa: SIM115 (held open until close)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(directory)
            if lock is not None:
                lock.close()
            try:
                holder = (self.data_dir / LOCK_NAME).read_text(errors="replace").strip()
            except FileNotFoundError:
                holder = ""
            raise ValueError(
                f"{self.data_dir} is in use by {holder or 'another process'}: one engine per "
                f"data directory; stop that one first, or give this one another --data"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"engine pid {os.getpid()}\n")
        lock.flush()
        self._lock = (directory, lock)

    def _size_tables(self, orders: int) -> None:
        """Room for a day of `orders` in the tables keyed by ClOrdID (see Options.day_orders):
        they grow only past it."""
        ids = self.exchange.state.cl_ord_ids
        try:
            ids.reserve(max(0, orders - len(ids)))
            self.status.reserve(orders)
        except MemoryError:
            raise ValueError(
                f"--day-orders {orders:,}: not enough memory for tables that size (about 0.3 "
                "KB an order): give the orders of the busiest day"
            ) from None
        megabytes = (ids.table.nbytes + self.status.accepted.table.nbytes) / 2**20
        self.log(f"ClOrdID tables sized for {orders:,} orders a day ({megabytes:.0f} MB)")

    def _check_mode(self) -> None:
        """Members no gateway may act for are said. With [security]: every key file there
        and readable, every key well formed and none shared (before anything is recovered or
        bound). Without: say so loudly, and bind to loopback only unless insecure."""
        options = self.options
        unlisted = self.config.members_without_gateway()
        if unlisted:  # a market file without [[gateways]]: every logon was refused, unsaid
            self.log(
                f"WARNING: members {unlisted} are in no [[gateways]] entry of the market: no "
                f"gateway may act for them (a Logon naming an unlisted gateway is refused); "
                f"list them under [[gateways]] (docs/market.example.toml)"
            )
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
        snapshots.mkdir(exist_ok=True)  # a file there: refused now, not at the first snapshot
        for unfinished in sorted(snapshots.glob("*.tmp")):  # a crash while writing it
            unfinished.unlink()
            self.log(f"removed {unfinished.name}, a snapshot file left unfinished by a crash")
        exchange, snapshot = restore_latest(
            snapshots, partial(Exchange, self.config), partial(restore, self.config)
        )
        self._snapshot_history = ""
        if snapshot is not None:
            self.log(f"snapshot {snapshot.path.name} (seq {snapshot.seq})")
            self._check_snapshot_history(snapshot, journal)
            self._snapshot_history = snapshot.history
            table = status_path(snapshots, snapshot.seq)
            require_regular_file(table)
            if not table.exists():
                self.log(
                    f"WARNING: {table.name}, the order status table of the snapshot, is "
                    f"absent: a resent NewOrder from before seq {snapshot.seq} is answered "
                    f"'done' whatever its state; restore the table to answer it as it is"
                )
            else:
                try:
                    self.status.load(table.read_bytes())
                except ValueError as exc:
                    raise ValueError(
                        f"cannot recover from {self.data_dir}: {table}: {exc}; move it away "
                        "to start without it (a resent NewOrder from before the snapshot is "
                        "then answered 'done')"
                    ) from exc
        self._bind_journal(journal)  # after the snapshot's own check of the config
        self._replayed = 0
        for record, result in replay(journal, exchange):
            self._replayed += 1
            if type(record) is BatchRecord:
                self.status.record_rows(result)
            else:
                self._observe(record.command, result, replaying=True)
        self.last_ts = exchange.state.ts_ns
        return exchange

    def _check_snapshot_history(self, snapshot: Snapshot, journal: Path) -> None:
        """A snapshot carries the history id of the journal it was taken from, and is refused
        under another's: a probe restored another data directory's snapshot (same config,
        same seq) and the engine started with a state neither directory had. With no history
        file beside a journal that holds segments, whose the snapshot is cannot be told: the
        start is refused too (a probe removed the file, and the engine took the foreign
        snapshot's id for its own), with the line to write if the snapshot is this one's."""
        if not snapshot.history:
            return  # a snapshot from before history ids: nothing to tell by
        ours = read_history_id(journal)
        path = journal / HISTORY_FILE
        if ours is None and list_segments(journal):
            raise ValueError(
                f"{path} is missing, so whether {snapshot.path.name} was taken from this "
                f"journal cannot be told (a snapshot from another data directory would mix "
                f"its state with this journal's commands). Restore {path.name} from a backup "
                f"of this data directory; or, knowing the snapshot is this directory's own, "
                f"write its id into the file: {snapshot.history}"
            )
        if ours is not None and snapshot.history != ours:
            raise ValueError(
                f"{snapshot.path} was taken from another journal (history {snapshot.history}), "
                f"not this data directory's ({ours}, in {path}): its state and this journal's "
                f"commands would mix. Restore this directory's own snapshot (or, if this "
                f"snapshot is its own, {path.name} was replaced: restore it), or move the "
                f"snapshot away (the one before it is then used, or the journal from its start)"
            )

    def _secure(self, socket: zmq.Socket, domain: str) -> None:
        """Harden a server socket before it binds: a CURVE server in ZAP `domain`
        (security.DOMAINS), failing closed; nothing in plain mode."""
        if self.authenticator is not None:
            curve.secure_server(socket, self.server_keys, domain)

    def _bind(self) -> None:
        options = self.options
        # two I/O threads: the first carries order entry, admin, snapshots and the trade stream,
        # the second the market data feed, whose writes to every subscriber's connection would
        # otherwise queue the gateways' replies behind them
        self.context = context = zmq.Context(io_threads=2)
        security = self.config.security
        if security is not None:
            self.server_keys = curve.server_keys(security)
            self.authenticator = curve.start_authenticator(context, security, self.log)
            self.zap = self.authenticator.zap
            self.log(f"CURVE on every socket: {len(self.authenticator.table)} keys admitted")
        else:  # plain mode: the feed's readers still come in through its admission
            self.zap = ZapHandler(context, None, self.log)
        self.orders = context.socket(zmq.ROUTER)
        self.orders.setsockopt(zmq.AFFINITY, ORDER_ENTRY_IO)
        self._secure(self.orders, "orders")
        self.orders.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.orders.setsockopt(zmq.SNDHWM, options.sndhwm)
        self.orders.setsockopt(zmq.LINGER, 0)
        self._cap(self.orders, "orders", ORDERS_SHARE)
        curve.allow_ipv6(self.orders, options.orders)
        self.orders.bind(options.orders)
        self.admin = context.socket(zmq.ROUTER)
        self._secure(self.admin, "admin")
        self.admin.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.admin.setsockopt(zmq.LINGER, 0)
        self._cap(self.admin, "admin", ADMIN_SHARE)
        curve.allow_ipv6(self.admin, options.admin)
        self.admin.bind(options.admin)
        refuse = None  # plain mode: no identity to refuse
        if self.authenticator is not None:
            refuse = partial(self.authenticator.refuse, "market_data")
        self.market_data = MarketDataPublisher(
            context, options.market_data, options.snapshots, self.exchange,
            secure=self._secure, zap=self.zap, affinity=MARKET_DATA_IO, refuse=refuse,
            log=self.log,
        )  # fmt: skip
        self.trade_stream = TradeStream(
            context, options.trades, self.data_dir, self.exchange,
            secure=partial(self._secure, domain="admin"),  # clearing records: operators only
            log=self.log, refuse_past=self.options.fsync,
        )  # fmt: skip
        if self.trade_stream.set_aside is not None:
            self.log(
                f"WARNING: trades.log held clearing events past the state recovered (clearing "
                f"event {self.exchange.state.clearing_seq}): the journal has lost commands "
                f"(--no-fsync: a machine crash loses its unsynced tail). They are kept in "
                f"{self.trade_stream.set_aside}; trades.log goes on from the journal"
            )
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

    def _publish_endpoints(self) -> None:
        """Write DATA/endpoints.json (once the start has succeeded: tools find the engine
        there) and say where it listens."""
        write_endpoints(self.data_dir, self.endpoints)
        for name, endpoint in self.endpoints.items():
            self.log(f"{name.replace('_', ' ')} on {endpoint}")

    def close(self, sync: bool = True) -> None:
        """Close the sockets and the journal (synced first unless it has failed: then
        nothing more is written, recovery takes it from its last whole record)."""
        self.snapshot_writer.wait(self.log)  # before the lock goes: it writes into the directory
        if self.journal is not None:
            if sync:
                self.journal.sync()
                self.journal.close()
            self.journal = None
        # every thread told first, then each waited for: each takes up to 50 ms to notice,
        # and one after the other they made every stop 0.25 s longer
        threads = [self.zap, *self.caps, *(self.market_data.limits if self.market_data else ())]
        for thread in threads:
            if thread is not None:
                thread.ask_to_stop()
        if self.zap is not None:
            self.zap.stop()  # the authenticator's, in CURVE mode
            self.zap = self.authenticator = None
        if self.context is not None:
            for cap in self.caps:
                cap.stop()
            self.caps = []
            if self.market_data is not None:
                self.market_data.close()
            if self.trade_stream is not None:
                self.trade_stream.close()
            self.context.destroy(linger=0)  # every socket bound so far, whichever they are
            self.context = None
        if self.acknowledged is not None:
            self.acknowledged.close()
            self.acknowledged = None
        if self._lock is not None:
            directory, lock = self._lock
            lock.close()
            os.close(directory)  # the data directory is free for the next engine
            self._lock = None


def warm(config: MarketConfig) -> None:
    """Compile (or load from the cache) every path an order can take, and an operator's block
    trade and end of day, on a scratch exchange."""
    from engine.codec import records_of
    from engine.protocol import BlockTrade, Close, EndOfDay, OpenCall, Uncross

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
        status = OrderStatusTable(codes)
        status.record_accepted(rows, encoded.accepted)
        status.lookup(members[0], orders[2].cl_ord_id)  # a resend's question
        public_rows = encoded.public_rows(rows)
        published = PublicEncoder(config.instruments).encode(public_rows, 0, 0)
        if published is not None:
            published.public.messages(len(codes) + 1, MAX_BATCH)
    events = decode_rows(rows, config.instruments, {"public": 0, "clearing": 0, "private": {}})
    event_run(events, lambda event: 0).messages(len(codes) + 1, MAX_BATCH)  # a small run's way
    check_records(records_of(orders[2:], codes, 1, [0, 0]), 0)
    # an operator's day: a block trade (its ClOrdID kernels) and the day's end (the books'
    # views); refused or not, each takes its kernels (a probe saw them load in the loop)
    block = config.instruments[0].block_min_qty
    scratch.apply(BlockTrade("wb", code, members[0], members[-1], price, block))
    tick = config.instruments[0].tick
    scratch.apply(NewOrder("wr", members[0], code, 0, price - tick, size))  # the close cancels
    scratch.apply(Close(code))
    scratch.apply(EndOfDay())
