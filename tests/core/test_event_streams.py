"""Events by audience: every event belongs to one audience (private to a member, public market
data, clearing), each stream is numbered gap-free from 1 across commands and days, the public
trade print names no member, and the clearing record of a trade names both members and each
side's fee."""

from __future__ import annotations

import random

import msgspec

from engine.protocol import (
    Audience,
    BlockTrade,
    Close,
    DayClosed,
    DaySummary,
    EndOfDay,
    Filled,
    Halt,
    OpenCall,
    PickOrder,
    Resume,
    StartOfDay,
    Trade,
    TradePrint,
    Uncross,
    decode_event,
    encode,
)
from tests.core.test_compiled_path import CODE, random_command
from tests.support.exchange import small_market


def session(make_exchange, seed: int, commands: int = 1500):
    """Every event of a random trading day (with a halt, picks and a block trade) and the
    next day's start, in order."""
    rng = random.Random(seed)
    x = make_exchange(small_market())
    members = sorted(x.accounts.row_of)
    events = []
    script = {0: StartOfDay("2026-11-24"), 1: OpenCall(CODE), 60: Uncross(CODE)}
    script |= {700: Halt(CODE), 710: Resume(CODE), 730: Uncross(CODE)}
    script |= {900: BlockTrade("blk", CODE, members[0], members[1], 10_000, 100_000)}
    script |= {commands: Close(CODE), commands + 1: EndOfDay()}
    script |= {commands + 2: StartOfDay("2026-11-25")}
    for n in range(commands + 3):
        live = x.live_orders()
        command = script.get(n) or random_command(rng, n, live, members)
        asks = sorted((o.limit, o.order_id, o.member) for o in live.values() if o.side == 1)
        continuous = 60 < n < 700 or 730 < n < commands
        if continuous and n % 97 == 0 and asks:
            _, target, seller = asks[0]  # the best ask is within the top five levels
            picker = next(m for m in members if m != seller)
            command = PickOrder(f"p{n}", picker, CODE, 0, target, 1)
        events += x.apply(command)
    return x, events


def test_each_stream_is_numbered_gap_free_and_events_carry_their_audience(make_exchange):
    x, events = session(make_exchange, seed=1)
    public, clearing, private = [], [], {}
    for event in events:
        audience = type(event).audience
        if audience == Audience.PUBLIC:
            public.append(event.stream_seq)
        elif audience == Audience.CLEARING:
            clearing.append(event.stream_seq)
        else:
            assert audience == Audience.PRIVATE, event
            private.setdefault(event.member, []).append(event.stream_seq)
    assert public == list(range(1, len(public) + 1))
    assert clearing == list(range(1, len(clearing) + 1))
    assert len(private) >= 3
    for numbers in private.values():
        assert numbers == list(range(1, len(numbers) + 1))
    positions = x.stream_positions()
    assert positions["public"] == len(public) and positions["clearing"] == len(clearing)
    assert positions["private"] == {m: len(n) for m, n in private.items()}
    kinds = {type(e) for e in events}
    assert {Trade, TradePrint, Filled, DayClosed, DaySummary} <= kinds


def test_a_trade_is_a_clearing_record_a_public_print_and_two_fills(make_exchange):
    x, events = session(make_exchange, seed=2)
    trades = [i for i, e in enumerate(events) if type(e) is Trade]
    venues = set()
    assert len(trades) > 100
    for i in trades:
        trade, trade_print, buy, sell = events[i : i + 4]
        venues.add(trade.venue)
        assert type(trade_print) is TradePrint and (type(buy), type(sell)) == (Filled, Filled)
        assert trade.trade_id == trade_print.trade_id == buy.trade_id == sell.trade_id
        assert (buy.member, buy.order_id, sell.member, sell.order_id) == (
            trade.buyer,
            trade.buy_order_id,
            trade.seller,
            trade.sell_order_id,
        )
        same = ("ts_ns", "instrument", "price", "qty", "aggressor", "venue")
        assert [getattr(trade, f) for f in same] == [getattr(trade_print, f) for f in same]
        fee = x.markets[trade.instrument].instrument.fee(trade.price * trade.qty)
        assert trade.buyer_fee == trade.seller_fee == fee
    assert {"continuous", "call", "pick", "block"} <= venues


def test_the_public_stream_names_no_member_nor_order(make_exchange):
    _, events = session(make_exchange, seed=3)
    private_fields = {"member", "buyer", "seller", "order_id", "buy_order_id", "sell_order_id"}
    private_fields |= {"cl_ord_id", "buyer_fee", "seller_fee"}
    for event in events:
        if type(event).audience == Audience.PUBLIC:
            assert not private_fields & set(msgspec.structs.asdict(event)), event
            assert decode_event(encode(event)) == event


def test_both_exchanges_number_the_streams_alike():
    from engine.core import Exchange, ReferenceExchange

    runs = [
        session(lambda config, cls=cls: cls(config), seed=4)[1]
        for cls in (Exchange, ReferenceExchange)
    ]
    assert runs[0] == runs[1]
