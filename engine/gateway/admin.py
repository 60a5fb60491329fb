"""The admin socket's operator commands in the engine service (engine.gateway.service):
Status, SnapshotNow, ReloadKeys answered at once; the exchange's operator commands queued to
be sequenced.

Invariants:
- members' commands are refused on the admin endpoint (gateways send them);
- a snapshot asked for is taken after the turn's fsync and written by a child process,
  beside the order status table at the same seq (`_snapshot`), atomically; one asked for
  before anything is sequenced is refused (seq 0 is the empty state); one that cannot be
  written is logged and counted (`snapshot_failures`) and the engine goes on; one written
  is logged and counted (`snapshots_written`) when the child is reaped;
- a key reload that fails leaves the keys in force and says why; one that succeeds refuses
  revoked keys from then on and ends their sessions; the sockets that do not check each
  frame's identity and admit a revoked identity (market data and snapshots: any; the trade
  stream: operators) have every connection ended, so no revoked key keeps one open.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

import zmq

from engine.config import load_market
from engine.core.snapshot import snapshot_exchange
from engine.core.validation import reject_text
from engine.durable import write_atomically
from engine.gateway import wire
from engine.gateway.intake import MEMBER_COMMANDS, Item
from engine.gateway.security import DOMAINS, not_served
from engine.gateway.startup import status_path
from engine.journal.snapshot import prune_snapshots, snapshot_name
from engine.protocol import RejectCode

_TABLE = re.compile(r"orders-(\d{16})\.msgpack", re.ASCII)  # startup.status_path's names
NOTHING_TO_SNAPSHOT = reject_text(
    RejectCode.UNSUPPORTED_IN_PHASE,
    "nothing sequenced yet (seq 0): a restart starts from the empty state without a "
    "snapshot; ask again after the first command",
)


def remove_orphan_tables(snapshots: Path, seq: int) -> None:
    """Remove the order status tables before `seq` whose snapshot was never written (a crash
    or a failure between the two writes: a probe found them piling up); a table beside its
    snapshot is kept with it."""
    for table in snapshots.glob("orders-*.msgpack"):
        match = _TABLE.fullmatch(table.name)
        if (
            match
            and int(match[1]) < seq
            and not (snapshots / snapshot_name(int(match[1]))).exists()
        ):
            with contextlib.suppress(OSError):
                table.unlink()


class Admin:
    """The EngineService's operator commands (a part of it: the state is its own)."""

    def _take_operator(self, rid: bytes, message, raw: bytes, items: list[Item]) -> None:
        if isinstance(message, wire.ReloadKeys):
            self._reload_keys(items, rid)
        elif isinstance(message, wire.Status):
            self._reply(rid, True, [wire.encode_message(self._status_report(message))])
        elif isinstance(message, wire.SnapshotNow):
            if self.exchange.seq == 0 and not any(item.replies is None for item in items):
                self._refuse(rid, True, NOTHING_TO_SNAPSHOT, RejectCode.UNSUPPORTED_IN_PHASE)
                return
            self._snapshot_wanted = True
            directory = str((self.data_dir / "snapshots").resolve())
            requested = wire.SnapshotRequested(self.exchange.seq, directory)
            self._reply(rid, True, [wire.encode_message(requested)])
        elif isinstance(message, MEMBER_COMMANDS):
            name = type(message).__name__
            self._refuse(rid, True, f"{name} is a member's command: gateways send it",
                         RejectCode.UNAUTHORISED)  # fmt: skip
        else:
            items.append(Item(rid, True, message, raw))

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
        self._end_unchecked_connections(revoked)
        if rid is not None:
            self._reply(rid, True, [wire.encode_message(wire.KeysReloaded(sorted(revoked)))])

    def _end_unchecked_connections(self, revoked: set[str]) -> None:
        """Market data and the trade stream take no identity from their peers' frames (a PUB
        socket cannot drop one peer): where a revoked identity may be connected, every
        connection ends and each peer is admitted again, or refused, as it reconnects."""
        parts = (
            ("market data and snapshots", "market_data", self.market_data),
            ("trade stream", "admin", self.trade_stream),
        )
        for name, domain, part in parts:
            if not any(identity.startswith(DOMAINS[domain]) for identity in revoked):
                continue
            try:
                part.end_connections()
            except zmq.ZMQError as exc:
                self.log(not_served(name, exc))
                continue
            self.log(f"{name}: every connection ended, to be admitted again under the new keys")

    def _status_report(self, asked: wire.Status) -> wire.StatusReport:
        gateways = {
            gateway_id: {**counters, "sessions": len(self.sessions.of_gateway(gateway_id))}
            for gateway_id, counters in self.sessions.counters.items()
        }
        counters = dict(self.counters)
        caps = (*self.caps, self.trade_stream.cap)  # order entry's, admin's, the trade stream's
        counters["connections_cut"] = sum(cap.cut for cap in caps)
        counters["log_lines_lost"] = getattr(self.log, "lost", 0)  # a LogLines' (engine.logline)
        parts = {"market_data": self.market_data, "trade_stream": self.trade_stream}
        for prefix, part in parts.items():
            counters |= {f"{prefix}_{name}": value for name, value in part.counters().items()}
        state_hash = self.exchange.state_hash() if asked.with_state_hash else ""
        clock = datetime.fromtimestamp(self._engine_now() // 1_000_000_000, UTC)
        clock_day = clock.astimezone(self.exchange.state.zone).strftime("%Y-%m-%d")
        return wire.StatusReport(
            self.exchange.seq, state_hash, counters, gateways, self.exchange.date, self.codes,
            clock_day,
        )  # fmt: skip

    def _snapshot_before_stop(self) -> None:
        """The snapshot still wanted as the loop stops (asked for while another was being
        written, or the day's end in the last turn), taken now: every turn has journaled what
        the state holds (synced with fsync on, flushed without)."""
        self.snapshot_writer.wait(self.log)
        if self._snapshot_wanted:
            self._snapshot_wanted = False
            self._snapshot()

    def _snapshot(self) -> None:
        """A snapshot of the state after the turn's fsync (end of day, or asked for), written
        by a child process while trading goes on (engine.gateway.snapshotter). One that
        cannot be written (a full disk, a directory in the way) is logged and counted, and
        trading goes on: the journal holds every command, and a restart replays it from the
        snapshot before."""
        snapshots = self.data_dir / "snapshots"
        seq = self.exchange.seq

        def write() -> str:  # in the child: the state as it is now
            # the table first: the snapshot is the commit point, and a crash between the two
            # left a snapshot without its table (a probe: a live order's resend was then
            # answered 'done'); a table without its snapshot is never read
            snapshots.mkdir(parents=True, exist_ok=True)  # removed since the start? made again
            write_atomically(status_path(snapshots, seq), self.status.dump())
            path = snapshot_exchange(self.exchange, snapshots, self.history)
            pruned, kept = prune_snapshots(snapshots, self.options.keep_snapshots, seq)
            remove_orphan_tables(snapshots, seq)  # the pruned snapshots' tables too
            older = f"; {len(pruned)} older removed (--keep-snapshots)" if pruned else ""
            if kept:  # written all the same (a probe: it was reported NOT written)
                older += f"; WARNING: could not remove {', '.join(kept)}: remove it by hand"
            return f"snapshot at seq {seq}: {path}{older}"

        def failed(reason: str) -> None:
            self.counters["snapshot_failures"] += 1
            killed = "was killed by" in reason  # by someone, or short of memory: no disk advice
            mend = "" if killed else (
                f"mend the cause (a full disk, something in the way of {snapshots}, no "
                f"descriptors or memory left: ulimit -n, free), then "
            )  # fmt: skip
            self.log(
                f"snapshot at seq {seq} NOT written ({reason}); trading goes on, the journal "
                f"holds everything: {mend}ask again (cxe admin snapshot)"
            )

        def written(line: str) -> None:
            self.counters["snapshots_written"] += 1
            self.log(line)

        self.snapshot_writer.start(write, written, failed)
