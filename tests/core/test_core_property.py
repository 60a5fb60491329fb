"""Exchange-core properties over random command sequences (hypothesis).

- market data: applying the DepthUpdate events in order reproduces the book's full depth;
- conservation: members' cash plus collected fees, and each instrument's allowances, never
  change; no balance is ever negative; frozen cash and allowances equal what live orders need;
- the band always holds every resting order, whatever the operator does to the reference;
- a call auction's results name each price it traded at and the tonnes traded there;
- over several days at the edges of an instrument's range (the highest price, the largest
  orders, fee rates up to 100%) every day ends and both books keep the same accounts;
- a rejected command never changes the state hash;
- determinism: the same commands give byte-identical encoded events and the same hash, and the
  core gives the same results over the compiled book and over the reference book.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import MARKET_HOURS, MarketConfig
from engine.core import Exchange, ReferenceExchange
from engine.core.risk import freeze_for
from engine.protocol import (
    AmendOrder,
    AuctionBid,
    AuctionResult,
    BlockTrade,
    CancelOrder,
    Close,
    CloseCall,
    DepthUpdate,
    EndOfDay,
    Halt,
    NewOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    OpenCall,
    PickOrder,
    Rejected,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
    encode,
)
from engine.types import Side
from tests.support.exchange import small_market

CODE = "CEA25"
SIDES = st.sampled_from([Side.BUY, Side.SELL])
PRICES = st.integers(-12, 12).map(lambda k: 10_000 + 100 * k)
QTYS = st.integers(1, 300) | st.sampled_from([0, 100_000])
MEMBERS = st.integers(1, 4)
OPERATOR = [
    OpenCall(CODE),
    Uncross(CODE),
    Halt(CODE),
    Resume(CODE),
    CloseCall(CODE),
    Close(CODE),
    EndOfDay(),
    StartOfDay("2026-11-25"),
    OneWayAuctionClose(CODE),
    SetReference(CODE, 9_000),
    SetReference(CODE, 10_000),
    SetReference(CODE, 11_000),
]
# relative frequencies of the command kinds
KINDS = (
    ["order"] * 12
    + ["cancel"] * 3
    + ["amend"] * 3
    + ["pick"] * 2
    + ["operator"]
    + ["one_way", "bid", "bid", "block"]
)
START = [StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)]


def draw_command(data, x: Exchange, n: int):
    """One random command; cancels, amends and picks usually name a live order."""
    kind = data.draw(st.sampled_from(KINDS))
    orders = x.live_orders()
    order_id = data.draw(
        st.sampled_from(sorted(orders) or [1]) | st.integers(1, x.next_order_id + 2)
    )
    member = data.draw(MEMBERS)
    owner = orders[order_id].member if order_id in orders else member
    cl = f"c{n}" if data.draw(st.integers(0, 30)) else "c0"
    if kind == "order":
        return NewOrder(
            cl,
            member,
            CODE,
            data.draw(SIDES),
            data.draw(PRICES),
            data.draw(QTYS),
            data.draw(st.sampled_from([1, 1, 1, 2])),
            data.draw(st.sampled_from([0, 0, 1, 2])),
            data.draw(st.integers(0, 2)),
        )
    if kind == "cancel":
        return CancelOrder(cl, owner, CODE, order_id)
    if kind == "amend":
        return AmendOrder(cl, owner, CODE, order_id, data.draw(PRICES), data.draw(QTYS))
    if kind == "pick":
        return PickOrder(
            cl, member, CODE, data.draw(SIDES), order_id, data.draw(st.integers(1, 50))
        )
    if kind == "operator":
        return data.draw(st.sampled_from(OPERATOR))
    if kind == "one_way":
        return OneWayAuctionOpen(
            CODE,
            member,
            data.draw(st.sampled_from([100_000, 99_999])),
            data.draw(st.booleans()),
            data.draw(st.booleans()),
        )
    if kind == "bid":
        return AuctionBid(cl, member, CODE, data.draw(PRICES), data.draw(st.integers(1, 60_000)))
    return BlockTrade(
        cl,
        CODE,
        member,
        data.draw(MEMBERS),
        data.draw(PRICES),
        data.draw(st.sampled_from([100_000, 50_000])),
    )


def check_accounts(x: Exchange, cash0: int, qty0: int) -> None:
    accounts = x.accounts
    assert accounts.total_cash() == cash0
    assert accounts.total_qty(CODE) == qty0
    need_cash: dict[int, int] = {}
    need_qty: dict[int, int] = {}
    for order in x.live_orders().values():
        if order.side == Side.BUY:
            need_cash[order.member] = need_cash.get(order.member, 0) + order.frozen
            inst = x.markets[order.code].instrument
            assert order.frozen == freeze_for(inst, order.limit, order.leaves)
        else:
            need_qty[order.member] = need_qty.get(order.member, 0) + order.leaves
    for account in accounts.all():
        member = account.member
        holding = account.holding(CODE)
        assert (
            min(
                account.cash, account.cash_frozen, holding.available, holding.frozen, holding.locked
            )
            >= 0
        )
        assert account.cash_frozen == need_cash.get(member, 0)
        assert holding.frozen == need_qty.get(member, 0)


def check_band_holds_the_book(x: Exchange) -> None:
    """Every resting order lies inside its market's band (so no trade can print outside)."""
    for market in x.markets.values():
        low, high = market.band
        assert all(low <= order[2] <= high for order in market.book.orders()), market.band


def check_auction_results(events: list) -> None:
    """A call auction's results name exactly what its trades printed: each price it traded
    at with the tonnes traded there, in order (its trades come first, then its results)."""
    printed: dict[int, int] = {}  # the call trades not yet reported
    results: list[tuple[int, int]] = []
    in_results = False
    for e in [*events, None]:
        if isinstance(e, AuctionResult) and e.auction != "one_way":
            in_results = True
            if e.volume:
                results.append((e.price, e.volume))
            continue
        if in_results:  # an auction's results end here
            assert results == list(printed.items()), (results, printed)
            results, printed, in_results = [], {}, False
        if isinstance(e, Trade) and e.venue == "call":
            printed[e.price] = printed.get(e.price, 0) + e.qty
    assert not printed, printed  # every call trade was reported


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_money_and_allowances_are_conserved_and_frozen_matches_live_orders(data):
    x = Exchange(small_market())
    cash0, qty0 = x.accounts.total_cash(), x.accounts.total_qty(CODE)
    for command in START:
        x.apply(command)
    levels: dict[tuple[int, int], tuple[int, int]] = {}
    for n in range(1, data.draw(st.integers(20, 150))):
        command = draw_command(data, x, n)
        before = x.state_hash()
        events = x.apply(command)
        if len(events) == 1 and isinstance(events[0], Rejected):
            assert x.state_hash() == before, events[0]
        check_accounts(x, cash0, qty0)
        check_band_holds_the_book(x)
        check_auction_results(events)
        follow_depth(levels, events)
        assert levels == book_levels(x), command


def follow_depth(levels: dict, events: list) -> None:
    """What a market-by-price subscriber holds after applying the DepthUpdates in order."""
    for e in events:
        if isinstance(e, DepthUpdate):
            if e.orders:
                levels[e.side, e.price] = (e.qty, e.orders)
            else:
                levels.pop((e.side, e.price), None)


def book_levels(x: Exchange) -> dict[tuple[int, int], tuple[int, int]]:
    bids, asks = x.markets[CODE].book.depth(1 << 30)
    return {(side, p): (q, n) for side, rows in enumerate((bids, asks)) for p, q, n in rows}


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_same_commands_same_bytes_on_either_book(data):
    driver = Exchange(small_market())
    commands = list(START)
    for command in START:
        driver.apply(command)
    for n in range(1, data.draw(st.integers(20, 150))):
        commands.append(draw_command(data, driver, n))
        driver.apply(commands[-1])
    runs = [
        Exchange(small_market()),
        Exchange(small_market()),
        ReferenceExchange(small_market()),
    ]
    streams = [b"".join(encode(e) for c in commands for e in x.apply(c)) for x in runs]
    assert streams[0] == streams[1] == streams[2]
    assert runs[0].state_hash() == runs[1].state_hash() == runs[2].state_hash()
    assert runs[0].state_hash() == driver.state_hash()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_a_day_run_by_the_calendar_keeps_every_invariant_on_either_book(data):
    """The same random commands, now stamped with a clock that walks through a trading day
    under MARKET_HOURS (opening call, lunch halt, re-opening, closing call, close), while the
    operator still acts at random: both books give the same bytes, and the invariants hold."""
    base = small_market()
    config = MarketConfig(
        name="t", instruments=base.instruments, members=base.members, schedule=MARKET_HOURS
    )
    runs = [Exchange(config), ReferenceExchange(config)]
    cash0, qty0 = runs[0].accounts.total_cash(), runs[0].accounts.total_qty(CODE)
    for x in runs:
        x.apply(StartOfDay("2026-11-24"))
    ts = (1_795_478_400 + 3_600) * 1_000_000_000  # 2026-11-24 09:00 in Asia/Shanghai
    for n in range(1, data.draw(st.integers(20, 120))):
        ts += data.draw(st.integers(0, 8 * 60)) * 1_000_000_000
        command = draw_command(data, runs[0], n)
        before, calendar = runs[0].state_hash(), runs[0].state.calendar_done
        events = [x.apply(command, ts) for x in runs]
        assert b"".join(map(encode, events[0])) == b"".join(map(encode, events[1])), command
        # a reject changes nothing; the clock may still have moved the calendar on, even
        # silently (a scheduled halt of a market the operator had halted already)
        if len(events[0]) == 1 and isinstance(events[0][0], Rejected):
            assert runs[0].state_hash() == before or runs[0].state.calendar_done > calendar
        check_accounts(runs[0], cash0, qty0)
        check_band_holds_the_book(runs[0])
        check_auction_results(events[0])
    assert runs[0].state_hash() == runs[1].state_hash()


INSTRUMENT_VARIANTS = [
    {"tick": 8},  # 10_000 is on tick, half the drawn prices are not
    {"unit": 10, "min_qty": 10, "max_qty": 99_990},
    {"band_ppm": 0},
    {"fee_ppm": 0},
    {"min_qty": 50},
    {"same_day_resale": True},
]


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from(INSTRUMENT_VARIANTS))
def test_instrument_parameters_give_the_same_bytes_on_either_book(data, variant):
    """The compiled order path reads tick, unit, size limits, band, fee rate and the resale
    rule from its parameter array, the plain path from the Instrument: both must agree."""
    config = small_market(**variant)
    runs = [Exchange(config), ReferenceExchange(config)]
    cash0, qty0 = runs[0].accounts.total_cash(), runs[0].accounts.total_qty(CODE)
    for x in runs:
        for command in START:
            x.apply(command)
    for n in range(1, data.draw(st.integers(20, 120))):
        command = draw_command(data, runs[0], n)
        events = [x.apply(command) for x in runs]
        assert b"".join(map(encode, events[0])) == b"".join(map(encode, events[1])), command
        check_accounts(runs[0], cash0, qty0)
    assert runs[0].state_hash() == runs[1].state_hash()


@st.composite
def edge_instruments(draw) -> MarketConfig:
    """An instrument near the limits the config admits: large ticks and order sizes, fee
    rates up to 100%, wide or zero bands, a reference at or near the highest price."""
    fields = {
        "tick": draw(st.sampled_from([1, 5, 7, 100])),
        "max_qty": draw(st.sampled_from([99_999, 10**6, 2**40])),
        "fee_ppm": draw(st.sampled_from([0, 6_000, 999_999, 1_000_000])),
        "band_ppm": draw(st.sampled_from([0, 100_000, 900_000, 5_000_000])),
        "same_day_resale": draw(st.booleans()),
    }
    top = small_market(**fields, reference_price=fields["tick"]).instruments[0].max_price
    tick = fields["tick"]
    where = draw(st.sampled_from([top, top // 2, top - top // 11, 10_000]))
    fields["reference_price"] = max(tick, where // tick * tick)
    base = small_market(**fields)
    members = [msgspec.structs.replace(m, cash=2**60, holdings={CODE: 2**39}) for m in base.members]
    return msgspec.structs.replace(base, members=members)


@settings(max_examples=40, deadline=None)
@given(edge_instruments(), st.data())
def test_days_at_the_edges_of_an_instruments_range_keep_every_invariant(config, data):
    """Several trading days in a row, orders at and beyond the band's edges with the largest
    sizes, so closes climb towards the highest price and order values towards 2**62 fen.
    This found an EndOfDay that raised out of apply (the band around a close did not fit a
    book) and fees that overflowed int64 in the compiled path."""
    runs = [Exchange(config), ReferenceExchange(config)]
    inst = config.instruments[0]
    cash0, qty0 = runs[0].accounts.total_cash(), runs[0].accounts.total_qty(CODE)
    day, n = "2026-11-23", 0

    def send(command) -> None:
        events = [x.apply(command) for x in runs]
        assert b"".join(map(encode, events[0])) == b"".join(map(encode, events[1])), command
        check_accounts(runs[0], cash0, qty0)
        check_band_holds_the_book(runs[0])

    for _ in range(data.draw(st.integers(2, 4))):
        day = config.next_trading_day(day)
        for command in (StartOfDay(day), OpenCall(CODE)):
            send(command)
        for step in range(data.draw(st.integers(5, 30))):
            n += 1
            low, high = runs[0].markets[CODE].band
            price = data.draw(st.sampled_from([low, high, high + inst.tick, low + inst.tick]))
            qty = data.draw(st.sampled_from([1, inst.max_qty, 2**40]))
            live = sorted(runs[0].live_orders()) or [1]
            kind = data.draw(st.sampled_from(["order"] * 4 + ["amend", "cancel", "block"]))
            member = data.draw(MEMBERS)
            if kind == "order":
                side = data.draw(SIDES)
                send(
                    NewOrder(
                        f"c{n}", member, CODE, side, price, qty, tif=data.draw(st.integers(0, 2))
                    )
                )
            elif kind in ("amend", "cancel"):
                order_id = data.draw(st.sampled_from(live))
                owner = runs[0].live_orders().get(order_id)
                owner = owner.member if owner else member
                if kind == "amend":
                    send(AmendOrder(f"c{n}", owner, CODE, order_id, price, qty))
                else:
                    send(CancelOrder(f"c{n}", owner, CODE, order_id))
            else:
                send(BlockTrade(f"c{n}", CODE, member, data.draw(MEMBERS), price, 100_000))
            if step == 2:
                send(Uncross(CODE))
        for command in (Uncross(CODE), Close(CODE), EndOfDay()):
            send(command)
        assert runs[0].date == ""  # the day ended
    assert runs[0].state_hash() == runs[1].state_hash()
