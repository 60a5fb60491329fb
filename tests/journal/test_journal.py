"""The command log: replay reproduces events and state hash; torn tails and corruption."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from engine.core import Exchange
from engine.framing import read_frames
from engine.journal import BadStamp, CommandLog, CorruptLog, RecordingExchange, read_log, replay
from engine.journal.commandlog import encode_record
from engine.protocol import (
    AmendOrder,
    CancelOrder,
    Close,
    EndOfDay,
    NewOrder,
    OpenCall,
    RejectCode,
    StartOfDay,
    Uncross,
    encode,
)
from engine.types import Side
from tests.support.exchange import small_market

ROOT = Path(__file__).resolve().parents[2]


def session_commands(seed: int, n: int, date: str = "2026-11-24") -> list:
    rng = random.Random(seed)
    cmds = [StartOfDay(date), OpenCall("CEA25")]
    for i in range(n):
        if i == n // 4:
            cmds.append(Uncross("CEA25"))
        r = rng.random()
        member = rng.randint(1, 4)
        if r < 0.7:
            side = rng.choice([Side.BUY, Side.SELL])
            price = 10_000 + rng.randint(-5, 5) * 10
            cmds.append(NewOrder(f"o{i}", member, "CEA25", side, price, rng.randint(1, 50)))
        elif r < 0.85:
            cmds.append(CancelOrder(f"x{i}", member, "CEA25", rng.randint(1, i + 1)))
        else:
            cmds.append(
                AmendOrder(
                    f"a{i}",
                    member,
                    "CEA25",
                    rng.randint(1, i + 1),
                    10_000 + rng.randint(-5, 5) * 10,
                    rng.randint(1, 50),
                )
            )
    return [*cmds, Close("CEA25"), EndOfDay()]


def test_replaying_the_log_reproduces_every_event_and_the_state_hash(tmp_path):
    path = tmp_path / "day.log"
    original = Exchange(small_market())
    with CommandLog(path) as log:
        recorder = RecordingExchange(original, log)
        events = [
            recorder.apply(c, ts_ns=1_000 * i) for i, c in enumerate(session_commands(3, 800))
        ]
    fresh = Exchange(small_market())
    replayed = [out for _, out in replay(path, fresh)]
    assert b"".join(encode(e) for out in replayed for e in out) == b"".join(
        encode(e) for out in events for e in out
    )
    assert fresh.state_hash() == original.state_hash()
    assert sum(1 for out in events for e in out if type(e).__name__ == "Trade") > 50


def test_a_torn_final_record_is_ignored_and_a_corrupt_one_is_reported(tmp_path):
    path = tmp_path / "day.log"
    with CommandLog(path) as log:
        recorder = RecordingExchange(Exchange(small_market()), log)
        for command in session_commands(5, 50):
            recorder.apply(command)
    whole = path.read_bytes()
    records = list(read_log(path))
    path.write_bytes(whole[:-3])
    assert len(list(read_log(path))) == len(records) - 1
    corrupt = bytearray(whole)
    corrupt[20] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(CorruptLog, match="checksum mismatch"):
        list(read_log(path))


def test_a_gap_is_refused_by_the_writer_and_by_replay(tmp_path):
    path = tmp_path / "gap.log"
    with CommandLog(path) as log:
        log.append(1, 0, StartOfDay("2026-11-24"))
        for seq in (1, 3):
            with pytest.raises(BadStamp, match=f"sequence number {seq} does not follow .* 1"):
                log.append(seq, 0, OpenCall("CEA25"))
        log.write(encode_record(3, 0, encode(OpenCall("CEA25"))))  # as another writer might
    with pytest.raises(CorruptLog, match="expected seq 2"):
        list(replay(path, Exchange(small_market())))


def test_a_command_the_wire_would_refuse_is_answered_malformed_and_never_logged(tmp_path):
    """Such a command was once logged as it was: the log then failed to decode at its record,
    so recovery and `cxe replay` stopped there."""
    path = tmp_path / "day.log"
    good = session_commands(7, 40)
    refused = [
        NewOrder("f", 1, "CEA25", Side.BUY, 10_000.5, 10),  # a float price
        NewOrder("e", 1, "CEA25", 7, 10_000, 10),  # not a side
        CancelOrder("b", 1, "CEA25", 2**64),  # beyond 64 bits: cannot even be encoded
        "NewOrder",  # not a command
    ]
    original = Exchange(small_market())
    with CommandLog(path) as log:
        recorder = RecordingExchange(original, log)
        events = []
        for i, command in enumerate(good):
            events.append(recorder.apply(command, ts_ns=i))
            if i % 10 == 5:
                bad = refused[i // 10]
                before = (original.seq, original.state_hash(), path.stat().st_size)
                (answer,) = recorder.apply(bad, ts_ns=i)
                assert answer.seq == 0 and answer.code == RejectCode.MALFORMED, answer
                assert "could not be decoded" in answer.text
                assert (original.seq, original.state_hash(), path.stat().st_size) == before
    fresh = Exchange(small_market())
    assert [out for _, out in replay(path, fresh)] == events
    assert fresh.state_hash() == original.state_hash()


def test_a_record_that_does_not_decode_is_reported_as_corruption(tmp_path):
    path = tmp_path / "day.log"
    with CommandLog(path) as log:
        log.append(1, 0, StartOfDay("2026-11-24"))
        log.write(msgspec.msgpack.encode((2, 0, "not a command")))  # a valid frame
    with pytest.raises(CorruptLog, match=r"record at byte \d+ is not a command log record"):
        list(read_log(path))


def test_a_log_reopened_after_a_torn_write_appends_after_its_last_whole_record(tmp_path):
    """Appending after the torn bytes once made every later record unreadable (a checksum
    mismatch at the torn one), so the log could not be recovered a second time."""
    commands = session_commands(9, 20)
    whole = tmp_path / "whole.log"
    with CommandLog(whole) as log:
        for seq, command in enumerate(commands[:10], 1):
            log.append(seq, seq, command)
    data = whole.read_bytes()
    last = max(offset for offset, _ in read_frames(whole))
    for cut in range(last + 1, len(data)):  # every way the last write can tear
        path = tmp_path / f"torn{cut}.log"
        path.write_bytes(data[:cut])
        with CommandLog(path) as log:
            assert log.discarded == cut - last
            for seq, command in enumerate(commands[9:], 10):
                log.append(seq, seq, command)
        assert [r.command for r in read_log(path)] == commands


def test_a_file_that_is_not_a_framed_log_is_refused_not_read_as_a_torn_record(tmp_path):
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(CorruptLog, match="not a framed log"):
        list(read_log(path))
    with pytest.raises(CorruptLog, match="not a framed log"):
        CommandLog(path)
    assert path.read_text().startswith("root:")  # left as it was


RECORDER = """
import sys, time
from engine.core import Exchange
from engine.framing import frame
from engine.journal import CommandLog, RecordingExchange
from engine.journal.commandlog import encode_record
from engine.protocol import encode
from tests.support.exchange import small_market
from tests.journal.test_journal import session_commands

acknowledged = int(sys.argv[2])
commands = session_commands(11, 3000)
with CommandLog(sys.argv[1]) as log:
    recorder = RecordingExchange(Exchange(small_market()), log)
    for i, command in enumerate(commands[:acknowledged]):
        recorder.apply(command, ts_ns=i)
        log.sync()  # durable: now it may be acknowledged
    # the next write tears: half a frame reaches the file, then the process dies
    whole = frame(encode_record(acknowledged + 1, acknowledged, encode(commands[acknowledged])))
    with open(sys.argv[1], "ab") as raw:
        raw.write(whole[: len(whole) // 2])
    print("torn", flush=True)
    time.sleep(60)
"""


def test_killed_mid_write_the_log_recovers_every_acknowledged_command_and_goes_on(tmp_path):
    """A real process journals and syncs 400 commands, writes half of the next record and is
    killed -9. The restarted exchange replays the log (every acknowledged command is there),
    appends the rest of the session to the same log after cutting the torn record, and ends
    with the uninterrupted run's events and state hash."""
    commands = session_commands(11, 3000)
    path = tmp_path / "commands.log"
    child = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(path), "400"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout.readline().strip() == "torn"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    recovered = Exchange(small_market())
    for _ in replay(path, recovered):
        pass
    assert recovered.seq == 400
    with CommandLog(path) as log:
        assert log.discarded > 0
        recorder = RecordingExchange(recovered, log)
        for i in range(recovered.seq, len(commands)):
            recorder.apply(commands[i], ts_ns=i)
    uninterrupted = Exchange(small_market())
    expected = [uninterrupted.apply(c, ts_ns=i) for i, c in enumerate(commands)]
    fresh = Exchange(small_market())
    assert [events for _, events in replay(path, fresh)] == expected
    assert fresh.state_hash() == recovered.state_hash() == uninterrupted.state_hash()


@pytest.mark.parametrize("ts_ns", [1.5, "1764000000000000000", None, 2**63, 2**64 - 1, -1, True])
def test_a_stamp_that_cannot_be_read_back_is_refused_before_anything_is_written(tmp_path, ts_ns):
    """A float, string, None or beyond-int64 timestamp was once written as it was, and then
    the record (and so everything after it) could not be read back."""
    path = tmp_path / "day.log"
    with CommandLog(path) as log:
        log.append(1, 10, StartOfDay("2026-11-24"))
        log.sync()
        size = path.stat().st_size
        with pytest.raises(ValueError, match=r"timestamp .* int64 nanoseconds"):
            log.append(2, ts_ns, OpenCall("CEA25"))
        log.sync()
        assert path.stat().st_size == size
        log.append(2, 20, OpenCall("CEA25"))
    assert [(r.seq, r.ts_ns) for r in read_log(path)] == [(1, 10), (2, 20)]
