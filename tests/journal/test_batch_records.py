"""Batch records in the journal: order-command records (engine.codec) as a gateway sent them,
replayed with apply_batch to the events and state of applying their commands one by one;
torn, corrupt and refused batches."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.codec import COMMAND_DTYPE, records_of
from engine.config import default_market
from engine.core import Exchange
from engine.demo import day_start_ns
from engine.framing import FramedWriter, read_frames
from engine.journal import (
    BadBatch,
    BadStamp,
    BatchRecord,
    CommandLog,
    CorruptLog,
    Journal,
    LogRecord,
    read_commands,
    read_journal,
    read_log,
    replay,
    replay_events,
)
from engine.journal.recovery import recover
from engine.journal.segments import catch_up, list_segments
from engine.protocol import (
    AmendOrder,
    CancelOrder,
    Close,
    EndOfDay,
    NewOrder,
    OpenCall,
    StartOfDay,
    Uncross,
    encode,
)
from engine.types import Side
from tests.cli.test_cli import cxe
from tests.support.exchange import small_market

RECORD = COMMAND_DTYPE.itemsize
ORDERS = (NewOrder, CancelOrder, AmendOrder)
TS = day_start_ns("2026-11-24")  # 09:00 Shanghai: the default market takes the day


def order_flow(seed: int, n: int, code: str = "CEA25", mid: int = 10_000) -> list:
    """A day of one instrument: opening call, continuous trading, close (members 1-4)."""
    rng = random.Random(seed)
    commands: list = [StartOfDay("2026-11-24"), OpenCall(code)]
    for i in range(n):
        if i == n // 4:
            commands.append(Uncross(code))
        member, r = rng.randint(1, 4), rng.random()
        if r < 0.7:
            side = rng.choice([Side.BUY, Side.SELL])
            price = mid + rng.randint(-5, 5) * 10
            commands.append(NewOrder(f"o{i}", member, code, side, price, rng.randint(1, 50)))
        elif r < 0.85:
            commands.append(CancelOrder(f"x{i}", member, code, rng.randint(1, i + 1)))
        else:
            price = mid + rng.randint(-5, 5) * 10
            oid = rng.randint(1, i + 1)
            commands.append(AmendOrder(f"a{i}", member, code, oid, price, rng.randint(1, 50)))
    return [*commands, Close(code), EndOfDay()]


def wire_bytes(commands: list, codes: list[str]) -> bytes:
    """Order commands as a gateway sends them: records with seq and ts_ns left zero."""
    return records_of(commands, codes, 0, [0] * len(commands)).tobytes()


def write_mixed(journal, commands: list, cuts: list[int], codes: list[str]) -> list[int]:
    """Write `commands` into `journal` (a Journal or CommandLog): each run of order commands
    cut into batch records where `cuts` says (a cut of 1 leaves the command a message); every
    record stamped with its own time. Returns each command's timestamp."""
    stamps, seq, i, k = [], 1, 0, 0
    while i < len(commands):
        size = 1
        if isinstance(commands[i], ORDERS):
            size = max(1, cuts[k % len(cuts)])
            k += 1
            while size > 1 and not all(isinstance(c, ORDERS) for c in commands[i : i + size]):
                size -= 1
        ts = TS + 1_000_000 * seq  # a millisecond each
        if size == 1 and (k % 3 or not isinstance(commands[i], ORDERS)):
            journal.append(seq, ts, commands[i])
        else:  # some single order commands go as a batch of one
            journal.append_batch(seq, ts, wire_bytes(commands[i : i + size], codes))
        stamps += [ts] * size
        seq, i = seq + size, i + size
    return stamps


def applied_one_by_one(market, commands: list, stamps: list[int]) -> tuple[Exchange, list]:
    exchange = Exchange(market)
    events = [
        exchange.apply_stamped(seq, ts, command)
        for seq, (command, ts) in enumerate(zip(commands, stamps, strict=True), 1)
    ]
    return exchange, events


def flat(events: list[list]) -> bytes:
    return b"".join(encode(e) for out in events for e in out)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    segment_bytes=st.sampled_from([2_000, 20_000, 1 << 20]),
    after=st.integers(0, 400),
)
def test_random_message_and_batch_records_replay_to_the_direct_events_and_state(
    tmp_path_factory, seed, cuts, segment_bytes, after
):
    """Batch boundaries anywhere (also across the opening call), segments rolled by size in
    the middle of batches; `after` a seq that may fall inside a batch (a snapshot's)."""
    market = small_market()
    codes = [i.code for i in market.instruments]
    commands = order_flow(seed, 300)
    directory = tmp_path_factory.mktemp("journal")
    with Journal(directory, segment_bytes) as journal:
        stamps = write_mixed(journal, commands, cuts, codes)
    records = list(read_journal(directory))
    assert any(type(r) is BatchRecord for r in records)
    assert sum(r.count for r in records) == len(commands)
    direct, events = applied_one_by_one(market, commands, stamps)

    fresh = Exchange(market)
    replayed = [out for _, out in replay_events(directory, fresh)]
    assert flat(replayed) == flat(events)
    assert fresh.state_hash() == direct.state_hash()
    assert fresh.stream_positions() == direct.stream_positions()

    caught_up = Exchange(market)
    assert catch_up(directory, caught_up, run=max(cuts)) == len(commands)
    assert caught_up.state_hash() == direct.state_hash()

    after = min(after, len(commands))
    restored, _ = applied_one_by_one(market, commands[:after], stamps[:after])
    tail = [out for _, out in replay_events(directory, restored)]
    assert flat(tail) == flat(events[after:])
    assert restored.state_hash() == direct.state_hash()
    assert [r.first_seq for r in read_journal(directory, after)][:1] == (
        [after + 1] if after < len(commands) else []
    )


def test_a_batch_record_stands_for_its_commands_stamped_in_sequence(tmp_path):
    records = records_of(order_flow(1, 30)[2:9], ["CEA25"], 0, [0] * 7)
    records["seq"], records["ts_ns"] = 77, 66  # what the gateway left there is not read
    with CommandLog(tmp_path / "a.log") as log:
        log.append(1, 5, StartOfDay("2026-11-24"))
        log.append_batch(2, TS, memoryview(records.tobytes()))
        assert log.last_seq == 8
    day, batch = read_log(tmp_path / "a.log")
    assert type(day) is LogRecord and type(batch) is BatchRecord
    assert (batch.first_seq, batch.last_seq, batch.count, batch.ts_ns) == (2, 8, 7, TS)
    stamped = batch.records()
    assert stamped.flags.writeable and stamped["seq"].tolist() == list(range(2, 9))
    assert set(stamped["ts_ns"].tolist()) == {TS}
    for name in ("kind", "member", "price", "qty", "order_id", "cl_ord_id"):
        assert (stamped[name] == records[name]).all()
    later = batch.after(5)
    assert (later.first_seq, later.count, later.records()["seq"].tolist()) == (6, 3, [6, 7, 8])
    assert batch.after(1) is batch


@pytest.mark.parametrize("count", [1, 2, 744, 745, 800])  # bin 8, bin 16, bin 32 lengths
def test_the_payload_is_the_msgpack_triple_and_a_reopened_log_continues_after_it(tmp_path, count):
    data = np.random.default_rng(count).integers(0, 255, count * RECORD, dtype=np.uint8)
    with CommandLog(tmp_path / "a.log") as log:
        log.append_batch(10, TS, data.tobytes())
    [(_, payload)] = read_frames(tmp_path / "a.log")
    assert payload == msgspec.msgpack.encode((10, TS, data.tobytes()))
    with CommandLog(tmp_path / "a.log") as log:
        assert log.last_seq == 9 + count
        with pytest.raises(BadStamp, match=f"does not follow the last record's {9 + count}"):
            log.append_batch(9 + count, TS, data.tobytes()[:RECORD])
        log.append(10 + count, TS, EndOfDay())
    assert [r.first_seq for r in read_log(tmp_path / "a.log")] == [10, 10 + count]


BAD_BATCHES = [
    (b"", BadBatch, "0 bytes"),
    (bytes(RECORD - 1), BadBatch, f"{RECORD - 1} bytes"),
    (bytes(RECORD + 1), BadBatch, f"{RECORD + 1} bytes"),
    (bytearray(3 * RECORD + 5), BadBatch, "whole number"),
    ([0] * RECORD, BadBatch, "not list"),
    (np.zeros(2, COMMAND_DTYPE), BadBatch, "not ndarray"),
    (memoryview(bytes(4 * RECORD))[::2], BadBatch, "contiguous"),
]
BAD_STAMPS = [(0, TS), (-1, TS), (1.0, TS), (1, -1), (1, 1.5), (1, "1"), (1, 2**63), (None, 1)]


@pytest.mark.parametrize("kind", ["log", "journal"])
def test_a_batch_that_is_no_whole_records_or_a_bad_stamp_is_refused_writing_nothing(tmp_path, kind):
    path = tmp_path / kind
    writer = CommandLog(path) if kind == "log" else Journal(path)
    writer.append(1, TS, StartOfDay("2026-11-24"))
    writer.sync()

    def written() -> bytes:
        files = [path] if kind == "log" else [s.path for s in list_segments(path)]
        return b"".join(f.read_bytes() for f in files)

    before = written()
    for data, error, message in BAD_BATCHES:
        with pytest.raises(error, match=message):
            writer.append_batch(2, TS, data)
    for seq, ts in BAD_STAMPS:
        with pytest.raises(BadStamp, match="nothing was written"):
            writer.append_batch(seq, ts, bytes(RECORD))
    with pytest.raises(BadStamp, match="int from 1 to 2"):  # its last seq beyond int64
        writer.append_batch(2**63 - 2, TS, bytes(3 * RECORD))
    for seq in (1, 3):  # a repeat, a gap
        with pytest.raises(BadStamp, match="does not follow"):
            writer.append_batch(seq, TS, bytes(RECORD))
    writer.sync()
    assert written() == before and writer.last_seq == 1
    writer.append_batch(2, TS, bytes(2 * RECORD))
    assert writer.last_seq == 3
    writer.close()


def test_a_batch_never_starts_a_day_and_segments_still_roll_over_by_size(tmp_path):
    market = small_market()
    commands = order_flow(4, 600)
    with Journal(tmp_path / "j", max_segment_bytes=4_000) as journal:
        write_mixed(journal, commands, [30], ["CEA25"])
    segments = list_segments(tmp_path / "j")
    assert len(segments) > 5
    assert {s.day for s in segments} == {"2026-11-24"}
    for before, segment in itertools.pairwise(segments):
        first = next(iter(read_log(segment.path)))
        assert first.first_seq == segment.first_seq
        assert before.path.stat().st_size >= 4_000  # rolled over by size only
    assert any(type(next(iter(read_log(s.path)))) is BatchRecord for s in segments)
    fresh = Exchange(market)
    for _ in replay(tmp_path / "j", fresh):
        pass
    assert fresh.seq == len(commands)


def journal_with_batches(directory: Path) -> list:
    commands = order_flow(6, 200)
    with Journal(directory) as journal:
        write_mixed(journal, commands, [25, 7], ["CEA25"])
    return commands


def test_a_torn_batch_at_the_end_is_dropped_whole_and_cut_on_reopening(tmp_path):
    directory = tmp_path / "j"
    commands = journal_with_batches(directory)
    with Journal(directory) as journal:  # a last batch record of 40 commands
        last = journal.last_seq
        journal.append_batch(last + 1, TS, bytes(40 * RECORD))
    [segment] = list_segments(directory)
    whole = segment.path.read_bytes()
    kept = list(read_journal(directory))[:-1]
    last_offset = list(read_frames(segment.path))[-1][0]
    for cut in (1, 17, 20 * RECORD, 40 * RECORD):  # into the header, the stamp, the records
        segment.path.write_bytes(whole[:-cut])
        records = list(read_journal(directory))
        assert records == kept and records[-1].last_seq == last
        fresh = Exchange(small_market())
        assert catch_up(directory, fresh) == len(commands) == last
    with Journal(directory) as journal:
        assert journal.discarded == len(whole) - 40 * RECORD - last_offset
        assert journal.last_seq == last
        journal.append_batch(last + 1, TS, bytes(RECORD))
    assert list(read_journal(directory))[-1].first_seq == last + 1


def test_corruption_inside_a_batch_is_reported_with_the_file_and_byte_offset(tmp_path):
    directory = tmp_path / "j"
    journal_with_batches(directory)
    [segment] = list_segments(directory)
    whole = segment.path.read_bytes()
    frames = list(read_frames(segment.path))
    records = list(read_log(segment.path))
    batches = [i for i, r in enumerate(records) if type(r) is BatchRecord and r.count > 3]
    for index in (batches[0], batches[-1]):  # one in the middle, the last one
        offset, payload = frames[index]
        for at in (len(payload) - 5, len(payload) - 3 * RECORD):  # in the records' bytes
            damaged = bytearray(whole)
            damaged[offset + 16 + at] ^= 0x04
            segment.path.write_bytes(bytes(damaged))
            where = rf"{segment.path.name}: .*checksum mismatch.* at byte {offset}\b"
            with pytest.raises(CorruptLog, match=where):
                list(read_journal(directory))
            with pytest.raises(CorruptLog, match=where):
                Journal(directory)
            with pytest.raises(CorruptLog, match=where):
                recover(directory, tmp_path / "none", lambda: Exchange(small_market()), bytes)
            assert segment.path.read_bytes() == bytes(damaged)


def test_a_batch_record_of_no_whole_records_is_corruption_when_read(tmp_path):
    """Only another writer makes one: the reader names the record's byte offset."""
    path = tmp_path / "a.log"
    with CommandLog(path) as log:
        log.append(1, TS, StartOfDay("2026-11-24"))
        offset = log.size
    for payload, what in [
        (msgspec.msgpack.encode((2, TS, bytes(RECORD + 4))), f"batch of {RECORD + 4} bytes"),
        (msgspec.msgpack.encode((2, TS, b"")), "batch of 0 bytes"),
        (msgspec.msgpack.encode((2**63 - 1, TS, bytes(2 * RECORD))), "no int64"),
    ]:
        data = path.read_bytes()[:offset]
        path.write_bytes(data)
        with FramedWriter(path) as writer:
            writer.write(payload)
        with pytest.raises(CorruptLog, match=rf"{path.name}: the record at byte {offset} .*{what}"):
            list(read_log(path))


def test_a_batch_the_exchange_refuses_stops_replay_as_corruption_with_nothing_applied(tmp_path):
    """A record of kind 9 gets past a writer that does not check (the service does)."""
    path = tmp_path / "a.log"
    records = records_of(order_flow(1, 40)[2:5], ["CEA25"], 0, [0, 0, 0])
    records["kind"][1] = 9
    with CommandLog(path) as log:
        log.append(1, TS, StartOfDay("2026-11-24"))
        log.append(2, TS, OpenCall("CEA25"))
        log.append_batch(3, TS, records.tobytes())
    exchange = Exchange(small_market())
    with pytest.raises(CorruptLog, match=r"a\.log: the batch of seq 3\.\.5 .*kind 9"):
        catch_up(path, exchange)
    assert exchange.seq == 2


def test_cxe_log_dump_and_cxe_replay_read_a_journal_with_batch_records(tmp_path):
    market = default_market()
    codes = [i.code for i in market.instruments]
    commands = order_flow(8, 300, code="CEA25", mid=6200)
    directory = tmp_path / "journal"
    with Journal(directory) as journal:
        stamps = write_mixed(journal, commands, [20, 3, 50], codes)
    direct, _ = applied_one_by_one(market, commands, stamps)
    [segment] = list_segments(directory)

    dumped = cxe("log", "dump", str(segment.path))
    assert dumped.returncode == 0, dumped.stderr
    lines = [json.loads(line) for line in dumped.stdout.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(commands) + 1))
    assert [line["ts_ns"] for line in lines] == stamps
    for line, command in zip(lines, commands, strict=True):
        assert line["type"] == type(command).__name__
        if isinstance(command, ORDERS):
            assert line["instrument"] == "CEA25" and line["cl_ord_id"] == command.cl_ord_id
    summary = json.loads(cxe("log", "dump", "--summary", str(segment.path)).stdout)
    assert summary["records"] == len(commands) and summary["last_seq"] == len(commands)

    replayed = cxe("replay", str(directory))
    assert replayed.returncode == 0, replayed.stderr
    assert f"{len(commands):,} commands replayed" in replayed.stdout
    assert f"state hash {direct.state_hash()}" in replayed.stdout

    damaged = bytearray(segment.path.read_bytes())
    frames = zip(read_frames(segment.path), read_log(segment.path), strict=True)
    offset, payload = next(frame for frame, r in frames if type(r) is BatchRecord)
    damaged[offset + len(payload)] ^= 0x01  # a byte of the batch's records
    segment.path.write_bytes(bytes(damaged))
    for result in (cxe("replay", str(directory)), cxe("log", "dump", str(segment.path))):
        assert result.returncode != 0
        assert f"byte {offset}" in result.stderr and "Traceback" not in result.stderr


def test_read_commands_of_one_file_gives_a_batch_less_the_commands_up_to_after(tmp_path):
    path = tmp_path / "a.log"
    with CommandLog(path) as log:
        log.append(1, TS, StartOfDay("2026-11-24"))
        log.append_batch(2, TS, bytes(10 * RECORD))
    assert [(r.first_seq, r.count) for r in read_commands(path, 4)] == [(5, 7)]
    assert [(r.first_seq, r.count) for r in read_commands(path, 0)] == [(1, 1), (2, 10)]
    assert list(read_commands(path, 11)) == []
