"""Framed records in append-only files: 4-byte little-endian length, 4-byte CRC32, payload.

Shared by the command log (engine.journal) and the trade log (engine.clearing.capture).
Invariants: a reader yields every complete record in order; a torn final frame (a crash
mid-write) ends the file quietly; a checksum mismatch anywhere is corruption and raises.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

HEADER = struct.Struct("<II")


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


class FramedWriter:
    """Append-only writer; `sync()` flushes and fsyncs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()

    def write(self, payload: bytes) -> None:
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
