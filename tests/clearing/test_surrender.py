"""Surrender: obligations per member and compliance period, caps over every call together."""

from __future__ import annotations

import pytest

from engine.clearing.compliance import Surrender, SurrenderRefused, standing, surrender
from engine.clearing.settlement import CASH, Ledger
from engine.config import Member
from tests.clearing.test_clearing import market

CONFIG = market("CEA24", "CEA25", "CCER")


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    ledger = Ledger(tmp_path / "l.db")
    holdings = {"CEA24": 20_000, "CEA25": 20_000, "CCER": 20_000}
    ledger.load_opening([Member(id=m, name=str(m), cash=10**9, holdings=holdings) for m in (1, 2)])
    return ledger


def refused(ledger: Ledger, request: Surrender, match: str) -> None:
    """`request` is refused with `match`, and neither a record nor a balance changes."""
    balances = ledger.balances()
    rows = ledger.db.execute("SELECT COUNT(*) FROM surrenders").fetchone()[0]
    with pytest.raises(SurrenderRefused, match=match):
        surrender(ledger, request, CONFIG, "")
    assert ledger.balances() == balances
    assert ledger.db.execute("SELECT COUNT(*) FROM surrenders").fetchone()[0] == rows


def test_ccer_or_cash_given_as_allowances_is_refused(ledger):
    """--cea CCER=10000 once reported full compliance and recorded nothing (past the 5% cap),
    --cea CASH=... debited cash as allowances."""
    refused(ledger, Surrender(1, "2025", 10_000, {"CCER": 10_000}, 0), "CCER is not an allow")
    refused(ledger, Surrender(1, "2025", 10_000, {CASH: 10_000}, 0), "CASH is not an allowance")
    refused(ledger, Surrender(1, "2025", 10_000, {"CEA99": 1}, 0), "CEA99 is not an allowance")
    assert standing(ledger, 1, "2025") is None


def test_the_ccer_cap_applies_to_everything_surrendered_for_the_period(ledger):
    """Five calls of 5% CCER each once surrendered 25% of the obligation in CCER."""
    done = surrender(ledger, Surrender(1, "2025", 10_000, {}, 500), CONFIG, "")
    assert (done.ccer, done.shortfall) == (500, 9_500)
    refused(
        ledger,
        Surrender(1, "2025", 10_000, {}, 1),
        r"at most 5% .*500 t of 10,000 t, not 501 t, counting 500 t surrendered before",
    )
    assert ledger.balance(1, "CCER") == 19_500


def test_an_obligation_cannot_be_met_twice(ledger):
    first = surrender(ledger, Surrender(1, "2025", 10_000, {"CEA25": 9_500}, 500), CONFIG, "a")
    assert first.shortfall == 0
    refused(
        ledger,
        Surrender(1, "2025", 10_000, {"CEA25": 9_500}, 0),
        "surrendering 19,500 t against an obligation of 10,000 t",
    )
    refused(ledger, Surrender(1, "2025", 0, {"CEA24": 1}, 0), "against an obligation of 10,000")


def test_a_shortfall_is_covered_by_later_calls_against_the_recorded_obligation(ledger):
    surrender(ledger, Surrender(1, "2025", 10_000, {"CEA24": 4_000}, 0), CONFIG, "")
    refused(ledger, Surrender(1, "2025", 8_000, {"CEA25": 1}, 0), "recorded as 10,000 t, not 8,000")
    done = surrender(ledger, Surrender(1, "2025", 0, {"CEA25": 5_500}, 500), CONFIG, "")
    assert (done.obligation, done.allowances, done.ccer, done.shortfall) == (10_000, 9_500, 500, 0)
    assert ledger.balance(1, "CEA24") == 16_000 and ledger.balance(1, "CEA25") == 14_500


def test_obligations_are_per_member_and_period(ledger):
    surrender(ledger, Surrender(1, "2025", 1_000, {"CEA25": 1_000}, 0), CONFIG, "")
    other_period = surrender(ledger, Surrender(1, "2024", 2_000, {"CEA24": 1_000}, 100), CONFIG, "")
    other_member = surrender(ledger, Surrender(2, "2025", 1_000, {"CEA25": 950}, 50), CONFIG, "")
    assert (other_period.obligation, other_period.shortfall) == (2_000, 900)
    assert (other_member.obligation, other_member.shortfall) == (1_000, 0)
    assert standing(ledger, 1, "2025").total == 1_000
    refused(ledger, Surrender(1, "2026", 0, {"CEA25": 1}, 0), "no obligation recorded .* 2026")
    refused(ledger, Surrender(1, "last year", 10, {}, 0), "compliance period 'last year'")


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (Surrender(1, "2025", 10**20, {}, 0), "obligation must be between 1 and"),
        (Surrender(1, "2025", -5, {}, 0), "obligation must be between 1 and"),
        (Surrender(1, "2025", 10, {"CEA25": 10**20}, 0), "CEA25: 100000000000000000000 t is not"),
        (Surrender(1, "2025", 10, {}, 10**20), "CCER: 100000000000000000000 t is not"),
        (Surrender(1, "2025", 10, {"CEA25": -1}, 0), "CEA25: -1 t is not between 0"),
        (Surrender(10**20, "2025", 10, {}, 0), "member 100000000000000000000 has no account"),
    ],
)
def test_figures_sqlite_cannot_hold_or_that_cannot_be_are_refused(ledger, request_, match):
    """An obligation beyond int64 once ended in OverflowError from sqlite3."""
    refused(ledger, request_, match)
