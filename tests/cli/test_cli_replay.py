"""`cxe replay` and `cxe log dump` as a user runs them (the real command, subprocess)."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile

import pytest

from tests.cli.test_cli import LOBSTER, ROOT, cxe

BOOK = LOBSTER.with_name(LOBSTER.name.replace("_message_", "_orderbook_"))
needs_lobster = pytest.mark.skipif(not LOBSTER.exists(), reason="LOBSTER samples not present")
HEADER = "time_ns,instrument,member,action,side,price,qty,order_id,tif\n"


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """A short demo day with its logs, and the state hash the demo printed."""
    out = tmp_path_factory.mktemp("demo") / "day"
    result = cxe("demo", "--in-process", "--steps", "40", "--seed", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.startswith("state hash ")]
    assert len(printed) == 1
    return out, printed[0].split()[2]


# -- formats ----------------------------------------------------------------------------------


@needs_lobster
def test_the_format_comes_from_the_content_not_the_name(tmp_path, day):
    """A LOBSTER file named x.log.bak was once read as a command CSV, and any name with
    _message_ as LOBSTER."""
    renamed = tmp_path / "x.log.bak"
    shutil.copy(LOBSTER, renamed)
    result = cxe("replay", str(renamed), "--orderbook", str(BOOK), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "0 of 999 book rows differ" in result.stdout
    commands = tmp_path / "flow_message_1.csv"
    commands.write_text(HEADER + "1,A,1,add,buy,100,5,1,\n")
    result = cxe("replay", str(commands), "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert "through the bare book" in result.stdout
    log = tmp_path / "day.csv"
    shutil.copy(day[0] / "commands.log", log)
    result = cxe("replay", str(log))
    assert result.returncode == 0, result.stderr
    assert f"state hash {day[1]}" in result.stdout


def test_content_that_fits_no_format_asks_for_format(tmp_path):
    unknown = tmp_path / "notes.csv"
    unknown.write_text("hello,world\n")
    result = cxe("replay", str(unknown))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot tell what" in result.stderr and "give --format" in result.stderr
    forced = cxe("replay", str(unknown), "--format", "log")
    assert forced.returncode == 2 and "Traceback" not in forced.stderr
    assert "not a framed log" in forced.stderr


@needs_lobster
def test_a_lobster_zip_replays_as_it_ships(tmp_path):
    """Once "'utf-8' codec can't decode": the zip's read-me is not UTF-8."""
    archive = tmp_path / "sample.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(LOBSTER, LOBSTER.name)
        z.write(BOOK, BOOK.name)
        z.writestr("LOBSTER_SampleFiles_ReadMe.txt", b"\xa9 2013\n")
    result = cxe("replay", str(archive), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{LOBSTER.name}: 999 messages, 0 of 999 book rows differ")
    trades = rows(tmp_path / "o" / "trades.csv")
    assert trades[0].keys() >= {"time_ns", "message"} and int(trades[0]["message"]) >= 0
    plotted = cxe("replay", str(archive), "--out", str(tmp_path / "p"), "--plot", "--log-depth")
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "p" / "depth.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("source", "options", "refused"),
    [
        ("commands", ["--plot"], "--plot does not apply"),
        ("commands", ["--interval", "5", "--counterfactual"], "--interval and --counterfactual"),
        ("commands", ["--orderbook", "b.csv"], "--orderbook does not apply"),
        ("lobster", ["--market", "m.toml"], "--market does not apply"),
        ("lobster", ["--tick", "5"], "--tick does not apply"),
        ("lobster", ["--strict"], "--strict does not apply"),
        ("log", ["--price-scale", "100"], "--price-scale does not apply"),
        ("log", ["--plot"], "--plot does not apply"),
        ("commands", ["--date", "2012-06-21"], "--date does not apply"),
        ("lobster", ["--log-depth"], "--log-depth sets the depth plot's axis: give --plot"),
    ],
)
def test_options_that_do_not_apply_to_the_source_are_refused(
    tmp_path, day, source, options, refused
):
    """--plot, --out, --counterfactual, --interval and --market were once silently ignored
    for command files and logs."""
    if source == "lobster" and not LOBSTER.exists():
        pytest.skip("LOBSTER samples not present")
    path = {"lobster": LOBSTER, "log": day[0] / "commands.log"}.get(source)
    if path is None:
        path = tmp_path / "flow.csv"
        path.write_text(HEADER + "1,A,1,add,buy,100,5,1,\n")
    result = cxe("replay", str(path), *options, "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and refused in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


# -- command files ----------------------------------------------------------------------------


def test_every_reject_is_counted_by_reason_and_listed_and_strict_fails(tmp_path):
    flow = tmp_path / "flow.csv"
    flow.write_text(
        HEADER + "1,A,1,add,buy,100,5,1,\n"
        "2,A,1,add,buy,1_000,5,2,\n"  # not a number
        "3,A,1,cancel,,,,7,\n"  # the book: unknown order
        "4,A,1,add,buy,abc,5,3,\n"  # not a number
        "5,A,2,add,sell,100,2,4,\n"
    )
    out = tmp_path / "o"
    result = cxe("replay", str(flow), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "rejected 3 rows: not_a_number 2, unknown_order 1" in result.stderr
    rejects = rows(out / "rejects.csv")
    assert [(r["line"], r["reason"], r["text"]) for r in rejects] == [
        ("3", "not_a_number", "2,A,1,add,buy,1_000,5,2,"),
        ("4", "unknown_order", "3,A,1,cancel,,,,7,"),
        ("5", "not_a_number", "4,A,1,add,buy,abc,5,3,"),
    ]
    fills = rows(out / "fills.csv")
    assert [(f["time_ns"], f["line"], f["price"], f["qty"]) for f in fills] == [
        ("5", "6", "100", "2")
    ]
    strict = cxe("replay", str(flow), "--out", str(out), "--strict")
    assert strict.returncode == 1


def test_a_value_beyond_the_books_limits_is_an_error_naming_the_limit(tmp_path):
    """Cent prices from $1 to $4 M on a $78,000 market replay on a one-cent tick (the book
    keeps far levels sparse); only a price beyond the book's 2^62 units is refused."""
    flow = tmp_path / "flow.csv"
    wide = "1,BTC,1,add,sell,4000000.00,1,1,\n2,BTC,1,add,buy,78000.12,1,2,\n"
    flow.write_text(HEADER + wide + "3,BTC,1,add,buy,1.00,1,3,\n")
    result = cxe("replay", str(flow), "--price-scale", "100", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "BTC: 3 commands" in result.stdout and "best ask 400000000" in result.stdout
    flow.write_text(HEADER + wide + "3,BTC,1,add,buy,50000000000000000.00,1,3,\n")
    beyond = cxe("replay", str(flow), "--price-scale", "100", "--out", str(tmp_path / "o"))
    assert beyond.returncode == 2 and "Traceback" not in beyond.stderr
    assert "1 rows hold values beyond the book's limits (" in beyond.stderr
    assert "so nothing was replayed" in beyond.stderr
    assert "prices up to 4,611,686,018,427,387,904 book units" in beyond.stderr


def test_a_command_file_through_the_exchange_core_with_market(tmp_path):
    flow = tmp_path / "flow.csv"
    flow.write_text(
        HEADER + "1,CEA25,1,add,sell,6200,5,1,\n2,CEA25,2,add,buy,6200,5,2,\n"
        "3,CEA25,2,add,buy,9000,5,3,\n"
    )
    market = ROOT / "docs" / "market.example.toml"
    result = cxe("replay", str(flow), "--market", str(market), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "through the exchange core of" in result.stdout and "state hash " in result.stdout
    assert "rejected 1 row: price_outside_band 1" in result.stderr
    assert [f["line"] for f in rows(tmp_path / "o" / "fills.csv")] == ["3"]
    tick = cxe("replay", str(flow), "--market", str(market), "--tick", "5")
    assert tick.returncode == 2 and "--tick does not apply with --market" in tick.stderr
    owned = tmp_path / "owned.csv"
    owned.write_text(
        "time_ns,instrument,owner,action,side,price,qty,order_id\n1,CEA25,1,add,sell,1,1,1\n"
    )
    result = cxe("replay", str(owned), "--market", str(market))
    assert result.returncode == 2 and "has an owner column" in result.stderr


def test_instrument_codes_of_any_length_stay_whole_in_fills(tmp_path):
    """Codes longer than 16 characters were once cut, merging instruments in fills.csv."""
    long_a, long_b = "BTC-PERPETUAL-USD-A", "BTC-PERPETUAL-USD-B"
    flow = tmp_path / "flow.csv"
    flow.write_text(
        HEADER
        + "".join(
            f"{t},{code},1,add,{side},100,1,{t},\n"
            for t, code, side in [
                (1, long_a, "buy"),
                (2, long_a, "sell"),
                (3, long_b, "buy"),
                (4, long_b, "sell"),
            ]
        )
    )
    result = cxe("replay", str(flow), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    fills = rows(tmp_path / "o" / "fills.csv")
    assert [f["instrument"] for f in fills] == [long_a, long_b]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty: nothing to replay"), (HEADER.encode(), "has a header but no rows")],
)
def test_empty_and_header_only_files_say_so(tmp_path, content, message):
    """They once printed nothing at all."""
    flow = tmp_path / "flow.csv"
    flow.write_bytes(content)
    result = cxe("replay", str(flow), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and message in result.stderr, result.stderr


@needs_lobster
def test_a_lobster_file_with_bad_rows_lists_every_one_and_replays_nothing(tmp_path):
    lines = LOBSTER.read_text().splitlines()
    lines[4] = lines[4].replace(lines[4].split(",")[2], "nan", 1)
    lines[9] = "nan," + lines[9].split(",", 1)[1]
    messages = tmp_path / "X_message_10.csv"
    messages.write_text("\n".join(lines) + "\n")
    shutil.copy(BOOK, tmp_path / "X_orderbook_10.csv")
    result = cxe("replay", str(messages), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "2 bad rows in the LOBSTER message file (line 5: order id" in result.stderr
    rejects = rows(tmp_path / "o" / "rejects.csv")
    assert [(r["line"], r["reason"]) for r in rejects] == [
        ("5", "not_a_number"),
        ("10", "not_a_number"),
    ]
    assert not (tmp_path / "o" / "trades.csv").exists()


# -- command logs -----------------------------------------------------------------------------


def test_a_command_log_replays_to_the_state_hash_the_demo_printed(tmp_path, day):
    out, demo_hash = day
    result = cxe("replay", str(out / "commands.log"), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert f"state hash {demo_hash}" in result.stdout
    assert "trades and day-end records identical to" in result.stdout
    assert rows(tmp_path / "o" / "rejects.csv") == []
    alone = tmp_path / "commands.log"  # without its trade log the check cannot be made
    shutil.copy(out / "commands.log", alone)
    result = cxe("replay", str(alone))
    assert result.returncode == 0 and "no trades.log beside the log" in result.stderr


def test_a_logs_rejected_commands_are_counted_listed_with_their_seq_and_fail_strict(tmp_path, day):
    """A cancel of an order the exchange never had, appended to the day's log."""
    from engine.journal import CommandLog
    from engine.protocol import CancelOrder

    copy = tmp_path / "day"
    shutil.copytree(day[0], copy)
    last = json.loads(cxe("log", "dump", str(copy / "commands.log"), "--summary").stdout)
    with CommandLog(copy / "commands.log") as log:
        log.append(last["last_seq"] + 1, last["last_ts_ns"] + 1, CancelOrder("x", 2, "CEA23", 99))
    result = cxe("replay", str(copy / "commands.log"), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "1 rejected (unknown_order 1)" in result.stdout
    assert [(r["seq"], r["reason"]) for r in rows(tmp_path / "o" / "rejects.csv")] == [
        (str(last["last_seq"] + 1), "unknown_order")
    ]
    strict = cxe("replay", str(copy / "commands.log"), "--strict")
    assert strict.returncode == 1, strict.stdout + strict.stderr


def test_a_log_replayed_with_the_wrong_market_is_refused(tmp_path):
    """A later day's log replayed without the opening file it ran with once exited 0 with
    a different state hash."""
    first = tmp_path / "day1"
    day1 = cxe("demo", "--in-process", "--steps", "40", "--seed", "2", "--out", str(first))
    assert day1.returncode == 0, day1.stderr
    settled = cxe(
        "clear",
        "--date",
        "2026-11-24",
        "--trades",
        str(first / "trades.log"),
        "--store",
        str(tmp_path / "c.db"),
        "--ledger",
        str(tmp_path / "l.db"),
        "--out",
        str(tmp_path / "clearing"),
    )
    assert settled.returncode == 0, settled.stderr
    opening = tmp_path / "clearing" / "opening-after-2026-11-24.json"
    second = tmp_path / "day2"
    day2 = cxe(
        "demo", "--in-process", "--steps", "40", "--market", str(opening), "--out", str(second)
    )
    assert day2.returncode == 0, day2.stderr
    right = cxe("replay", str(second / "commands.log"), "--market", str(opening))
    assert right.returncode == 0, right.stderr
    wrong = cxe("replay", str(second / "commands.log"))
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert "NOT the recorded day" in wrong.stderr and "opening file" in wrong.stderr
    refused = cxe("replay", str(first / "commands.log"), "--market", str(opening))
    assert refused.returncode == 3
    assert "StartOfDay 2026-11-24 was refused" in refused.stderr


def test_log_dump_prints_json_lines_and_a_summary(day):
    out, _ = day
    dumped = cxe("log", "dump", str(out / "commands.log"))
    assert dumped.returncode == 0, dumped.stderr
    records = [json.loads(line) for line in dumped.stdout.splitlines()]
    assert records[0]["type"] == "StartOfDay" and records[0]["seq"] == 1
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    summary = json.loads(cxe("log", "dump", str(out / "commands.log"), "--summary").stdout)
    assert summary["records"] == len(records) and summary["last_seq"] == len(records)
    trades = cxe("log", "dump", str(out / "trades.log"), "--summary")
    totals = json.loads(trades.stdout)
    assert totals["kind"] == "trade log" and totals["by_type"]["DayClosed"] == 6
    assert sum(totals["trades_by_instrument"].values()) == totals["by_type"]["Trade"]
    csv = out / "messages.csv"  # a LOBSTER message line: text, not framed records
    csv.write_text("34200.004241176,1,16113575,18,5853300,1\n")
    not_a_log = cxe("log", "dump", str(csv))
    assert not_a_log.returncode == 2 and "not an engine command log" in not_a_log.stderr


def test_a_journal_with_an_operators_repeated_start_of_day_replays_as_its_day(tmp_path):
    """A probe: a StartOfDay typed twice is journaled and refused by the engine and by the
    replay alike, yet `cxe replay` said "NOT the recorded day" (exit 3) and never compared
    trades.log, the check the operator's guide gives for a recovery."""
    from engine.protocol import BlockTrade, StartOfDay
    from tests.support.engine import DAY, EngineProcess

    data = tmp_path / "data"
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")
        (refused,) = engine.admin(StartOfDay(DAY))  # the operator's repeat
        assert type(refused).__name__ == "Rejected", refused
        traded = engine.admin(BlockTrade("b1", "CEA25", 3, 4, 6200, 100_000))
        assert any(type(a).__name__ == "Trade" for a in traded), traded
        state_hash = engine.status().state_hash
        assert engine.stop() == 0
    replayed = cxe("replay", str(data / "journal"))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"state hash {state_hash}" in replayed.stdout
    assert f"trades and day-end records identical to {data / 'trades.log'}" in replayed.stdout
    (data / "trades.log").unlink()  # and with nothing to compare against
    alone = cxe("replay", str(data / "journal"))
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "NOT the recorded day" not in alone.stderr
