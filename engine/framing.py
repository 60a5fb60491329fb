"""Framed records in append-only files: 4-byte little-endian length, 4-byte CRC32, payload.

Shared by the command log (engine.journal) and the trade log (engine.clearing.capture).
Invariants: a reader yields every complete record in order; a torn final frame (a crash
mid-write) ends the file quietly; a checksum mismatch anywhere is corruption and raises, and
so does a length beyond MAX_RECORD (no writer makes one: the file is not a framed log). A
writer opening an existing file first cuts off its torn final frame, so what it appends
follows the last complete record (appending after the torn bytes would make the whole rest
of the file unreadable).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

HEADER = struct.Struct("<II")
MAX_RECORD = 1 << 24  # bytes of payload; a record is a command or a trade, well under 1 KB


class CorruptLog(ValueError):
    pass


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) of every complete record."""
    data = Path(path).read_bytes()
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        if length > MAX_RECORD:
            raise CorruptLog(
                f"{path}: the record at byte {offset} claims {length:,} bytes: "
                "the file is not a framed log, or is corrupt"
            )
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if end > len(data):
            return
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            raise CorruptLog(f"{path}: checksum mismatch in the record at byte {offset}")
        yield offset, payload
        offset = end


def read_records(path: str | Path, decoder: msgspec.msgpack.Decoder, what: str) -> Iterator:
    """Every complete record decoded; CorruptLog naming the byte offset for a record that is
    not `what` (a file of another kind, or damage the checksum did not catch)."""
    for offset, payload in read_frames(path):
        try:
            yield decoder.decode(payload)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise CorruptLog(f"{path}: the record at byte {offset} is not {what}: {exc}") from None


def torn_tail(path: str | Path) -> tuple[int, int]:
    """(end of the last complete record, bytes after it): the bytes of a torn final frame,
    or 0 for a log that ends cleanly. CorruptLog for a file damaged before its end."""
    end = 0
    for offset, payload in read_frames(path):
        end = offset + HEADER.size + len(payload)
    return end, Path(path).stat().st_size - end


def cut_torn_tail(path: str | Path) -> int:
    """Truncate `path` after its last complete record (a crash can leave a torn frame there;
    it was never synced, so never acknowledged); returns the bytes cut. CorruptLog, and
    nothing cut, for a file damaged before its end."""
    path = Path(path)
    if not path.exists():
        return 0
    end, torn = torn_tail(path)
    if torn:
        with open(path, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    return torn


class FramedWriter:
    """Append-only writer; `sync()` flushes and fsyncs. Opening an existing file cuts off its
    torn final frame first (`discarded`: the bytes cut)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.discarded = cut_torn_tail(self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()

    def write(self, payload: bytes) -> None:
        if len(payload) > MAX_RECORD:
            raise ValueError(f"a record of {len(payload):,} bytes exceeds {MAX_RECORD:,}")
        self._file.write(frame(payload))

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self.sync()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
