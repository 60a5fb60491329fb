"""Framed records in append-only files, read back streaming.

Shared by the command log (engine.journal) and the trade log (engine.clearing.capture).
A frame is a 16-byte header, then the payload:

    magic (4 bytes, MAGIC) | payload length (u32 LE) | CRC32 of the payload (u32 LE)
    | CRC32 of the 12 bytes before it (u32 LE)

Invariants:
- a reader yields every complete record in order, reading the file in chunks of at most
  `buffer_size` bytes beyond the record in hand (never the whole file);
- a record's length is trusted only once its header checksum matches, so a damaged length
  can never pass for "the record runs past the end of the file";
- the file may end in a torn tail: the bytes after the last complete record are a proper
  prefix of one frame (fewer than a header and matching the magic so far, or a whole valid
  header whose payload runs past the end of the file). Nothing else is: any other bytes
  (zeros, a damaged header or payload, a file that is not a framed log) are corruption and
  raise CorruptLog naming the file, the byte offset and what to do; a torn tail is therefore
  always shorter than one frame, and cutting it cuts at most one partial record;
- a writer opening an existing file cuts its torn tail (it was never synced, so never
  acknowledged) and refuses a corrupt file without changing it; after any failed write or
  sync it refuses every later call (the bytes on disk are then unknown: a retry could
  acknowledge a record that was lost), so its owner must stop and recover from the file.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

MAGIC = b"\xc3CXR"
HEADER = struct.Struct("<4sIII")  # magic, length, payload CRC32, header CRC32
MAX_RECORD = 1 << 24  # bytes of payload; a record is a command or a trade, well under 1 KB
BUFFER_SIZE = 1 << 20

_WHAT_TO_DO = (
    "the records from this byte on cannot be read. Restore the file from a replica or a "
    "backup; only if the records after byte {offset} are known to be expendable, keep the "
    "records before it with `truncate -s {offset} {path}`"
)


class CorruptLog(ValueError):
    """The message names the file, the byte offset and what to do; `damage` (what is wrong,
    without the advice) and `offset` are set when the framing found it."""

    damage: str = ""
    offset: int = -1


class NotAFile(OSError):
    """Something other than a regular file where the engine keeps one (the message names it
    and says what to do)."""


def require_regular_file(path: str | Path) -> None:
    """NotAFile unless `path` is absent or a regular file (a FIFO there would block its
    reader for ever: a probe's engine hung at start holding its lock; a directory or a
    dangling link says so here, not as a bare errno later). An OSError, so a snapshot file
    in the way is logged and counted as any snapshot that cannot be written."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise NotAFile(
                f"{path}: a link to nothing ({os.readlink(path)}): restore what it points "
                f"to, or remove it"
            ) from None
        return
    if not stat.S_ISREG(mode):
        what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise NotAFile(f"{path}: {what}, where the engine keeps a file: move it away")


class WriterFailed(OSError):
    """A write or sync failed earlier: what reached the disk is unknown."""


def frame_header(length: int, payload_crc: int) -> bytes:
    head = struct.pack("<4sII", MAGIC, length, payload_crc)
    return head + struct.pack("<I", zlib.crc32(head))


def frame(payload: bytes) -> bytes:
    return frame_header(len(payload), zlib.crc32(payload)) + payload


def first_payload(head: bytes) -> bytes | None:
    """The payload of the record `head` starts with, when `head` holds it whole and sound;
    None otherwise (for telling a framed log by its first bytes)."""
    if len(head) < HEADER.size:
        return None
    magic, length, payload_crc, header_crc = HEADER.unpack_from(head)
    if magic != MAGIC or zlib.crc32(head[:12]) != header_crc or length > MAX_RECORD:
        return None
    payload = head[HEADER.size : HEADER.size + length]
    if len(payload) != length or zlib.crc32(payload) != payload_crc:
        return None
    return payload


def _corrupt(path: Path, offset: int, what: str) -> CorruptLog:
    todo = _WHAT_TO_DO.format(offset=offset, path=path)
    error = CorruptLog(f"{path}: {what} at byte {offset}: {todo}")
    error.damage, error.offset = what, offset
    return error


class FrameReader:
    """Iterates (byte offset, payload) over the complete records of `path`; afterwards `end`
    is the end of the last complete record and `torn` the bytes of a torn tail after it.
    Raises CorruptLog for anything but a torn tail."""

    def __init__(
        self, path: str | Path, buffer_size: int = BUFFER_SIZE, max_record: int = MAX_RECORD
    ) -> None:
        self.path = Path(path)
        self.buffer_size = buffer_size
        self.max_record = max_record  # a longer length is damage (snapshots allow more)
        self.end = 0
        self.torn = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        with open(self.path, "rb") as file:
            buffer = b""
            at = 0  # file offset of buffer[0]
            eof = False
            while True:
                start = self.end - at
                if len(buffer) - start < HEADER.size and not eof:
                    buffer, at, eof = self._refill(file, buffer, start, at, HEADER.size)
                    continue
                if len(buffer) - start < HEADER.size:
                    self._tail(buffer[start:])
                    return
                magic, length, payload_crc, header_crc = HEADER.unpack_from(buffer, start)
                if magic != MAGIC:
                    raise self._fault("no record starts")
                if zlib.crc32(buffer[start : start + 12]) != header_crc:
                    raise self._fault("the record header is damaged (checksum mismatch)")
                if length > self.max_record:  # no writer makes one
                    raise self._fault(
                        f"the record claims {length:,} bytes (at most {self.max_record:,})"
                    )
                stop = start + HEADER.size + length
                if stop > len(buffer):
                    if eof:
                        self.torn = len(buffer) - start
                        return
                    buffer, at, eof = self._refill(file, buffer, start, at, stop - start)
                    continue
                payload = buffer[start + HEADER.size : stop]
                if zlib.crc32(payload) != payload_crc:
                    raise self._fault("the record's payload is damaged (checksum mismatch)")
                yield self.end, payload
                self.end += HEADER.size + length

    def _refill(
        self, file, buffer: bytes, start: int, at: int, need: int
    ) -> tuple[bytes, int, bool]:
        """Keep buffer[start:] and read until it holds `need` bytes or the file ends."""
        kept = [buffer[start:]]
        held = len(kept[0])
        eof = False
        while held < need:
            chunk = file.read(max(self.buffer_size, need - held))
            if not chunk:
                eof = True
                break
            kept.append(chunk)
            held += len(chunk)
        return b"".join(kept), at + start, eof

    def _tail(self, rest: bytes) -> None:
        """Fewer bytes than a header after the last record: torn only if they could begin
        one."""
        if rest[: len(MAGIC)] != MAGIC[: len(rest)]:
            raise self._fault("no record starts")
        self.torn = len(rest)

    def _fault(self, what: str) -> CorruptLog:
        if self.end == 0 and what == "no record starts":
            what = "the file is not a framed log (or is corrupt): no record starts"
        return _corrupt(self.path, self.end, what)


def read_frames(path: str | Path, buffer_size: int = BUFFER_SIZE) -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) of every complete record, streaming."""
    return iter(FrameReader(path, buffer_size))


def decode_records(reader: FrameReader, decoder: msgspec.msgpack.Decoder, what: str) -> Iterator:
    """Every record of `reader` decoded; CorruptLog naming the byte offset for a record that
    is not `what` (a file of another kind, or a writer that broke the format)."""
    for offset, payload in reader:
        try:
            yield decoder.decode(payload)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise CorruptLog(
                f"{reader.path}: the record at byte {offset} is not {what}: {exc}"
            ) from None


def read_records(path: str | Path, decoder: msgspec.msgpack.Decoder, what: str) -> Iterator:
    return decode_records(FrameReader(path), decoder, what)


def torn_tail(path: str | Path) -> tuple[int, int]:
    """(end of the last complete record, bytes of a torn tail after it, 0 if none).
    CorruptLog for any other damage."""
    reader = FrameReader(path)
    for _ in reader:
        pass
    return reader.end, reader.torn


class FramedWriter:
    """Append-only writer; `sync()` flushes and fsyncs. Opening an existing file reads it
    through, refuses it if corrupt, and cuts off its torn tail (`discarded`: the bytes cut);
    `last_payload` is its last record's payload (None for an empty file); `size` is the
    file's length in bytes, including what is written but not yet synced."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.last_payload: bytes | None = None
        self.discarded = 0
        if self.path.exists():
            reader = FrameReader(self.path)
            for _, self.last_payload in reader:
                pass
            if reader.torn:
                with open(self.path, "r+b") as f:
                    f.truncate(reader.end)
                    os.fsync(f.fileno())
            self.discarded = reader.torn
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self.size = self._file.tell()
        self._failed: OSError | None = None

    def write(self, payload: bytes) -> None:
        self.write_parts(payload)

    def write_parts(self, *parts: bytes | memoryview) -> None:
        """One record whose payload is `parts` (bytes, or memoryviews of bytes) one after the
        other, written without joining them (a batch's records are not copied)."""
        length = sum(len(part) for part in parts)
        if length > MAX_RECORD:
            raise ValueError(f"a record of {length:,} bytes exceeds {MAX_RECORD:,}")
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        self._guarded(self._file.write, frame_header(length, crc))
        for part in parts:
            self._guarded(self._file.write, part)
        self.size += HEADER.size + length

    def write_framed(self, frames: bytes) -> None:
        """Records already framed (`frame`'s bytes, back to back), written as they are."""
        self._guarded(self._file.write, frames)
        self.size += len(frames)

    def flush(self) -> None:
        """Hand what is written to the operating system (no fsync: a crash of the machine
        may still lose it, a crash of the process does not)."""
        self._guarded(self._file.flush)

    def sync(self) -> None:
        self._guarded(self._file.flush)
        self._guarded(os.fsync, self._file.fileno())

    def _guarded(self, operation, *args) -> None:
        if self._failed is not None:
            raise WriterFailed(
                f"{self.path}: an earlier write or sync failed ({self._failed}); stop and "
                "recover from the file"
            )
        try:
            operation(*args)
        except OSError as exc:
            self._failed = exc
            raise

    def close(self) -> None:
        """Sync and close; after a failure only close (the failure was raised already)."""
        try:
            if self._failed is None:
                self.sync()
        finally:
            try:
                self._file.close()
            except OSError:
                if self._failed is None:
                    raise

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
