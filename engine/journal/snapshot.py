"""Snapshot files: a state, the sequence number it covers and its state hash, written atomically.

A snapshot is `snapshot-<seq, 16 digits>.snap` in its directory: two frames (engine.framing),
a msgpack header [format, seq, state_hash, ts_ns, history] and the state payload (opaque
bytes, made and read by the owner of the state). `history` is the journal's history id
(engine.journal.history; "" when none was given), which ties the snapshot to the journal it
was taken from: a probe restored another data directory's snapshot under this journal and
the engine started with a state neither had. Format 1 (before history) is read, with "".
Invariants:
- a snapshot file is whole or absent: it is written to a temporary name, fsynced, renamed
  into place and the directory fsynced before `write_snapshot` returns; a crash leaves at
  most a `*.tmp` file, which is never read and is removed by the next write;
- a file under a snapshot name that is not exactly those two intact frames, or whose header
  disagrees with its name, raises CorruptLog naming it (it is never skipped silently: an
  operator removes it to fall back to the snapshot before it);
- the latest snapshot is the one with the highest seq; pruning (`prune_snapshots`) never
  removes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.durable import write_atomically
from engine.framing import CorruptLog, FrameReader, frame, require_regular_file
from engine.journal.commandlog import Nanoseconds, Seq, check_stamp
from engine.journal.history import is_history_id

FORMAT = 2
SNAPSHOT = re.compile(r"snapshot-(\d{16})\.snap")
_header_decoder = msgspec.msgpack.Decoder(tuple[int, Seq, str, Nanoseconds, str])
_format_1_decoder = msgspec.msgpack.Decoder(tuple[int, Seq, str, Nanoseconds])


@dataclass(frozen=True)
class Snapshot:
    path: Path
    seq: int
    state_hash: str
    ts_ns: int
    state: bytes
    history: str = ""  # the id of the journal it was taken from ("": not known)


# a snapshot's state is one record: the frame header's 32-bit length is its limit (a
# command log's records stay under engine.framing.MAX_RECORD: 16 MiB; a state passes that)
MAX_STATE_BYTES = (1 << 32) - 1


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:016d}.snap"


def write_snapshot(
    directory: str | Path,
    seq: int,
    state_hash: str,
    state: bytes,
    ts_ns: int = 0,
    history: str = "",
) -> Path:
    """Write the snapshot of a state after command `seq` of the journal whose history id is
    `history` atomically; returns its path."""
    check_stamp(seq, ts_ns)
    if not isinstance(state_hash, str) or not isinstance(state, bytes):
        raise TypeError("a snapshot takes the state hash as str and the state as bytes")
    if not isinstance(history, str) or not is_history_id(history, or_empty=True):
        raise ValueError(f"a history id is 32 lower-case hex digits, not {history!r}")
    if len(state) > MAX_STATE_BYTES:
        raise ValueError(
            f"a state of {len(state):,} bytes: a snapshot holds at most {MAX_STATE_BYTES:,}"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("snapshot-*.snap.tmp"):
        stale.unlink()
    header = msgspec.msgpack.encode((FORMAT, seq, state_hash, ts_ns, history))
    return write_atomically(directory / snapshot_name(seq), frame(header) + frame(state))


def _read_header(payload: bytes) -> tuple[int, int, str, int, str]:
    """(format, seq, state_hash, ts_ns, history) of a header of this format, or of format 1
    (history ""); msgspec.DecodeError for anything else."""
    try:
        header = _header_decoder.decode(payload)
        expected = FORMAT
    except msgspec.DecodeError:
        header = (*_format_1_decoder.decode(payload), "")
        expected = 1
    if header[0] != expected or not is_history_id(header[4], or_empty=True):
        raise msgspec.DecodeError(f"format {header[0]} with history id {header[4]!r}")
    return header


def read_snapshot(path: str | Path, before: int | None = None) -> Snapshot:
    """The snapshot in `path`; CorruptLog naming it and what to do: restore it, or remove it
    to start from `before` (the seq of the snapshot before it; None: there is none, and the
    whole journal is replayed, a probe was pointed to a snapshot before that did not exist)."""
    path = Path(path)
    fallback = (
        f"the snapshot before it (seq {before}), with the journal from the segment holding "
        f"seq {before + 1} on"
        if before is not None
        else "the whole journal: there is no snapshot before it, so every segment from the "
        "journal's first must be there"
    )
    what_to_do = f"restore it from a replica or a backup, or remove it to recover from {fallback}"
    reader = FrameReader(path, max_record=MAX_STATE_BYTES)
    try:
        frames = [payload for _, payload in reader]
    except CorruptLog as exc:
        raise CorruptLog(f"{path}: {exc.damage} at byte {exc.offset}: {what_to_do}") from None
    if reader.torn or len(frames) != 2:
        raise CorruptLog(f"{path}: not a whole snapshot (header and state): {what_to_do}")
    try:
        fmt, seq, state_hash, ts_ns, history = _read_header(frames[0])
    except msgspec.DecodeError as exc:
        raise CorruptLog(
            f"{path}: the snapshot header is not valid ({exc}): {what_to_do}"
        ) from None
    match = SNAPSHOT.fullmatch(path.name)
    if match is None or int(match[1]) != seq:
        raise CorruptLog(
            f"{path}: a snapshot (format {fmt}) for seq {seq}: the name must carry the seq: "
            f"{what_to_do}"
        )
    return Snapshot(path, seq, state_hash, ts_ns, frames[1], history)


def snapshot_seqs(directory: str | Path) -> list[int]:
    """The seqs of the files under a snapshot name in `directory`, in ascending order."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(
        int(match[1]) for path in directory.iterdir() if (match := SNAPSHOT.fullmatch(path.name))
    )


def latest_snapshot(directory: str | Path) -> Snapshot | None:
    """The snapshot with the highest seq in `directory` (None if there is none)."""
    seqs = snapshot_seqs(directory)
    if not seqs:
        return None
    latest = Path(directory) / snapshot_name(seqs[-1])
    require_regular_file(latest)
    return read_snapshot(latest, seqs[-2] if len(seqs) > 1 else None)


def prune_snapshots(directory: str | Path, keep: int, newest: int) -> tuple[list[int], list[str]]:
    """Remove the snapshots at or below `newest` (the one just written) but the `keep` newest
    of them (0: keep all); the seqs removed, and what could not be removed and why (the
    others are removed all the same). `newest` is never removed, nor a file under a snapshot
    name beyond it (none of this engine's: a probe's stray name made `keep` 1 remove the
    snapshot just written); the ones kept before it are what an operator falls back to when
    it is damaged."""
    seqs = [seq for seq in snapshot_seqs(directory) if seq <= newest]
    if keep <= 0 or len(seqs) <= keep:
        return [], []
    removed, failed = [], []
    for seq in seqs[:-keep]:
        path = Path(directory) / snapshot_name(seq)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # a directory under the name, say: the rest are removed
            failed.append(f"{path.name}: {exc.strerror or exc}")
            continue
        removed.append(seq)
    return removed, failed
