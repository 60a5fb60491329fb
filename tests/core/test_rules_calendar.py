"""Core rules: the calendar (schedule from the stamps) and trading days; on both exchanges."""

from __future__ import annotations

import msgspec
import pytest

from engine.config import MARKET_HOURS, MarketConfig, default_market
from engine.protocol import (
    Accepted,
    BlockTrade,
    Close,
    DayClosed,
    EndOfDay,
    Halt,
    NewOrder,
    OpenCall,
    PhaseChanged,
    RejectCode,
    Rejected,
    Resume,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import Phase, Side
from tests.support.exchange import Session, of, only_reject, small_market

BUY, SELL = Side.BUY, Side.SELL


# -- calendar and trading days ---------------------------------------------------------------------


def at(hhmm: str) -> int:
    """The sequencer's stamp for `hhmm` on 2026-11-24 in Asia/Shanghai (UTC+8)."""
    hours, minutes = map(int, hhmm.split(":"))
    return (1_795_478_400 + (hours - 8) * 3600 + minutes * 60) * 1_000_000_000


def scheduled(schedule: list[tuple[str, str]]) -> MarketConfig:
    """The small market with a calendar."""
    config = small_market()
    return MarketConfig(
        name="t", instruments=config.instruments, members=config.members, schedule=schedule
    )


def test_a_calendar_entry_fires_from_its_first_second_and_only_on_the_trading_day(make_exchange):
    config = scheduled([("09:15", "open_call")])
    nine_fifteen = (1_795_478_400 + 3_600 + 15 * 60) * 1_000_000_000  # 2026-11-24 09:15 +08
    x = make_exchange(config)
    x.apply(StartOfDay("2026-11-24"))
    early = x.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), nine_fifteen - 1)
    assert not of(early, PhaseChanged)
    assert of(x.apply(NewOrder("b", 1, "CEA25", BUY, 10_000, 5), nine_fifteen), PhaseChanged)
    y = make_exchange(config)
    y.apply(StartOfDay("2026-11-24"))
    next_day = nine_fifteen + 86_400 * 1_000_000_000
    assert not of(y.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), next_day), PhaseChanged)


def test_the_calendar_drives_the_trading_day_from_the_sequencer_clock(make_exchange):
    config = scheduled(
        [("09:15", "open_call"), ("09:30", "uncross"), ("11:30", "halt"), ("15:00", "close")]
    )
    x = make_exchange(config)
    x.apply(StartOfDay("2026-11-24"))

    first = x.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), at("09:20"))
    assert [e.phase for e in of(first, PhaseChanged)] == [Phase.CALL]
    assert of(first, Accepted)
    x.apply(NewOrder("b", 2, "CEA25", SELL, 10_000, 5), at("09:21"))
    opened = x.apply(NewOrder("c", 2, "CEA25", SELL, 10_000, 1), at("09:31"))
    assert sum(t.qty for t in of(opened, Trade)) == 5
    assert of(opened, PhaseChanged)[0].phase == Phase.CONTINUOUS
    late = x.apply(NewOrder("d", 1, "CEA25", BUY, 10_000, 1), at("15:01"))
    assert [e.phase for e in of(late, PhaseChanged)] == [Phase.HALTED, Phase.CLOSED]
    assert late[-1].code == RejectCode.MARKET_CLOSED


def test_with_a_calendar_block_trades_are_reported_in_block_hours_only(make_exchange):
    x = make_exchange(scheduled(MARKET_HOURS))
    x.apply(StartOfDay("2026-11-24"))

    morning = x.apply(BlockTrade("b1", "CEA25", 1, 2, 10_000, 100_000), at("10:00"))
    reject = morning[-1]
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE and "13:00-15:00" in reject.text
    afternoon = x.apply(BlockTrade("b2", "CEA25", 1, 2, 10_000, 100_000), at("13:30"))
    assert of(afternoon, Trade)[0].venue == "block"


def test_an_operator_halt_lasts_until_the_operator_lifts_it_not_until_the_lunch_break_ends(
    make_exchange,
):
    """The schedule's re-opening call after lunch once re-opened a market the operator had
    halted in the morning."""
    x = make_exchange(scheduled(MARKET_HOURS))
    x.apply(StartOfDay("2026-11-24"))

    x.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), at("09:40"))
    x.apply(Halt("CEA25"), at("10:00"))
    after_lunch = x.apply(NewOrder("b", 1, "CEA25", BUY, 10_000, 5), at("13:05"))
    assert not of(after_lunch, PhaseChanged)
    assert only_reject(after_lunch).code == RejectCode.MARKET_HALTED
    x.apply(OpenCall("CEA25"), at("13:10"))  # the operator lifts the halt through a call
    x.apply(Uncross("CEA25"), at("13:15"))
    assert x.markets["CEA25"].phase == Phase.CONTINUOUS
    x.apply(Halt("CEA25"), at("13:20"))  # or resumes through a call: the schedule goes on
    x.apply(Resume("CEA25"), at("13:25"))
    x.apply(Uncross("CEA25"), at("13:30"))
    closing = x.apply(NewOrder("c", 1, "CEA25", BUY, 10_000, 5), at("14:58"))
    assert [e.phase for e in of(closing, PhaseChanged)] == [Phase.CLOSING_CALL]
    lunch = make_exchange(scheduled(MARKET_HOURS))  # the lunch break's halt ends on schedule
    lunch.apply(StartOfDay("2026-11-24"))
    lunch.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), at("11:40"))
    assert lunch.markets["CEA25"].phase == Phase.HALTED
    lunch.apply(NewOrder("b", 1, "CEA25", BUY, 10_000, 5), at("13:05"))
    assert lunch.markets["CEA25"].phase == Phase.CONTINUOUS


@pytest.mark.parametrize(
    "day", ["2026-13-45", "2026-02-30", "tomorrow", "", "2026-11-24", "2026-11-23"]
)
def test_a_trading_day_is_a_calendar_date_after_the_current_one(make_exchange, day):
    """'2026-13-45' passes the wire's pattern; it was once taken, and with a calendar every
    later command then raised out of apply. Repeating a day would reopen its ClOrdIDs."""
    x = make_exchange(scheduled(MARKET_HOURS))
    x.apply(StartOfDay("2026-11-24"))
    before = x.state_hash()
    assert only_reject(x.apply(StartOfDay(day))).code == RejectCode.INVALID_FIELD
    assert x.state_hash() == before and x.date == "2026-11-24"
    at_ten = (1_795_478_400 + 2 * 3600) * 1_000_000_000  # 2026-11-24 10:00 +08
    assert of(x.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), at_ten), Accepted)
    assert of(x.apply(StartOfDay("2026-11-25")), Rejected)  # the day is not closed yet


def test_a_new_trading_day_needs_the_previous_one_ended(make_exchange):
    """With its markets closed and no order left, a new day once started without EndOfDay:
    the old day never got its DayClosed records (clearing cannot settle it without them),
    its close never became the reference, and its figures were wiped."""
    s = Session(exchange=make_exchange)
    s.order(1, BUY, 10_000, 5)
    s.order(2, SELL, 10_000, 5)
    s.send(Close(s.code))
    before = s.x.state_hash()
    reject = only_reject(s.send(StartOfDay("2026-11-25")))
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE and "EndOfDay" in reject.text
    assert s.x.state_hash() == before
    assert of(s.send(EndOfDay()), DayClosed)
    assert not of(s.send(StartOfDay("2026-11-25")), Rejected)


@pytest.mark.parametrize("day", ["2026-11-24", "2026-11-20"])
def test_an_ended_trading_day_cannot_start_again(make_exchange, day):
    """After EndOfDay no day is open, and the date check once compared with nothing: the
    day just settled, or an earlier one, could be traded again."""
    s = Session(exchange=make_exchange)
    s.send(Close(s.code))
    s.send(EndOfDay())
    before = s.x.state_hash()
    reject = only_reject(s.send(StartOfDay(day)))
    assert reject.code == RejectCode.INVALID_FIELD and "2026-11-24" in reject.text
    assert s.x.state_hash() == before


def test_the_next_calendar_day_starts_once_the_previous_one_is_closed(make_exchange):
    s = Session(exchange=make_exchange)
    for command in (Close(s.code), EndOfDay(), StartOfDay("2026-11-25")):
        assert not of(s.send(command), Rejected), command
    assert s.x.date == "2026-11-25"


@pytest.mark.parametrize(
    ("day", "why"),
    [
        ("2026-11-28", "a Saturday"),
        ("2026-11-29", "a Sunday"),
        ("2026-10-01", "a holiday"),  # National Day, a Thursday
        ("2026-02-14", "a Saturday"),  # a make-up working day: offices work, markets do not
    ],
)
def test_a_trading_day_is_a_weekday_that_is_not_a_holiday(make_exchange, day, why):
    """docs/MARKET.md: Monday to Friday, not on holidays. StartOfDay once opened any date, so a
    Saturday's orders would have traded and gone to clearing."""
    x = make_exchange(default_market())
    before = x.state_hash()
    reject = only_reject(x.apply(StartOfDay(day)))
    assert reject.code == RejectCode.MARKET_CLOSED
    assert f"{day} is {why}: not a trading day" in reject.text
    assert x.state_hash() == before and x.date == ""
    assert not of(x.apply(StartOfDay("2026-11-30")), Rejected)  # the Monday after


def test_a_stamped_start_of_day_must_be_the_sequencers_own_date(make_exchange):
    """A mistyped StartOfDay("2026-12-25") was accepted, and since days only move forward
    every day before it was then refused: one keystroke closed the market for a month (a
    mistyped year, for years). When the sequencer stamps the command, the day must be its
    date in the market's time zone."""
    x = make_exchange(default_market())
    shanghai_0030 = (1_795_478_400 + 24 * 3600 - 8 * 3600 + 1800) * 1_000_000_000  # 11-25 00:30
    before = x.state_hash()
    reject = only_reject(x.apply(StartOfDay("2026-12-25"), shanghai_0030))
    assert reject.code == RejectCode.INVALID_FIELD and "2026-11-25" in reject.text
    assert x.state_hash() == before
    assert not of(x.apply(StartOfDay("2026-11-25"), shanghai_0030), Rejected)


def test_the_trading_week_and_the_holidays_are_the_markets_to_set(make_exchange):
    market = msgspec.structs.replace(
        small_market(), trading_weekdays=[1, 2, 3, 4, 5, 6], holidays=["2026-11-24"]
    )
    x = make_exchange(market)
    assert only_reject(x.apply(StartOfDay("2026-11-24"))).code == RejectCode.MARKET_CLOSED
    assert not of(x.apply(StartOfDay("2026-11-28")), Rejected)  # Saturday trades here
