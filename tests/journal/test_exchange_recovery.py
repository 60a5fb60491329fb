"""The engine's restart path with the real exchange snapshot (engine.core.snapshot): a run
journalled with a snapshot in the middle of a trading day recovers, from that snapshot and
the journal after it, to the uninterrupted run's seq, state hash and stream positions, and
then answers the next day's commands byte for byte as the uninterrupted exchange does. A
snapshot that cannot be used stops recovery, naming the file and the reason."""

from __future__ import annotations

import pytest

from engine.core import Exchange
from engine.core.snapshot import recover_exchange, snapshot_exchange
from engine.journal import CorruptLog, Journal, RecordingExchange
from engine.journal.recovery import SnapshotUnusable
from engine.journal.snapshot import latest_snapshot
from tests.journal.test_journal import session_commands
from tests.journal.test_segments import DAYS
from tests.support.exchange import small_market


def journalled_run(tmp_path, commands: list, snapshot_after: int) -> Exchange:
    """Apply `commands` through a journal, snapshotting after the `snapshot_after`-th."""
    exchange = Exchange(small_market())
    with Journal(tmp_path / "journal", max_segment_bytes=4_096) as journal:
        recorder = RecordingExchange(exchange, journal)
        for i, command in enumerate(commands, 1):
            recorder.apply(command)
            if i == snapshot_after:
                journal.sync()  # the journal is durable up to what the snapshot covers
                assert len(exchange.markets["CEA25"].book), "a mid-day book to snapshot"
                snapshot_exchange(exchange, tmp_path / "snapshots")
    return exchange


def test_recovery_from_a_mid_day_snapshot_and_the_journal_tail_continues_the_run(tmp_path):
    first_day = session_commands(0, 400, DAYS[0])
    original = journalled_run(tmp_path, first_day, snapshot_after=250)
    recovered = recover_exchange(small_market(), tmp_path / "journal", tmp_path / "snapshots")
    assert recovered.snapshot is not None and recovered.snapshot.seq == 250
    assert recovered.replayed == len(first_day) - 250
    exchange = recovered.state
    assert exchange.seq == original.seq == len(first_day)
    assert exchange.state_hash() == original.state_hash()
    assert exchange.stream_positions() == original.stream_positions()
    for command in session_commands(1, 300, DAYS[1]):
        events = original.apply(command)
        assert Exchange.encoded(exchange.apply(command)) == Exchange.encoded(events), command
    assert exchange.state_hash() == original.state_hash()
    assert exchange.stream_positions() == original.stream_positions()


def test_without_a_snapshot_recovery_replays_the_whole_journal(tmp_path):
    commands = session_commands(2, 200, DAYS[0])
    original = journalled_run(tmp_path, commands, snapshot_after=0)
    recovered = recover_exchange(small_market(), tmp_path / "journal", tmp_path / "snapshots")
    assert recovered.snapshot is None and recovered.replayed == len(commands)
    assert recovered.state.state_hash() == original.state_hash()


def test_a_snapshot_taken_under_another_config_stops_recovery_naming_it(tmp_path):
    journalled_run(tmp_path, session_commands(3, 200, DAYS[0]), snapshot_after=150)
    other = small_market(reference_price=12_000)
    with pytest.raises(SnapshotUnusable, match=r"snapshot-\d{16}\.snap: .*taken under market"):
        recover_exchange(other, tmp_path / "journal", tmp_path / "snapshots")


def test_a_damaged_exchange_snapshot_file_stops_recovery_naming_it(tmp_path):
    journalled_run(tmp_path, session_commands(4, 200, DAYS[0]), snapshot_after=150)
    path = latest_snapshot(tmp_path / "snapshots").path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=rf"{path.name}.*remove it to recover from"):
        recover_exchange(small_market(), tmp_path / "journal", tmp_path / "snapshots")
