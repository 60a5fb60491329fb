"""Auction price formation: the call-auction uncrossing price and the one-way auction allocation.

Pure functions over depth levels and bid lists. `equilibrium` is the specification of the
call price: the reference book prices its call with it, the compiled book with the same rules
over its ladder (engine.book.callprice, held to this by tests); `run_uncross` asks either book
for its price, then has it execute there with `uncross(price)`.

Uncrossing price (docs/MARKET.md): among the prices on tick between the best ask and the best bid,
(1) maximise the executable volume min(B(p), S(p)), where B(p) is the bid quantity at p or
higher and S(p) the ask quantity at p or lower; (2) minimise the unmatched volume |B - S|;
(3) market pressure: if every remaining candidate has a buy surplus take the highest, if every
one has a sell surplus the lowest; (4) otherwise the candidate nearest the reference price
(previous close), the higher one when two are equally near.
Both quantities change only at level prices, so the search runs over the runs of prices
between them: O(levels in the crossed range), however many ticks it spans.

One-way auction (单向竞价): valid bids are ranked by price (highest first) then entry order;
they fill up to the offered quantity (the last winner partially); uniform pricing charges every
winner the lowest winning bid price, pay-as-bid charges each its own price.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from engine.book.events import EventKind

FILL = EventKind.FILL

Level = tuple[int, int, int]  # price, qty, orders (best first)


@dataclass(frozen=True)
class Equilibrium:
    """The uncrossing price (None when the book does not cross) and what it would execute."""

    price: int | None
    volume: int
    buy_qty: int  # bid quantity at the price or better
    sell_qty: int  # ask quantity at the price or better

    @property
    def imbalance(self) -> int:
        """Buy surplus (> 0) or sell surplus (< 0) left unmatched at the price."""
        return self.buy_qty - self.sell_qty


NO_CROSS = Equilibrium(None, 0, 0, 0)


class Run(NamedTuple):
    """Consecutive prices on tick, first..last, with the same bid quantity at or above them
    and the same ask quantity at or below them."""

    first: int
    last: int
    buy_qty: int
    sell_qty: int
    volume: int  # executable: min(buy_qty, sell_qty)
    imbalance: int  # buy_qty - sell_qty

    def at(self, price: int) -> Equilibrium:
        return Equilibrium(price, self.volume, self.buy_qty, self.sell_qty)

    def nearest(self, reference: int, tick: int) -> int:
        """The price of the run nearest `reference`, the higher of two equally near."""
        if reference <= self.first:
            return self.first
        if reference >= self.last:
            return self.last
        below = self.first + (reference - self.first) // tick * tick
        above = below + tick if below < reference else below
        return above if above - reference <= reference - below else below


def equilibrium(bids: list[Level], asks: list[Level], reference: int, tick: int) -> Equilibrium:
    if not bids or not asks or bids[0][0] < asks[0][0]:
        return NO_CROSS
    runs = crossed_runs(bids, asks, tick)
    best_volume = max(r.volume for r in runs)
    runs = [r for r in runs if r.volume == best_volume]
    least = min(abs(r.imbalance) for r in runs)
    runs = [r for r in runs if abs(r.imbalance) == least]
    if all(r.imbalance > 0 for r in runs):
        return runs[-1].at(runs[-1].last)
    if all(r.imbalance < 0 for r in runs):
        return runs[0].at(runs[0].first)
    nearest = [(r.nearest(reference, tick), r) for r in runs]
    price, run = min(nearest, key=lambda pair: (abs(pair[0] - reference), -pair[0]))
    return run.at(price)


def crossed_runs(bids: list[Level], asks: list[Level], tick: int) -> list[Run]:
    """The crossed range [best ask, best bid] cut into runs, lowest first. The ask quantity
    at or below p grows at each ask price; the bid quantity at or above p falls one tick
    above each bid price; between those points neither changes, so a run starts at each."""
    low, high = asks[0][0], bids[0][0]
    bid_prices = [p for p, _, _ in bids if p >= low]  # highest first
    bid_cum = list(accumulate(q for p, q, _ in bids if p >= low))
    ask_prices = [p for p, _, _ in asks if p <= high]  # lowest first
    ask_cum = list(accumulate(q for p, q, _ in asks if p <= high))
    starts = sorted({*ask_prices, *(p + tick for p in bid_prices if p < high)})
    runs = []
    b = len(bid_prices) - 1  # index of the lowest bid price >= p
    a = 0  # index of the highest ask price <= p
    for i, price in enumerate(starts):
        while b >= 0 and bid_prices[b] < price:
            b -= 1
        while a + 1 < len(ask_prices) and ask_prices[a + 1] <= price:
            a += 1
        last = starts[i + 1] - tick if i + 1 < len(starts) else high
        buy, sell = bid_cum[b], ask_cum[a]
        runs.append(Run(price, last, buy, sell, min(buy, sell), buy - sell))
    return runs


@dataclass(frozen=True)
class AuctionBid:
    order_id: int
    member: int
    price: int
    qty: int
    entry: int  # arrival order (time priority)


@dataclass(frozen=True)
class Allocation:
    order_id: int
    member: int
    price: int  # what the winner pays per tonne
    qty: int


def allocate_one_way(offered: int, bids: list[AuctionBid], uniform: bool) -> list[Allocation]:
    """Winning bids and their fills, best bid first; an empty list when nothing is bid."""
    ranked = sorted(bids, key=lambda bid: (-bid.price, bid.entry))
    winners: list[tuple[AuctionBid, int]] = []
    left = offered
    for bid in ranked:
        if left == 0:
            break
        take = min(bid.qty, left)
        winners.append((bid, take))
        left -= take
    if not winners:
        return []
    clearing = winners[-1][0].price
    return [
        Allocation(bid.order_id, bid.member, clearing if uniform else bid.price, take)
        for bid, take in winners
    ]


class UncrossRound(NamedTuple):
    """One execution of an uncross: the price found for the book as it stood, and the
    tonnes that traded there (fewer than its volume when self-trade prevention cancelled
    orders on the way)."""

    equilibrium: Equilibrium
    executed: int


def run_uncross(book, reference: int) -> tuple[list, list[UncrossRound]]:
    """Uncross a book in its call phase and leave it ready for continuous trading.

    Executes at the equilibrium price; if self-trade prevention removed orders during the
    execution and the rest still crosses, that rest is uncrossed again at its own equilibrium
    (so a book never enters continuous trading crossed). Returns every event and the rounds.
    Works on either book (compiled or reference)."""
    events, rounds = [], []
    while True:
        found = book.equilibrium(reference)
        if found.price is None:
            break
        book.uncross(found.price)
        executed = book.events()
        rounds.append(UncrossRound(found, sum(e.qty for e in executed if e.kind == FILL)))
        events += executed
    book.set_collecting(False)
    return events, rounds
