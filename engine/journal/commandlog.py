"""Command log: the sequenced commands an Exchange applied, as framed records in one file.

Frames as in engine.framing; the payload is msgpack [seq, ts_ns, command] (the command in its
protocol encoding, written as the bytes given: no re-encoding). Invariants:
- records are appended in sequence order without gaps (an append that does not follow the
  last record is refused); replaying them into a fresh Exchange built from the same config
  reproduces the same events and the same `state_hash()`;
- a torn tail (a crash mid-write) is ignored when reading (`cxe replay` says so) and cut when
  the log is reopened for writing: everything before it is intact; any other damage is
  corruption and raises CorruptLog (naming file, byte offset, what to do), as does a record
  that does not decode;
- only what can be read back is written: the stamp (seq >= 1, ts_ns >= 0, both Python ints
  within int64) is checked, and `append` refuses a command the wire decoder refuses; either
  refusal raises before a byte is written, so one bad record can never stop recovery there;
- reading streams (engine.framing.FrameReader): memory holds one buffer, not the file.
`sync()` flushes and fsyncs (group commit is the engine service's job: it calls `append`
for a batch, then `sync` once, then acknowledges).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import msgspec

from engine.core.events import rejected
from engine.core.validation import reject_text
from engine.framing import BUFFER_SIZE, CorruptLog, FramedWriter, FrameReader, decode_records
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
_record_decoder = msgspec.msgpack.Decoder(tuple[Seq, Nanoseconds, Command])
_seq_decoder = msgspec.msgpack.Decoder(tuple[Seq, Nanoseconds, msgspec.Raw])
_encoder = msgspec.msgpack.Encoder()
WHAT = "a command log record"

if TYPE_CHECKING:  # engine.core compiles the kernel on import: a log writer needs none of it
    from engine.core import Exchange


class BadStamp(ValueError):
    """A sequence number or timestamp a record cannot carry; nothing was written."""


@dataclass(frozen=True)
class LogRecord:
    seq: int
    ts_ns: int
    command: Command


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


def record_seq(payload: bytes) -> int:
    return _seq_decoder.decode(payload)[0]


class CommandLog(FramedWriter):
    """Append-only writer of [seq, ts_ns, command] records; `last_seq` is the sequence number
    of the last record (0 for an empty log)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.last_seq = 0 if self.last_payload is None else record_seq(self.last_payload)

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

    def __iter__(self) -> Iterator[LogRecord]:
        for seq, ts_ns, command in decode_records(self.frames, _record_decoder, WHAT):
            yield LogRecord(seq, ts_ns, command)


def read_log(path: str | Path, buffer_size: int = BUFFER_SIZE) -> CommandLogReader:
    """Records in order; stops quietly at a torn tail, raises CorruptLog otherwise."""
    return CommandLogReader(path, buffer_size)


class Appender(Protocol):
    """A command log file or a journal directory."""

    def append(self, seq: int, ts_ns: int, command: Command) -> None: ...


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


def check_follows(path: str | Path, record: LogRecord, expected: int) -> None:
    if record.seq != expected:
        raise CorruptLog(f"{path}: expected seq {expected}, found {record.seq}")
