"""Command log: the sequenced commands an Exchange applied, as framed records in one file.

Frames as in engine.framing; a record's payload is msgpack, of one of two kinds (told apart by
the type of the third element, the bytes written as given: no re-encoding):
- a message record `[seq, ts_ns, command]`: one command in its protocol encoding (an array);
- a batch record `[first_seq, ts_ns, bin]`: n >= 1 order-command records of
  engine.codec.COMMAND_DTYPE (88 bytes each) as a gateway sent them (their own seq and ts_ns
  fields are not read), standing for commands first_seq .. first_seq + n - 1, all stamped
  ts_ns.
Invariants:
- records are appended in sequence order without gaps (an append that does not follow the
  last record is refused); replaying them into a fresh Exchange built from the same config
  reproduces the same events and the same `state_hash()`;
- a torn tail (a crash mid-write) is ignored when reading (`cxe replay` says so) and cut when
  the log is reopened for writing: everything before it is intact, and a batch record is
  kept or cut whole; any other damage is corruption and raises CorruptLog (naming file, byte
  offset, what to do), as does a record that does not decode or a batch that is not a whole
  number (at least one) of records;
- only what can be read back is written: the stamp (seq >= 1, ts_ns >= 0, both Python ints
  within int64, a batch's last seq too) and a batch's length are checked, and `append`
  refuses a command the wire decoder refuses; each refusal raises before a byte is written,
  so one bad record can never stop recovery there;
- reading streams (engine.framing.FrameReader): memory holds one buffer, not the file.
`sync()` flushes and fsyncs (group commit is the engine service's job: it appends a turn's
commands, then calls `sync` once, then acknowledges).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import msgspec
import numpy as np

from engine.codec import COMMAND_DTYPE
from engine.core.events import rejected
from engine.core.validation import reject_text
from engine.framing import BUFFER_SIZE, CorruptLog, FramedWriter, FrameReader
from engine.protocol import (
    Command,
    Event,
    MalformedMessage,
    RejectCode,
    decode_command,
    encode,
)

INT64_MAX = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Nanoseconds = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
RECORD_BYTES = COMMAND_DTYPE.itemsize
BatchBytes = bytes | bytearray | memoryview
_record_decoder = msgspec.msgpack.Decoder(tuple[Seq, Nanoseconds, Command | bytes])
_span_decoder = msgspec.msgpack.Decoder(tuple[Seq, Nanoseconds, msgspec.Raw])
_encoder = msgspec.msgpack.Encoder()
BIN_TYPES = (0xC4, 0xC5, 0xC6)  # msgpack bin 8, 16, 32: a header of 2 to 5 bytes

if TYPE_CHECKING:  # engine.core compiles the kernel on import: a log writer needs none of it
    from engine.core import Exchange


class BadStamp(ValueError):
    """A sequence number or timestamp a record cannot carry; nothing was written."""


class BadBatch(ValueError):
    """Bytes that are not a batch of order-command records; nothing was written."""


class LogRecord(msgspec.Struct, frozen=True):
    """One command, in a message record (a Struct: one is made per command read)."""

    seq: int
    ts_ns: int
    command: Command

    @property
    def first_seq(self) -> int:
        return self.seq

    @property
    def last_seq(self) -> int:
        return self.seq

    @property
    def count(self) -> int:
        return 1


@dataclass(frozen=True)
class BatchRecord:
    """`count` order commands in a batch record: COMMAND_DTYPE bytes as received, standing
    for sequence numbers first_seq .. last_seq, all stamped ts_ns."""

    first_seq: int
    ts_ns: int
    data: bytes

    @property
    def count(self) -> int:
        return len(self.data) // RECORD_BYTES

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    def records(self) -> np.ndarray:
        """The records stamped as sequenced: a writable copy whose `seq` runs from
        first_seq and whose `ts_ns` is the batch's (what Exchange.apply_batch takes)."""
        return stamped_records([self])

    def after(self, seq: int) -> BatchRecord:
        """The batch less its commands up to `seq` (itself if it begins after `seq`)."""
        skip = seq + 1 - self.first_seq
        if skip <= 0:
            return self
        return BatchRecord(seq + 1, self.ts_ns, self.data[skip * RECORD_BYTES :])


Record = LogRecord | BatchRecord


def stamped_records(batches: list[BatchRecord]) -> np.ndarray:
    """The records of consecutive batches (each beginning after the last one's last seq) as
    one writable array, each stamped with its seq and its batch's ts_ns."""
    records = np.frombuffer(bytearray().join(b.data for b in batches), COMMAND_DTYPE)
    first = batches[0].first_seq
    records["seq"] = np.arange(first, first + len(records))
    if len(batches) == 1:
        records["ts_ns"] = batches[0].ts_ns
    else:
        records["ts_ns"] = np.repeat([b.ts_ns for b in batches], [b.count for b in batches])
    return records


def check_stamp(seq: object, ts_ns: object) -> None:
    """BadStamp unless seq and ts_ns are ints a record can carry and be read back with."""
    if type(seq) is not int or not 1 <= seq <= INT64_MAX:
        raise BadStamp(
            f"sequence number {seq!r} ({type(seq).__name__}) refused: it must be an int from "
            "1 to 2**63-1; nothing was written"
        )
    if type(ts_ns) is not int or not 0 <= ts_ns <= INT64_MAX:
        raise BadStamp(
            f"timestamp {ts_ns!r} ({type(ts_ns).__name__}) refused: it must be an int of "
            "int64 nanoseconds since the epoch (0 to 2**63-1); nothing was written"
        )


def encode_record(seq: int, ts_ns: int, message: bytes) -> bytes:
    """The payload of one record: `message` is a command's wire encoding, written as is."""
    check_stamp(seq, ts_ns)
    return _encoder.encode((seq, ts_ns, msgspec.Raw(message)))


def batch_view(data: object) -> memoryview:
    """`data` (bytes, bytearray or memoryview) as bytes; BadBatch unless it holds a whole
    number, at least one, of order-command records."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadBatch(
            f"a batch is bytes of engine.codec.COMMAND_DTYPE records, not "
            f"{type(data).__name__}; nothing was written"
        )
    view = memoryview(data)
    if not view.c_contiguous:
        raise BadBatch("a batch's bytes must be contiguous; nothing was written")
    view = view.cast("B")
    if not view.nbytes or view.nbytes % RECORD_BYTES:
        raise BadBatch(
            f"a batch of {view.nbytes} bytes refused: it must be a whole number (at least "
            f"one) of {RECORD_BYTES}-byte engine.codec.COMMAND_DTYPE records; nothing was "
            "written"
        )
    return view


def check_batch(first_seq: int, ts_ns: int, data: object) -> memoryview:
    """The batch's bytes, once its stamp and length are known to be what a batch record
    can carry (BadStamp, BadBatch otherwise); its last seq must be an int64 too."""
    check_stamp(first_seq, ts_ns)
    view = batch_view(data)
    check_stamp(first_seq + view.nbytes // RECORD_BYTES - 1, ts_ns)
    return view


def batch_prefix(first_seq: int, ts_ns: int, size: int) -> bytes:
    """The msgpack before a batch's bytes in its payload: [first_seq, ts_ns, bin header]."""
    head = _encoder.encode((first_seq, ts_ns))
    if size < 1 << 8:
        bin_header = bytes((0xC4, size))
    elif size < 1 << 16:
        bin_header = b"\xc5" + size.to_bytes(2, "big")
    else:
        bin_header = b"\xc6" + size.to_bytes(4, "big")
    return b"\x93" + head[1:] + bin_header  # the pair's fixarray header, made a triple's


def record_span(payload: bytes) -> tuple[int, int]:
    """(first seq, last seq) of a record's payload, without decoding its command(s)."""
    seq, _, third = _span_decoder.decode(payload)
    raw = memoryview(third)
    if raw[0] not in BIN_TYPES:
        return seq, seq
    return seq, seq + raw.nbytes // RECORD_BYTES - 1  # the bin's header is under a record


class CommandLog(FramedWriter):
    """Append-only writer of [seq, ts_ns, command] records; `last_seq` is the sequence number
    of the last record (0 for an empty log)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.last_seq = 0 if self.last_payload is None else record_span(self.last_payload)[1]

    def append(self, seq: int, ts_ns: int, command: Command) -> None:
        """Append one record. Raises MalformedMessage, writing nothing, for a command the
        wire decoder refuses (what it names is what is wrong), BadStamp for a stamp."""
        self.append_encoded(seq, ts_ns, wire_message(command))

    def append_encoded(self, seq: int, ts_ns: int, message: bytes) -> None:
        """Append a command already in its wire encoding, as received: the caller has decoded
        it with engine.protocol.decode_command (this does not decode it again)."""
        check_next(self.path, self.last_seq, seq)
        self.write(encode_record(seq, ts_ns, message))
        self.last_seq = seq

    def append_batch(self, first_seq: int, ts_ns: int, data: BatchBytes) -> None:
        """Append a batch record: `data`, order-command records (engine.codec.COMMAND_DTYPE)
        as received, for sequence numbers first_seq onwards, all stamped ts_ns. Raises
        BadStamp or BadBatch (a length that is no whole number of records), writing nothing."""
        view = check_batch(first_seq, ts_ns, data)
        check_next(self.path, self.last_seq, first_seq)
        self.write_parts(batch_prefix(first_seq, ts_ns, view.nbytes), view)
        self.last_seq = first_seq + view.nbytes // RECORD_BYTES - 1


def wire_message(command: Command) -> bytes:
    """The wire encoding of `command`; MalformedMessage if the wire decoder would refuse it."""
    try:
        message = encode(command)
    except (TypeError, OverflowError) as exc:  # e.g. an int beyond 64 bits, an object
        raise MalformedMessage(f"cannot be encoded: {exc}") from exc
    decode_command(message)
    return message


def check_next(where: str | Path, last_seq: int, seq: int) -> None:
    """BadStamp unless `seq` follows `last_seq` (any seq may begin an empty log)."""
    if last_seq and seq != last_seq + 1:
        raise BadStamp(
            f"{where}: sequence number {seq!r} does not follow the last record's {last_seq}; "
            "a gap or a repeat would stop replay there; nothing was written"
        )


class CommandLogReader:
    """The records of one command log file in order, streaming; after iteration `frames.end`
    and `frames.torn` tell where the last whole record ends and the torn tail after it."""

    def __init__(self, path: str | Path, buffer_size: int = BUFFER_SIZE) -> None:
        self.path = Path(path)
        self.frames = FrameReader(path, buffer_size)

    def __iter__(self) -> Iterator[Record]:
        decode = _record_decoder.decode
        for offset, payload in self.frames:
            try:
                seq, ts_ns, third = decode(payload)
            except msgspec.DecodeError as exc:  # ValidationError included
                raise self._fault(offset, f"is not a command log record: {exc}") from None
            if type(third) is not bytes:
                yield LogRecord(seq, ts_ns, third)
                continue
            if not third or len(third) % RECORD_BYTES:
                raise self._fault(
                    offset,
                    f"is a batch of {len(third)} bytes, not a whole number (at least one) of "
                    f"{RECORD_BYTES}-byte records",
                )
            batch = BatchRecord(seq, ts_ns, third)
            if batch.last_seq > INT64_MAX:
                raise self._fault(offset, f"is a batch whose last seq {batch.last_seq} is no int64")
            yield batch

    def _fault(self, offset: int, what: str) -> CorruptLog:
        return CorruptLog(
            f"{self.path}: the record at byte {offset} {what}: the log is damaged there; "
            "restore the file from a replica or a backup"
        )


def read_log(path: str | Path, buffer_size: int = BUFFER_SIZE) -> CommandLogReader:
    """Records (LogRecord, BatchRecord) in order; stops quietly at a torn tail, raises
    CorruptLog otherwise."""
    return CommandLogReader(path, buffer_size)


class Appender(Protocol):
    """A command log file or a journal directory."""

    def append(self, seq: int, ts_ns: int, command: Command) -> None: ...

    def append_batch(self, first_seq: int, ts_ns: int, data: BatchBytes) -> None: ...


class RecordingExchange:
    """An Exchange whose every command is logged (before it is applied) with its stamp.

    A command the log refuses is answered as a gateway answers a malformed frame: one
    Rejected MALFORMED with seq 0 (it was never sequenced), and nothing is logged or applied.
    A bad stamp is the caller's error, not the command's: BadStamp is raised.
    """

    def __init__(self, exchange: Exchange, log: Appender) -> None:
        self.exchange = exchange
        self.log = log

    def apply(self, command: Command, ts_ns: int = 0) -> list[Event]:
        seq = self.exchange.seq + 1  # the sequencer's number: the core checks it follows
        try:
            self.log.append(seq, ts_ns, command)
        except MalformedMessage as exc:
            text = reject_text(RejectCode.MALFORMED, str(exc))
            return [rejected(0, command, RejectCode.MALFORMED, text)]
        return self.exchange.apply_stamped(seq, ts_ns, command)


def check_follows(path: str | Path, record: Record, expected: int) -> None:
    if record.first_seq != expected:
        raise CorruptLog(f"{path}: expected seq {expected}, found {record.first_seq}")
