"""Auction price formation: the call-auction uncrossing price and the one-way auction allocation.

Pure functions over depth levels and bid lists, shared by the compiled and the reference book
(the books then execute the chosen price with `uncross(price)`).

Uncrossing price (MARKET.md): among the prices on tick between the best ask and the best bid,
(1) maximise the executable volume min(B(p), S(p)), where B(p) is the bid quantity at p or
higher and S(p) the ask quantity at p or lower; (2) minimise the unmatched volume |B - S|;
(3) market pressure: if every remaining candidate has a buy surplus take the highest, if every
one has a sell surplus the lowest; (4) otherwise the candidate nearest the reference price
(previous close), the higher one when two are equally near.
Complexity O(levels + ticks in the crossed range).

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


def equilibrium(bids: list[Level], asks: list[Level], reference: int, tick: int) -> Equilibrium:
    if not bids or not asks or bids[0][0] < asks[0][0]:
        return NO_CROSS
    low, high = asks[0][0], bids[0][0]
    bid_prices = [p for p, _, _ in bids if p >= low]  # highest first
    bid_cum = list(accumulate(q for p, q, _ in bids if p >= low))
    ask_prices = [p for p, _, _ in asks if p <= high]  # lowest first
    ask_cum = list(accumulate(q for p, q, _ in asks if p <= high))
    candidates = []
    b = len(bid_prices) - 1  # index of the lowest bid price >= p
    a = 0  # index of the highest ask price <= p
    for price in range(low, high + 1, tick):
        while b >= 0 and bid_prices[b] < price:
            b -= 1
        while a + 1 < len(ask_prices) and ask_prices[a + 1] <= price:
            a += 1
        buy, sell = bid_cum[b], ask_cum[a]
        candidates.append(Equilibrium(price, min(buy, sell), buy, sell))
    best_volume = max(c.volume for c in candidates)
    candidates = [c for c in candidates if c.volume == best_volume]
    least = min(abs(c.imbalance) for c in candidates)
    candidates = [c for c in candidates if abs(c.imbalance) == least]
    if all(c.imbalance > 0 for c in candidates):
        return candidates[-1]
    if all(c.imbalance < 0 for c in candidates):
        return candidates[0]
    return min(candidates, key=lambda c: (abs(c.price - reference), -c.price))


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
        bids, asks = book.depth(1 << 30)
        found = equilibrium(bids, asks, reference, book.tick)
        if found.price is None:
            break
        book.uncross(found.price)
        executed = book.events()
        rounds.append(UncrossRound(found, sum(e.qty for e in executed if e.kind == FILL)))
        events += executed
    book.set_collecting(False)
    return events, rounds
