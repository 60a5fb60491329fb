"""Command log: the sequenced commands an Exchange applied, as framed records in a file.

Frames as in engine.framing (length, CRC32, payload); the payload is msgpack
[seq, ts_ns, command] (the command in its protocol encoding). Invariants:
- records are appended in sequence order; replaying them into a fresh Exchange built from the
  same config reproduces the same events and the same `state_hash()`;
- a torn final frame (a crash mid-write) is ignored when reading (`cxe replay` says so) and
  cut when the log is reopened for writing: everything before it is intact; a checksum
  mismatch anywhere else is corruption and raises, and so does a record that does not decode;
- only what the wire decoder accepts is written (`CommandLog.append` refuses anything else
  and writes nothing), so every record can be read back and replayed: a command built in
  process with, say, a float price would otherwise stop recovery at its record.
`sync()` flushes and fsyncs (group commit is the engine service's job: it calls `append`
for a batch, then `sync` once, then acknowledges).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.core import Exchange
from engine.core.events import rejected
from engine.core.validation import reject_text
from engine.framing import CorruptLog, FramedWriter, read_records
from engine.protocol import (
    Command,
    Event,
    MalformedMessage,
    RejectCode,
    decode_command,
    encode,
)

_record_decoder = msgspec.msgpack.Decoder(tuple[int, int, Command])
_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class LogRecord:
    seq: int
    ts_ns: int
    command: Command


class CommandLog(FramedWriter):
    """Append-only writer of [seq, ts_ns, command] records."""

    def append(self, seq: int, ts_ns: int, command: Command) -> None:
        """Append one record. Raises MalformedMessage, writing nothing, for a command the
        wire decoder refuses (what it names is what is wrong)."""
        try:
            message = encode(command)
        except (TypeError, OverflowError) as exc:  # e.g. an int beyond 64 bits, an object
            raise MalformedMessage(f"cannot be encoded: {exc}") from exc
        decode_command(message)
        self.write(_encoder.encode((seq, ts_ns, msgspec.Raw(message))))


def read_log(path: str | Path) -> Iterator[LogRecord]:
    """Records in order; stops quietly at a torn final frame, raises CorruptLog otherwise."""
    for seq, ts_ns, command in read_records(path, _record_decoder, "a command log record"):
        yield LogRecord(seq, ts_ns, command)


class RecordingExchange:
    """An Exchange whose every command is logged (before it is applied) with its stamp.

    A command the log refuses is answered as a gateway answers a malformed frame: one
    Rejected MALFORMED with seq 0 (it was never sequenced), and nothing is logged or applied.
    """

    def __init__(self, exchange: Exchange, log: CommandLog) -> None:
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


def replay(path: str | Path, exchange: Exchange) -> Iterator[tuple[LogRecord, list[Event]]]:
    """Apply a log to `exchange` (fresh, same config), yielding each record with its events."""
    for record in read_log(path):
        if record.seq != exchange.seq + 1:
            raise CorruptLog(f"{path}: expected seq {exchange.seq + 1}, found {record.seq}")
        yield record, exchange.apply_stamped(record.seq, record.ts_ns, record.command)
