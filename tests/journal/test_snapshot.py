"""Snapshots (atomic, carrying seq and state hash) and recovery: the latest snapshot, then the
journal after it, reaches the state hash of an uninterrupted run.

The state here is `Tally`, a state machine of the journal's own data, so these tests know no
exchange; the exchange's own snapshot through this path: tests/journal/test_exchange_recovery.py."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys

import msgspec
import pytest

from engine.framing import MAX_RECORD
from engine.journal import CorruptLog, Journal
from engine.journal import snapshot as snapshot_module
from engine.journal.recovery import SnapshotMismatch, recover, save_snapshot
from engine.journal.segments import list_segments
from engine.journal.snapshot import (
    latest_snapshot,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)
from engine.protocol import Command, EndOfDay, encode
from tests.journal.test_crash import complete_lines
from tests.journal.test_journal import ROOT
from tests.journal.test_segments import DAYS, three_days


class Tally:
    """Commands counted by type, the last timestamp and a hash chain over every command."""

    def __init__(self) -> None:
        self.seq = 0
        self.counts: dict[str, int] = {}
        self.last_ts = 0
        self.chain = b""

    def apply_stamped(self, seq: int, ts_ns: int, command: Command) -> None:
        assert seq == self.seq + 1, (seq, self.seq)
        self.seq = seq
        name = type(command).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        self.last_ts = ts_ns
        self.chain = hashlib.sha256(self.chain + encode(command)).digest()

    def dump(self) -> bytes:
        return msgspec.msgpack.encode((self.seq, self.counts, self.last_ts, self.chain))

    def state_hash(self) -> str:
        return hashlib.sha256(self.dump()).hexdigest()

    @classmethod
    def restore(cls, data: bytes) -> Tally:
        tally = cls()
        tally.seq, tally.counts, tally.last_ts, tally.chain = msgspec.msgpack.decode(
            data, type=tuple[int, dict[str, int], int, bytes]
        )
        return tally


def run_days(tmp_path, commands) -> Tally:
    """Journal and apply `commands`, snapshotting after every EndOfDay; the final state."""
    tally = Tally()
    with Journal(tmp_path / "journal", max_segment_bytes=4_096) as journal:
        for seq, command in enumerate(commands, 1):
            journal.append(seq, seq * 1_000, command)
            tally.apply_stamped(seq, seq * 1_000, command)
            if isinstance(command, EndOfDay):
                journal.sync()
                save_snapshot(tmp_path / "snapshots", tally, Tally.dump, ts_ns=seq * 1_000)
    return tally


def test_recovery_from_the_latest_snapshot_and_the_journal_after_it(tmp_path):
    commands = three_days()
    cut = len(commands) - 50  # the third day's snapshot is not taken yet
    uninterrupted = run_days(tmp_path, commands[:cut])
    days_ended = [seq for seq, c in enumerate(commands[:cut], 1) if isinstance(c, EndOfDay)]
    assert len(days_ended) == 2
    recovered = recover(tmp_path / "journal", tmp_path / "snapshots", Tally, Tally.restore)
    assert recovered.snapshot.seq == days_ended[-1]
    assert recovered.replayed == cut - days_ended[-1]
    assert recovered.state.state_hash() == uninterrupted.state_hash()
    assert recovered.state.seq == cut
    from_scratch = recover(tmp_path / "journal", tmp_path / "nothing", Tally, Tally.restore)
    assert from_scratch.snapshot is None and from_scratch.replayed == cut
    assert from_scratch.state.state_hash() == uninterrupted.state_hash()


def test_days_before_the_latest_snapshot_can_be_archived(tmp_path):
    commands = three_days()
    uninterrupted = run_days(tmp_path, commands)
    covered = latest_snapshot(tmp_path / "snapshots").seq
    assert covered == len(commands)
    for segment in list_segments(tmp_path / "journal"):
        if segment.day in DAYS[:2]:
            segment.path.unlink()
    recovered = recover(tmp_path / "journal", tmp_path / "snapshots", Tally, Tally.restore)
    assert recovered.state.state_hash() == uninterrupted.state_hash()
    for later in sorted((tmp_path / "snapshots").iterdir())[1:]:
        later.unlink()  # back to the first day's snapshot: the second day is archived
    with pytest.raises(CorruptLog, match="are missing: restore their segments"):
        recover(tmp_path / "journal", tmp_path / "snapshots", Tally, Tally.restore)


def test_a_restore_that_does_not_reproduce_the_snapshot_is_refused(tmp_path):
    run_days(tmp_path, three_days()[:400])

    def lossy(data: bytes) -> Tally:
        tally = Tally.restore(data)
        tally.last_ts += 1
        return tally

    with pytest.raises(SnapshotMismatch, match=r"snapshot-\d{16}\.snap: restored to seq"):
        recover(tmp_path / "journal", tmp_path / "snapshots", Tally, lossy)


def test_a_damaged_snapshot_is_named_and_a_leftover_temporary_file_is_ignored(tmp_path):
    directory = tmp_path / "snapshots"
    older = write_snapshot(directory, 10, "a" * 64, b"state ten")
    path = write_snapshot(directory, 20, "b" * 64, b"state twenty" * 100)
    (directory / (snapshot_name(30) + ".tmp")).write_bytes(b"half a snapshot")
    assert latest_snapshot(directory).state == b"state twenty" * 100
    data = path.read_bytes()
    for at in (0, 10, 40, len(data) // 2, len(data) - 1):
        damaged = bytearray(data)
        damaged[at] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptLog, match=rf"{path.name}.*remove it to recover from"):
            latest_snapshot(directory)
    path.write_bytes(data[:-1])
    with pytest.raises(CorruptLog, match="not a whole snapshot"):
        latest_snapshot(directory)
    path.unlink()
    older.rename(directory / snapshot_name(11))  # a name that disagrees with the header
    with pytest.raises(CorruptLog, match="the name must carry the seq"):
        read_snapshot(directory / snapshot_name(11))
    write_snapshot(directory, 40, "c" * 64, b"")
    assert not list(directory.glob("*.tmp"))


def test_a_snapshot_carries_its_journals_history_id_and_format_1_is_read(tmp_path):
    """The history id ties a snapshot to its journal (a probe restored another directory's
    snapshot under this journal); snapshots written before it (format 1) read with ""."""
    from engine.framing import frame

    history = "0123456789abcdef" * 2
    path = write_snapshot(tmp_path, 5, "a" * 64, b"state", 7, history)
    assert read_snapshot(path).history == history
    assert read_snapshot(write_snapshot(tmp_path, 6, "b" * 64, b"state")).history == ""
    old = tmp_path / snapshot_name(8)
    old.write_bytes(frame(msgspec.msgpack.encode((1, 8, "c" * 64, 9))) + frame(b"old"))
    assert (read_snapshot(old).history, read_snapshot(old).state) == ("", b"old")
    for header in ((2, 8, "c" * 64, 9), (1, 8, "c" * 64, 9, history), (2, 8, "c", 9, "xyz"),
                   (3, 8, "c" * 64, 9, history)):  # fmt: skip
        old.write_bytes(frame(msgspec.msgpack.encode(header)) + frame(b"old"))
        with pytest.raises(CorruptLog, match="the snapshot header is not valid"):
            read_snapshot(old)
    for bad in ("XYZ", history.upper(), history + "0", 7):
        with pytest.raises(ValueError, match="a history id is 32 lower-case hex digits"):
            write_snapshot(tmp_path, 9, "d" * 64, b"state", 0, bad)
    assert not (tmp_path / snapshot_name(9)).exists()


def test_a_bad_stamp_or_state_type_writes_no_snapshot(tmp_path):
    for seq, state_hash, state in ((0, "h", b""), (1.0, "h", b""), (1, None, b""), (1, "h", "s")):
        with pytest.raises((ValueError, TypeError)):
            write_snapshot(tmp_path, seq, state_hash, state)
    assert list(tmp_path.iterdir()) == []


def test_a_state_beyond_a_command_logs_record_limit_is_written_and_read_back(tmp_path):
    """The crash soak found it: after 510 restarts the engine wrote a 17.5 MB state, which the
    snapshot reader refused as damage (it held snapshots to a command record's 16 MiB), and
    every restart failed. A state is one record up to what the frame header can say."""
    state = bytes(range(256)) * ((MAX_RECORD + 4096) // 256)
    path = write_snapshot(tmp_path, 7, "d" * 64, state)
    assert read_snapshot(path).state == state
    assert latest_snapshot(tmp_path).seq == 7


def test_a_state_beyond_the_snapshot_limit_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_module, "MAX_STATE_BYTES", 100)
    with pytest.raises(ValueError, match="a snapshot holds at most 100"):
        write_snapshot(tmp_path, 1, "e" * 64, b"x" * 101)
    assert list(tmp_path.iterdir()) == []
    write_snapshot(tmp_path, 1, "e" * 64, b"x" * 100)  # the limit itself is a state


SNAPSHOTTER = """
import sys
from engine.journal.snapshot import write_snapshot

for seq in range(1, 100_000):
    write_snapshot(sys.argv[1], seq, f"{seq:064x}", bytes([seq % 256]) * 2_000_000)
    print(seq, flush=True)
"""


def test_a_snapshot_writer_killed_at_random_moments_leaves_only_whole_snapshots(tmp_path):
    rng = random.Random(5)
    directory = tmp_path / "snapshots"
    for _ in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", SNAPSHOTTER, str(directory)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        child.stdout.readline()  # one snapshot is done; kill it during a later one
        subprocess.run(["sleep", str(rng.uniform(0, 0.05))], check=True)
        os.kill(child.pid, signal.SIGKILL)
        saved = [int(line) for line in complete_lines(child.stdout.read())]
        child.wait(timeout=30)
        snapshot = latest_snapshot(directory)
        assert snapshot.seq >= max(saved, default=1)
        assert snapshot.state_hash == f"{snapshot.seq:064x}"
        assert snapshot.state == bytes([snapshot.seq % 256]) * 2_000_000


def test_a_damaged_latest_snapshot_says_what_there_is_to_fall_back_to(tmp_path):
    """A probe: with one snapshot kept (`--keep-snapshots 1`), the refusal pointed to "the
    snapshot before it", which did not exist; the whole journal is what is left."""
    write_snapshot(tmp_path, 40, "a" * 64, b"state", history="")
    newest = write_snapshot(tmp_path, 90, "b" * 64, b"state", history="")
    newest.write_bytes(newest.read_bytes()[:-3])
    with pytest.raises(CorruptLog, match=r"the snapshot before it \(seq 40\), with the journal"
                       r" from the segment holding seq 41 on"):  # fmt: skip
        latest_snapshot(tmp_path)
    (tmp_path / "snapshot-0000000000000040.snap").unlink()
    with pytest.raises(CorruptLog, match="there is no snapshot before it, so every segment"):
        latest_snapshot(tmp_path)
