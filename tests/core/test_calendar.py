"""The trading calendar: China's statutory holidays and adjusted workdays (engine.calendar_cn),
checked against the maintained chinese-calendar package, overridable in the market file, and
a day outside its range refused (issue 18: `cxe demo --date 2027-01-01` traded on New Year's
Day because the holiday list stopped at 2026)."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import pytest

from engine.calendar_cn import ADJUSTED_WORKDAYS, CALENDAR_RANGE, HOLIDAY_SPANS, holiday_dates
from engine.config import default_market, load_market
from engine.protocol import RejectCode, StartOfDay
from tests.cli.test_cli import cxe
from tests.support.exchange import only_reject


def every_day(first: str, last: str) -> list[date]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def test_the_table_is_the_maintained_calendar_day_by_day():
    """Every day of the range: a holiday here exactly when chinese-calendar says so, and an
    adjusted workday exactly when it names the day a working day on a weekend."""
    calendar = pytest.importorskip("chinese_calendar")
    named = {
        day: name
        for first, last, name in HOLIDAY_SPANS
        for day in holiday_dates(((first, last, name),))
    }
    workdays = set(ADJUSTED_WORKDAYS)
    for day in every_day(*CALENDAR_RANGE):
        text = day.isoformat()
        on_holiday, name = calendar.get_holiday_detail(day)
        statutory = on_holiday and name is not None  # not a plain weekend
        assert (text in named) == statutory, text
        if statutory:
            assert named[text] == str(name), text
        on_weekend = day.weekday() >= 5
        assert (text in workdays) == (on_weekend and calendar.is_workday(day)), text


def test_the_spans_hold_their_invariants():
    first, last = CALENDAR_RANGE
    ends = [(a, b) for a, b, _ in HOLIDAY_SPANS]
    assert all(first <= a <= b <= last for a, b in ends)
    assert all(b < a2 for (_, b), (a2, _) in pairwise(ends))
    assert all(date.fromisoformat(d).weekday() >= 5 for d in ADJUSTED_WORKDAYS)
    assert not set(ADJUSTED_WORKDAYS) & set(holiday_dates())


@pytest.mark.parametrize(
    ("day", "why"),
    [
        ("2025-10-08", "a holiday"),  # the last day of the 2025 National Day week, a Wednesday
        ("2024-02-16", "a holiday"),  # Spring Festival, a Friday
        ("2025-09-28", "a Sunday"),  # an adjusted workday: offices work, markets do not
        ("2027-01-01", "outside the market's calendar (2021-01-01 to 2026-12-31)"),
        ("2020-12-31", "outside the market's calendar"),
    ],
)
def test_the_exchange_refuses_a_day_the_calendar_closes_or_does_not_know(make_exchange, day, why):
    x = make_exchange(default_market())
    before = x.state_hash()
    reject = only_reject(x.apply(StartOfDay(day)))
    assert reject.code == RejectCode.MARKET_CLOSED and f"{day} is {why}" in reject.text
    assert x.state_hash() == before


def test_there_is_no_next_trading_day_past_the_calendar():
    market = default_market()
    assert market.next_trading_day("2026-12-30") == "2026-12-31"
    with pytest.raises(ValueError, match="calendar, which ends 2026-12-31"):
        market.next_trading_day("2026-12-31")
    assert market.next_trading_day("1999-01-01") == "2021-01-04"  # the first one it knows


def test_a_market_file_sets_its_own_holidays_and_range(tmp_path, make_exchange):
    path = tmp_path / "m.toml"
    path.write_text(
        'name = "2027"\n'
        'holidays = ["2027-01-01", "2027-02-08"]\n'
        'calendar_range = ["2027-01-01", "2027-12-31"]\n'
        "[[instruments]]\n"
        'code = "CEA25"\n'
        'name = "CEA 2025"\n'
        'product = "CEA"\n'
        "reference_price = 6200\n"
    )
    market = load_market(path)
    x = make_exchange(market)
    assert only_reject(x.apply(StartOfDay("2027-01-01"))).code == RejectCode.MARKET_CLOSED
    assert market.next_trading_day("2027-01-01") == "2027-01-04"
    assert market.closed_because("2027-02-08") == "a holiday"
    assert "outside" in market.closed_because("2026-12-31")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('holidays = ["2027-01-01"]', "holidays: 2027-01-01 is outside calendar_range"),
        ('calendar_range = ["2027-01-01", "2026-01-01"]', "calendar_range"),
        ('calendar_range = ["2027-13-01", "2027-12-31"]', "calendar_range"),
    ],
)
def test_a_holiday_list_and_range_that_do_not_agree_are_refused_at_load(tmp_path, lines, message):
    path = tmp_path / "m.toml"
    path.write_text(f'name = "m"\ninstruments = []\n{lines}\n')
    with pytest.raises(ValueError, match=message):
        load_market(path)


def test_cxe_demo_on_new_years_day_2027_is_refused_with_a_message():
    result = cxe("demo", "--date", "2027-01-01", "--steps", "10")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "2027-01-01" in result.stderr and "calendar" in result.stderr
    assert "2027-01-01 is not a trading day of this market: it is outside" in result.stderr
