"""`cxe demo`: one simulated trading day of the embedded market through the exchange core.

Invariants: deterministic for a given seed (one `random.Random`, timestamps from a simulated
sequencer clock); every order is a protocol command applied by `Exchange.apply`, with
validation and pre-trade risk on; every figure printed is computed from the events the
exchange emitted (trades, auction results, day records), never from the simulation's intent.

The day: opening call and uncross for every instrument; continuous trading (market makers
quoting around a drifting value, brokers near the touch, compliance entities taking size);
a halt of one instrument with a re-opening call; a one-way auction of a CEA vintage; a block
trade; closing calls; the close and the end-of-day records.

The members' behaviour is `Flow`, apart from how its orders travel: `DemoDay` applies them
to an in-process exchange (`cxe demo --in-process`), engine.demo_gateway sends them over
ZeroMQ from a broker gateway process (`cxe demo`, engine.demo_live). The value the members
trade around is `FairValues`: a seeded walk per instrument and step, the same in every
process that plays part of the day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from engine.clearing.capture import TradeLogWriter
from engine.config import MarketConfig
from engine.core import Exchange
from engine.journal import CommandLog
from engine.protocol import (
    Accepted,
    AuctionBid,
    AuctionResult,
    BlockTrade,
    CancelOrder,
    Close,
    CloseCall,
    DayClosed,
    EndOfDay,
    Halt,
    NewOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    OpenCall,
    Rejected,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.types import Side, TimeInForce, format_price

DATE = "2026-11-24"


def day_start_ns(date: str) -> int:
    """09:00 Asia/Shanghai (01:00 UTC) on `date`, in ns since the epoch."""
    midnight = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    return (int(midnight.timestamp()) + 3600) * 1_000_000_000


def auction_lines(events: list, code: str, label: str) -> list[str]:
    """A day log's lines for an auction of `code` among `events`: one per price it traded at
    (a second one only when self-trade prevention left the book crossed and the rest was
    uncrossed again; the real-process demo left it out, and its lines disagreed with its own
    phase table)."""
    results = [e for e in events if isinstance(e, AuctionResult) and e.instrument == code]
    lines = []
    for n, result in enumerate(results):
        price = format_price(result.price) if result.volume else "-"
        name = label if n == 0 else "  then the rest (STP)"
        lines.append(f"  {name:<22} {code:<6} price {price:>7} CNY   volume {result.volume:>9,} t")
    return lines


@dataclass
class Figures:
    """What the events of one phase of one instrument add up to."""

    orders: int = 0
    trades: int = 0
    volume: int = 0
    value: int = 0
    high: int | None = None
    low: int | None = None

    def add(self, trade: Trade) -> None:
        self.trades += 1
        self.volume += trade.qty
        self.value += trade.qty * trade.price
        self.high = trade.price if self.high is None else max(self.high, trade.price)
        self.low = trade.price if self.low is None else min(self.low, trade.price)

    @property
    def vwap(self) -> int | None:
        return None if not self.volume else (2 * self.value + self.volume) // (2 * self.volume)


class FairValues:
    """The value each instrument trades around at each continuous step: a seeded walk (a tick
    up or down with probability 0.05 a step), the same for every process given the seed."""

    def __init__(self, market: MarketConfig, seed: int) -> None:
        self.market = market
        self.seed = seed
        self.walks: dict[str, list[int]] = {}
        self.rngs: dict[str, random.Random] = {}

    def at(self, code: str, step: int) -> int:
        walk = self.walks.get(code)
        if walk is None:
            walk = self.walks[code] = [self.market.instrument(code).reference_price]
            self.rngs[code] = random.Random(f"{self.seed}:{code}")
        rng, tick = self.rngs[code], self.market.instrument(code).tick
        while len(walk) <= step:
            walk.append(walk[-1] + (rng.choice((-1, 1)) * tick if rng.random() < 0.05 else 0))
        return walk[step]


class Flow:
    """Simulated members' orders (market makers, brokers, compliance entities) of `members`
    (all of the market's by default), drawn from one `random.Random` (of the seed, and of
    `stream` when several flows play parts of one day). Subclasses carry the orders: `order`
    returns the order id the exchange accepted (None when it refused), `cancel` withdraws
    one, `send_bid` enters a one-way auction bid."""

    def __init__(
        self, market: MarketConfig, seed: int, members: list[int] | None = None, stream: str = ""
    ) -> None:
        self.market = market
        self.rng = random.Random(f"{seed}:{stream}" if stream else seed)
        self.values = FairValues(market, seed)
        self.codes = [i.code for i in market.instruments]
        mine = set(members) if members is not None else {m.id for m in market.members}
        self.makers, self.brokers, self.entities = members_by_kind(market, mine)
        self.quotes: dict[tuple[int, str], list[int]] = {}
        self.resting: dict[str, list[tuple[int, int]]] = {c: [] for c in self.codes}

    def order(self, member: int, code: str, side: int, price: int, qty: int, phase: str,
              tif: int = TimeInForce.DAY) -> int | None:  # fmt: skip
        raise NotImplementedError

    def cancel(self, member: int, code: str, order_id: int, phase: str) -> None:
        raise NotImplementedError

    def send_bid(self, member: int, code: str, price: int, qty: int) -> None:
        raise NotImplementedError

    def call_orders(self, code: str, count: int, step: int = 0) -> None:
        members = self.brokers + self.entities + self.makers
        for _ in range(count if members else 0):
            member = self.rng.choice(members)
            side = self.rng.choice((Side.BUY, Side.SELL))
            sign = 1 if side == Side.BUY else -1
            price = self.values.at(code, step) + sign * self.rng.randint(-15, 5)
            self.order(member, code, side, price, self.rng.randint(1, 40) * 10, "call")

    def continuous_step(self, code: str, step: int) -> None:
        """One step of one instrument: a maker requotes (35%), a broker joins near the touch
        (45%) or a compliance entity takes size (20%): the share of a kind this flow has no
        member of passes."""
        roll = self.rng.random()
        fair = self.values.at(code, step)
        if roll < 0.35:
            if self.makers:
                self.requote(code, fair)
        elif roll < 0.80:
            if self.brokers:
                self.broker_order(code, fair)
        elif self.entities:
            self.entity_order(code, fair)

    def requote(self, code: str, fair: int) -> None:
        rng = self.rng
        maker = rng.choice(self.makers)
        for order_id in self.quotes.pop((maker, code), []):
            self.cancel(maker, code, order_id, "continuous")
        spread, size = rng.randint(1, 3), rng.randint(1, 20) * 100
        ids = [
            self.order(maker, code, Side.BUY, fair - spread, size, "continuous"),
            self.order(maker, code, Side.SELL, fair + spread, size, "continuous"),
        ]
        self.quotes[(maker, code)] = [i for i in ids if i is not None]

    def broker_order(self, code: str, fair: int) -> None:
        rng = self.rng
        broker = rng.choice(self.brokers)
        side = rng.choice((Side.BUY, Side.SELL))
        sign = 1 if side == Side.BUY else -1
        price = fair + sign * rng.randint(-6, 1)
        order_id = self.order(broker, code, side, price, rng.randint(1, 50) * 10, "continuous")
        if order_id is not None:
            self.resting[code].append((broker, order_id))
        if len(self.resting[code]) > 150:
            member, stale = self.resting[code].pop(rng.randrange(len(self.resting[code])))
            self.cancel(member, code, stale, "continuous")

    def entity_order(self, code: str, fair: int) -> None:
        rng = self.rng
        entity = rng.choice(self.entities)
        side = Side.BUY if rng.random() < 0.7 else Side.SELL
        sign = 1 if side == Side.BUY else -1
        tif = TimeInForce.IOC if rng.random() < 0.5 else TimeInForce.DAY
        qty = rng.randint(1, 30) * 100
        self.order(entity, code, side, fair + sign * 4, qty, "continuous", tif)

    def auction_bids(self, code: str, reference: int, seller: int, count: int) -> None:
        """`count` bids for a one-way auction of `code` (floor `reference`) by this flow's
        members other than the seller."""
        bidders = [m for m in self.brokers + self.makers + self.entities if m != seller]
        tick = self.market.instrument(code).tick
        for i in range(count if bidders else 0):
            price = reference + self.rng.randint(0, 40) * tick
            self.send_bid(bidders[i % len(bidders)], code, price, self.rng.randint(5, 40) * 1_000)


def members_by_kind(
    market: MarketConfig, members: set[int] | None = None
) -> tuple[list[int], list[int], list[int]]:
    """The market makers, brokers and compliance entities of the market (among `members`)."""
    kinds = {m.id: m.kind for m in market.members if members is None or m.id in members}
    return tuple(  # type: ignore[return-value]
        [m for m, k in kinds.items() if k == kind]
        for kind in ("market_maker", "broker", "compliance_entity")
    )


def check_demo_market(market: MarketConfig) -> None:
    """ValueError unless the market has the members a demo day needs."""
    makers, brokers, entities = members_by_kind(market)
    if not (makers and brokers and len(entities) >= 2):
        raise ValueError(
            "a demo day needs at least one market_maker, one broker and two "
            f"compliance_entity members; this market has {len(makers)}, "
            f"{len(brokers)} and {len(entities)}"
        )


def one_way_offer(market: MarketConfig) -> OneWayAuctionOpen | None:
    """The day's one-way auction: the first compliance entity offers 200,000 t of the first
    CEA vintage, uniform price, floor = previous close (None: the market lists no CEA)."""
    code = next((i.code for i in market.instruments if i.product == "CEA"), None)
    if code is None:
        return None
    seller = members_by_kind(market)[2][0]
    return OneWayAuctionOpen(code, seller, 200_000, uniform=True)


def block_trade_of(market: MarketConfig, reference: int) -> BlockTrade:
    """The day's block trade: the second compliance entity buys 150,000 t of the first
    instrument from the first market maker at 1.20 CNY over `reference`, its previous close."""
    makers, _, entities = members_by_kind(market)
    code = market.instruments[0].code
    return BlockTrade("block-1", code, entities[1], makers[0], reference + 120, 150_000)


class DemoDay(Flow):
    """The day through an in-process exchange, one command at a time."""

    def __init__(self, market: MarketConfig, seed: int, steps: int, date: str = DATE) -> None:
        check_demo_market(market)
        super().__init__(market, seed)
        self.seed, self.steps, self.date = seed, steps, date
        self.exchange = Exchange(market)
        self.log: list[str] = []
        self.command_log: CommandLog | None = None
        self.trade_log: TradeLogWriter | None = None
        self.clock = day_start_ns(date)
        self.n = 0
        self.figures: dict[str, Figures] = {}
        self.rejects_by_code: dict[str, int] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def send(self, command, phase: str = "") -> list:
        self.clock += 50_000_000  # the sequencer's clock: 50 ms per command
        seq = self.exchange.seq + 1  # the sequencer's number: the core checks it follows
        if self.command_log is not None:
            self.command_log.append(seq, self.clock, command)
        events = self.exchange.apply_stamped(seq, self.clock, command)
        if self.trade_log is not None:
            self.trade_log.record(events)
        for event in events:
            if isinstance(event, Trade) and phase:
                self.figures.setdefault(f"{phase}:{event.instrument}", Figures()).add(event)
            elif isinstance(event, Rejected):
                self.rejects_by_code[event.code.name] = (
                    self.rejects_by_code.get(event.code.name, 0) + 1
                )
        return events

    def order(self, member: int, code: str, side: int, price: int, qty: int, phase: str,
              tif: int = TimeInForce.DAY) -> int | None:  # fmt: skip
        self.n += 1
        price = clamp_price(self.market, code, price, self.exchange.markets[code].band)
        events = self.send(NewOrder(f"d{self.n}", member, code, side, price, qty, tif=tif), phase)
        self.figures.setdefault(f"{phase}:{code}", Figures()).orders += 1
        accepted = [e for e in events if isinstance(e, Accepted)]
        return accepted[0].order_id if accepted else None

    def cancel(self, member: int, code: str, order_id: int, phase: str) -> None:
        if self.exchange.markets[code].book.order(order_id) is not None:
            self.n += 1
            self.send(CancelOrder(f"d{self.n}", member, code, order_id), phase)

    def send_bid(self, member: int, code: str, price: int, qty: int) -> None:
        self.n += 1
        self.send(AuctionBid(f"d{self.n}", member, code, price, qty), "one_way")

    # -- the day --------------------------------------------------------------------------------

    def auction_line(self, events: list, code: str, label: str) -> None:
        self.log += auction_lines(events, code, label)

    def run(self) -> None:
        x = self.send
        x(StartOfDay(self.date))
        self.log.append(f"Trading day {self.date}: opening calls")
        for code in self.codes:
            x(OpenCall(code))
            self.call_orders(code, 60)
            self.auction_line(x(Uncross(code), "call"), code, "opening auction")
        self.log.append("Continuous trading")
        halt_code = self.codes[-2] if len(self.codes) > 1 else self.codes[0]
        for step in range(self.steps):
            for code in self.codes:
                self.continuous_step(code, step)
            if step == self.steps // 2:
                x(Halt(halt_code))
                self.log.append(
                    f"  halt                   {halt_code} (cancels only), then a re-opening call"
                )
                x(OpenCall(halt_code))
                self.call_orders(halt_code, 30, step)
                self.auction_line(x(Uncross(halt_code), "call"), halt_code, "re-opening auction")
        self.end_of_continuous = {c: self.exchange.markets[c].book.depth(5) for c in self.codes}
        self.one_way_auction()
        self.block_trade()
        self.log.append("Closing calls and the close")
        for code in self.codes:
            x(CloseCall(code))
            self.call_orders(code, 20, self.steps)
            self.auction_line(x(Close(code), "call"), code, "closing auction")
        self.day_records = [e for e in x(EndOfDay()) if isinstance(e, DayClosed)]

    def one_way_auction(self) -> None:
        offer = one_way_offer(self.market)
        if offer is None:
            self.log.append("One-way auction (单向竞价): none, the market lists no CEA vintage")
            return
        self.log.append(one_way_line(offer))
        self.send(offer)
        reference = self.exchange.markets[offer.instrument].reference
        self.auction_bids(offer.instrument, reference, offer.seller, 12)
        events = self.send(OneWayAuctionClose(offer.instrument), "one_way")
        self.auction_line(events, offer.instrument, "one-way auction")

    def block_trade(self) -> None:
        trade = block_trade_of(self.market, self.exchange.markets[self.codes[0]].reference)
        if any(isinstance(e, Trade) for e in self.send(trade, "block")):
            self.log.append(block_trade_line(trade))


def clamp_price(market: MarketConfig, code: str, price: int, band: tuple[int, int]) -> int:
    """`price` down to the instrument's tick and into the price band."""
    tick = market.instrument(code).tick
    return min(max(price // tick * tick, band[0]), band[1])


def one_way_line(offer: OneWayAuctionOpen) -> str:
    return (
        f"One-way auction (单向竞价): member {offer.seller} offers {offer.qty:,} t of "
        f"{offer.instrument}, uniform price, floor = previous close"
    )


def block_trade_line(trade: BlockTrade) -> str:
    return (
        f"Block trade (大宗协议): {trade.instrument} {trade.qty:,} t at "
        f"{format_price(trade.price)} CNY, member {trade.buyer} buys from member {trade.seller}"
    )


def render(day: DemoDay) -> str:
    lines = [
        f"{day.market.name}: a simulated trading day (seed {day.seed}, "
        f"{day.steps:,} continuous steps per instrument)",
        "prices in CNY per tonne, quantities in tonnes",
        "",
        *day.log,
        "",
    ]
    lines.append(
        f"{'instrument':<10} {'orders':>7} {'trades':>7} {'volume t':>11} {'VWAP':>7} "
        f"{'high':>7} {'low':>7} {'bid':>7} {'offer':>7}   (continuous trading; bid and offer "
        "at its end)"
    )
    for code in day.codes:
        f = day.figures.get(f"continuous:{code}", Figures())
        bids, asks = day.end_of_continuous[code]
        cny = [
            format_price(v) if v is not None else "-"
            for v in (
                f.vwap,
                f.high,
                f.low,
                bids[0][0] if bids else None,
                asks[0][0] if asks else None,
            )
        ]
        lines.append(
            f"{code:<10} {f.orders:>7,} {f.trades:>7,} {f.volume:>11,} {cny[0]:>7} {cny[1]:>7} "
            f"{cny[2]:>7} {cny[3]:>7} {cny[4]:>7}"
        )
    shown = day.codes[-1]
    bids, asks = day.end_of_continuous[shown]
    lines += [
        "",
        f"{shown}: top five levels at the end of continuous trading",
        f"  {'orders':>6} {'bid qty':>9} {'bid':>8} | {'offer':<8} {'offer qty':<9} {'orders':<6}",
    ]
    for level in range(5):
        bid = bids[level] if level < len(bids) else None
        ask = asks[level] if level < len(asks) else None
        left = f"{bid[2]:>6} {bid[1]:>9,} {format_price(bid[0]):>8}" if bid else " " * 25
        right = f"{format_price(ask[0]):<8} {ask[1]:<9,} {ask[2]:<6}" if ask else ""
        lines.append(f"  {left} | {right}".rstrip())
    lines += [
        "",
        f"{'instrument':<10} {'trades':>7} {'volume t':>11} {'open':>7} {'high':>7} "
        f"{'low':>7} {'close':>7}   (day records: prices of listed trades, close = VWAP; "
        "volume of all trades)",
    ]
    for record in day.day_records:
        prices = (record.open, record.high, record.low, record.close)
        lines.append(
            f"{record.instrument:<10} {record.trades:>7,} {record.volume:>11,} "
            + " ".join(f"{format_price(price):>7}" for price in prices)
            + f"   checksum {record.checksum[:12]}"
        )
    accounts = day.exchange.accounts
    rejects = ", ".join(f"{n:,} {code}" for code, n in sorted(day.rejects_by_code.items()))
    lines += [
        "",
        f"fees collected: {format_price(accounts.fees, grouped=True)} CNY; "
        f"rejected commands: {rejects or 'none'}",
    ]
    return "\n".join(lines)


def demo_date(market: MarketConfig, date: str | None) -> str:
    """The day to simulate: `date`, or the trading day after the day the market's balances
    follow (a clearing opening file), or DATE (the next trading day from it if the market is
    shut then). Refuses a day the exchange would refuse."""
    last = market.last_trading_day
    if date is None:
        if last:
            return market.next_trading_day(last)
        return DATE if market.closed_because(DATE) is None else market.next_trading_day(DATE)
    closed = market.closed_because(date)
    if closed:
        try:
            way_on = f"the next one is {market.next_trading_day(date)}"
        except ValueError:  # past the calendar's range: none is known
            way_on = "give a trading day within the market's calendar_range"
        raise ValueError(f"{date} is not a trading day of this market: it is {closed}; {way_on}")
    if date <= last:
        raise ValueError(
            f"trading day {date} must come after {last}, the day this market's opening "
            "balances follow (leave the date out to take the next trading day)"
        )
    return date


def run_demo(
    market: MarketConfig,
    seed: int = 7,
    steps: int = 3_000,
    out: str | None = None,
    date: str | None = None,
) -> DemoDay:
    """Run the day (`demo_date` picks it); with `out`, write its command log and trade log
    there."""
    if steps < 1:  # the halt and its re-opening call come halfway through the steps
        raise ValueError(f"a demo day needs at least 1 continuous step, got {steps}")
    day = DemoDay(market, seed, steps, demo_date(market, date))
    if out is None:
        day.run()
        return day
    logs = [Path(out) / "commands.log", Path(out) / "trades.log"]
    for log in logs:
        if log.exists():  # appending a second day 1 would break both logs' sequences
            raise FileExistsError(
                f"{log} exists: a demo day writes fresh logs; remove them or choose another --out"
            )
    Path(out).mkdir(parents=True, exist_ok=True)
    with CommandLog(logs[0]) as commands, TradeLogWriter(logs[1]) as trades:
        day.command_log, day.trade_log = commands, trades
        day.run()
    return day
