"""Where commands write and how they show money (issue 18): each command's outputs under one
directory whose default git ignores; CNY with two decimals for people, `_fen` and `_t` in
every machine-readable column of money or quantity."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess

import pytest

from engine.cli.clearing import CLEARING_OUT, LEDGER, STORE
from engine.cli.replay import REPLAY_OUT
from engine.cli.serve import DEFAULT_DATA
from tests.cli.test_cli import ROOT, cxe
from tests.cli.test_help import ALL

DAY = "2026-11-24"


def default_of(path: tuple[str, ...], dest: str):
    parser = dict(ALL)[path]
    return next(a.default for a in parser._actions if a.dest == dest)


def test_the_defaults_are_the_documented_directories():
    assert default_of(("clear",), "out") == CLEARING_OUT
    assert default_of(("capture",), "store") == f"{CLEARING_OUT}/{STORE}"
    assert default_of(("ledger",), "ledger") == f"{CLEARING_OUT}/{LEDGER}"
    assert default_of(("surrender",), "ledger") == f"{CLEARING_OUT}/{LEDGER}"
    assert default_of(("serve",), "data") == DEFAULT_DATA


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_git_ignores_every_default_output_location():
    paths = [
        f"{CLEARING_OUT}/{STORE}",
        f"{CLEARING_OUT}/{LEDGER}",
        f"{CLEARING_OUT}/statements-{DAY}.csv",
        f"{REPLAY_OUT}/intervals.csv",
        f"{DEFAULT_DATA}/commands-000000000001.log",
        "engine.key_secret",
        "keys/mm.key_secret",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert sorted(result.stdout.split()) == sorted(paths), result.stderr


def test_clear_writes_only_under_its_output_directory(tmp_path, demo_day):
    """The store and ledger were written into the current directory, outside --out."""
    result = cxe("clear", "--date", DAY, "--trades", str(demo_day), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    written = {p.name for p in (tmp_path / CLEARING_OUT).iterdir()}
    assert {STORE, LEDGER, f"statements-{DAY}.csv", f"opening-after-{DAY}.json"} <= written
    # the next commands find the ledger and the store there by default
    ledger = cxe("ledger", "--member", "5", cwd=tmp_path)
    assert ledger.returncode == 0, ledger.stderr
    again = cxe("clear", "--date", DAY, cwd=tmp_path)  # from the store, already settled
    assert again.returncode == 0 and "already settled" in again.stderr


def test_money_is_cny_for_people_and_fen_only_in_columns_that_say_so(tmp_path, demo_day):
    result = cxe("clear", "--date", DAY, "--trades", str(demo_day), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert " fen" not in result.stdout
    assert re.search(r"fees [\d,]+\.\d\d CNY", result.stdout), result.stdout
    ledger = cxe("ledger", "--ledger", str(tmp_path / LEDGER)).stdout
    assert " fen" not in ledger and re.search(r"[\d,]+\.\d\d CNY", ledger)
    for name in (f"statements-{DAY}.csv", f"summary-{DAY}.csv"):
        with (tmp_path / name).open() as f:
            columns = next(csv.reader(f))
        numeric = [c for c in columns if c not in ("date", "member", "instrument", "members")]
        assert numeric and all(c.endswith(("_fen", "_t")) for c in numeric), columns
