"""Every limit the core checks, exactly at the limit and one step beyond, on both exchanges.

A limit that moves by one (a `>=` turned `>`, an edge made exclusive) must fail a test here on
the production exchange and on the reference exchange alike: exact funds (price x quantity
plus the fee rounded up), exact holdings, each edge of the price band, the order size limits,
and the same for amends, block trades and one-way auction bids. A refusal carries the rule's
code and leaves the state hash as it was.
"""

from __future__ import annotations

import pytest

from engine.config import MarketConfig, Member
from engine.core.risk import freeze_for
from engine.protocol import (
    Accepted,
    Amended,
    AuctionBid,
    BlockTrade,
    OneWayAuctionOpen,
    OpenCall,
    RejectCode,
    Trade,
)
from engine.types import OrderType, Side
from tests.support.exchange import CASH, STOCK, Session, of, only_reject, small_market

BUY, SELL = Side.BUY, Side.SELL
INSTRUMENT = small_market().instruments[0]
CODE = INSTRUMENT.code


def member_one_holding(cash: int, stock: int) -> MarketConfig:
    """The small market (band 9,000-11,000 fen) where member 1 holds exactly `cash` fen and
    `stock` t, members 2 and 3 plenty of both."""
    members = [Member(id=1, name="M1", cash=cash, holdings={CODE: stock})] + [
        Member(id=m, name=f"M{m}", cash=CASH, holdings={CODE: STOCK}) for m in (2, 3)
    ]
    return MarketConfig(name="boundaries", instruments=[INSTRUMENT], members=members)


def accepted(events) -> Accepted:
    (ack,) = of(events, Accepted)
    return ack


def refused(code: RejectCode, send, *args, **kwargs) -> None:
    """`send(*args, **kwargs)`, a method of a Session, is refused with `code` and changes
    nothing."""
    exchange = send.__self__.x
    before = exchange.state_hash()
    assert only_reject(send(*args, **kwargs)).code == code
    assert exchange.state_hash() == before


# -- funds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("price", "qty"), [(10_000, 100), (9_001, 7), (10_999, 333)])
def test_a_buy_needing_exactly_the_available_cash_is_accepted(make_exchange, price, qty):
    need = freeze_for(INSTRUMENT, price, qty)
    s = Session(member_one_holding(need, 0), exchange=make_exchange)
    accepted(s.order(1, BUY, price, qty))
    account = s.x.accounts.get(1)
    assert (account.cash, account.cash_frozen) == (0, need)


@pytest.mark.parametrize(("price", "qty"), [(10_000, 100), (9_001, 7), (10_999, 333)])
def test_a_buy_one_fen_short_is_refused(make_exchange, price, qty):
    need = freeze_for(INSTRUMENT, price, qty)
    s = Session(member_one_holding(need - 1, 0), exchange=make_exchange)
    refused(RejectCode.INSUFFICIENT_FUNDS, s.order, 1, BUY, price, qty)


@pytest.mark.parametrize("short", [0, 1])
def test_a_market_buy_freezes_at_the_band_top_to_the_fen(make_exchange, short):
    """A market buy freezes as a limit buy at the band's top edge (11,000 fen here)."""
    need = freeze_for(INSTRUMENT, 11_000, 50)
    s = Session(member_one_holding(need - short, 0), exchange=make_exchange)
    s.order(2, SELL, 10_500, 50)
    if short:
        refused(RejectCode.INSUFFICIENT_FUNDS, s.order, 1, BUY, 0, 50, order_type=OrderType.MARKET)
        return
    events = s.order(1, BUY, 0, 50, order_type=OrderType.MARKET)
    accepted(events)
    assert [t.qty for t in of(events, Trade)] == [50]
    account = s.x.accounts.get(1)
    cost = 525_000 + INSTRUMENT.fee(525_000)  # 50 t at 105.00, the fee rounded down
    assert (account.cash, account.cash_frozen) == (need - cost, 0)


@pytest.mark.parametrize("short", [0, 1])
@pytest.mark.parametrize(("new_price", "new_qty"), [(10_001, 100), (10_000, 101), (11_000, 150)])
def test_an_amend_up_needing_exactly_the_available_cash(make_exchange, short, new_price, new_qty):
    """The extra an amend freezes is the new order's freeze less the old one's, to the fen."""
    old, new = freeze_for(INSTRUMENT, 10_000, 100), freeze_for(INSTRUMENT, new_price, new_qty)
    s = Session(member_one_holding(new - short, 0), exchange=make_exchange)
    oid = accepted(s.order(1, BUY, 10_000, 100)).order_id
    assert s.x.accounts.get(1).cash == new - old - short
    if short:
        refused(RejectCode.INSUFFICIENT_FUNDS, s.amend, 1, oid, new_price, new_qty)
        return
    assert of(s.amend(1, oid, new_price, new_qty), Amended)
    account = s.x.accounts.get(1)
    assert (account.cash, account.cash_frozen) == (0, new)


# -- holdings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [1, 100, 99_999])
def test_a_sell_of_exactly_the_available_allowances_is_accepted(make_exchange, qty):
    s = Session(member_one_holding(0, qty), exchange=make_exchange)
    accepted(s.order(1, SELL, 10_000, qty))
    holding = s.x.accounts.get(1).holding(CODE)
    assert (holding.available, holding.frozen) == (0, qty)


@pytest.mark.parametrize("qty", [1, 100, 99_999])
def test_a_sell_of_one_tonne_more_than_available_is_refused(make_exchange, qty):
    s = Session(member_one_holding(0, qty - 1), exchange=make_exchange)
    refused(RejectCode.INSUFFICIENT_ALLOWANCES, s.order, 1, SELL, 10_000, qty)


def test_an_amend_of_a_sell_up_to_exactly_the_holdings(make_exchange):
    s = Session(member_one_holding(0, 100), exchange=make_exchange)
    oid = accepted(s.order(1, SELL, 10_000, 60)).order_id
    refused(RejectCode.INSUFFICIENT_ALLOWANCES, s.amend, 1, oid, 10_000, 101)
    assert of(s.amend(1, oid, 10_000, 100), Amended)
    holding = s.x.accounts.get(1).holding(CODE)
    assert (holding.available, holding.frozen) == (0, 100)


# -- the price band -------------------------------------------------------------------------------

# (tick, reference, low edge, high edge): +-10% rounded inward to the tick
BANDS = [
    pytest.param(1, 10_000, 9_000, 11_000, id="tick1"),
    pytest.param(5, 10_005, 9_005, 11_005, id="tick5-rounded-inward"),
    pytest.param(10, 6_210, 5_590, 6_830, id="tick10-rounded-inward"),
]


@pytest.mark.parametrize(("tick", "reference", "low", "high"), BANDS)
def test_the_band_is_ten_percent_either_side_rounded_inward_to_the_tick(
    make_exchange, tick, reference, low, high
):
    s = Session(small_market(tick=tick, reference_price=reference), exchange=make_exchange)
    assert s.x.markets[CODE].band == (low, high)


@pytest.mark.parametrize(("tick", "reference", "low", "high"), BANDS)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_order_exactly_at_either_band_edge_is_accepted(
    make_exchange, tick, reference, low, high, side
):
    s = Session(small_market(tick=tick, reference_price=reference), exchange=make_exchange)
    for price in (low, high):
        ack = accepted(s.order(1, side, price, 10))
        assert ack.price == price


@pytest.mark.parametrize(("tick", "reference", "low", "high"), BANDS)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_order_one_tick_beyond_either_band_edge_is_refused(
    make_exchange, tick, reference, low, high, side
):
    s = Session(small_market(tick=tick, reference_price=reference), exchange=make_exchange)
    for price in (low - tick, high + tick):
        refused(RejectCode.PRICE_OUTSIDE_BAND, s.order, 1, side, price, 10)


@pytest.mark.parametrize(("tick", "reference", "low", "high"), BANDS)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_amend_to_either_band_edge_is_accepted_and_one_tick_beyond_refused(
    make_exchange, tick, reference, low, high, side
):
    s = Session(small_market(tick=tick, reference_price=reference), exchange=make_exchange)
    oid = accepted(s.order(1, side, reference, 10)).order_id
    for price in (low - tick, high + tick):
        refused(RejectCode.PRICE_OUTSIDE_BAND, s.amend, 1, oid, price, 10)
    for price in (low, high):
        (amended,) = of(s.amend(1, oid, price, 10), Amended)
        assert amended.price == price


def test_an_order_at_a_band_edge_rests_in_a_call_and_one_tick_beyond_is_refused(make_exchange):
    s = Session(small_market(), continuous=False, exchange=make_exchange)
    s.send(OpenCall(CODE))
    accepted(s.order(1, BUY, 9_000, 10))
    accepted(s.order(2, SELL, 11_000, 10))
    refused(RejectCode.PRICE_OUTSIDE_BAND, s.order, 1, BUY, 8_999, 10)
    refused(RejectCode.PRICE_OUTSIDE_BAND, s.order, 2, SELL, 11_001, 10)


# -- order size -----------------------------------------------------------------------------------

# (unit, min_qty, max_qty)
SIZES = [
    pytest.param(1, 1, 99_999, id="defaults"),
    pytest.param(1, 5, 500, id="unit1"),
    pytest.param(10, 20, 990, id="unit10"),
]


@pytest.mark.parametrize(("unit", "min_qty", "max_qty"), SIZES)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_order_of_exactly_the_smallest_and_largest_size_is_accepted(
    make_exchange, unit, min_qty, max_qty, side
):
    config = small_market(unit=unit, min_qty=min_qty, max_qty=max_qty)
    s = Session(config, exchange=make_exchange)
    for qty in (min_qty, max_qty):
        assert accepted(s.order(1, side, 10_000, qty)).qty == qty


@pytest.mark.parametrize(("unit", "min_qty", "max_qty"), SIZES)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_order_one_unit_beyond_either_size_limit_is_refused(
    make_exchange, unit, min_qty, max_qty, side
):
    config = small_market(unit=unit, min_qty=min_qty, max_qty=max_qty)
    s = Session(config, exchange=make_exchange)
    refused(RejectCode.QTY_ABOVE_MAX, s.order, 1, side, 10_000, max_qty + unit)
    below = RejectCode.QTY_BELOW_MIN if min_qty > unit else RejectCode.QTY_INVALID
    refused(below, s.order, 1, side, 10_000, min_qty - unit)


@pytest.mark.parametrize(("unit", "min_qty", "max_qty"), SIZES)
@pytest.mark.parametrize("side", [BUY, SELL])
def test_an_amend_to_either_size_limit_is_accepted_and_one_unit_beyond_refused(
    make_exchange, unit, min_qty, max_qty, side
):
    config = small_market(unit=unit, min_qty=min_qty, max_qty=max_qty)
    s = Session(config, exchange=make_exchange)
    oid = accepted(s.order(1, side, 10_000, min_qty)).order_id
    refused(RejectCode.QTY_ABOVE_MAX, s.amend, 1, oid, 10_000, max_qty + unit)
    below = RejectCode.QTY_BELOW_MIN if min_qty > unit else RejectCode.QTY_INVALID
    refused(below, s.amend, 1, oid, 10_000, min_qty - unit)
    for qty in (max_qty, min_qty):
        (amended,) = of(s.amend(1, oid, 10_000, qty), Amended)
        assert amended.qty == qty


# -- off the book: block trades and one-way auction bids ------------------------------------------


def test_a_block_trade_of_exactly_the_block_minimum_at_either_block_band_edge(make_exchange):
    """Block trades: from 100,000 t, within +-30% of the reference (7,000-13,000 fen)."""
    s = Session(exchange=make_exchange)
    for n, price in enumerate((7_000, 13_000)):
        (trade,) = of(s.send(BlockTrade(f"b{n}", CODE, 1, 2, price, 100_000)), Trade)
        assert (trade.price, trade.qty, trade.venue) == (price, 100_000, "block")


def test_a_block_trade_one_step_beyond_its_limits_is_refused(make_exchange):
    s = Session(exchange=make_exchange)
    for n, (price, qty, code) in enumerate(
        [
            (10_000, 99_999, RejectCode.QTY_BELOW_MIN),
            (6_999, 100_000, RejectCode.PRICE_OUTSIDE_BAND),
            (13_001, 100_000, RejectCode.PRICE_OUTSIDE_BAND),
        ]
    ):
        refused(code, s.send, BlockTrade(f"b{n}", CODE, 1, 2, price, qty))


@pytest.mark.parametrize(
    ("buyer_short", "seller_short", "code"),
    [
        (0, 0, None),
        (1, 0, RejectCode.INSUFFICIENT_FUNDS),
        (0, 1, RejectCode.INSUFFICIENT_ALLOWANCES),
    ],
)
def test_a_block_trade_needing_exactly_the_buyers_cash_and_the_sellers_allowances(
    make_exchange, buyer_short, seller_short, code
):
    need = freeze_for(INSTRUMENT, 10_000, 100_000)
    members = [
        Member(id=1, name="M1", cash=need - buyer_short),
        Member(id=2, name="M2", holdings={CODE: 100_000 - seller_short}),
    ]
    config = MarketConfig(name="block", instruments=[INSTRUMENT], members=members)
    s = Session(config, exchange=make_exchange)
    block = BlockTrade("b", CODE, 1, 2, 10_000, 100_000)
    if code is not None:
        refused(code, s.send, block)
        return
    assert of(s.send(block), Trade)
    assert s.x.accounts.get(1).cash == 0
    assert s.x.accounts.get(2).holding(CODE).available == 0


@pytest.mark.parametrize("floor_minus_10pct", [False, True])
def test_a_one_way_bid_at_the_floor_and_the_cap_is_accepted_and_one_tick_beyond_refused(
    make_exchange, floor_minus_10pct
):
    """Floor: the previous close (10,000), or that minus 10% (9,000); cap: plus 10% (11,000)."""
    s = Session(exchange=make_exchange)
    s.send(OneWayAuctionOpen(CODE, 4, 100_000, floor_minus_10pct=floor_minus_10pct))
    floor = 9_000 if floor_minus_10pct else 10_000
    for price in (floor - 1, 11_001):
        refused(
            RejectCode.PRICE_OUTSIDE_BAND, s.send, AuctionBid(f"out{price}", 1, CODE, price, 10)
        )
    for price in (floor, 11_000):
        assert accepted(s.send(AuctionBid(f"in{price}", 1, CODE, price, 10))).price == price


@pytest.mark.parametrize("short", [0, 1])
def test_a_one_way_bid_needing_exactly_the_available_cash(make_exchange, short):
    need = freeze_for(INSTRUMENT, 10_500, 1_000)
    s = Session(member_one_holding(need - short, 0), exchange=make_exchange)
    s.send(OneWayAuctionOpen(CODE, 2, 100_000))
    if short:
        refused(RejectCode.INSUFFICIENT_FUNDS, s.send, AuctionBid("bid", 1, CODE, 10_500, 1_000))
        return
    accepted(s.send(AuctionBid("bid", 1, CODE, 10_500, 1_000)))
    assert s.x.accounts.get(1).cash == 0


@pytest.mark.parametrize("short", [0, 1])
def test_a_one_way_offer_of_exactly_the_sellers_allowances(make_exchange, short):
    s = Session(member_one_holding(0, 100_000 - short), exchange=make_exchange)
    if short:
        refused(RejectCode.INSUFFICIENT_ALLOWANCES, s.send, OneWayAuctionOpen(CODE, 1, 100_000))
        return
    accepted(s.send(OneWayAuctionOpen(CODE, 1, 100_000)))
    assert s.x.accounts.get(1).holding(CODE).frozen == 100_000
