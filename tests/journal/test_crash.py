"""Crash safety with real processes: a journal writer killed with SIGKILL at random moments.

After every kill the journal opens for append cutting at most one partial record (and the
bytes cut are a prefix of exactly the record that was being written), and every record the
writer acknowledged (printed after its fsync) is there, intact and in order."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from engine.framing import FramedWriter, FrameReader, frame, read_frames
from engine.journal import Journal, read_journal
from engine.journal.commandlog import encode_record
from engine.journal.segments import list_segments
from engine.protocol import encode
from tests.journal.appender import command_for, payload_for, ts_for
from tests.journal.test_journal import ROOT

KILLS = 24
TORN = 4
TIME_LIMIT_S = 120


def expected_frame(seq: int) -> bytes:
    return frame(encode_record(seq, ts_for(seq), encode(command_for(seq))))


def complete_lines(output: str | bytes) -> list:
    """The lines a killed child printed in full: SIGKILL can cut its last line short, and a
    line cut short was never an acknowledgement."""
    end = output.rfind("\n" if isinstance(output, str) else b"\n") + 1
    return output[:end].splitlines()


def run_and_kill(directory, seed: int, rng: random.Random) -> int:
    """Start a journal writer, kill it with SIGKILL after a random wait; the last seq it
    acknowledged."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.journal.appender", "journal", str(directory), str(seed)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        first = child.stdout.readline()  # the writer is up and appending
        assert first, "the writer died before acknowledging anything"
        time.sleep(rng.uniform(0, 0.2))
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    return max(int(n) for n in complete_lines(first + child.stdout.read()))


def kill_while_writing(path, writes: int, delay_s: float) -> int:
    """Start a frames writer and kill it with SIGKILL `delay_s` after it begins its
    `writes`-th large record (checksum, then the write itself: some kills fall inside the
    write); the last record it acknowledged (0 if none)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.journal.appender", "frames", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    acknowledged = 0
    try:
        while writes:
            word, n = child.stdout.readline().split()
            if word == "ack":
                acknowledged = int(n)
            else:
                writes -= 1
        time.sleep(delay_s)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    for line in complete_lines(child.stdout.read()):
        word, n = line.split()
        if word == "ack":
            acknowledged = int(n)
    return acknowledged


def test_a_writer_killed_at_random_moments_loses_no_acknowledged_record(tmp_path):
    rng = random.Random(15)
    directory = tmp_path / "journal"
    started = time.monotonic()
    acknowledged = 0
    for kill in range(KILLS):
        assert time.monotonic() - started < TIME_LIMIT_S, f"only {kill} kills in time"
        acknowledged = max(acknowledged, run_and_kill(directory, kill, rng))
        last = list_segments(directory)[-1].path
        reader = FrameReader(last)
        for _ in reader:
            pass
        tail = last.read_bytes()[reader.end :]
        with Journal(directory) as reopened:
            assert reopened.discarded == len(tail)
            assert reopened.last_seq >= acknowledged
            if tail:  # the cut is a prefix of exactly the record after the last whole one
                assert expected_frame(reopened.last_seq + 1).startswith(tail)
        records = list(read_journal(directory))
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert len(records) >= acknowledged
    assert all(r.command == command_for(r.seq) and r.ts_ns == ts_for(r.seq) for r in records)
    assert len(list_segments(directory)) > 1


def test_large_records_torn_by_a_kill_are_cut_alone_and_acknowledged_ones_kept(tmp_path):
    """Killed at least KILLS times, and until at least TORN kills have torn a record."""
    rng = random.Random(16)
    path = tmp_path / "frames.log"
    started = time.monotonic()
    acknowledged = kills = torn_cuts = 0
    while kills < KILLS or torn_cuts < TORN:
        assert time.monotonic() - started < TIME_LIMIT_S, f"{kills} kills, {torn_cuts} torn"
        delay_s = rng.uniform(0.002, 0.012)
        acknowledged = max(acknowledged, kill_while_writing(path, rng.randint(1, 2), delay_s))
        kills += 1
        reader = FrameReader(path)
        whole = sum(1 for _ in reader)
        tail = path.read_bytes()[reader.end :]
        with FramedWriter(path) as reopened:
            assert reopened.discarded == len(tail) == reader.torn
        assert whole >= acknowledged
        if tail:  # a prefix of exactly the record after the last whole one
            assert frame(payload_for(whole + 1)).startswith(tail)
            torn_cuts += 1
        assert [p for _, p in read_frames(path)] == [payload_for(n) for n in range(1, whole + 1)]
