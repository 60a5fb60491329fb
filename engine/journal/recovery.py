"""Recovery: the latest snapshot, then the journal after the sequence number it covers.

The state is anything with `seq`, `state_hash()` and `apply_stamped(seq, ts_ns, command)`, as
the Exchange has (engine.journal.segments.State); turning it into snapshot bytes and back is
given by the caller (`dump`, `restore`), so this module knows no state's layout. Invariants:
- a restored state must have the snapshot's seq and state hash before a single record is
  applied to it (SnapshotMismatch otherwise: the state's serialisation is not faithful);
- a snapshot whose state `restore` refuses (ValueError: another config, another format,
  damaged) raises SnapshotUnusable naming the file and what to do; nothing is applied;
- after recovery the state has applied every journal command up to the last whole record,
  each exactly once, in order, with no gap (CorruptLog otherwise), so its state hash is the
  one an uninterrupted run would have at the same seq (consecutive batch records are applied
  in runs: engine.journal.segments.catch_up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from engine.journal.segments import State, catch_up
from engine.journal.snapshot import Snapshot, latest_snapshot, write_snapshot

S = TypeVar("S", bound=State)


class SnapshotMismatch(RuntimeError):
    pass


class SnapshotUnusable(RuntimeError):
    """The latest snapshot's state cannot be restored (the restore's reason is given)."""


@dataclass(frozen=True)
class Recovered(Generic[S]):
    state: S
    snapshot: Snapshot | None
    replayed: int  # journal commands applied after the snapshot


def save_snapshot(
    directory: str | Path,
    state: S,
    dump: Callable[[S], bytes],
    ts_ns: int = 0,
    history: str = "",
) -> Path:
    """Snapshot `state` (at its seq, with its state hash; of the journal whose history id is
    `history`) into `directory`, atomically."""
    return write_snapshot(directory, state.seq, state.state_hash(), dump(state), ts_ns, history)


def recover(
    journal: str | Path,
    snapshots: str | Path,
    fresh: Callable[[], S],
    restore: Callable[[bytes], S],
) -> Recovered[S]:
    """The state at the journal's last whole record: the latest snapshot restored (or a fresh
    state if there is none), then every journal record after its seq applied."""
    state, snapshot = restore_latest(snapshots, fresh, restore)
    return Recovered(state, snapshot, catch_up(journal, state))


def restore_latest(
    snapshots: str | Path, fresh: Callable[[], S], restore: Callable[[bytes], S]
) -> tuple[S, Snapshot | None]:
    """The latest snapshot restored and checked (or a fresh state if there is none): where
    a journal's replay starts."""
    snapshot = latest_snapshot(snapshots)
    if snapshot is None:
        state = fresh()
    else:
        try:
            state = restore(snapshot.state)
        except ValueError as exc:
            raise SnapshotUnusable(
                f"{snapshot.path}: {exc}; or remove it to recover from the snapshot before it "
                "(the journal must then reach back to that one)"
            ) from exc
        if (state.seq, state.state_hash()) != (snapshot.seq, snapshot.state_hash):
            raise SnapshotMismatch(
                f"{snapshot.path}: restored to seq {state.seq}, state hash {state.state_hash()}"
                f", but the snapshot covers seq {snapshot.seq}, state hash "
                f"{snapshot.state_hash}: the state's serialisation is not faithful"
            )
    return state, snapshot
