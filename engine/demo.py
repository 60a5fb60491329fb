"""`cxe demo`: a seeded, simulated continuous trading session of the embedded market.

Invariants: deterministic for a given seed (one `random.Random`, no clock); every order goes
through the compiled book's per-command API, exactly as the core will send it; the summary's
figures are computed from the book's own events (fills), never from the simulation's intent.

Member types: market makers keep a two-sided quote around a fair value that drifts, replacing
it as the value moves; brokers send small limit orders near the touch and some marketable ones;
compliance entities buy (and sometimes sell) larger blocks with IOC or day orders.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from engine.book import Book, EventKind
from engine.config import MarketConfig, Member
from engine.instruments import Instrument
from engine.types import Side, TimeInForce, format_price


@dataclass
class SessionStats:
    orders: int = 0
    cancels: int = 0
    rejects: int = 0
    trades: int = 0
    volume: int = 0
    turnover: int = 0  # fen
    high: int | None = None
    low: int | None = None
    last: int | None = None
    fills_by_member: dict[int, int] = field(default_factory=dict)

    def record(self, book: Book) -> None:
        for event in book.events():
            if event.kind == EventKind.FILL:
                self.trades += 1
                self.volume += event.qty
                self.turnover += event.qty * event.price
                self.high = event.price if self.high is None else max(self.high, event.price)
                self.low = event.price if self.low is None else min(self.low, event.price)
                self.last = event.price
                for member in (event.owner, event.owner2):
                    self.fills_by_member[member] = self.fills_by_member.get(member, 0) + event.qty
            elif event.kind == EventKind.REJECTED:
                self.rejects += 1

    @property
    def vwap(self) -> int | None:
        """Volume-weighted average price, rounded half up to the fen."""
        return None if not self.volume else (2 * self.turnover + self.volume) // (2 * self.volume)


class SimulatedSession:
    """One instrument's book driven by the simulated members."""

    def __init__(self, instrument: Instrument, members: list[Member], rng: random.Random):
        self.instrument = instrument
        self.band = instrument.band()
        self.book = Book(tick=instrument.tick, band=self.band)
        self.rng = rng
        self.makers = [m.id for m in members if m.kind == "market_maker"]
        self.brokers = [m.id for m in members if m.kind == "broker"]
        self.entities = [m.id for m in members if m.kind == "compliance_entity"]
        self.fair = instrument.reference_price
        self.next_id = 1
        self.quotes: dict[int, list[int]] = {m: [] for m in self.makers}
        self.resting: list[int] = []
        self.stats = SessionStats()

    def _price(self, ticks_from_fair: int) -> int:
        tick = self.instrument.tick
        price = self.fair + ticks_from_fair * tick
        return min(max(price, self.band[0]), self.band[1])

    def _add(self, owner: int, side: int, price: int, qty: int, tif: int = TimeInForce.DAY):
        oid, self.next_id = self.next_id, self.next_id + 1
        self.book.add(oid, owner, side, price, qty, 1, int(tif))
        self.stats.orders += 1
        self.stats.record(self.book)
        return oid

    def _cancel(self, oid: int) -> None:
        order = self.book.order(oid)
        if order is not None:
            self.book.cancel(oid, order[3])
            self.stats.cancels += 1
            self.stats.record(self.book)

    def step(self) -> None:
        rng = self.rng
        if rng.random() < 0.05:
            self.fair = self._price(rng.choice((-1, 1)))
        roll = rng.random()
        if roll < 0.35:
            maker = rng.choice(self.makers)
            for oid in self.quotes[maker]:
                self._cancel(oid)
            half_spread = rng.randint(1, 3)
            size = rng.randint(1, 20) * 100
            self.quotes[maker] = [
                self._add(maker, Side.BUY, self._price(-half_spread), size),
                self._add(maker, Side.SELL, self._price(half_spread), size),
            ]
        elif roll < 0.80:
            broker = rng.choice(self.brokers)
            side = rng.choice((Side.BUY, Side.SELL))
            sign = 1 if side == Side.BUY else -1
            offset = rng.randint(-6, 1)  # mostly passive, sometimes through the touch
            oid = self._add(broker, side, self._price(sign * offset), rng.randint(1, 50) * 10)
            self.resting.append(oid)
            if len(self.resting) > 200:
                self._cancel(self.resting.pop(rng.randrange(len(self.resting))))
        else:
            entity = rng.choice(self.entities)
            side = Side.BUY if rng.random() < 0.7 else Side.SELL
            sign = 1 if side == Side.BUY else -1
            tif = TimeInForce.IOC if rng.random() < 0.5 else TimeInForce.DAY
            self._add(entity, side, self._price(sign * 4), rng.randint(1, 30) * 100, tif)


def run_demo(market: MarketConfig, seed: int = 7, steps: int = 20_000) -> list[SimulatedSession]:
    sessions = []
    for index, instrument in enumerate(market.instruments):
        session = SimulatedSession(instrument, market.members, random.Random(seed * 1000 + index))
        for _ in range(steps):
            session.step()
        sessions.append(session)
    return sessions


def _cny(fen: int | None) -> str:
    return "-" if fen is None else format_price(fen)


def render(market: MarketConfig, sessions: list[SimulatedSession], seed: int, steps: int) -> str:
    lines = [
        f"{market.name}: simulated continuous session, seed {seed}, {steps:,} steps per instrument",
        "prices in CNY per tonne, quantities in tonnes",
        "",
    ]
    for s in sessions:
        st, inst = s.stats, s.instrument
        bids, asks = s.book.depth(5)
        low, high = s.band
        turnover = format_price(st.turnover, grouped=True)
        lines += [
            f"{inst.code:<6} {inst.name}",
            f"  reference {_cny(inst.reference_price)}   band {_cny(low)} - {_cny(high)}",
            f"  orders {st.orders:,}   cancels {st.cancels:,}   rejects {st.rejects:,}   "
            f"trades {st.trades:,}   volume {st.volume:,} t   turnover {turnover} CNY",
            f"  VWAP {_cny(st.vwap)}   high {_cny(st.high)}   low {_cny(st.low)}   "
            f"last {_cny(st.last)}",
            f"  best bid {_cny(bids[0][0]) if bids else '-'}   "
            f"best offer {_cny(asks[0][0]) if asks else '-'}",
            f"  {'orders':>6} {'bid qty':>9} {'bid':>8} | {'ask':<8} {'ask qty':<9} {'orders':<6}",
        ]
        for level in range(5):
            bid = bids[level] if level < len(bids) else None
            ask = asks[level] if level < len(asks) else None
            left = f"{bid[2]:>6} {bid[1]:>9,} {_cny(bid[0]):>8}" if bid else " " * 25
            right = f"{_cny(ask[0]):<8} {ask[1]:<9,} {ask[2]:<6}" if ask else ""
            lines.append(f"  {left} | {right}".rstrip())
        lines.append("")
    total_volume = sum(s.stats.volume for s in sessions)
    total_trades = sum(s.stats.trades for s in sessions)
    lines.append(f"all instruments: {total_trades:,} trades, {total_volume:,} t")
    return "\n".join(lines)
