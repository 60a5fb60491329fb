"""The snapshot writer's child process (engine.gateway.snapshotter): the engine's loop goes on
while it writes, and it holds nothing of the engine's, outlives nothing and never raises."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.gateway import snapshotter, wire
from engine.gateway.snapshotter import SnapshotWriter
from tests.support.engine import EngineProcess

ROOT = Path(__file__).resolve().parents[2]


def once(path: Path, answer: str = "written") -> str:
    """A child's work that waits (at most 30 s) for `path` to appear."""
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return answer


class Results:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.failed: list[str] = []


def started(writer: SnapshotWriter, work) -> Results:
    results = Results()
    writer.start(work, results.done.append, results.failed.append)
    return results


def test_the_parent_goes_on_while_the_child_works_and_hears_its_line(tmp_path):
    writer = SnapshotWriter()
    go = tmp_path / "go"
    results = started(writer, lambda: once(go, "snapshot at seq 7: here"))
    assert writer.busy
    writer.reap()  # the child waits for `go`: nothing to hand on yet
    assert writer.busy and not results.done and not results.failed
    with pytest.raises(RuntimeError, match="reap it first"):  # one at a time
        writer.start(lambda: "again", print, print)
    go.touch()
    writer.wait(print)
    assert not writer.busy
    assert (results.done, results.failed) == (["snapshot at seq 7: here"], [])


def test_a_finished_child_is_reaped_without_waiting(tmp_path):
    writer = SnapshotWriter()
    results = started(writer, lambda: "quick")
    deadline = time.monotonic() + 30
    while writer.busy:
        assert time.monotonic() < deadline
        writer.reap()
        time.sleep(0.01)
    assert results.done == ["quick"]


def refuse_to_write() -> str:
    raise OSError(28, "No space left on device")


def a_bug() -> str:
    raise ValueError("a state of 5,000,000,000 bytes")


@pytest.mark.parametrize(
    ("work", "said"),
    [
        (refuse_to_write, "[Errno 28] No space left on device"),
        (a_bug, "ValueError: a state of 5,000,000,000 bytes"),
    ],
)
def test_a_child_that_fails_says_why_and_nothing_is_raised(work, said):
    writer = SnapshotWriter()
    results = started(writer, work)
    writer.wait(print)
    assert (results.done, results.failed) == ([], [said])


def test_a_child_killed_is_a_failure_that_names_the_signal(tmp_path):
    writer = SnapshotWriter()
    results = started(writer, lambda: once(tmp_path / "never"))
    pid = writer.pid
    os.kill(pid, signal.SIGKILL)
    writer.wait(print)
    assert results.failed == [f"its writer, process {pid}, was killed by SIGKILL"]


def test_the_child_ignores_an_operators_ctrl_c_and_a_terminate(tmp_path):
    """The parent waits for it as it stops: a Ctrl-C (SIGINT to the whole foreground group)
    or a service manager's SIGTERM must not kill a snapshot half written."""
    writer = SnapshotWriter()
    go = tmp_path / "go"
    results = started(writer, lambda: once(go))
    for sent in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(writer.pid, sent)
    go.touch()
    writer.wait(print)
    assert (results.done, results.failed) == (["written"], [])


def test_the_child_holds_none_of_the_parents_descriptors(tmp_path):
    """A child holding the data directory's lock or a socket's port would refuse the start of
    an engine restarted after a kill -9 while it wrote."""
    lock = open(tmp_path / "engine.lock", "w")  # noqa: SIM115 (held across the fork)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ready, go = tmp_path / "ready", tmp_path / "go"

    def work() -> str:
        ready.touch()  # past the child's start: what it holds now, it holds while it writes
        return once(go, " ".join(sorted(os.listdir("/proc/self/fd"))))

    writer = SnapshotWriter()
    results = started(writer, work)
    once(ready)
    lock.close()  # the parent lets go: free at once, though the child still runs
    other = open(tmp_path / "engine.lock")  # noqa: SIM115
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child held it
    other.close()
    go.touch()
    writer.wait(print)
    held = [int(fd) for fd in results.done[0].split()]
    # stdin, stdout, stderr, the answer pipe and the directory listdir read
    assert len([fd for fd in held if fd > 2]) == 2, held


CHILD_OF_A_KILLED_PARENT = """
import sys, time
from engine.gateway import wire
from engine.gateway import snapshotter
from engine.gateway.snapshotter import SnapshotWriter
writer = SnapshotWriter()
writer.start(lambda: time.sleep(60) or "late", print, print)
print(writer.pid, flush=True)
time.sleep(60)
"""


def test_the_child_dies_with_its_parent():
    """An engine killed with SIGKILL leaves no writer behind."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_OF_A_KILLED_PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(30)
    parent.stdout.close()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and "Z" not in state_of(child):
        assert time.monotonic() < deadline, f"the writer {child} outlived its parent"
        time.sleep(0.02)


def state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


@pytest.mark.slow
def test_an_engine_stopped_while_its_snapshot_is_written_waits_for_it(tmp_path):
    """The snapshot asked for just before a stop is on disk when the engine has stopped (the
    child would die with it if it left first)."""
    data = tmp_path / "data"
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")
        seq = engine.status().seq
        engine.admin(wire.SnapshotNow())
        assert engine.stop() == 0
        assert f"snapshot at seq {seq}: " in engine.output()
    assert (data / "snapshots" / f"snapshot-{seq:016d}.snap").is_file()


@pytest.mark.slow
def test_a_snapshot_asked_for_while_one_is_written_is_taken_after_it(tmp_path):
    """Two asks a round trip apart: the second comes while the first's child writes, and is
    taken once that child is reaped, at a seq at least its own."""
    from engine.gateway.admin_client import AdminClient

    data = tmp_path / "data"
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")
        with AdminClient(engine.endpoints["admin"]) as admin:
            asked = [admin.ask(wire.SnapshotNow())[0] for _ in range(2)]
        assert all(isinstance(a, wire.SnapshotRequested) for a in asked), asked
        deadline = time.monotonic() + 60
        while engine.status().counters["snapshots_written"] < 2:
            assert time.monotonic() < deadline, engine.output()
            time.sleep(0.05)
        assert engine.status().counters["snapshot_failures"] == 0
        assert engine.stop() == 0
    assert engine.output().count("snapshot at seq") == 2


def test_no_descriptor_for_the_pipe_is_a_failure_not_a_crash(monkeypatch):
    """Found by a probe: with every descriptor taken (a flood of connections), the pipe made
    before the fork raised into the loop, and the engine exited."""

    def no_descriptors():
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(snapshotter.os, "pipe", no_descriptors)
    writer = SnapshotWriter()
    results = started(writer, lambda: "never")
    assert not writer.busy
    assert results.failed == ["its writer could not be started: [Errno 24] Too many open files"]


def test_a_stop_says_it_waits_for_a_stuck_writer_and_ends_it(tmp_path, monkeypatch):
    """Found by a probe: a stopped writer (SIGSTOP) held a SIGTERM'd engine for good, with
    nothing in its log."""
    monkeypatch.setattr(snapshotter, "SAY_WAITING_S", 0.1)
    writer = SnapshotWriter()
    results = started(writer, lambda: once(tmp_path / "never"))
    pid = writer.pid
    os.kill(pid, signal.SIGSTOP)
    said: list[str] = []
    writer.wait(said.append, limit_s=0.5)
    assert not writer.busy
    assert said == [
        f"waiting for the snapshot writer, process {pid}, to finish (at most 0 s, then it is ended)"
    ]
    assert results.failed == [f"its writer, process {pid}, was killed by SIGKILL"]


def test_short_of_memory_the_kernel_ends_the_writer_first():
    """Found by a probe: under a memory limit the kernel killed the engine, not its writer."""
    writer = SnapshotWriter()
    results = started(writer, lambda: Path("/proc/self/oom_score_adj").read_text().strip())
    writer.wait(print)
    assert results.done == ["1000"]


def writer_of(engine: EngineProcess) -> int:
    """The pid of the engine's snapshot writer, once it runs (a child of its main thread)."""
    pid = engine.process.pid
    deadline = time.monotonic() + 30
    while not (children := Path(f"/proc/{pid}/task/{pid}/children").read_text().split()):
        assert time.monotonic() < deadline, "no snapshot writer started"
        time.sleep(0.001)
    return int(children[0])


@pytest.mark.slow
def test_a_snapshot_still_wanted_when_the_engine_stops_is_taken(tmp_path):
    """Found by a probe: a snapshot asked for while another was being written (the day's end
    among them) was lost at the stop without a word. Here the first writer is held stopped
    while the second is asked for and the engine is told to stop."""
    from engine.gateway.admin_client import AdminClient

    data = tmp_path / "data"
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")
        with AdminClient(engine.endpoints["admin"]) as admin:
            admin.ask(wire.SnapshotNow())
            first = writer_of(engine)
            os.kill(first, signal.SIGSTOP)
            admin.ask(wire.SnapshotNow())  # wanted while the first is being written
        engine.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the loop has stopped and waits for the first writer
        os.kill(first, signal.SIGCONT)
        assert engine.process.wait(30) == 0
    assert engine.output().count("snapshot at seq") == 2, engine.output()


def test_tables_whose_snapshot_was_never_written_are_removed_at_the_next(tmp_path):
    """Found by a probe: order status tables left by a crash or a failure between the two
    writes piled up (3 after 15 kill -9 rounds)."""
    from engine.gateway.admin import remove_orphan_tables

    names = ["orders-0000000000000001.msgpack", "orders-0000000000000002.msgpack",
             "snapshot-0000000000000002.snap", "orders-0000000000000005.msgpack"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    remove_orphan_tables(tmp_path, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Found by a probe: a snapshot's partial temporary file on a full disk stayed until the
    next restart, and the next attempt then failed with 0 bytes free."""
    from engine import durable

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        durable.write_atomically(tmp_path / "orders-0000000000000001.msgpack", b"x" * 100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_engine_whose_writer_is_killed_says_so_and_trades_on(tmp_path):
    """A probe: a killed writer's log line gave full-disk advice. (A writer may finish before
    it is killed: then it is asked again.)"""
    data = tmp_path / "data"
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")
        deadline = time.monotonic() + 60
        while True:
            before = engine.status().counters
            engine.admin(wire.SnapshotNow())
            writer = writer_of(engine)
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer, signal.SIGKILL)
            ended = ("snapshots_written", "snapshot_failures")
            while [(counters := engine.status().counters)[n] for n in ended] == [
                before[n] for n in ended
            ]:
                assert time.monotonic() < deadline, engine.output()
                time.sleep(0.02)
            if counters["snapshot_failures"] > before["snapshot_failures"]:
                break  # killed while it wrote
        said = engine.output()
        assert f"NOT written (its writer, process {writer}, was killed by SIGKILL)" in said
        assert "holds everything: ask again (cxe admin snapshot)" in said
        assert "a full disk" not in said
        engine.snapshot()  # and the next one is written
        assert engine.stop() == 0


def test_pruning_keeps_the_newest_snapshots_and_never_the_latest_alone(tmp_path):
    from engine.journal.snapshot import prune_snapshots

    for seq in (3, 10, 7, 12):
        (tmp_path / f"snapshot-{seq:016d}.snap").write_bytes(b"x")
    (tmp_path / "snapshot-0000000000000001.snap.tmp").write_bytes(b"x")  # not a snapshot
    assert prune_snapshots(tmp_path, 0, 12) == ([], [])  # 0 keeps every one
    assert prune_snapshots(tmp_path, 4, 12) == ([], [])
    assert prune_snapshots(tmp_path, 2, 12) == ([3, 7], [])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["snapshot-0000000000000001.snap.tmp", "snapshot-0000000000000010.snap",
                    "snapshot-0000000000000012.snap"]  # fmt: skip
    assert prune_snapshots(tmp_path, 1, 12) == ([10], [])
    assert (tmp_path / "snapshot-0000000000000012.snap").exists()


def test_pruning_never_removes_the_snapshot_just_written_and_goes_past_what_it_cannot(tmp_path):
    """A probe: a stray file under a higher snapshot name made `--keep-snapshots 1` remove
    the snapshot just written; a directory under an old snapshot's name made every later
    snapshot be reported NOT written (they were) and stopped the pruning for good."""
    from engine.journal.snapshot import prune_snapshots

    for seq in (2, 5, 9, 99):
        (tmp_path / f"snapshot-{seq:016d}.snap").write_bytes(b"x")
    (tmp_path / "snapshot-0000000000000001.snap").mkdir()  # in the way
    removed, failed = prune_snapshots(tmp_path, 1, 9)
    assert removed == [2, 5]
    assert failed == ["snapshot-0000000000000001.snap: Is a directory"]
    left = sorted(int(p.name[9:25]) for p in tmp_path.iterdir())
    assert left == [1, 9, 99]  # the one just written, and the stray beyond it, kept


@pytest.mark.slow
def test_an_engine_keeps_the_snapshots_it_is_told_to_and_restarts_from_the_newest(tmp_path):
    """Old snapshots (68 MB each on a busy day) were never removed: `--keep-snapshots`."""
    from engine.protocol import Halt, Resume

    data = tmp_path / "data"
    seqs = []
    with EngineProcess(data, "--keep-snapshots", "2") as engine:
        engine.open_market("CEA25")
        (data / "snapshots" / "snapshot-0000000000000000.snap").mkdir(parents=True)  # in the way
        for command in (Halt, Resume, Halt, Resume):
            engine.admin(command("CEA25"))
            seqs.append(engine.snapshot().seq)
        assert engine.status().counters["snapshot_failures"] == 0  # written, all of them
        assert "WARNING: could not remove snapshot-0000000000000000.snap" in engine.output()
        hash_before = engine.status().state_hash
        assert engine.stop() == 0
    kept = sorted(p.name for p in (data / "snapshots").iterdir())
    assert kept == sorted(
        ["snapshot-0000000000000000.snap"]
        + [f"snapshot-{seq:016d}.snap" for seq in seqs[-2:]]
        + [f"orders-{seq:016d}.msgpack" for seq in seqs[-2:]]
    ), kept
    assert "the 2 newest snapshots kept (--keep-snapshots)" in engine.output()  # at start
    assert "2 older removed (--keep-snapshots)" not in engine.output()  # one at a time
    assert "1 older removed (--keep-snapshots)" in engine.output()
    with EngineProcess(data) as again:
        assert again.status().state_hash == hash_before
        assert f"snapshot-{seqs[-1]:016d}.snap" in again.output()
        assert again.stop() == 0
