"""Exchange core rules, one test per rule (MARKET.md and issue 3)."""

from __future__ import annotations

import msgspec
import pytest

from engine.book.layout import MAX_TICKS
from engine.config import MARKET_HOURS, MarketConfig, Member, default_market
from engine.core import Exchange, ReferenceExchange
from engine.core.market import FOLD_EVERY
from engine.instruments import Instrument
from engine.protocol import (
    Accepted,
    Amended,
    AmendOrder,
    AuctionBid,
    AuctionResult,
    BlockTrade,
    Cancelled,
    CancelOrder,
    Close,
    CloseCall,
    DayClosed,
    DaySummary,
    DepthUpdate,
    EndOfDay,
    Filled,
    Halt,
    Indicative,
    NewOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    OpenCall,
    PhaseChanged,
    PickOrder,
    RejectCode,
    Rejected,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
    trades_digest,
)
from engine.types import CancelReason, OrderType, Phase, Side, StpMode, TimeInForce
from tests.support.exchange import CASH, STOCK, Session, of, only_reject, small_market

BUY, SELL = Side.BUY, Side.SELL


# -- validation -----------------------------------------------------------------------------------


def test_orders_are_refused_while_the_market_is_closed():
    s = Session(continuous=False)
    assert only_reject(s.order(1, BUY, 10_000, 10)).code == RejectCode.MARKET_CLOSED


def test_a_halted_market_accepts_cancels_only():
    s = Session()
    accepted = of(s.order(1, BUY, 9_900, 10), Accepted)[0]
    s.send(Halt(s.code))
    assert only_reject(s.order(1, BUY, 9_900, 10)).code == RejectCode.MARKET_HALTED
    assert only_reject(s.amend(1, accepted.order_id, 9_800, 10)).code == RejectCode.MARKET_HALTED
    assert of(s.cancel(1, accepted.order_id), Cancelled)[0].reason == CancelReason.USER


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"tif": TimeInForce.IOC}, RejectCode.UNSUPPORTED_IN_PHASE),
        ({"tif": TimeInForce.FOK}, RejectCode.UNSUPPORTED_IN_PHASE),
        ({"order_type": OrderType.MARKET}, RejectCode.UNSUPPORTED_IN_PHASE),
    ],
)
def test_a_call_collects_limit_day_orders_only(kw, code):
    s = Session(continuous=False)
    s.send(OpenCall(s.code))
    assert only_reject(s.order(1, BUY, 10_000, 10, **kw)).code == code
    assert of(s.order(1, BUY, 10_000, 10), Accepted)


def test_unknown_instrument_and_unknown_member_are_refused():
    s = Session()
    e = only_reject(s.send(NewOrder("x", 1, "NOPE", BUY, 10_000, 1)))
    assert e.code == RejectCode.UNKNOWN_INSTRUMENT and "NOPE" in e.text
    assert only_reject(s.send(NewOrder("x", 99, s.code, BUY, 10_000, 1))).code == (
        RejectCode.UNKNOWN_MEMBER
    )


def test_duplicate_clordid_is_per_member_and_day():
    s = Session()
    assert of(s.send(NewOrder("same", 1, s.code, BUY, 9_000, 1)), Accepted)
    assert only_reject(s.send(NewOrder("same", 1, s.code, BUY, 9_000, 1))).code == (
        RejectCode.DUPLICATE_CLORDID
    )
    assert of(s.send(NewOrder("same", 2, s.code, BUY, 9_000, 1)), Accepted)


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
def test_cancel_and_amend_requests_need_a_fresh_clordid_too(exchange):
    """An amend states the new remaining quantity, so a broker's resend of one after a fill
    would put the filled quantity back on the book; it was applied twice. A request's
    ClOrdID is spent only when the request is accepted."""
    s = Session(exchange=exchange)
    (accepted,) = of(s.send(NewOrder("o1", 1, s.code, BUY, 9_000, 100)), Accepted)
    oid = accepted.order_id
    assert of(s.send(AmendOrder("a1", 1, s.code, oid, 9_000, 80)), Amended)
    s.send(NewOrder("hit", 2, s.code, SELL, 9_000, 30))  # leaves 50
    before = s.x.state_hash()
    resend = only_reject(s.send(AmendOrder("a1", 1, s.code, oid, 9_000, 80)))
    assert resend.code == RejectCode.DUPLICATE_CLORDID and s.x.state_hash() == before
    assert s.x.markets[s.code].book.depth(1)[0] == [(9_000, 50, 1)]
    assert only_reject(s.send(CancelOrder("o1", 1, s.code, oid))).code == (
        RejectCode.DUPLICATE_CLORDID
    )
    assert only_reject(s.send(CancelOrder("k1", 1, s.code, oid + 99))).code == (
        RejectCode.UNKNOWN_ORDER
    )
    assert of(s.send(CancelOrder("k1", 1, s.code, oid)), Cancelled)  # k1 was not spent
    assert only_reject(s.send(NewOrder("k1", 1, s.code, BUY, 9_000, 1))).code == (
        RejectCode.DUPLICATE_CLORDID
    )


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
@pytest.mark.parametrize(
    "field", [{"side": 5}, {"side": -1}, {"order_type": 9}, {"tif": 7}, {"stp": 3}]
)
def test_enum_fields_outside_their_enums_are_refused(exchange, field):
    s = Session(exchange=exchange)
    before = s.x.state_hash()
    fields = {"side": BUY, "price": 10_000, "qty": 10} | field
    reject = only_reject(s.send(NewOrder("x", 1, s.code, **fields)))
    assert reject.code == RejectCode.INVALID_FIELD and next(iter(field)) in reject.text
    assert s.x.state_hash() == before


@pytest.mark.parametrize(
    ("price", "qty", "code"),
    [
        (10_001, 20, RejectCode.PRICE_OFF_TICK),
        (8_995, 20, RejectCode.PRICE_OUTSIDE_BAND),
        (11_005, 20, RejectCode.PRICE_OUTSIDE_BAND),
        (10_000, 0, RejectCode.QTY_INVALID),
        (10_000, 15, RejectCode.QTY_NOT_WHOLE_UNIT),
        (10_000, 100_000, RejectCode.QTY_ABOVE_MAX),
        (10_000, 10, RejectCode.QTY_BELOW_MIN),
    ],
)
def test_price_and_quantity_limits(price, qty, code):
    config = small_market(tick=5, unit=10, min_qty=20, max_qty=99_990)
    s = Session(config)
    assert only_reject(s.order(1, BUY, price, qty)).code == code


def test_cancel_or_amend_of_an_unknown_or_foreign_order_is_refused():
    s = Session()
    order = of(s.order(1, BUY, 9_900, 10), Accepted)[0].order_id
    assert only_reject(s.cancel(1, 999)).code == RejectCode.UNKNOWN_ORDER
    assert only_reject(s.cancel(2, order)).code == RejectCode.NOT_OWNER
    assert only_reject(s.amend(2, order, 9_900, 5)).code == RejectCode.NOT_OWNER
    assert only_reject(s.amend(1, 999, 9_900, 5)).code == RejectCode.UNKNOWN_ORDER


def test_every_reject_leaves_the_state_hash_unchanged():
    s = Session()
    s.order(1, BUY, 9_900, 10)
    before = s.x.state_hash()
    for events in (
        s.order(1, BUY, 12_000, 10),
        s.cancel(1, 999),
        s.order(9, BUY, 9_900, 1),
        s.order(1, BUY, 9_900, 10**5),
        s.send(Uncross(s.code)),
    ):
        only_reject(events)
        assert s.x.state_hash() == before


# -- risk -------------------------------------------------------------------------------------


def funded(cash: int, stock: int = 0) -> MarketConfig:
    inst = Instrument(code="CEA25", name="x", product="CEA", reference_price=10_000)
    members = [
        Member(id=1, name="A", cash=cash, holdings={"CEA25": stock}),
        Member(id=2, name="B", cash=CASH, holdings={"CEA25": STOCK}),
    ]
    return MarketConfig(name="t", instruments=[inst], members=members)


def test_a_buy_freezes_price_times_quantity_plus_the_fee_rounded_up():
    need = 10_000 * 100 + 6_000  # 1,000,000 fen value, 6 per mille fee
    assert of(Session(funded(need)).order(1, BUY, 10_000, 100), Accepted)
    short = Session(funded(need - 1))
    assert only_reject(short.order(1, BUY, 10_000, 100)).code == RejectCode.INSUFFICIENT_FUNDS
    s = Session(funded(need))
    s.order(1, BUY, 10_000, 100)
    account = s.x.accounts.get(1)
    assert (account.cash, account.cash_frozen) == (0, need)


def test_a_sell_needs_the_allowances_and_freezes_them():
    assert only_reject(Session(funded(0, 99)).order(1, SELL, 10_000, 100)).code == (
        RejectCode.INSUFFICIENT_ALLOWANCES
    )
    s = Session(funded(0, 100))
    s.order(1, SELL, 10_000, 100)
    holding = s.x.accounts.get(1).holding("CEA25")
    assert (holding.available, holding.frozen) == (0, 100)


def test_a_better_price_releases_the_frozen_difference_and_fees_are_per_side():
    s = Session(funded(CASH))
    s.order(2, SELL, 9_500, 100)
    s.order(1, BUY, 10_000, 100)
    buyer, seller = s.x.accounts.get(1), s.x.accounts.get(2)
    value, fee = 950_000, 5_700
    assert buyer.cash_frozen == 0 and buyer.cash == CASH - value - fee
    assert seller.cash == CASH + value - fee
    assert s.x.accounts.fees == 2 * fee
    assert s.x.accounts.total_cash() == 2 * CASH


def test_allowances_bought_today_cannot_be_sold_until_the_next_day():
    s = Session(funded(CASH, 0))
    s.order(2, SELL, 10_000, 50)
    s.order(1, BUY, 10_000, 50)
    assert s.x.accounts.get(1).holding("CEA25").locked == 50
    assert only_reject(s.order(1, SELL, 10_000, 50)).code == RejectCode.INSUFFICIENT_ALLOWANCES
    s.send(Close(s.code))
    s.send(EndOfDay())
    s.send(StartOfDay("2026-11-25"))
    s.send(OpenCall(s.code))
    s.send(Uncross(s.code))
    assert of(s.order(1, SELL, 10_000, 50), Accepted)


def test_same_day_resale_when_the_instrument_allows_it():
    inst = Instrument(
        code="CEA25", name="x", product="CEA", reference_price=10_000, same_day_resale=True
    )
    members = [
        Member(id=1, name="A", cash=CASH),
        Member(id=2, name="B", cash=CASH, holdings={"CEA25": 100}),
    ]
    s = Session(MarketConfig(name="t", instruments=[inst], members=members))
    s.order(2, SELL, 10_000, 50)
    s.order(1, BUY, 10_000, 50)
    assert of(s.order(1, SELL, 10_000, 50), Accepted)


def test_cancel_releases_what_the_order_froze():
    s = Session(funded(CASH))
    order = of(s.order(1, BUY, 9_000, 100), Accepted)[0].order_id
    s.cancel(1, order)
    account = s.x.accounts.get(1)
    assert (account.cash, account.cash_frozen) == (CASH, 0)


def test_self_trade_prevention_cancels_the_incoming_order():
    s = Session()
    s.order(1, SELL, 10_000, 10)
    events = s.order(1, BUY, 10_000, 10, stp=StpMode.CANCEL_INCOMING)
    assert not of(events, Trade)
    assert of(events, Cancelled)[0].reason == CancelReason.STP_INCOMING


def test_pick_trades_with_the_named_order_at_its_price():
    s = Session()
    first = of(s.order(2, SELL, 10_000, 10), Accepted)[0].order_id
    second = of(s.order(3, SELL, 10_100, 10), Accepted)[0].order_id
    events = s.send(PickOrder("p", 1, s.code, BUY, second, 4))
    (trade,) = of(events, Trade)
    assert (trade.price, trade.qty, trade.sell_order_id, trade.venue) == (10_100, 4, second, "pick")
    assert s.x.markets[s.code].book.order(first)[2] == 10
    assert only_reject(s.send(PickOrder("q", 2, s.code, BUY, first, 1))).code == (
        RejectCode.SELF_TRADE
    )
    account = s.x.accounts.get(1)
    assert account.cash_frozen == 0


def test_depth_updates_name_each_changed_level_once_with_its_new_total():
    s = Session()
    first = of(s.order(2, SELL, 10_000, 10), DepthUpdate)
    assert first == [DepthUpdate(s.x.seq, s.code, SELL, 10_000, 10, 1, first[0].stream_seq)]
    s.order(3, SELL, 10_000, 5)
    resting = of(s.order(3, SELL, 10_100, 7), Accepted)[0].order_id
    events = s.order(1, BUY, 10_100, 20, tif=TimeInForce.IOC)
    seq = s.x.seq
    assert [
        (e.seq, e.instrument, e.side, e.price, e.qty, e.orders) for e in of(events, DepthUpdate)
    ] == [
        (seq, s.code, SELL, 10_000, 0, 0),
        (seq, s.code, SELL, 10_100, 2, 1),
    ]  # the IOC remainder never rested, so the bid side did not change
    events = s.amend(3, resting, 10_200, 2)
    assert [(e.price, e.qty, e.orders) for e in of(events, DepthUpdate)] == [
        (10_100, 0, 0),
        (10_200, 2, 1),
    ]
    assert not of(s.order(1, BUY, 9_000, 10, tif=TimeInForce.IOC), DepthUpdate)


# -- sessions and auctions --------------------------------------------------------------------


def test_the_band_follows_the_reference_rounded_inward():
    s = Session(small_market(reference_price=10_000, tick=10), continuous=False)
    events = s.send(SetReference(s.code, 10_010))
    (changed,) = of(events, PhaseChanged)
    assert (changed.band_low, changed.band_high) == (9_010, 11_010)


@pytest.mark.parametrize(
    ("max_qty", "price", "reason"),
    [
        (99_999, 4_200_000, "the highest price a book holds"),
        (2**41, 3_000_000, "is worth less than"),
    ],
)
def test_a_reference_above_the_highest_price_is_refused(max_qty, price, reason):
    """The same rule as the config's: an order at the reference must fit the book and stay
    below 2**62 fen (before, only the first was checked, here in its own words)."""
    s = Session(small_market(max_qty=max_qty), continuous=False)
    before = s.x.state_hash()
    rejected = only_reject(s.send(SetReference(s.code, price)))
    assert rejected.code == RejectCode.PRICE_OUT_OF_RANGE and reason in rejected.text
    assert s.x.state_hash() == before


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
def test_a_band_stops_at_the_highest_price_and_a_close_there_ends_the_day(exchange):
    """A close near the top of the book's range (4,194,304 ticks) once made EndOfDay raise a
    ValueError out of Exchange.apply, after it had expired the day's orders: the band around
    that close did not fit a book. The band is now cut at the highest price, so any close a
    day can print is a reference the next day can use."""
    top = MAX_TICKS  # tick 1 fen
    s = Session(small_market(reference_price=3_800_000), exchange=exchange)
    assert s.x.markets[s.code].band == (3_420_000, 4_180_000)
    s.order(1, BUY, 4_180_000, 1)
    s.order(2, SELL, 4_180_000, 1)
    s.order(1, BUY, 3_500_000, 1)  # rests to the end of the day
    s.send(Close(s.code))
    events = s.send(EndOfDay())
    assert [e.close for e in of(events, DayClosed)] == [4_180_000]
    assert [e.reason for e in of(events, Cancelled)] == [CancelReason.EXPIRED]
    assert s.x.markets[s.code].band == (3_762_000, top)
    s.send(StartOfDay("2026-11-25"))
    s.send(OpenCall(s.code))
    s.send(Uncross(s.code))
    assert of(s.order(1, BUY, top, 1), Accepted)
    assert only_reject(s.order(1, BUY, top + 1, 1)).code == RejectCode.PRICE_OUTSIDE_BAND


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
def test_a_reference_is_refused_while_live_orders_lie_outside_its_band(exchange):
    """After a Close, day orders rest until EndOfDay. A new reference whose band left one
    outside was once taken, and re-opening the same day then printed at 109.00 in a band
    of 81.00-99.00."""
    s = Session(exchange=exchange)
    s.order(1, BUY, 10_900, 20)
    s.send(Close(s.code))
    before = s.x.state_hash()
    rejected = only_reject(s.send(SetReference(s.code, 9_000)))
    assert rejected.code == RejectCode.PRICE_OUTSIDE_BAND
    assert "1 live order" in rejected.text and "8100-9900" in rejected.text
    assert s.x.state_hash() == before
    assert not of(s.send(SetReference(s.code, 10_000)), Rejected)  # a band that holds it


def test_opening_call_publishes_indicative_prices_and_uncrosses():
    s = Session(continuous=False)
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_100, 10)
    events = s.order(2, SELL, 9_900, 6)
    (indicative,) = of(events, Indicative)
    assert (indicative.price, indicative.volume, indicative.imbalance) == (10_100, 6, 4)
    events = s.send(Uncross(s.code))
    (result,) = of(events, AuctionResult)
    assert (result.price, result.volume) == (10_100, 6)
    assert of(events, PhaseChanged)[-1].phase == Phase.CONTINUOUS
    assert {t.venue for t in of(events, Trade)} == {"call"}


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
def test_an_auction_result_reports_what_traded_at_each_price(exchange):
    """Self-trade prevention in the uncross can leave the rest of the book crossed; it is then
    uncrossed again at its own price. The result once gave the last round's price with the
    sum of every round's expected volume: here 'price 100.00, 20 t' for 10 t traded (the
    first round, at 99.99, only cancelled member 1's own ask). In the demo, opening auctions
    were reported up to 47% above the tonnes that traded."""
    s = Session(continuous=False, exchange=exchange)
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_100, 10)
    s.order(1, SELL, 9_900, 10)
    s.order(2, SELL, 10_000, 10)
    events = s.send(Uncross(s.code))
    assert [(r.price, r.volume) for r in of(events, AuctionResult)] == [(10_000, 10)]
    assert [(t.price, t.qty) for t in of(events, Trade)] == [(10_000, 10)]


def test_an_auction_that_trades_at_two_prices_reports_both():
    s = Session(continuous=False)
    s.send(OpenCall(s.code))
    s.order(1, SELL, 9_900, 10)
    s.order(3, SELL, 9_950, 10)
    s.order(2, BUY, 10_000, 10)
    s.order(1, BUY, 10_100, 10)  # meets member 1's own ask first: cancelled
    s.order(4, BUY, 9_960, 10)  # below the price; the freed ask at 99.50 is not
    events = s.send(Uncross(s.code))
    traded = [(t.price, t.qty) for t in of(events, Trade)]
    results = [(r.price, r.volume) for r in of(events, AuctionResult)]
    assert traded == [(10_000, 10), (9_960, 10)]
    assert results == traded


def test_a_halt_reopens_through_a_call():
    s = Session()
    s.send(Halt(s.code))
    assert only_reject(s.send(Uncross(s.code))).code == RejectCode.UNSUPPORTED_IN_PHASE
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_000, 5)
    s.order(2, SELL, 10_000, 5)
    events = s.send(Uncross(s.code))
    assert sum(t.qty for t in of(events, Trade)) == 5


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
def test_resume_reopens_a_halted_market_through_a_call(exchange):
    """复牌 (DESIGN.md: resume through a call): orders are collected without matching until
    the re-opening uncross, which then hands the book to continuous trading."""
    s = Session(exchange=exchange)
    s.order(2, SELL, 10_000, 10)
    s.send(Halt(s.code))
    assert only_reject(s.order(1, BUY, 10_000, 10)).code == RejectCode.MARKET_HALTED
    events = s.send(Resume(s.code))
    assert [(type(e), e.phase) for e in events] == [(PhaseChanged, Phase.CALL)]
    assert not of(s.order(1, BUY, 10_100, 10), Trade)  # collected, not matched
    reopening = s.send(Uncross(s.code))
    (trade,) = of(reopening, Trade)
    assert (trade.price, trade.qty, trade.venue) == (10_000, 10, "call")
    assert of(reopening, PhaseChanged)[-1].phase == Phase.CONTINUOUS


@pytest.mark.parametrize("exchange", [Exchange, ReferenceExchange])
def test_resume_of_a_halted_call_returns_to_the_call_and_publishes_its_indicative(exchange):
    """A halt can interrupt a call; resuming goes back to a call, which publishes its
    indicative afresh."""
    s = Session(continuous=False, exchange=exchange)
    s.send(OpenCall(s.code))
    s.order(1, BUY, 10_100, 10)
    s.order(2, SELL, 9_900, 10)
    s.send(Halt(s.code))
    events = s.send(Resume(s.code))
    assert [type(e) for e in events] == [PhaseChanged, Indicative]
    assert events[0].phase == Phase.CALL
    assert (events[1].price, events[1].volume) == (10_000, 10)
    assert not of(s.order(3, BUY, 10_100, 5), Trade)  # still collecting
    assert sum(t.qty for t in of(s.send(Uncross(s.code)), Trade)) == 10


@pytest.mark.parametrize("phase", ["continuous", "call", "closed"])
def test_resume_is_refused_unless_the_market_is_halted(phase):
    s = Session(continuous=phase == "continuous")
    if phase == "call":
        s.send(OpenCall(s.code))
    before = s.x.state_hash()
    reject = only_reject(s.send(Resume(s.code)))
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE
    assert reject.text.endswith(f"cannot resume CEA25 in {phase.upper()}")
    assert s.x.state_hash() == before


def test_a_closing_call_is_uncrossed_when_the_market_closes():
    s = Session()
    s.send(CloseCall(s.code))
    s.order(1, BUY, 10_200, 5)
    s.order(2, SELL, 10_000, 5)
    events = s.send(Close(s.code))
    assert of(events, AuctionResult)[0].auction == "closing_call"
    assert of(events, PhaseChanged)[-1].phase == Phase.CLOSED
    assert sum(t.qty for t in of(events, Trade)) == 5


def test_end_of_day_expires_day_orders_fixes_the_vwap_close_and_checksums_trades():
    s = Session()
    s.order(2, SELL, 10_000, 10)
    s.order(1, BUY, 10_000, 10)
    s.order(2, SELL, 10_300, 30)
    s.order(1, BUY, 10_300, 30)
    s.send(BlockTrade("b", s.code, 3, 4, 9_000, 100_000))
    resting = of(s.order(1, BUY, 9_000, 7), Accepted)[0].order_id
    reject = only_reject(s.send(EndOfDay()))
    # the text names what is open and what to do (it once read "this order type is not
    # accepted in the current phase: still open: ['CEA25']")
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE
    assert reject.text == (
        "not accepted in the current phase: markets still open: CEA25 (close them first)"
    )
    s.send(Close(s.code))
    events = s.send(EndOfDay())
    (expired,) = of(events, Cancelled)
    assert (expired.order_id, expired.leaves, expired.reason) == (resting, 7, CancelReason.EXPIRED)
    (day,) = of(events, DayClosed)
    # the expired order's level empties before the day closes (once published after it)
    assert [type(e) for e in events] == [Cancelled, DepthUpdate, DayClosed, DaySummary]
    assert (events[1].price, events[1].qty, events[1].orders) == (9_000, 0, 0)
    # VWAP of the listed trades only: (10 x 10,000 + 30 x 10,300) / 40 = 10,225
    assert (day.trades, day.volume, day.close) == (3, 100_040, 10_225)
    # MARKET.md: the open is the day's first listed trade; the block print at 90.00 is no
    # listed trade, so it is neither the low nor the open
    assert (day.open, day.high, day.low) == (10_000, 10_300, 10_000)
    assert s.x.markets[s.code].reference == 10_225
    assert s.x.accounts.get(1).cash_frozen == 0


def test_the_day_checksum_covers_every_trade_in_order_past_the_fold_batch():
    s = Session()
    trades = []
    for _ in range(FOLD_EVERY + 100):  # more trades than the market holds before folding
        s.order(2, SELL, 10_000, 1)
        trades += of(s.order(1, BUY, 10_000, 1), Trade)
    s.send(Close(s.code))
    (day,) = of(s.send(EndOfDay()), DayClosed)
    assert (day.trades, day.volume) == (len(trades), len(trades))
    assert day.checksum == trades_digest(trades)


def test_without_trades_the_reference_carries_over():
    s = Session()
    s.send(Close(s.code))
    (day,) = of(s.send(EndOfDay()), DayClosed)
    assert day.close == 10_000 and day.trades == 0
    assert (day.open, day.high, day.low) == (10_000, 10_000, 10_000)


def test_one_way_auction_uniform_and_pay_as_bid():
    for uniform, prices in ((True, [10_500, 10_500]), (False, [10_800, 10_500])):
        s = Session()
        s.send(OneWayAuctionOpen(s.code, 4, 100_000, uniform=uniform))
        assert s.x.accounts.get(4).holding(s.code).frozen == 100_000
        assert only_reject(s.send(AuctionBid("hi", 1, s.code, 11_100, 10))).code == (
            RejectCode.PRICE_OUTSIDE_BAND
        )
        assert only_reject(s.send(AuctionBid("lo", 1, s.code, 9_900, 10))).code == (
            RejectCode.PRICE_OUTSIDE_BAND
        )
        s.send(AuctionBid("a", 1, s.code, 10_800, 60_000))
        s.send(AuctionBid("b", 2, s.code, 10_500, 50_000))
        s.send(AuctionBid("c", 3, s.code, 10_200, 50_000))
        events = s.send(OneWayAuctionClose(s.code))
        trades = of(events, Trade)
        assert [t.qty for t in trades] == [60_000, 40_000]
        assert [t.price for t in trades] == prices
        assert {t.venue for t in trades} == {"one_way"}
        assert of(events, AuctionResult)[0].volume == 100_000
        assert all(a.cash_frozen == 0 for a in s.x.accounts.all())
        assert s.x.accounts.total_cash() == 4 * CASH


@pytest.mark.parametrize("band_ppm", [0, 50_000, 200_000])
def test_a_one_way_auction_keeps_its_own_ten_percent_whatever_the_listed_band(band_ppm):
    """MARKET.md fixes the one-way auction's floor (the previous close, or that minus 10%)
    and cap (the close plus 10%). They were taken from the listed band, so an instrument
    with a 5% band auctioned from 95% of the close, and one with no band at the close."""
    s = Session(small_market(band_ppm=band_ppm))
    s.send(OneWayAuctionOpen(s.code, 4, 100_000, floor_minus_10pct=True))
    for price in (8_990, 11_010):
        reject = only_reject(s.send(AuctionBid(f"out{price}", 1, s.code, price, 10)))
        assert reject.code == RejectCode.PRICE_OUTSIDE_BAND and "9000-11000" in reject.text
    for price in (9_000, 11_000):
        assert of(s.send(AuctionBid(f"in{price}", 1, s.code, price, 10)), Accepted)


def test_one_way_auction_needs_a_block_sized_offer():
    s = Session()
    assert only_reject(s.send(OneWayAuctionOpen(s.code, 4, 99_999))).code == (
        RejectCode.QTY_BELOW_MIN
    )


def test_a_seller_cannot_bid_in_its_own_one_way_auction():
    """It once did, and the close printed a trade of the seller with itself."""
    s = Session()
    s.send(OneWayAuctionOpen(s.code, 4, 100_000))
    before = s.x.state_hash()
    assert only_reject(s.send(AuctionBid("own", 4, s.code, 10_500, 50_000))).code == (
        RejectCode.SELF_TRADE
    )
    assert s.x.state_hash() == before


@pytest.mark.parametrize(
    ("qty", "code", "text"),
    [(0, RejectCode.QTY_INVALID, "zero"), (15, RejectCode.QTY_NOT_WHOLE_UNIT, "unit 10 t")],
)
def test_a_one_way_bid_of_a_bad_quantity_says_which_rule(qty, code, text):
    """A bid off the unit was refused QTY_INVALID with no detail, where an order gets
    QTY_NOT_WHOLE_UNIT and the unit; the order size limit does not apply to bids."""
    s = Session(small_market(unit=10, min_qty=10, max_qty=99_990))
    offer = only_reject(s.send(OneWayAuctionOpen(s.code, 4, 100_005)))  # the offer too
    assert offer.code == RejectCode.QTY_NOT_WHOLE_UNIT and "unit 10 t" in offer.text
    s.send(OneWayAuctionOpen(s.code, 4, 100_000))
    reject = only_reject(s.send(AuctionBid("b", 1, s.code, 10_500, qty)))
    assert reject.code == code and text in reject.text
    assert not of(s.send(AuctionBid("c", 1, s.code, 10_500, 100_000)), Rejected)


def test_one_way_auctions_are_for_cea_vintages():
    s = Session(small_market(code="CCER", product="CCER"))
    reject = only_reject(s.send(OneWayAuctionOpen(s.code, 4, 100_000)))
    assert reject.code == RejectCode.INVALID_FIELD and "CEA" in reject.text
    assert s.x.accounts.get(4).holding(s.code).frozen == 0


def test_a_one_way_auction_needs_a_trading_day():
    x = Exchange(small_market())
    assert only_reject(x.apply(OneWayAuctionOpen("CEA25", 4, 100_000))).code == (
        RejectCode.MARKET_CLOSED
    )


def test_the_day_cannot_end_while_a_one_way_auction_is_open_and_the_reject_says_so():
    s = Session()
    s.send(OneWayAuctionOpen(s.code, 4, 100_000))
    s.send(Close(s.code))
    reject = only_reject(s.send(EndOfDay()))
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE
    assert "one-way auction" in reject.text and s.code in reject.text
    s.send(OneWayAuctionClose(s.code))
    assert of(s.send(EndOfDay()), DayClosed)


def test_block_trades_are_refused_while_the_market_is_halted():
    s = Session()
    s.send(Halt(s.code))
    assert only_reject(s.send(BlockTrade("b", s.code, 1, 2, 10_000, 100_000))).code == (
        RejectCode.MARKET_HALTED
    )


@pytest.mark.parametrize(
    ("buyer", "seller", "price", "qty", "code"),
    [
        (1, 2, 10_000, 99_999, RejectCode.QTY_BELOW_MIN),
        (1, 2, 13_001, 100_000, RejectCode.PRICE_OUTSIDE_BAND),
        (1, 2, 6_999, 100_000, RejectCode.PRICE_OUTSIDE_BAND),
        (1, 1, 10_000, 100_000, RejectCode.SELF_TRADE),
        (1, 2, 10_000, 2_000_000, RejectCode.INSUFFICIENT_FUNDS),
    ],
)
def test_block_trades_are_validated(buyer, seller, price, qty, code):
    s = Session()
    assert only_reject(s.send(BlockTrade("b", s.code, buyer, seller, price, qty))).code == code


def test_a_block_trade_prints_without_touching_the_book():
    s = Session()
    events = s.send(BlockTrade("b", s.code, 1, 2, 13_000, 100_000))
    (trade,) = of(events, Trade)
    assert (trade.venue, trade.aggressor, trade.price) == ("block", -1, 13_000)
    assert len(of(events, Filled)) == 2
    assert s.x.markets[s.code].book.depth(5) == ([], [])


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


def test_a_calendar_entry_fires_from_its_first_second_and_only_on_the_trading_day():
    config = scheduled([("09:15", "open_call")])
    nine_fifteen = (1_795_478_400 + 3_600 + 15 * 60) * 1_000_000_000  # 2026-11-24 09:15 +08
    x = Exchange(config)
    x.apply(StartOfDay("2026-11-24"))
    early = x.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), nine_fifteen - 1)
    assert not of(early, PhaseChanged)
    assert of(x.apply(NewOrder("b", 1, "CEA25", BUY, 10_000, 5), nine_fifteen), PhaseChanged)
    y = Exchange(config)
    y.apply(StartOfDay("2026-11-24"))
    next_day = nine_fifteen + 86_400 * 1_000_000_000
    assert not of(y.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), next_day), PhaseChanged)


def test_the_calendar_drives_the_trading_day_from_the_sequencer_clock():
    config = scheduled(
        [("09:15", "open_call"), ("09:30", "uncross"), ("11:30", "halt"), ("15:00", "close")]
    )
    x = Exchange(config)
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


def test_with_a_calendar_block_trades_are_reported_in_block_hours_only():
    x = Exchange(scheduled(MARKET_HOURS))
    x.apply(StartOfDay("2026-11-24"))

    morning = x.apply(BlockTrade("b1", "CEA25", 1, 2, 10_000, 100_000), at("10:00"))
    reject = morning[-1]
    assert reject.code == RejectCode.UNSUPPORTED_IN_PHASE and "13:00-15:00" in reject.text
    afternoon = x.apply(BlockTrade("b2", "CEA25", 1, 2, 10_000, 100_000), at("13:30"))
    assert of(afternoon, Trade)[0].venue == "block"


def test_an_operator_halt_lasts_until_the_operator_lifts_it_not_until_the_lunch_break_ends():
    """The schedule's re-opening call after lunch once re-opened a market the operator had
    halted in the morning."""
    x = Exchange(scheduled(MARKET_HOURS))
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
    lunch = Exchange(scheduled(MARKET_HOURS))  # the lunch break's halt ends on schedule
    lunch.apply(StartOfDay("2026-11-24"))
    lunch.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), at("11:40"))
    assert lunch.markets["CEA25"].phase == Phase.HALTED
    lunch.apply(NewOrder("b", 1, "CEA25", BUY, 10_000, 5), at("13:05"))
    assert lunch.markets["CEA25"].phase == Phase.CONTINUOUS


@pytest.mark.parametrize(
    "day", ["2026-13-45", "2026-02-30", "tomorrow", "", "2026-11-24", "2026-11-23"]
)
def test_a_trading_day_is_a_calendar_date_after_the_current_one(day):
    """'2026-13-45' passes the wire's pattern; it was once taken, and with a calendar every
    later command then raised out of apply. Repeating a day would reopen its ClOrdIDs."""
    x = Exchange(scheduled(MARKET_HOURS))
    x.apply(StartOfDay("2026-11-24"))
    before = x.state_hash()
    assert only_reject(x.apply(StartOfDay(day))).code == RejectCode.INVALID_FIELD
    assert x.state_hash() == before and x.date == "2026-11-24"
    at_ten = (1_795_478_400 + 2 * 3600) * 1_000_000_000  # 2026-11-24 10:00 +08
    assert of(x.apply(NewOrder("a", 1, "CEA25", BUY, 10_000, 5), at_ten), Accepted)
    assert of(x.apply(StartOfDay("2026-11-25")), Rejected)  # the day is not closed yet


def test_a_new_trading_day_needs_the_previous_one_ended():
    """With its markets closed and no order left, a new day once started without EndOfDay:
    the old day never got its DayClosed records (clearing cannot settle it without them),
    its close never became the reference, and its figures were wiped."""
    s = Session()
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
def test_an_ended_trading_day_cannot_start_again(day):
    """After EndOfDay no day is open, and the date check once compared with nothing: the
    day just settled, or an earlier one, could be traded again."""
    s = Session()
    s.send(Close(s.code))
    s.send(EndOfDay())
    before = s.x.state_hash()
    reject = only_reject(s.send(StartOfDay(day)))
    assert reject.code == RejectCode.INVALID_FIELD and "2026-11-24" in reject.text
    assert s.x.state_hash() == before


def test_the_next_calendar_day_starts_once_the_previous_one_is_closed():
    s = Session()
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
def test_a_trading_day_is_a_weekday_that_is_not_a_holiday(day, why):
    """MARKET.md: Monday to Friday, not on holidays. StartOfDay once opened any date, so a
    Saturday's orders would have traded and gone to clearing."""
    x = Exchange(default_market())
    before = x.state_hash()
    reject = only_reject(x.apply(StartOfDay(day)))
    assert reject.code == RejectCode.MARKET_CLOSED
    assert f"{day} is {why}: not a trading day" in reject.text
    assert x.state_hash() == before and x.date == ""
    assert not of(x.apply(StartOfDay("2026-11-30")), Rejected)  # the Monday after


def test_a_stamped_start_of_day_must_be_the_sequencers_own_date():
    """A mistyped StartOfDay("2026-12-25") was accepted, and since days only move forward
    every day before it was then refused: one keystroke closed the market for a month (a
    mistyped year, for years). When the sequencer stamps the command, the day must be its
    date in the market's time zone."""
    x = Exchange(default_market())
    shanghai_0030 = (1_795_478_400 + 24 * 3600 - 8 * 3600 + 1800) * 1_000_000_000  # 11-25 00:30
    before = x.state_hash()
    reject = only_reject(x.apply(StartOfDay("2026-12-25"), shanghai_0030))
    assert reject.code == RejectCode.INVALID_FIELD and "2026-11-25" in reject.text
    assert x.state_hash() == before
    assert not of(x.apply(StartOfDay("2026-11-25"), shanghai_0030), Rejected)


def test_the_trading_week_and_the_holidays_are_the_markets_to_set():
    market = msgspec.structs.replace(
        small_market(), trading_weekdays=[1, 2, 3, 4, 5, 6], holidays=["2026-11-24"]
    )
    x = Exchange(market)
    assert only_reject(x.apply(StartOfDay("2026-11-24"))).code == RejectCode.MARKET_CLOSED
    assert not of(x.apply(StartOfDay("2026-11-28")), Rejected)  # Saturday trades here
