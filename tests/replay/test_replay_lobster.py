"""LOBSTER replay on real NASDAQ data: the book equals the order book file on every row.

Uses the 999-message AAPL fixture in shared/data/lobster (skipped if the samples are absent).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from engine.replay.lobster import LobsterReplay, classify_exceptions, load_day

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"
MESSAGES = DATA / "AAPL_2012-06-21_first999_message_10.csv"
BOOK = DATA / "AAPL_2012-06-21_first999_orderbook_10.csv"

pytestmark = pytest.mark.skipif(not MESSAGES.exists(), reason="LOBSTER samples not present")


def test_sample_files_are_the_published_ones():
    sums = dict(line.split()[::-1] for line in (DATA / "SHA256SUMS").read_text().splitlines())
    for path in (MESSAGES, BOOK):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[path.name]


def test_every_row_of_the_aapl_fixture_is_reproduced_and_executions_hit_the_named_order():
    day = load_day(MESSAGES, BOOK)
    stats = LobsterReplay(day.levels).run(day)
    assert stats.messages == stats.rows_checked == 999
    assert stats.rows_mismatched == 0, stats.first_mismatches
    assert stats.executions == 98
    assert stats.executions_known_queue >= 90
    assert stats.executions_matched == stats.executions_known_queue
    assert stats.crossing_submits == 0


# Per sample: the minimum share of executions with a known queue that hit the named order,
# and the known exceptions by reason (engine.replay.lobster.EXCEPTION_REASONS): every
# execution that missed is explained by what the file itself shows. Every row must match.
# AAPL level 1 reaches 99.66%, short of 99.8%: 15 of its 34 exceptions are orders ahead that
# the file never shows again (a level-1 file hides everything below the best price).
FULL_DAYS = {
    "AAPL_2012-06-21_1": (
        0.9966,
        {"replace": 7, "served_later_order": 12, "ahead_never_seen_again": 15},
    ),
    "AMZN_2012-06-21_1": (
        0.998,
        {"replace": 2, "served_later_order": 3, "ahead_never_seen_again": 1},
    ),
    "AMZN_2012-06-21_5": (
        0.998,
        {"replace": 2, "served_later_order": 7, "ahead_never_seen_again": 1},
    ),
    "GOOG_2012-06-21_1": (0.998, {"replace": 2, "served_later_order": 3}),
    "GOOG_2012-06-21_5": (0.998, {"replace": 2, "served_later_order": 3}),
    "GOOG_2012-06-21_10": (0.998, {"replace": 2, "served_later_order": 3}),
}


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(FULL_DAYS))
def test_a_full_sample_day_is_reproduced_row_for_row(sample, tmp_path):
    import zipfile

    archive = DATA / f"LOBSTER_SampleFile_{sample}.zip"
    if not archive.exists():
        pytest.skip(f"{archive.name} not present")
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path)
    messages = next(tmp_path.glob("*_message_*.csv"))
    day = load_day(messages, Path(str(messages).replace("_message_", "_orderbook_")))
    stats = LobsterReplay(day.levels).run(day)
    assert stats.rows_mismatched == 0, stats.first_mismatches
    assert stats.rows_checked == len(day) > 40_000
    assert stats.crossing_submits == 0
    assert stats.executions_known_queue > 3_000
    minimum, known = FULL_DAYS[sample]
    assert stats.match_rate >= minimum, (stats.match_rate, stats.priority_exceptions[:5])
    reasons = Counter(reason for _, _, reason in classify_exceptions(day, stats))
    assert dict(reasons) == known
    # where the order ahead left the book unseen, the queue ahead was not in fact known:
    # without those cases every sample, AAPL level 1 included, reaches 99.8%
    truly_known = stats.executions_known_queue - reasons["ahead_never_seen_again"]
    assert stats.executions_matched / truly_known >= 0.998


def test_the_replay_runs_again_at_kernel_speed_and_writes_analytics_and_plots(tmp_path):
    from engine.replay.runner import batch_replay, replay_lobster

    result = replay_lobster(MESSAGES, BOOK)
    book, batch = batch_replay(result.commands, result.tick)
    assert book.depth(1 << 30) == result.book.depth(1 << 30)
    assert batch.fills == result.stats.executions_matched
    intervals = result.intervals(seconds=10)
    assert intervals["volume_all"].sum() == result.trades()["qty"].sum() > 0
    with pytest.raises(ValueError, match="at least 1 second"):
        result.intervals(seconds=0)
    assert (intervals["spread"][intervals["spread"] > 0] >= 100).all()  # at least a cent
    top = result.top()
    both = (top["bid_size1"] > 0) & (top["ask_size1"] > 0)
    assert (top["bid1"][both] < top["ask1"][both]).all()
    deeper = top["bid_size2"] > 0
    assert (top["bid2"][deeper] < top["bid1"][deeper]).all()
    rows = result.day.rows  # the file's own levels: ask, ask size, bid, bid size
    assert (top["ask1"][both] == rows[both, 0]).all() and (top["bid_size1"] == rows[:, 3]).all()
    pytest.importorskip("matplotlib")
    files = result.write(tmp_path, seconds=10, plot=True)
    names = {p.name for p in files}
    assert {
        "trades.csv",
        "top.csv",
        "intervals.csv",
        "mid-spread.png",
        "depth.png",
        "volume.png",
    } <= names
    assert (tmp_path / "mid-spread.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "intervals.csv").read_text().splitlines()[0]
    assert header == "start_ns,mid,spread,bid_size,ask_size,ofi,volume_all,volume_hidden,vwap_all"
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(tmp_path / "top.parquet")
    assert table.num_rows == 999 and table.column("bid1").to_pylist() == top["bid1"].tolist()
    units = json.loads(table.schema.metadata[b"units"])
    assert units["bid1"] == "USD x 10,000" and units["bid_size1"] == "shares"
    assert units["time_ns"].startswith("ns after midnight")
    frames = result.frames()
    assert len(frames["trades"]) == len(result.trades())


def test_counterfactual_rules_change_the_outcome_visibly():
    from engine.replay.counterfactual import actual, coarser_tick, largest_pick, price_band
    from engine.replay.runner import batch_replay, replay_lobster

    result = replay_lobster(MESSAGES, BOOK)
    base = actual(result.commands, result.tick)
    _, batch = batch_replay(result.commands, result.tick)
    assert (base.fills, base.matched_volume) == (batch.fills, batch.traded_qty)
    coarse = coarser_tick(result.commands, result.tick, 5)
    assert coarse.best_bid % 500 == 0 and coarse.best_ask % 500 == 0
    assert coarse.matched_volume != base.matched_volume
    narrow = price_band(result.commands, result.tick, 0)
    assert narrow.rejects > 0 and narrow.matched_volume < base.matched_volume
    picked = largest_pick(result.commands, result.tick)
    assert picked.fills > 0 and picked.vwap != base.vwap


@pytest.mark.parametrize(
    ("message_rows", "book_rows", "message"),
    [
        ("", "", r"message_1\.csv: the LOBSTER message file is empty"),
        ("34200.1,1,5,100,5853300\n", "1,2,3,4\n", r"message row has 6 columns.*found 5"),
        ("34200.1,1,abc,100,5853300,1\n", "1,2,3,4\n", r"line 1: order id must be a whole"),
        ("34200.1,1,5,100,5853300,1\n", "1,2,3\n", r"4 columns per level.*found 3"),
        ("34200.1,1,5,100,5853300,1\n", "1,2,3,4\n1,2,3,4\n", r"must pair one to one"),
    ],
)
def test_a_file_that_is_not_lobster_is_refused_naming_it(
    tmp_path, message_rows, book_rows, message
):
    """Such files once ended in an IndexError traceback from deep in the replay."""
    messages = tmp_path / "X_message_1.csv"
    messages.write_text(message_rows)
    (tmp_path / "X_orderbook_1.csv").write_text(book_rows)
    with pytest.raises(ValueError, match=message):
        load_day(messages, tmp_path / "X_orderbook_1.csv")


ROW = "34200.1,1,5,100,5853300,1"


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        ("34200.2,1,nan,100,5853300,1", "not_a_number", "order id must be a whole number"),
        ("34200.2,1,1e20,100,5853300,1", "not_a_number", "order id must be a whole number"),
        ("34200.2,1,6,100.7,5853300,1", "not_a_number", "size must be a whole number"),
        ("nan,1,6,100,5853300,1", "bad_time", "time must be seconds after midnight"),
        ("-5,1,6,100,5853300,1", "bad_time", "time must be seconds after midnight"),
        ("inf,1,6,100,5853300,1", "bad_time", "time must be seconds after midnight"),
        ("1_0,1,6,100,5853300,1", "not_a_number", "time must be a number of seconds"),
        ("34200.2,1,6,1_000,5853300,1", "not_a_number", "size must be a whole number"),
        ("34200.2,1,6,\uff11\uff10\uff10,5853300,1", "not_a_number", "size must be"),
        ("34200.0,1,6,100,5853300,1", "time_goes_back", "time goes back"),
        ("34200.2,9,6,100,5853300,1", "bad_type", "type must be 1 to 7"),
        ("34200.2,1,6,100,5853300,0", "bad_direction", "direction must be 1 or -1"),
        ("34200.2,1,6,0,5853300,1", "bad_size", "size must be positive"),
        ("34200.2,1,6,100,5853300", "wrong_column_count", "5 columns, not 6"),
    ],
)
def test_every_bad_message_row_is_reported_and_nothing_is_replayed(tmp_path, bad, reason, detail):
    """Ids nan or 1e20 were once cast to INT64_MIN and a size 100.7 truncated, silently; a
    nan time raised IndexError after the replay reported success; a time going back gave
    "'list' argument must have no negative elements" from the interval analytics."""
    from engine.replay.lobster import BadFile

    messages = tmp_path / "X_message_1.csv"
    later = bad.replace("34200.2", "34200.4")
    messages.write_text(f"{ROW}\n{bad}\n{ROW.replace('34200.1', '34200.3')}\n{later}\n")
    (tmp_path / "X_orderbook_1.csv").write_text("5853400,100,5853300,100\n" * 4)
    with pytest.raises(BadFile, match=f"2 bad rows .*line 2: {detail}") as caught:
        load_day(messages, tmp_path / "X_orderbook_1.csv")
    rows = caught.value.bad_rows
    assert [(r.line, r.reason, r.text) for r in rows] == [(2, reason, bad), (4, reason, later)]


def test_a_byte_order_mark_and_windows_line_ends_read_as_lobster(tmp_path):
    messages = tmp_path / "X_message_10.csv"
    messages.write_bytes(b"\xef\xbb\xbf" + MESSAGES.read_bytes().replace(b"\n", b"\r\n"))
    day = load_day(messages, BOOK)
    assert len(day) == 999 and (day.time_ns == load_day(MESSAGES, BOOK).time_ns).all()


def test_a_lobster_zip_replays_as_it_ships(tmp_path):
    """A zip once failed with "'utf-8' codec can't decode" (its read-me is not UTF-8)."""
    import zipfile

    from engine.replay.runner import replay_lobster

    archive = tmp_path / "LOBSTER_SampleFile_AAPL_first999.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(MESSAGES, MESSAGES.name)
        z.write(BOOK, BOOK.name)
        z.writestr("LOBSTER_SampleFiles_ReadMe.txt", b"Read me \xa9 2013\n")
    from_zip = replay_lobster(archive)
    from_files = replay_lobster(MESSAGES, BOOK)
    assert from_zip.name == MESSAGES.name
    assert from_zip.stats.rows_mismatched == 0
    assert (from_zip.commands == from_files.commands).all()


def test_a_message_file_not_named_like_lobster_needs_its_order_book_named(tmp_path):
    from engine.replay.runner import replay_lobster

    renamed = tmp_path / "aapl.log.bak"
    renamed.write_bytes(MESSAGES.read_bytes())
    with pytest.raises(ValueError, match="give the order book file with --orderbook"):
        replay_lobster(renamed)
    assert replay_lobster(renamed, BOOK).stats.rows_mismatched == 0


@pytest.mark.slow
def test_a_shipped_lobster_zip_loads_whole():
    from engine.replay.lobster import load_zip

    archive = DATA / "LOBSTER_SampleFile_GOOG_2012-06-21_1.zip"
    if not archive.exists():
        pytest.skip(f"{archive.name} not present")
    name, day = load_zip(archive)
    assert name == "GOOG_2012-06-21_34200000_57600000_message_1.csv"
    assert len(day) > 40_000 and day.levels == 1


def test_the_column_reader_reads_the_fixture_as_numpy_does():
    pytest.importorskip("pyarrow")
    import numpy as np

    from engine.replay.fastcsv import read_lobster

    seconds, ints = read_lobster(MESSAGES.read_bytes(), 6, seconds_first=True)
    lines = MESSAGES.read_text().splitlines()
    assert (seconds == np.loadtxt(lines, delimiter=",", usecols=0)).all()
    assert (ints == np.loadtxt(lines, delimiter=",", dtype=np.int64, usecols=range(1, 6))).all()
    _, rows = read_lobster(BOOK.read_bytes(), 40, seconds_first=False)
    assert (rows == np.loadtxt(BOOK.read_text().splitlines(), delimiter=",", dtype=np.int64)).all()


@pytest.mark.parametrize(
    "row", ["34200.2,1,0x10,100,5853300,1", "34200.2,1,6,+100,5853300,1", "1e4,1,6,100,1,1", ""]
)
def test_the_column_reader_leaves_anything_unusual_to_the_reference(row):
    """pyarrow reads 0x10 as 16, +100 and 1e4 as numbers the reference may word otherwise,
    and a blank line as a row of nulls: the row-by-row reader decides those."""
    pytest.importorskip("pyarrow")
    from engine.replay.fastcsv import read_lobster

    data = f"{ROW}\n{row}\n{ROW.replace('34200.1', '34200.3')}\n".encode()
    assert read_lobster(data, 6, seconds_first=True) is None
