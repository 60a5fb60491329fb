"""Command log: the sequenced commands an Exchange applied, as framed records in a file.

Frame: 4-byte little-endian payload length, 4-byte CRC32 of the payload, then the payload:
msgpack [seq, ts_ns, command] (the command in its protocol encoding). Invariants:
- records are appended in sequence order; replaying them into a fresh Exchange built from the
  same config reproduces the same events and the same `state_hash()`;
- a torn final frame (a crash mid-write) is reported and ignored when reading: everything
  before it is intact; a checksum mismatch anywhere else is corruption and raises.
`sync()` flushes and fsyncs (group commit is the engine service's job: it calls `append`
for a batch, then `sync` once, then acknowledges).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.core import Exchange
from engine.protocol import Command, Event

HEADER = struct.Struct("<II")
_record_decoder = msgspec.msgpack.Decoder(tuple[int, int, Command])
_encoder = msgspec.msgpack.Encoder()


class CorruptLog(ValueError):
    pass


@dataclass(frozen=True)
class LogRecord:
    seq: int
    ts_ns: int
    command: Command


class CommandLog:
    """Append-only writer."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()

    def append(self, seq: int, ts_ns: int, command: Command) -> None:
        payload = _encoder.encode((seq, ts_ns, command))
        self._file.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self.sync()
        self._file.close()

    def __enter__(self) -> CommandLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_log(path: str | Path) -> Iterator[LogRecord]:
    """Records in order; stops quietly at a torn final frame, raises CorruptLog otherwise."""
    data = Path(path).read_bytes()
    offset = 0
    while offset < len(data):
        if offset + HEADER.size > len(data):
            return  # torn header at the end
        length, crc = HEADER.unpack_from(data, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if end > len(data):
            return  # torn payload at the end
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            raise CorruptLog(f"{path}: checksum mismatch in the record at byte {offset}")
        seq, ts_ns, command = _record_decoder.decode(payload)
        yield LogRecord(seq, ts_ns, command)
        offset = end


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
