"""DATA/acknowledged: the last sequence number the engine has acknowledged, so a start can tell a
journal that lost acknowledged commands from one that is whole.

A helper's probe cut 20 acknowledged resting orders from the journal's tail (an old copy of a
segment restored): the engine started without them and said nothing, since they had printed no
trade for trades.log to show. Invariants:
- the file holds one big-endian u64: after each turn's fsync (or flush, with fsync off) the
  service writes the sequence number it then acknowledges (`mark`: one pwrite of 8 bytes, no
  fsync of its own). It is written after the journal holds the commands durably, so with fsync
  on it can never be ahead of the journal on disk; a crash may leave it behind, never ahead;
- so at start a mark past the seq the journal recovers proves acknowledged commands missing
  (`missing` gives their range); no file (or an empty one: made, nothing acknowledged yet)
  is a mark of 0; a file of another size, or holding 0 or a number past int64 (never
  written: damage, e.g. blocks zeroed by a crash, or 8 bytes of 0xFF that a start once
  took for 2**64 - 1 commands missing and crashed counting them), is refused (ValueError
  naming it and what to do), never taken as 0; so is anything but a regular file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from engine.framing import require_regular_file

ACKNOWLEDGED_FILE = "acknowledged"
_MARK = struct.Struct(">Q")
_LARGEST = 2**63 - 1  # sequence numbers are int64


class AcknowledgedMark:
    """The mark of the data directory `data_dir`, open for the service's life."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / ACKNOWLEDGED_FILE
        require_regular_file(self.path)
        self._fd: int | None = None  # made at the first mark: a start that refuses makes nothing
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            self.seq = 0
            return
        try:
            self.seq = self._read(self._fd)
        except BaseException:
            self.close()
            raise

    def _read(self, fd: int) -> int:
        held = os.pread(fd, _MARK.size + 1, 0)
        if not held:
            return 0
        what_to_do = (
            "restore it from a backup of this data directory, or remove it (the start then "
            "cannot tell whether acknowledged commands are missing)"
        )
        if len(held) != _MARK.size:
            raise ValueError(
                f"{self.path}: {len(held)} bytes, not the {_MARK.size} of a sequence number: "
                f"{what_to_do}"
            )
        (seq,) = _MARK.unpack(held)
        if not 0 < seq <= _LARGEST:
            raise ValueError(
                f"{self.path}: holds {seq}, which the engine never writes (damaged): {what_to_do}"
            )
        return seq

    def missing(self, recovered_seq: int) -> range:
        """The acknowledged sequence numbers past `recovered_seq` (none if it reaches the mark)."""
        return range(recovered_seq + 1, self.seq + 1)

    def mark(self, seq: int) -> None:
        """Record `seq` as acknowledged (after the journal holds it)."""
        if seq != self.seq:
            try:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                os.pwrite(self._fd, _MARK.pack(seq), 0)
            except OSError as exc:  # named: a probe's message did not say which file failed
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            self.seq = seq

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
