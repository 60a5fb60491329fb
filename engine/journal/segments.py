"""The journal as a directory of command log segments, read back as one stream.

A segment is a command log file (engine.journal.commandlog) named
`commands-<first seq, 16 digits>[-<trading day, YYYY-MM-DD>].log`. Invariants:
- the writer starts a new segment at every StartOfDay (so each trading day's commands sit in
  files of their own and old days can be archived) and when the current one has passed
  `max_segment_bytes`; the old segment is synced and closed first, and the directory is
  fsynced once the new file exists, so a synced record is never in a file the directory
  has lost;
- a file whose name begins with "commands" (any case) but is not a segment's is refused
  (CorruptLog naming it), never skipped: a segment renamed, compressed or copied in beside
  the others would have been left out silently, its acknowledged records lost (a probe);
- the first record of a segment has the sequence number its name carries, and the segments
  in name order continue each other without a gap; only the last may end in a torn tail (a
  crash mid-write; it is cut when the journal is reopened for writing, reading skips it);
- a batch record (engine.journal.commandlog) never starts a day (StartOfDay is a message);
  a segment may begin with one when the previous one passed its size;
- reading "after N" skips whole segments that end before N + 1 (they may be archived away;
  where a segment ends is told by the next one's name, and so not by an empty one's: the
  segment before an empty one is read) and refuses a directory whose segments do not reach
  back to N + 1; a batch record that holds N is given less its commands up to N, so a reader
  sees every command after N once.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.durable import fsync_directory
from engine.framing import BUFFER_SIZE, CorruptLog, require_regular_file
from engine.journal.commandlog import (
    RECORD_BYTES,
    BatchBytes,
    BatchRecord,
    CommandLog,
    LogRecord,
    Record,
    check_batch,
    check_follows,
    check_next,
    check_stamp,
    read_log,
    stamped_records,
    wire_message,
)
from engine.protocol import Command, Event, StartOfDay

if TYPE_CHECKING:  # engine.core compiles the kernel on import: a journal writer needs none of it
    from engine.core import Exchange

DAY = r"\d{4}-\d{2}-\d{2}"
SEGMENT = re.compile(rf"commands-(\d{{16}})(?:-({DAY}))?\.log", re.ASCII)
MAX_SEGMENT_BYTES = 256 << 20
RUN = 1 << 16  # commands of consecutive batch records `catch_up` applies in one call


@dataclass(frozen=True)
class Segment:
    path: Path
    first_seq: int
    day: str | None


def segment_name(first_seq: int, day: str | None) -> str:
    """The file name; a day that is not YYYY-MM-DD is left out of it (a name readers would
    not recognise would hide the segment's records)."""
    named = day is not None and re.fullmatch(DAY, day, re.ASCII)
    return f"commands-{first_seq:016d}" + (f"-{day}" if named else "") + ".log"


def list_segments(directory: str | Path) -> list[Segment]:
    """The segments of `directory` in sequence order (none if it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = SEGMENT.fullmatch(path.name)
        if match:
            require_regular_file(path)
            found.append(Segment(path, int(match[1]), match[2]))
        elif path.name.lower().startswith("commands"):
            raise CorruptLog(
                f"{path}: in the journal directory, but not named as a segment "
                f"(commands-<first seq, 16 digits>[-YYYY-MM-DD].log): a segment renamed, "
                f"compressed or copied in would be left out and its records lost. Give it "
                f"back its name, or move it out of {directory}"
            )
    found.sort(key=lambda s: s.first_seq)
    for before, after in itertools.pairwise(found):
        if before.first_seq == after.first_seq:
            raise CorruptLog(
                f"{directory}: {before.path.name} and {after.path.name} both begin at "
                f"seq {after.first_seq}: remove the one that is not the journal's"
            )
    return found


def last_journal_seq(directory: str | Path) -> int:
    """The last whole record's sequence number in journal `directory` (0 if it holds none),
    read without writing: a torn tail is left as it is (Journal cuts it when it opens)."""
    segments = list_segments(directory)
    if not segments:
        return 0
    last = segments[-1].first_seq - 1
    for record in read_log(segments[-1].path):
        last = record.last_seq
    return last


class Journal:
    """Append-only writer of a segmented command log in `directory` (created if need be);
    `last_seq` is the last record's sequence number (0 for an empty journal)."""

    def __init__(self, directory: str | Path, max_segment_bytes: int = MAX_SEGMENT_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_segment_bytes = max_segment_bytes
        self.segment: CommandLog | None = None
        self.day: str | None = None
        self.last_seq = 0
        segments = list_segments(self.directory)
        if segments:
            last = segments[-1]
            self.segment, self.day = CommandLog(last.path), last.day
            self.last_seq = self.segment.last_seq or last.first_seq - 1

    @property
    def discarded(self) -> int:
        """Bytes of a torn tail cut from the last segment when the journal was opened."""
        return 0 if self.segment is None else self.segment.discarded

    def append(self, seq: int, ts_ns: int, command: Command) -> None:
        """Append one record (refusals as CommandLog.append); a StartOfDay starts a segment."""
        day = command.date if isinstance(command, StartOfDay) else None
        self.append_encoded(seq, ts_ns, wire_message(command), day)

    def append_encoded(self, seq: int, ts_ns: int, message: bytes, day: str | None = None) -> None:
        """Append a command in its wire encoding as received (decoded once by the caller);
        `day` is the date of a StartOfDay, which starts a segment."""
        check_stamp(seq, ts_ns)
        check_next(self.directory, self.last_seq, seq)
        self._segment_for(seq, day).append_encoded(seq, ts_ns, message)
        self.last_seq = seq

    def append_batch(self, first_seq: int, ts_ns: int, data: BatchBytes) -> None:
        """Append a batch record (refusals as CommandLog.append_batch); it never starts a
        day, only a segment when the current one is full."""
        view = check_batch(first_seq, ts_ns, data)
        check_next(self.directory, self.last_seq, first_seq)
        self._segment_for(first_seq, None).append_batch(first_seq, ts_ns, view)
        self.last_seq = first_seq + view.nbytes // RECORD_BYTES - 1

    def _segment_for(self, seq: int, day: str | None) -> CommandLog:
        """The segment the record beginning at `seq` goes in: a new one for a new day
        (`day`), for the journal's first record, and once the current one is full."""
        if day is not None or self.segment is None:
            self._roll(seq, day or self.day)
        elif self.segment.size >= self.max_segment_bytes:
            self._roll(seq, self.day)
        assert self.segment is not None
        return self.segment

    def _roll(self, seq: int, day: str | None) -> None:
        """Close the current segment and begin one at `seq` (an empty current segment begins
        at `seq` already: it is renamed for `day`)."""
        fresh = self.directory / segment_name(seq, day)
        if self.segment is not None:
            self.segment.close()
            if self.segment.last_seq == 0:
                os.replace(self.segment.path, fresh)
        self.segment, self.day = CommandLog(fresh), day
        fsync_directory(self.directory)

    def day_refused(self, day: str | None) -> None:
        """The StartOfDay last appended was refused: the segment it began is named for `day`,
        the day that goes on, instead of the date refused (a forgotten EndOfDay left the rest
        of a day in a file named for the next; archiving by the name took the wrong records)."""
        segment = self.segment  # a StartOfDay always begins one (`_segment_for`)
        assert segment is not None
        fresh = self.directory / segment_name(self.last_seq, day)
        if fresh != segment.path:
            os.replace(segment.path, fresh)
            segment.path = fresh
            fsync_directory(self.directory)
        self.day = day

    def flush(self) -> None:
        """Hand what is written to the operating system, without fsync (engine.framing)."""
        if self.segment is not None:
            self.segment.flush()

    def sync(self) -> None:
        if self.segment is not None:
            self.segment.sync()

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_journal(
    directory: str | Path, after: int = 0, buffer_size: int = BUFFER_SIZE
) -> Iterator[Record]:
    """The commands of every segment with seq > `after`, in order, as one stream of records
    (a batch that holds `after` comes less its commands up to it); CorruptLog for a gap
    between segments, a segment that does not begin where its name says, a torn tail
    anywhere but at the end of the last segment, or any damage."""
    segments = list_segments(directory)
    start = 0
    while start + 1 < len(segments) and segments[start + 1].first_seq <= after + 1:
        start += 1
    if start > 0 and _holds_no_record(segments[start].path):
        start -= 1  # an empty segment's name does not show where the one before it ends
    segments = segments[start:]
    if segments and segments[0].first_seq > after + 1:
        raise CorruptLog(
            f"{directory}: the journal begins at seq {segments[0].first_seq} "
            f"({segments[0].path.name}), records {after + 1}..{segments[0].first_seq - 1} "
            "are missing: restore their segments (archived?) into the directory"
        )
    expected = segments[0].first_seq if segments else after + 1
    for index, segment in enumerate(segments):
        if segment.first_seq != expected:
            remedy = (
                "it holds no record: remove it"
                if _holds_no_record(segment.path)
                else "a segment is missing or misnamed; restore it"
            )
            raise CorruptLog(
                f"{segment.path}: begins at seq {segment.first_seq} by its name, but the "
                f"journal's next record is seq {expected}: {remedy}"
            )
        reader = read_log(segment.path, buffer_size)
        for record in reader:
            check_follows(segment.path, record, expected)
            if type(record) is LogRecord:  # attributes, not properties: one per command
                expected += 1
                if record.seq > after:
                    yield record
                continue
            expected += record.count
            if record.last_seq > after:
                yield record.after(after)
        if reader.frames.torn and index + 1 < len(segments):
            raise CorruptLog(
                f"{segment.path}: ends in an incomplete record at byte {reader.frames.end}, "
                "but later segments follow it: the journal is damaged there; restore the "
                "segment from a replica or a backup"
            )


def _holds_no_record(path: Path) -> bool:
    """Does the log at `path` hold no whole record (a crash just after a roll, or a stray
    file)? It reads one buffer at most."""
    return next(iter(read_log(path)), None) is None


def read_commands(
    source: str | Path, after: int = 0, buffer_size: int = BUFFER_SIZE
) -> Iterator[Record]:
    """Records with commands after `after` of a journal directory or of a single command log
    file (as read_journal gives them)."""
    if Path(source).is_dir():
        yield from read_journal(source, after, buffer_size)
        return
    for record in read_log(source, buffer_size):
        if record.last_seq > after:
            yield record.after(after) if type(record) is BatchRecord else record


class State(Protocol):
    """What a journal is replayed into: an Exchange, or any state machine of commands whose
    `seq` counts the commands applied."""

    seq: int

    def state_hash(self) -> str: ...

    def apply_stamped(self, seq: int, ts_ns: int, command: Command) -> Any: ...

    def apply_batch(self, records: Any) -> Any: ...


def apply_record(source: str | Path, record: Record, exchange: State) -> Any:
    """Apply one record that must follow `exchange.seq`: a message with apply_stamped (its
    events), a batch with apply_batch (its event rows, engine.codec)."""
    check_follows(source, record, exchange.seq + 1)
    if type(record) is LogRecord:
        return exchange.apply_stamped(record.seq, record.ts_ns, record.command)
    return apply_batches(source, [record], exchange)


def apply_batches(source: str | Path, batches: list[BatchRecord], exchange: State) -> Any:
    """Apply consecutive batches following `exchange.seq` in one apply_batch call. A batch
    the exchange refuses (engine.core.records: no writer that checks what it journals makes
    one) is CorruptLog, and nothing of it was applied."""
    records = stamped_records(batches)
    try:
        return exchange.apply_batch(records)
    except ValueError as exc:
        raise CorruptLog(
            f"{source}: the batch of seq {batches[0].first_seq}..{batches[-1].last_seq} is "
            f"not one the exchange takes ({exc}): the journal was written without checking "
            "it; restore it from a replica or a backup"
        ) from None


def catch_up(source: str | Path, exchange: State, run: int = RUN) -> int:
    """Apply every record after `exchange.seq`, as `replay` does but without handing back
    what each returns: consecutive batch records go to apply_batch together, up to `run`
    commands a call (the same state as batch by batch: engine.core.batch), so recovery pays
    apply_batch's cost per call once per run of batches, not per record. Returns the number
    of commands applied."""
    start = exchange.seq
    pending: list[BatchRecord] = []
    held = 0
    for record in read_commands(source, exchange.seq):
        check_follows(source, record, exchange.seq + held + 1)
        if type(record) is LogRecord:
            if pending:
                apply_batches(source, pending, exchange)
                pending, held = [], 0
            exchange.apply_stamped(record.seq, record.ts_ns, record.command)
            continue
        pending.append(record)
        held += record.count
        if held >= run:
            apply_batches(source, pending, exchange)
            pending, held = [], 0
    if pending:
        apply_batches(source, pending, exchange)
    return exchange.seq - start


def replay(source: str | Path, exchange: State) -> Iterator[tuple[Record, Any]]:
    """Apply the records after `exchange.seq` of a log file or a journal directory (to a fresh
    exchange of the same config: all of them; to one restored from a snapshot: those after
    it), yielding each record with what applying it returned: a message's events, a batch's
    event rows (engine.codec; `replay_events` gives them as events)."""
    for record in read_commands(source, exchange.seq):
        yield record, apply_record(source, record, exchange)


def replay_events(source: str | Path, exchange: Exchange) -> Iterator[tuple[Record, list[Event]]]:
    """As `replay`, with a batch's event rows decoded into the protocol events applying its
    commands one by one gives (stream numbers counted on from the positions before it), for
    readers of events (`cxe replay`); a Python object per event: slower than `replay`."""
    from engine.core.rows import decode

    instruments = exchange.config.instruments
    for record in read_commands(source, exchange.seq):
        if type(record) is LogRecord:
            yield record, apply_record(source, record, exchange)
        else:
            positions = exchange.stream_positions()
            yield record, decode(apply_record(source, record, exchange), instruments, positions)
