"""Command log: the sequenced commands an Exchange applied, as framed records in a file.

Frames as in engine.framing (length, CRC32, payload); the payload is msgpack
[seq, ts_ns, command] (the command in its protocol encoding). Invariants:
- records are appended in sequence order; replaying them into a fresh Exchange built from the
  same config reproduces the same events and the same `state_hash()`;
- a torn final frame (a crash mid-write) is reported and ignored when reading: everything
  before it is intact; a checksum mismatch anywhere else is corruption and raises.
`sync()` flushes and fsyncs (group commit is the engine service's job: it calls `append`
for a batch, then `sync` once, then acknowledges).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.core import Exchange
from engine.framing import CorruptLog, FramedWriter, read_frames
from engine.protocol import Command, Event

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
        self.write(_encoder.encode((seq, ts_ns, command)))


def read_log(path: str | Path) -> Iterator[LogRecord]:
    """Records in order; stops quietly at a torn final frame, raises CorruptLog otherwise."""
    for _, payload in read_frames(path):
        seq, ts_ns, command = _record_decoder.decode(payload)
        yield LogRecord(seq, ts_ns, command)


class RecordingExchange:
    """An Exchange whose every command is logged (before it is applied) with its stamp."""

    def __init__(self, exchange: Exchange, log: CommandLog) -> None:
        self.exchange = exchange
        self.log = log

    def apply(self, command: Command, ts_ns: int = 0) -> list[Event]:
        self.log.append(self.exchange.seq + 1, ts_ns, command)
        return self.exchange.apply(command, ts_ns)


def replay(path: str | Path, exchange: Exchange) -> Iterator[tuple[LogRecord, list[Event]]]:
    """Apply a log to `exchange` (fresh, same config), yielding each record with its events."""
    for record in read_log(path):
        if record.seq != exchange.seq + 1:
            raise CorruptLog(f"{path}: expected seq {exchange.seq + 1}, found {record.seq}")
        yield record, exchange.apply(record.command, record.ts_ns)
