"""`cxe demo` as a newcomer runs it: the real processes (engine service, broker gateway
processes, market data, live capture, settlement), a SIGKILL of the engine mid-day. Checked
from the files it wrote: trades happened, clearing conserved, no acknowledged order was lost,
the journal replays to the state hash it printed; and its checks fail when their facts do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine.clearing.capture import TradeStore
from engine.clearing.netting import check_conservation, net
from engine.clearing.settlement import Ledger, trade_arrays
from engine.cli.clearing import STORE
from engine.config import default_market
from engine.core import Exchange
from engine.journal.segments import replay
from engine.protocol import NewOrder
from tests.cli.test_cli import cxe

DAY = "2026-11-24"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    result = cxe("demo", "--steps", "60", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_the_demo_trades_settles_and_recovers_from_a_kill(demo):
    out, stdout = demo
    assert "Traceback" not in stdout
    for phase in ("opening call", "continuous", "re-opening call", "one-way auction",
                  "block trade", "closing call"):  # fmt: skip
        assert re.search(rf"^{phase} +CEA", stdout, re.M), phase
    assert re.search(r"^   1 Huaneng MM +[\d,]+ +[\d,]+ +-?[\d,]+\.\d\d$", stdout, re.M)
    checks = [line for line in stdout.splitlines() if line.startswith("  ok ")]
    assert len(checks) == 4 and "FAILED" not in stdout
    # trades happened and clearing conserved, from the store capture wrote
    store = TradeStore(out / "clearing" / STORE)
    trades = store.trades_of(DAY)
    records = store.day_records(DAY)
    store.close()
    assert len(trades) > 100 and sum(r.trades for r in records.values()) == len(trades)
    market = default_market()
    fees = np.array([i.fee_ppm for i in market.instruments], dtype=np.int64)
    check_conservation(net(trade_arrays(trades, [i.code for i in market.instruments]), fees))
    assert Ledger(out / "clearing" / "ledger.db").settled(DAY)
    assert (out / "clearing" / f"statements-{DAY}.csv").exists()
    # the engine was started twice: killed once and recovered from its journal
    assert (out / "logs" / "engine.log").read_text().count("data directory") == 2
    # the journal replays to the state hash printed; every acknowledged order is in it
    exchange = Exchange(market)
    orders = {}
    for record, _ in replay(out / "engine" / "journal", exchange):
        if isinstance(record.command, NewOrder):
            orders[record.seq] = (record.command.member, record.command.cl_ord_id)
    (printed,) = re.findall(r"^state hash ([0-9a-f]{64})$", stdout, re.M)
    assert exchange.state_hash() == printed
    acks = [line.split() for p in (out / "gateways").glob("acks-*.log") for line in
            p.read_text().splitlines()]  # fmt: skip
    assert len(acks) > 100
    bids = [a for a in acks if int(a[0]) not in orders]
    assert len(bids) <= 12  # the one-way auction's bids are AuctionBids, not NewOrders
    for seq, member, cl_ord_id in acks:
        if int(seq) in orders:
            assert orders[int(seq)] == (int(member), cl_ord_id)


def test_the_demo_checks_fail_when_their_facts_do(demo):
    """An acknowledgement the journal does not hold, or a state hash the replay does not
    give, makes the demo's check fail (it exits 1 then)."""
    from engine.demo_live import LiveDay, check_journal

    out, stdout = demo
    (printed,) = re.findall(r"^state hash ([0-9a-f]{64})$", stdout, re.M)
    seq = int(re.search(r"day closed at seq ([\d,]+)", stdout).group(1).replace(",", ""))
    killed = int(
        re.search(r"killed with SIGKILL after seq ([\d,]+)", stdout).group(1).replace(",", "")
    )
    acks = sorted((out / "gateways").glob("acks-*.log"))
    day = LiveDay(default_market(), 3, 60, DAY, out, killed_at_seq=killed)
    day.final_seq, day.final_hash = seq, printed
    check_journal(day, acks)
    assert day.checks["state hash"][0] and day.checks["restart lost nothing"][0]
    forged = out.parent / "forged-acks.log"
    forged.write_text(acks[0].read_text() + "3 1 mm-never-sent\n")
    day.final_hash = "0" * 64
    check_journal(day, [forged, *acks[1:]])
    assert not day.checks["state hash"][0]
    lost = day.checks["restart lost nothing"]
    assert not lost[0] and "1 missing from the journal" in lost[1]


def test_an_out_directory_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = cxe("demo", "--steps", "2", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "holds files a demo did not write" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_auction_that_uncrossed_twice_is_two_lines_in_either_demo():
    """Found by a newcomer's walk through the guides: the real-process demo printed only an
    auction's first price, where self-trade prevention had left the book crossed and the rest
    was uncrossed again, so its lines disagreed with its own phase table. Both demos now
    write their auction lines with one function."""
    from engine.demo import auction_lines
    from engine.protocol import AuctionResult

    events = [
        AuctionResult(9, "CEA25", "call", 6200, 1_270, 3),
        AuctionResult(9, "CCER", "call", 8200, 10, 4),
        AuctionResult(9, "CEA25", "call", 6199, 110, 5),
    ]
    lines = auction_lines(events, "CEA25", "re-opening auction")
    assert [line.split()[-5:] for line in lines] == [
        ["62.00", "CNY", "volume", "1,270", "t"],
        ["61.99", "CNY", "volume", "110", "t"],
    ]
    assert "then the rest (STP)" in lines[1]
