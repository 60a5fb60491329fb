"""`cxe clear`, `cxe surrender` and `cxe ledger`, run as a user would (real files, real
processes)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from engine.clearing.settlement import Ledger
from engine.config import default_market
from tests.cli.test_cli import cxe, cxe_command

DAY1, DAY2 = "2026-11-24", "2026-11-25"


def clear_args(tmp: Path, trades: Path, date: str = DAY1, **paths: str) -> list[str]:
    names = {"store": "c.db", "ledger": "l.db", "out": "out", **paths}
    args = ["clear", "--date", date, "--trades", str(trades)]
    for option, name in names.items():
        args += [f"--{option}", str(tmp / name)]
    return args


def settlements(ledger: Path) -> list[str]:
    with sqlite3.connect(ledger) as db:
        return [row[0] for row in db.execute("SELECT date FROM settlements ORDER BY date")]


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def test_a_rerun_for_a_settled_day_rewrites_its_outputs(tmp_path, demo_day):
    """A rerun once said 'already settled: nothing changed' and wrote nothing, so outputs lost
    after settling were gone for good."""
    first = cxe(*clear_args(tmp_path, demo_day))
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out"
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path(f"opening-after-{DAY1}.json") in files and len(files) > 5
    shutil.rmtree(out)
    again = cxe(*clear_args(tmp_path, demo_day))
    assert again.returncode == 0, again.stderr
    assert "already settled" in again.stderr and "rewriting" in again.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert settlements(tmp_path / "l.db") == [DAY1]


def test_a_failure_writing_outputs_after_settling_says_how_to_recover(tmp_path, demo_day):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"statements-{DAY1}").write_text("in the way")  # the per-member folder's place
    failed = cxe(*clear_args(tmp_path, demo_day))
    assert failed.returncode == 2
    no_traceback(failed)
    assert f"{DAY1} is settled in" in failed.stderr
    assert "run the same cxe clear again" in failed.stderr
    assert settlements(tmp_path / "l.db") == [DAY1]
    (out / f"statements-{DAY1}").unlink()
    again = cxe(*clear_args(tmp_path, demo_day))
    assert again.returncode == 0, again.stderr
    assert (out / f"opening-after-{DAY1}.json").is_file()
    assert (out / f"statements-{DAY1}" / "member-1.csv").is_file()


def test_an_out_that_cannot_be_a_directory_is_refused_before_settling(tmp_path, demo_day):
    (tmp_path / "out").write_text("a file")
    result = cxe(*clear_args(tmp_path, demo_day))
    assert result.returncode == 2 and "out" in result.stderr
    no_traceback(result)
    assert not (tmp_path / "l.db").exists() or settlements(tmp_path / "l.db") == []


def test_days_settle_in_order_and_a_rerun_writes_the_day_as_it_was(tmp_path, demo_day):
    """A fresh ledger loaded with day 1's opening-after file once settled day 1 again (42
    balances wrong); after day 2 settled, a rerun of day 1 must write day 1's opening file,
    not the balances after day 2."""
    assert cxe(*clear_args(tmp_path, demo_day)).returncode == 0
    opening = tmp_path / "out" / f"opening-after-{DAY1}.json"
    written = opening.read_bytes()
    twice = cxe(
        *clear_args(tmp_path, demo_day, ledger="fresh.db", out="fresh"), "--market", str(opening)
    )
    assert twice.returncode == 3, twice.stdout
    no_traceback(twice)
    assert f"opened with the balances after {DAY1}: {DAY1} is on or before" in twice.stderr
    assert settlements(tmp_path / "fresh.db") == []

    day2 = tmp_path / "day2"
    demo = cxe(
        "demo", "--in-process", "--steps", "100", "--market", str(opening), "--out", str(day2)
    )
    assert demo.returncode == 0, demo.stderr
    next_day = cxe(*clear_args(tmp_path, day2 / "trades.log", DAY2), "--market", str(opening))
    assert next_day.returncode == 0, next_day.stderr
    opening.unlink()
    rerun = cxe(*clear_args(tmp_path, demo_day))
    assert rerun.returncode == 0, rerun.stderr
    assert opening.read_bytes() == written
    assert settlements(tmp_path / "l.db") == [DAY1, DAY2]


def test_two_concurrent_clears_of_one_ledger_settle_the_day_once(tmp_path, demo_day):
    """Both once read 'not settled', waited on the lock, and the second ended in an sqlite3
    IntegrityError traceback. The test holds the (opened) ledger's write lock while both
    start, so both are inside clear when it lets go."""
    ledger = tmp_path / "l.db"
    Ledger(ledger).load_opening(default_market().members)
    holder = sqlite3.connect(ledger, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    procs = [
        subprocess.Popen(
            [*cxe_command(), *clear_args(tmp_path, demo_day, out=f"out{n}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    time.sleep(4.5)  # below the 5 s sqlite3 waited by default
    holder.execute("ROLLBACK")
    holder.close()
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for rc, _, stderr in results:
        assert rc == 0, stderr
        assert "Traceback" not in stderr
    assert sorted(f"settled {DAY1}" in stdout for _, stdout, _ in results) == [False, True]
    assert sum("already settled" in stderr for _, _, stderr in results) == 1
    assert settlements(ledger) == [DAY1]
    for n in (1, 2):
        assert (tmp_path / f"out{n}" / f"opening-after-{DAY1}.json").is_file()


@pytest.mark.parametrize("role", ["store", "ledger"])
def test_a_store_or_ledger_that_is_not_an_sqlite_file_is_a_message(tmp_path, demo_day, role):
    (tmp_path / "x.csv").write_text("date,member\n")
    result = cxe(*clear_args(tmp_path, demo_day, **{role: "x.csv"}))
    assert result.returncode == 2
    no_traceback(result)
    assert "x.csv is not an SQLite database" in result.stderr
    for command in (["ledger"], ["surrender", "--member", "1", "--period", "2025"]):
        other = cxe(*command, "--ledger", str(tmp_path / "x.csv"))
        assert other.returncode == 2 and "is not an SQLite database" in other.stderr
        no_traceback(other)


@pytest.fixture
def settled(tmp_path, demo_day) -> Path:
    result = cxe(*clear_args(tmp_path, demo_day))
    assert result.returncode == 0, result.stderr
    return tmp_path / "l.db"


def surrender(ledger: Path, *args: str) -> subprocess.CompletedProcess:
    return cxe("surrender", "--ledger", str(ledger), "--member", "5", "--period", "2025", *args)


def test_surrender_counts_every_call_of_a_period_and_refuses_what_is_not_an_allowance(settled):
    for asset, hint in (("CCER", "CCER goes with --ccer"), ("CASH", "CASH is not an allowance")):
        wrong = surrender(settled, "--obligation", "10000", "--cea", f"{asset}=10000")
        assert wrong.returncode == 3 and hint in wrong.stderr, wrong.stderr
    first = surrender(settled, "--obligation", "10000", "--cea", "CEA25=4000", "--ccer", "500")
    assert first.returncode == 0, first.stderr
    assert "in all 4,500 t of its 10,000 t obligation (500 t CCER), shortfall 5,500 t" in (
        first.stdout
    )
    more_ccer = surrender(settled, "--ccer", "500")
    assert more_ccer.returncode == 3 and "counting 500 t surrendered before" in more_ccer.stderr
    rest = surrender(settled, "--cea", "CEA24=5500")
    assert rest.returncode == 0 and "shortfall 0 t" in rest.stdout
    twice = surrender(settled, "--cea", "CEA24=1")
    assert twice.returncode == 3 and "against an obligation of 10,000 t" in twice.stderr
    huge = surrender(settled, "--obligation", str(10**20), "--period", "2026", "--cea", "CEA25=1")
    assert huge.returncode == 3 and "obligation must be between" in huge.stderr
    no_traceback(huge)
    shown = json.loads(cxe("ledger", "--ledger", str(settled), "--json", "--member", "5").stdout)
    assert shown["obligations"] == [
        {
            "member": 5,
            "period": "2025",
            "obligation": 10_000,
            "allowances": 9_500,
            "ccer": 500,
            "shortfall": 0,
        }
    ]
    assert [(s["asset"], s["qty"]) for s in shown["surrenders"]] == [
        ("CEA25", 4_000),
        ("CCER", 500),
        ("CEA24", 5_500),
    ]


def test_ledger_shows_balances_settlements_and_surrenders_for_people_and_as_json(settled):
    assert surrender(settled, "--obligation", "100", "--cea", "CEA25=100").returncode == 0
    data = json.loads(cxe("ledger", "--ledger", str(settled), "--json").stdout)
    with sqlite3.connect(settled) as db:
        assert {(b["member"], b["asset"]): b["amount"] for b in data["balances"]} == dict(
            ((m, a), v) for m, a, v in db.execute("SELECT member, asset, amount FROM balances")
        )
        fees = db.execute("SELECT fees FROM settlements").fetchone()[0]
    assert [s["date"] for s in data["settlements"]] == [DAY1]
    assert data["last_settled"] == DAY1
    table = cxe("ledger", "--ledger", str(settled))
    assert table.returncode == 0, table.stderr
    text = table.stdout
    for heading in ("balances", "settlements", "compliance obligations", "surrenders"):
        assert f"\n{heading}" in text
    exchange = next(line for line in text.splitlines() if line.strip().startswith("exchange"))
    assert exchange.split()[-2:] == [f"{fees // 100:,}.{fees % 100:02d}", "CNY"]
    assert f"{fees // 100:,}.{fees % 100:02d}" in text.split("\nsettlements")[1]
    only = cxe("ledger", "--ledger", str(settled), "--member", "5").stdout
    members = {line.split()[0] for line in only.split("\nsettlements")[0].splitlines()[4:]}
    assert members == {"5"}
    help_text = cxe("ledger", "--help").stdout
    assert "example: cxe ledger" in help_text and "--json" in help_text
    missing = cxe("ledger", "--ledger", str(settled.parent / "none.db"))
    assert missing.returncode == 2 and "no ledger at" in missing.stderr
    assert not (settled.parent / "none.db").exists()
    stranger = cxe("ledger", "--ledger", str(settled), "--member", "99")  # printed empty sections
    assert stranger.returncode == 2 and stranger.stdout == "", stranger.stdout
    assert f"member 99 has no account in {settled}; its members: [-1, 1, 2" in stranger.stderr
