"""The real `cxe` command, run as a user would (subprocess, installed console script)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cxe_command() -> list[str]:
    """The installed `cxe` beside this Python, or the module if it is not installed."""
    exe = shutil.which("cxe", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "engine.cli"]


def cxe(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 300)
    return subprocess.run([*cxe_command(), *args], capture_output=True, text=True, **kwargs)


def test_help_lists_every_command():
    result = cxe("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout
    assert "--seed" in cxe("demo", "--help").stdout


def test_demo_runs_a_deterministic_full_day_of_every_instrument():
    first = cxe("demo", "--in-process", "--steps", "400", "--seed", "3")
    second = cxe("demo", "--in-process", "--steps", "400", "--seed", "3")
    assert first.returncode == 0, first.stderr
    body = [line for line in first.stdout.splitlines() if not line.startswith("simulated in")]
    assert body == [
        line for line in second.stdout.splitlines() if not line.startswith("simulated in")
    ]
    text = "\n".join(body)
    for phase in (
        "top five levels at the end of continuous trading",
        "opening auction",
        "re-opening auction",
        "one-way auction",
        "Block trade",
        "closing auction",
    ):
        assert phase in text
    records = [line.split() for line in body if "checksum" in line]
    assert sorted(r[0] for r in records) == ["CCER", "CEA21", "CEA22", "CEA23", "CEA24", "CEA25"]
    assert all(int(r[1].replace(",", "")) > 0 for r in records)


def test_demo_with_a_missing_market_file_says_so():
    result = cxe("demo", "--market", "/nonexistent/market.toml")
    assert result.returncode == 2
    assert "market.toml" in result.stderr and "Traceback" not in result.stderr


def readme_python(containing: str) -> str:
    """The README's Python example that contains `containing`."""
    blocks = [
        b.split("```", 1)[0] for b in (ROOT / "README.md").read_text().split("```python\n")[1:]
    ]
    (code,) = [block for block in blocks if containing in block]
    return code


def test_readme_python_example_prints_what_it_says():
    code = readme_python("from engine.book import Book")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "FILL BookEvent(kind=3, oid=2, oid2=1, price=6200, qty=300" in result.stdout
    assert result.stdout.rstrip().endswith("([], [(6200, 200, 1)])")


@pytest.mark.slow
def test_readme_gateway_example_gets_its_order_accepted(tmp_path):
    from tests.support.engine import EngineProcess

    code = readme_python("GatewayClient")
    with EngineProcess(tmp_path / "data") as engine:
        engine.open_market("CEA25")
        code = code.replace("tcp://127.0.0.1:5555", engine.endpoints["orders"])
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    assert result.returncode == 0, result.stderr
    assert "Accepted(" in result.stdout and "cl_ord_id='order-1'" in result.stdout


def _as_nobody(script: str, home: Path, install: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(install)}
    command = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        sys.executable,
        "-c",
        script,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env, cwd=install
    )


@pytest.fixture
def read_only_install():
    """A copy of the package that only root can write, in a directory nobody can traverse."""
    top = Path(tempfile.mkdtemp(prefix="cxe-ro-"))
    try:
        os.chmod(top, 0o755)
        install = top / "site"
        shutil.copytree(
            ROOT / "engine", install / "engine", ignore=shutil.ignore_patterns("__pycache__")
        )
        yield top, install
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _nobody_can_run_python() -> bool:
    """Root, setpriv, and an interpreter whose packages an unprivileged user may read (a venv
    inside a private directory is not)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return False
    probe = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        sys.executable,
        "-c",
        "import numba, numpy, msgspec, sortedcontainers",
    ]
    return subprocess.run(probe, capture_output=True, cwd="/", timeout=120).returncode == 0


NEEDS_ROOT = pytest.mark.skipif(
    not _nobody_can_run_python(),
    reason="needs root, setpriv and an interpreter an unprivileged user can read",
)
SCRIPT = (
    "import os; from engine.book import Book; b = Book(); b.add(1, 1, 0, 100, 5); "
    "b.add(2, 2, 1, 100, 3); print(b.depth()); print(os.environ.get('NUMBA_CACHE_DIR'))"
)


@NEEDS_ROOT
def test_read_only_install_caches_compiled_code_in_the_user_cache(read_only_install):
    top, install = read_only_install
    home = top / "home"
    home.mkdir()
    shutil.chown(home, "nobody")
    result = _as_nobody(SCRIPT, home, install)
    assert result.returncode == 0, result.stderr
    assert "([(100, 2, 1)], [])" in result.stdout
    assert not list(install.rglob("*.nbi")), "wrote into the read-only install"
    assert list((home / ".cache" / "numba").rglob("*.nbi")), "nothing cached for the user"


@NEEDS_ROOT
def test_without_any_writable_cache_home_it_falls_back_to_a_temp_dir(read_only_install):
    top, install = read_only_install
    home = top / "locked-home"
    home.mkdir(mode=0o755)
    result = _as_nobody(SCRIPT, home, install)
    assert result.returncode == 0, result.stderr
    assert "([(100, 2, 1)], [])" in result.stdout
    assert "cxe-numba-" in result.stdout.splitlines()[-1]


def test_clear_settles_a_demo_day_once_and_writes_statements(tmp_path):
    demo = cxe("demo", "--in-process", "--steps", "200", "--seed", "2", "--out", str(tmp_path))
    assert demo.returncode == 0, demo.stderr
    args = [
        "clear",
        "--date",
        "2026-11-24",
        "--trades",
        str(tmp_path / "trades.log"),
        "--store",
        str(tmp_path / "c.db"),
        "--ledger",
        str(tmp_path / "l.db"),
        "--out",
        str(tmp_path / "out"),
    ]
    first = cxe(*args)
    assert first.returncode == 0, first.stderr
    assert "settled 2026-11-24 (net" in first.stdout
    statements = (tmp_path / "out" / "statements-2026-11-24.csv").read_text().splitlines()
    assert statements[0] == (
        "date,member,instrument,bought_t,sold_t,net_t,buy_value_fen,sell_value_fen,fees_fen,"
        "net_cash_fen"
    )
    assert len(statements) > 10
    second = cxe(*args)
    assert second.returncode == 0
    assert "already settled" in second.stderr
    opening = tmp_path / "out" / "opening-after-2026-11-24.json"
    again = cxe("demo", "--in-process", "--steps", "50", "--market", str(opening))
    assert again.returncode == 0, again.stderr


def test_surrender_refuses_more_than_five_percent_ccer(tmp_path):
    ledger = str(tmp_path / "l.db")
    from engine.clearing.settlement import Ledger
    from engine.config import default_market

    Ledger(ledger).load_opening(default_market().members)
    refused = cxe(
        "surrender",
        "--ledger",
        ledger,
        "--member",
        "5",
        "--period",
        "2025",
        "--obligation",
        "10000",
        "--cea",
        "CEA25=9000",
        "--ccer",
        "1000",
    )
    assert refused.returncode == 3 and "at most 5%" in refused.stderr
    done = cxe(
        "surrender",
        "--ledger",
        ledger,
        "--member",
        "5",
        "--period",
        "2025",
        "--obligation",
        "10000",
        "--cea",
        "9000",
        "--cea",
        "CEA24=500",
        "--vintage",
        "CEA25",
        "--ccer",
        "500",
    )
    assert done.returncode == 0, done.stderr
    assert Ledger(ledger).balance(5, "CEA25") == 2_000_000 - 9_000
    assert "surrendered 10,000 t" in done.stdout
    missing = tmp_path / "missing.db"  # once created empty, and the surrender "recorded"
    result = cxe(
        "surrender",
        "--ledger",
        str(missing),
        "--member",
        "5",
        "--period",
        "2025",
        "--obligation",
        "10",
    )
    assert result.returncode == 2 and "no ledger at" in result.stderr and not missing.exists()


LOBSTER = ROOT.parent / "shared" / "data" / "lobster" / "AAPL_2012-06-21_first999_message_10.csv"


@pytest.mark.skipif(not LOBSTER.exists(), reason="LOBSTER samples not present")
def test_replay_of_a_lobster_file_checks_every_row_and_writes_outputs(tmp_path):
    result = cxe("replay", str(LOBSTER), "--out", str(tmp_path), "--interval", "10")
    assert result.returncode == 0, result.stderr
    assert "0 of 999 book rows differ" in result.stdout
    assert "final book identical" in result.stdout
    assert (tmp_path / "intervals.csv").exists()


def test_replay_of_a_command_log_reproduces_the_state_hash(tmp_path):
    from engine.config import default_market
    from engine.demo import run_demo

    day = run_demo(default_market(), seed=6, steps=100, out=str(tmp_path / "day"))
    result = cxe("replay", str(tmp_path / "day" / "commands.log"))
    assert result.returncode == 0, result.stderr
    assert day.exchange.state_hash() in result.stdout
    torn = tmp_path / "torn.log"  # as a crash mid-write leaves it: read up to it, and said
    torn.write_bytes((tmp_path / "day" / "commands.log").read_bytes()[:-5])
    result = cxe("replay", str(torn))
    assert result.returncode == 0 and "ends in an incomplete record" in result.stderr
    # a second demo into the same directory once appended another day 1 to both logs
    logs = (tmp_path / "day" / "commands.log").read_bytes()
    again = cxe("demo", "--in-process", "--steps", "20", "--out", str(tmp_path / "day"))
    assert again.returncode == 2 and "commands.log exists" in again.stderr
    assert (tmp_path / "day" / "commands.log").read_bytes() == logs


def test_replay_with_the_wrong_market_says_the_log_was_refused(tmp_path):
    """Replayed into a market whose balances follow its own day, a log's StartOfDay is
    refused and every order after it too; the replay once printed "0 trades" and nothing
    else."""
    import msgspec

    from engine.config import default_market
    from engine.demo import run_demo

    run_demo(default_market(), seed=6, steps=50, out=str(tmp_path / "day"))
    settled = msgspec.structs.replace(default_market(), last_trading_day="2026-11-24")
    (tmp_path / "after.json").write_bytes(msgspec.json.encode(settled))
    result = cxe(
        "replay", str(tmp_path / "day" / "commands.log"), "--market", str(tmp_path / "after.json")
    )
    assert result.returncode == 3, result.stderr  # refused: not the day the log recorded
    assert "rejected" in result.stdout
    assert "StartOfDay 2026-11-24 was refused" in result.stderr and "--market" in result.stderr


def test_counts_that_must_be_positive_are_refused_with_a_usage_error():
    """`--steps -5` once ran a day without its halt, and `--interval 0` put a whole replay
    into one interval; `--interval -5` failed inside numpy."""
    for args in (["demo", "--steps", "0"], ["demo", "--steps", "-5"]):
        result = cxe(*args)
        assert result.returncode == 2 and "--steps: must be at least 1" in result.stderr
    for interval in ("0", "-5", "1.5"):
        result = cxe("replay", "commands.log", "--interval", interval)
        assert result.returncode == 2 and "--interval:" in result.stderr, result.stderr


def test_a_date_that_is_not_a_calendar_day_is_a_usage_error():
    """'cxe demo --date 2026-13-45' once failed with strptime's message after starting."""
    for args in (
        ["demo", "--date", "2026-13-45"],
        ["clear", "--date", "24/11/2026", "--trades", "t"],
    ):
        result = cxe(*args)
        assert result.returncode == 2 and "--date: not a calendar date" in result.stderr


def test_an_unknown_benchmark_name_is_a_usage_error():
    """`python -m bench --only nonsense` once ran nothing and said nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nonsense"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "invalid choice: 'nonsense'" in result.stderr
    assert "exchange_apply" in result.stderr


def test_version():
    result = cxe("--version")
    assert result.returncode == 0 and result.stdout.startswith("cxe 0.")
