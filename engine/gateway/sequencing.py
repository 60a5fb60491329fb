"""Sequence, journal and apply a turn of the engine service (engine.gateway.service).

Each command that reaches the core is stamped (sequence, the turn's time), journaled as the
wire bytes received, and applied (`Exchange.apply_stamped` for a message, one
`Exchange.apply_batch` for each run of records frames: checked as a run, journaled as one
batch record of the bodies as received, its private replies encoded from the event rows by
engine.gateway.replies, its market data and trade log records by engine.gateway.public: a run
of more than SMALL_RUN records, whose public rows are depth and trades only, makes no event
object); then one fsync (group commit). Invariants:
- nothing the core caused is sent before the journal holds the command durably (the sending
  is engine.gateway.outbound's, after `_sequence` returns); a failed write or fsync raises
  JournalFailed, and the service stops without sending; after the fsync the turn's last seq
  is marked acknowledged (engine.journal.acknowledged), so a start can tell a journal that
  lost acknowledged commands;
- a records frame with a bad record is refused whole and nothing in it is taken; the others of
  the run are applied (`_checked_run`);
- a resent NewOrder the status table knows is answered with its state, never sequenced again.
"""

from __future__ import annotations

import time

import numpy as np

from engine.codec import (
    COMMAND_DTYPE,
    EVENT_DTYPE,
    ROW_REJECTED,
    ROW_REJECTED_TEXT,
    text_rows,
)
from engine.core.records import words_of
from engine.core.rows import decode as decode_rows
from engine.gateway import wire
from engine.gateway.intake import Item
from engine.gateway.replies import first_surrogate_key
from engine.protocol import (
    Audience,
    DayClosed,
    EndOfDay,
    NewOrder,
    PhaseChanged,
    Rejected,
    StartOfDay,
)
from engine.types import Phase

# a run of at most this many records is answered by decoding its rows into events (one decode
# costs less than the encoder's fixed costs plus the public rows' decode: `bench.e2e steps`)
SMALL_RUN = 32


class JournalFailed(RuntimeError):
    pass


class TradeLogFailed(RuntimeError):
    """DATA/trades.log could not be written: the engine stops (clearing must see every
    trade), and a restart rebuilds the file from the journal, which holds the turn."""


class Sequencing:
    """The EngineService's sequencing, journaling, applying (a part of it: its state is its own)."""

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
                going_on = journal.day
                journal.append_encoded(seq, ts, item.wire_bytes, day)
                events = exchange.apply_stamped(seq, ts, command)
                if day is not None and any(type(e) is Rejected for e in events):
                    journal.day_refused(going_on)  # its segment keeps the day that goes on
                self.counters["sequenced"] += 1
                if not item.admin and any(type(e) is Rejected for e in events):
                    self._count_for(item.origin, "rejects")
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
            raise JournalFailed(f"the journal failed ({exc})") from exc
        try:
            self.acknowledged.mark(exchange.seq)  # durable now: what the turn acknowledges
        except OSError as exc:  # a probe's message named neither the file nor this step
            raise JournalFailed(f"the acknowledged mark failed ({exc})") from exc

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
                    self._count_for(item.origin, "malformed")
                    self._refuse(item.origin, False, f"{exc}; nothing in the frame was taken")
                    continue
                good.append(item)
            staged = good
            if not staged:
                return run[:0], staged
            joined = bytearray().join(i.wire_bytes for i in staged)
            run = stamped(writable_records(joined), seq, self.turn_ts)
        return run, staged

    def _count_for(self, origin: bytes | None, counter: str, n: int = 1) -> None:
        """Count `n` in `counter` of the gateway whose session sent from `origin`, if any."""
        session = self.sessions.by_routing_id.get(origin)
        if session is not None:
            self.sessions.count(session.gateway.id, counter, n)

    def _count_refused_records(self, rows: bytes, first_seq: int, staged: list[Item]) -> None:
        """Each sending gateway's `rejects`: the records of its frames the core refused (a
        Rejected row's seq tells whose frame the record was in)."""
        events = np.frombuffer(rows, EVENT_DTYPE)
        kinds = events["kind"]
        refused = (kinds == ROW_REJECTED) | (kinds == ROW_REJECTED_TEXT)
        if not refused.any():
            return
        seqs = events["seq"][refused & ~text_rows(events)]
        ends = first_seq + np.cumsum([item.records for item in staged])
        whose = np.bincount(np.searchsorted(ends, seqs, side="right"), minlength=len(staged))
        for item, n in zip(staged, whose.tolist(), strict=True):
            if n:
                self._count_for(item.origin, "rejects", n)

    def _apply_staged(self) -> None:
        """Apply the staged records frames of the turn (consecutive in arrival order) in one
        compiled call, after journaling them as one batch record: the frames' bodies as
        received, back to back (recovery applies consecutive batch records as one run)."""
        if not self.staged:
            return
        records, staged = self._checked_run()
        if not staged:
            return
        for item in staged:  # taken: a frame refused whole counts as malformed instead
            self._count_for(item.origin, "records", item.records)
        exchange, state = self.exchange, self.exchange.state
        body = staged[0].wire_bytes if len(staged) == 1 else b"".join(i.wire_bytes for i in staged)
        self.journal.append_batch(exchange.seq + 1, self.turn_ts, body)
        positions = {"public": state.public_seq, "clearing": state.clearing_seq,
                     "private": dict(state.private_seq)}  # fmt: skip
        first_seq = exchange.seq + 1
        rows = exchange.apply_batch(records)
        self.counters["sequenced"] += len(records)
        self._count_refused_records(rows, first_seq, staged)
        encoded = None
        if len(records) > SMALL_RUN:
            encoded = self.replies.encode(rows, positions["private"], self.member_ids)
        if encoded is None:  # a small run, or a row the encoder leaves to the decoder
            events = decode_rows(rows, self.config.instruments, positions)
            self._observe(None, events)
            self._route(None, events)
            return
        if encoded.accepted.size:
            self.status.record_accepted(rows, encoded.accepted)
        self._route_encoded(encoded)
        public_rows = encoded.public_rows(rows)
        if not public_rows:
            return
        published = self.public_encoder.encode(
            public_rows, positions["public"], positions["clearing"]
        )
        if published is not None:  # depth and trades only: nothing _observe looks at
            self._queue_public(published)
            return
        positions["private"] = {}  # the private events are encoded: decode the others only
        public = decode_rows(public_rows, self.config.instruments, positions)
        public = [e for e in public if type(e).audience is not Audience.PRIVATE]
        self._observe(None, public)
        self._queue_public(public)

    def _observe(self, command, events: list, replaying: bool = False) -> None:
        """What the service keeps from each command's events: the order status table, the
        phase log, the end-of-day snapshot. A refused StartOfDay or EndOfDay changes nothing
        (a refused StartOfDay cleared the table: resends of live orders were answered 'done')."""
        refused = any(type(event) is Rejected for event in events)
        if isinstance(command, StartOfDay) and not refused:
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
        if isinstance(command, EndOfDay) and not refused and not self.options.quiet:
            self.log(f"end of day at seq {self.exchange.seq}")


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
