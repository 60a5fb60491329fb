"""The compiled order path against the plain one (the reference book always takes the plain
path): seeded random order flow with scarce cash and allowances, every reject kind, market,
IOC and FOK orders, self-trade modes, amends, halts and re-opening calls, over a compiled book
that starts with 16 order slots so its arrays grow mid-session; and one sweep through 600
orders, past the event buffer's first size. Events must be equal command by command and the
state hashes equal throughout."""

from __future__ import annotations

import random
from functools import partial

import pytest

from engine.book import Book
from engine.book.layout import M_BASE
from engine.config import MarketConfig, Member
from engine.core import Exchange, ReferenceExchange
from engine.instruments import Instrument
from engine.protocol import (
    AmendOrder,
    CancelOrder,
    Close,
    EndOfDay,
    Halt,
    NewOrder,
    OpenCall,
    Rejected,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import OrderType, Side, StpMode, TimeInForce

CODE = "CEA25"


class SmallBooksExchange(Exchange):
    """The production exchange with books that start at 16 orders, so a session grows them."""

    book_factory = partial(Book, capacity=16)


def scarce_market() -> MarketConfig:
    instrument = Instrument(
        code=CODE,
        name="CEA 2025",
        product="CEA",
        reference_price=10_000,
        tick=10,
        unit=10,
        min_qty=10,
        max_qty=5_000,
    )
    members = [
        Member(id=m, name=f"M{m}", cash=20_000_000_00 // m, holdings={CODE: 150_000 // m})
        for m in (3, 7, 11, 12, 40)
    ]
    return MarketConfig(name="scarce", instruments=[instrument], members=members)


def random_command(rng: random.Random, n: int, live: dict, members: list[int]):
    member = rng.choice(members + [99] * (rng.random() < 0.01))
    r = rng.random()
    if r < 0.65 or not live:
        side = rng.choice([Side.BUY, Side.SELL])
        away = 1 if side == Side.SELL else -1  # mostly passive, so the book gets deep
        passive = rng.random() < 0.92
        ticks = rng.randint(1, 40) if passive else -rng.randint(0, 40)
        price = 10_000 + away * ticks * 10 + (rng.random() < 0.02)  # some off tick
        if rng.random() < 0.01:
            price = 12_000  # outside the band
        return NewOrder(
            f"c{n}" if rng.random() > 0.01 else "dup",
            member,
            CODE,
            side,
            price,
            rng.choice(
                [10] * 10 + [20, 50, 100, 0, 15]
                if passive
                else [10, 50, 300, 1_000, 5_000, 5_000, 6_000]
            ),
            OrderType.MARKET if not passive and rng.random() < 0.3 else OrderType.LIMIT,
            rng.choice([TimeInForce.DAY] * 6 + [TimeInForce.IOC, TimeInForce.FOK]),
            rng.choice(list(StpMode)),
        )
    order_id = rng.choice(list(live)) if rng.random() < 0.9 else rng.randint(1, n + 5)
    if order_id in live and rng.random() < 0.9:
        member = live[order_id].member
    if r < 0.85:
        return CancelOrder(f"x{n}", member, CODE, order_id)
    away = 1 if order_id in live and live[order_id].side == Side.SELL else -1
    price = 10_000 + away * rng.randint(-3, 40) * 10  # mostly stays passive
    return AmendOrder(f"a{n}", member, CODE, order_id, price, rng.choice([10, 50, 200, 2_000]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_and_plain_paths_agree_command_by_command(seed):
    rng = random.Random(seed)
    compiled = SmallBooksExchange(scarce_market())
    plain = ReferenceExchange(scarce_market())
    members = sorted(compiled.accounts.row_of)
    opening = [StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)]
    rejected_new = accepted_new = trades = deepest = 0
    for n, command in enumerate(opening + [None] * 3000):
        if command is None:
            live = compiled.live_orders()
            command = random_command(rng, n, live, members)
            if n % 500 in (0, 250):
                command = Halt(CODE)
            elif n % 500 == 1:
                command = OpenCall(CODE)
            elif n % 500 == 40:
                command = Uncross(CODE)
            elif n % 500 == 260:
                command = Resume(CODE)
        events = compiled.apply(command)
        assert events == plain.apply(command), command
        trades += sum(type(e) is Trade for e in events)
        if type(command) is NewOrder:
            if isinstance(events[0], Rejected):
                rejected_new += 1
            else:
                accepted_new += 1
        if n % 100 == 0:
            assert compiled.state_hash() == plain.state_hash()
            deepest = max(deepest, len(compiled.markets[CODE].book))
    assert compiled.state_hash() == plain.state_hash()
    assert accepted_new > 1000 and rejected_new > 50 and trades > 150
    # the arrays grew mid-session: the pool past its 16 slots, the event buffer for a sweep
    state = compiled.markets[CODE].book.state
    assert deepest > 100 and state.pool.shape[0] >= 128, (deepest, state.pool.shape)


def test_a_sweep_beyond_the_event_buffer_grows_it_and_both_paths_agree():
    compiled = SmallBooksExchange(scarce_market())
    plain = ReferenceExchange(scarce_market())
    commands = [StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)]
    commands += [
        NewOrder(f"s{n}", 3, CODE, Side.SELL, 10_000 + 10 * (n % 7), 10) for n in range(600)
    ]
    commands.append(NewOrder("sweep", 7, CODE, Side.BUY, 0, 5_000, OrderType.MARKET))
    for command in commands:
        assert compiled.apply(command) == plain.apply(command), command
    assert compiled.state_hash() == plain.state_hash()
    state = compiled.markets[CODE].book.state
    assert state.ev.shape[0] > 1024 and len(compiled.markets[CODE].book) == 100


def a_day(exchange, date: str, reference: int, rng: random.Random, members: list[int]):
    """A call, its uncross and continuous trading around `reference` with cancels of live
    orders (read from `exchange` as the day goes), closed at the end."""
    yield from (StartOfDay(date), OpenCall(CODE))
    for n in range(300):
        if n == 100:
            yield Uncross(CODE)
        side = rng.choice([Side.BUY, Side.SELL])
        away = 1 if side == Side.SELL else -1
        price = reference + away * rng.randint(-25, 40) * 10
        yield NewOrder(f"{date}-{n}", rng.choice(members), CODE, side, price, 10)
        live = exchange.live_orders()
        if n % 5 == 4 and live:
            order = live[rng.choice(sorted(live))]
            yield CancelOrder(f"{date}-x{n}", order.member, CODE, order.order_id)
    yield from (Close(CODE), EndOfDay())


def test_a_new_reference_moves_the_window_and_both_paths_agree():
    """A band narrower than the book's widest window pins the window to it, so a new reference
    (the close at EndOfDay, or SetReference) moves the window: new ladder arrays, which the
    book's own entry points (the uncross) and the core's compiled order path must take. Bound
    to the old ones they read past their end: `cxe demo --steps 300 --seed 5` crashed with a
    segmentation fault at its opening auction."""
    compiled = SmallBooksExchange(scarce_market())
    plain = ReferenceExchange(scarce_market())
    rng = random.Random(8)
    members = sorted(compiled.accounts.row_of)
    meta = compiled.markets[CODE].book.state.meta  # updated in place: the window's base
    bases, trades = set(), 0
    for date, reference in (("2026-11-24", 0), ("2026-11-25", 13_000), ("2026-11-26", 7_000)):
        if reference:
            command = SetReference(CODE, reference)
            assert compiled.apply(command) == plain.apply(command)
        for command in a_day(compiled, date, reference or 10_000, rng, members):
            events = compiled.apply(command)
            assert events == plain.apply(command), command
            trades += sum(type(e) is Trade for e in events)
            bases.add(int(meta[M_BASE]))
        assert compiled.state_hash() == plain.state_hash()
    assert len(bases) >= 3 and trades > 100  # the window moved with each new band


def test_fees_on_the_largest_orders_an_instrument_allows_are_exact_on_both_paths():
    """The compiled path computed a fee as value * fee_ppm // 10**6 in int64; from a value of
    about 1.5e15 fen the product overflowed, so the 4e15 fen buy below froze a wrong amount
    and was accepted with the books' frozen cash apart. The config admits such orders (the
    value itself stays below 2**62), so the fee must be exact there too."""
    instrument = Instrument(
        code=CODE, name="big", product="CEA", reference_price=4_000_000, tick=100, max_qty=2**40
    )
    members = [Member(id=m, name=f"M{m}", cash=10**17, holdings={CODE: 10**10}) for m in (1, 2)]
    config = MarketConfig(name="big", instruments=[instrument], members=members)
    runs = [Exchange(config), ReferenceExchange(config)]
    commands = [StartOfDay("2026-11-24"), OpenCall(CODE), Uncross(CODE)]
    commands += [
        NewOrder("b", 1, CODE, Side.BUY, 4_000_000, 10**9),
        NewOrder("a", 1, CODE, Side.BUY, 4_000_000, 10**9),
        AmendOrder("m", 1, CODE, 2, 4_100_000, 10**9),
        NewOrder("s", 2, CODE, Side.SELL, 3_900_000, 15 * 10**8),
        CancelOrder("c", 1, CODE, 1),
    ]
    for command in commands:
        events = [x.apply(command) for x in runs]
        assert events[0] == events[1], command
        assert not any(isinstance(e, Rejected) for e in events[0]), events[0]
    value = 4_100_000 * 10**9 + 4_000_000 * 5 * 10**8  # two fills, each at the resting price
    fees = (4_100_000 * 10**9 * 6_000 // 10**6) + (4_000_000 * 5 * 10**8 * 6_000 // 10**6)
    for x in runs:
        buyer = x.accounts.get(1)
        assert (buyer.cash, buyer.cash_frozen) == (10**17 - value - fees, 0)
    assert runs[0].state_hash() == runs[1].state_hash()
