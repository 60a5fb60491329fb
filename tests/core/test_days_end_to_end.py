"""Trading days end to end, as the parts run in production, on random order flow.

The embedded market's six instruments under MARKET_HOURS: each command carries the
sequencer's stamp, so the calendar opens, halts for lunch, re-opens and closes the markets
while members and the operator act at random (orders of every kind, cancels, amends, picks,
block trades, one-way auctions, calls, references). Every command goes through the command
log before it is applied; the Trade and DayClosed events go to the trade log; after each
EndOfDay, clearing captures the day and settles it into a real SQLite ledger.

Checked:
- every day ends (EndOfDay is accepted once the operator has closed what is open);
- after each settlement the ledger holds exactly what the engine's accounts hold: each
  member's cash and allowances per instrument, and the exchange's fees; nothing stays frozen;
- the command log replays into a fresh exchange over either book to the same events, byte
  for byte, and the same state hash.
"""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest

from engine.clearing.capture import TradeLogWriter, TradeStore, capture_file
from engine.clearing.settlement import CASH, EXCHANGE, Ledger
from engine.config import MARKET_HOURS, MarketConfig, default_market
from engine.core import Exchange, ReferenceExchange
from engine.demo import day_start_ns
from engine.journal import CommandLog, RecordingExchange, replay
from engine.protocol import (
    AmendOrder,
    AuctionBid,
    BlockTrade,
    CancelOrder,
    Close,
    CloseCall,
    EndOfDay,
    Halt,
    NewOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    OpenCall,
    PickOrder,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
    encode,
)
from engine.types import Phase, Side

MINUTE = 60 * 10**9
SIDES = (Side.BUY, Side.SELL)
# relative frequencies of the command kinds (the operator acts about once in a hundred)
KINDS = (
    ["order"] * 60
    + ["cancel"] * 18
    + ["amend"] * 10
    + ["pick"] * 4
    + ["block"] * 2
    + ["one_way"] * 4
    + ["operator"]
)


def scheduled_market() -> MarketConfig:
    return msgspec.structs.replace(default_market(), schedule=MARKET_HOURS)


def random_command(rng: random.Random, x: Exchange, members: list[int], n: int):
    """A member's or the operator's command; prices mostly near the reference (so orders
    trade), sometimes at or beyond the band; ids mostly of live orders."""
    code = rng.choice(sorted(x.markets))
    market = x.markets[code]
    tick, reference = market.instrument.tick, market.reference
    low, high = market.band
    price = rng.choice(
        [
            reference + tick * rng.randint(-3, 3),
            reference + tick * rng.randint(-3, 3),
            reference + tick * rng.randint(-8, 8),
            low,
            high,
            high + tick,
        ]
    )
    member = rng.choice(members)
    live = x.live_orders()
    order_id = rng.choice(sorted(live) or [1])
    owner = live[order_id].member if order_id in live else member
    order_code = live[order_id].code if order_id in live else code
    cl_ord_id = f"c{n}" if rng.random() > 0.01 else "c1"  # now and then a duplicate
    kind = rng.choice(KINDS)
    if kind == "order":
        qty = rng.choice([1, 10, 100, 1_000, 5_000, 99_999, 100_000])
        return NewOrder(
            cl_ord_id,
            member,
            code,
            rng.choice(SIDES),
            price,
            qty,
            rng.choice([1, 1, 1, 2]),
            rng.choice([0, 0, 0, 1, 2]),
            rng.randint(0, 2),
        )
    if kind == "cancel":
        return CancelOrder(cl_ord_id, owner, order_code, order_id)
    if kind == "amend":
        return AmendOrder(cl_ord_id, owner, order_code, order_id, price, rng.choice([1, 10, 100]))
    if kind == "pick":
        qty = rng.choice([1, 10, 100])
        return PickOrder(cl_ord_id, member, code, rng.choice(SIDES), order_id, qty)
    if kind == "block":
        qty = rng.choice([100_000, 150_000])
        return BlockTrade(cl_ord_id, code, member, rng.choice(members), price, qty)
    if kind == "one_way":
        qty = rng.choice([100, 1_000, 50_000])
        return rng.choice(
            [
                OneWayAuctionOpen(code, member, 200_000, rng.random() < 0.5, rng.random() < 0.5),
                AuctionBid(cl_ord_id, member, code, price, qty),
                AuctionBid(cl_ord_id, member, code, price, qty),
                OneWayAuctionClose(code),
            ]
        )
    phases = [Halt(code), Resume(code), OpenCall(code), Uncross(code), CloseCall(code)]
    new_reference = SetReference(code, reference + tick * rng.randint(-99, 99))
    return rng.choice([*phases, Close(code), new_reference])


def assert_ledger_holds_the_accounts(ledger: Ledger, x: Exchange, members: list[int]) -> None:
    assert ledger.balance(EXCHANGE, CASH) == x.accounts.fees
    for member in members:
        account = x.accounts.get(member)
        assert account.cash_frozen == 0
        assert ledger.balance(member, CASH) == account.cash, member
        for code in x.markets:
            holding = account.holding(code)
            assert holding.frozen == 0
            assert ledger.balance(member, code) == holding.total, (member, code)


@pytest.mark.parametrize("seed", [1, 2])
def test_days_run_by_the_calendar_settle_to_the_engines_accounts_and_replay_from_the_log(
    tmp_path: Path, seed: int
):
    rng = random.Random(seed)
    config = scheduled_market()
    x = Exchange(config)
    members = [m.id for m in config.members]
    store, ledger = TradeStore(tmp_path / "clearing.db"), Ledger(tmp_path / "ledger.db")
    ledger.load_opening(config.members)
    events: list[bytes] = []
    trades = 0
    with (
        CommandLog(tmp_path / "commands.log") as command_log,
        TradeLogWriter(tmp_path / "trades.log") as trade_log,
    ):
        recorder = RecordingExchange(x, command_log)

        def send(command, ts_ns: int) -> None:
            nonlocal trades
            out = recorder.apply(command, ts_ns)
            trade_log.record(out)
            events.append(b"".join(map(encode, out)))
            trades += sum(type(e) is Trade for e in out)

        day, n = "2026-11-23", 0
        for _ in range(3):
            day = config.next_trading_day(day)
            ts = day_start_ns(day) - 10 * MINUTE  # 08:50
            send(StartOfDay(day), ts)
            while ts < day_start_ns(day) + 370 * MINUTE:  # until 15:10
                ts += rng.choice([0, 1, 5, 20, 200, 1_000, 2_000]) * rng.randint(1, 30) * 10**6
                n += 1
                send(random_command(rng, x, members, n), ts)
            for code, market in sorted(x.markets.items()):
                send(OneWayAuctionClose(code), ts)  # refused when none is open
                if market.phase != Phase.CLOSED:  # the operator re-opened it after hours
                    send(Close(code), ts)
            send(EndOfDay(), ts)
            assert not x.date, f"{day} did not end: {x.out}"
            trade_log.sync()
            capture_file(store, tmp_path / "trades.log")
            report = ledger.settle(day, store, config)
            assert not report.failures and not report.already_settled
            assert_ledger_holds_the_accounts(ledger, x, members)
    assert trades > 200, trades
    for exchange in (Exchange, ReferenceExchange):
        fresh = exchange(config)
        replayed = [
            b"".join(map(encode, out)) for _, out in replay(tmp_path / "commands.log", fresh)
        ]
        assert replayed == events
        assert fresh.state_hash() == x.state_hash()
