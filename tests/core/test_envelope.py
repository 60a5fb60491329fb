"""The envelope: the core applies stamped commands (sequence, timestamp) and refuses a stamp
that does not follow or is not an int64 timestamp before anything changes; a sequenced Clock
command lets the calendar run an idle market."""

from __future__ import annotations

import pytest

from engine.config import MARKET_HOURS
from engine.core import StampRefused
from engine.protocol import Clock, NewOrder, OpenCall, PhaseChanged, StartOfDay, Uncross
from engine.types import Phase, Side
from tests.core.test_rules_calendar import at, scheduled
from tests.support.exchange import of, small_market


def opened(make_exchange):
    x = make_exchange(small_market())
    for seq, command in enumerate([StartOfDay("2026-11-24"), OpenCall("CEA25"), Uncross("CEA25")]):
        x.apply_stamped(seq + 1, 0, command)
    return x


@pytest.mark.parametrize("seq", [3, 5, 0, -1, 2**70, 4.0, "4", None, True])
def test_a_sequence_that_does_not_follow_is_refused_and_changes_nothing(make_exchange, seq):
    x = opened(make_exchange)
    before = (x.seq, x.state_hash())
    with pytest.raises(StampRefused, match="does not follow 3"):
        x.apply_stamped(seq, 0, NewOrder("a", 1, "CEA25", Side.BUY, 10_000, 5))
    assert (x.seq, x.state_hash()) == before
    assert x.apply_stamped(4, 0, NewOrder("a", 1, "CEA25", Side.BUY, 10_000, 5))[0].seq == 4


@pytest.mark.parametrize("ts", [1.5, 1e18, "1", None, -1, 2**63, 2**64, [1]])
def test_a_timestamp_that_is_not_int64_nanoseconds_is_refused_and_changes_nothing(
    make_exchange, ts
):
    x = opened(make_exchange)
    before = (x.seq, x.state_hash())
    with pytest.raises(StampRefused, match="not int64 nanoseconds"):
        x.apply_stamped(4, ts, NewOrder("a", 1, "CEA25", Side.BUY, 10_000, 5))
    assert (x.seq, x.state_hash()) == before


def test_the_largest_int64_timestamp_is_a_valid_stamp(make_exchange):
    x = opened(make_exchange)
    (event, *_) = x.apply_stamped(4, 2**63 - 1, NewOrder("a", 1, "CEA25", Side.BUY, 10_000, 5))
    assert event.seq == 4


def test_clock_commands_run_the_calendar_of_an_idle_market(make_exchange):
    """With no order arriving, the sequencer's Clock alone opens, uncrosses, breaks and
    closes the market on the schedule."""
    x = make_exchange(scheduled(MARKET_HOURS))
    x.apply(StartOfDay("2026-11-24"), at("08:00"))
    phases = []
    for hhmm in ["09:00", "09:15", "09:29", "09:30", "11:30", "13:00", "15:00", "15:01"]:
        events = x.apply(Clock(), at(hhmm))
        phases.append([e.phase for e in of(events, PhaseChanged)])
        assert all(e.seq == x.seq for e in events)
    assert phases == [
        [],
        [Phase.CALL],
        [],
        [Phase.CONTINUOUS],
        [Phase.HALTED],
        [Phase.CALL, Phase.CONTINUOUS],
        [Phase.CLOSING_CALL, Phase.CLOSED],
        [],
    ]
