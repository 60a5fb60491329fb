"""The call-auction price: `equilibrium` against MARKET.md's rules applied tick by tick.

`by_every_tick` is the rule text as code: every price on tick between the best ask and the
best bid is a candidate; keep those of maximum executable volume, then minimum unmatched
volume; with a buy surplus throughout take the highest, with a sell surplus throughout the
lowest, else the one nearest the reference (the higher of two equally near). `equilibrium`
must choose the same price and report the same volumes on any book, whatever the band's
width. It used to be that loop itself: with a bid at the top of a 10% band and an ask at its
bottom, at 62 CNY a call-phase order cost 1.7 ms (the indicative is recomputed on every
change), and 30 ms at 1,000 CNY.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.book.auction import Equilibrium, equilibrium


def by_every_tick(bids, asks, reference: int, tick: int) -> Equilibrium:
    if not bids or not asks or bids[0][0] < asks[0][0]:
        return Equilibrium(None, 0, 0, 0)
    candidates = []
    for price in range(asks[0][0], bids[0][0] + 1, tick):
        buy = sum(q for p, q, _ in bids if p >= price)
        sell = sum(q for p, q, _ in asks if p <= price)
        candidates.append(Equilibrium(price, min(buy, sell), buy, sell))
    volume = max(c.volume for c in candidates)
    candidates = [c for c in candidates if c.volume == volume]
    least = min(abs(c.imbalance) for c in candidates)
    candidates = [c for c in candidates if abs(c.imbalance) == least]
    if all(c.imbalance > 0 for c in candidates):
        return candidates[-1]
    if all(c.imbalance < 0 for c in candidates):
        return candidates[0]
    return min(candidates, key=lambda c: (abs(c.price - reference), -c.price))


@st.composite
def crossed_books(draw):
    """Depth lists as books give them (best first, one entry per price), prices on tick in a
    range of up to 60 ticks, often crossed, sometimes with a level at each end; a reference
    inside, at or beyond the range, occasionally off tick."""
    tick = draw(st.sampled_from([1, 5, 100]))
    span = draw(st.integers(0, 60))

    def levels(descending: bool):
        ticks = draw(st.lists(st.integers(0, span), max_size=12, unique=True))
        qtys = st.integers(1, 50)
        rows = [(t * tick + 1_000 * tick, draw(qtys), 1) for t in ticks]
        return sorted(rows, reverse=descending)

    bids, asks = levels(True), levels(False)
    reference = draw(st.integers(-10, span + 10)) * tick + 1_000 * tick
    reference += draw(st.sampled_from([0, 0, 0, tick // 2]))
    return bids, asks, reference, tick


@settings(max_examples=600, deadline=None)
@given(crossed_books())
def test_the_auction_price_is_the_rules_applied_at_every_tick(book):
    assert equilibrium(*book) == by_every_tick(*book)


def test_the_widest_cross_a_book_holds_is_priced_from_its_levels():
    """A bid at the top and an ask at the bottom of a four-million-tick range (the most a book
    holds), two levels between: 15 t execute from 19,999.99 to 20,000.01 with 2 t of sells
    left over, so market pressure takes the lowest of them. (bench `call_phase` measures what
    the levels-only search saves.)"""
    bids = [(4_000_000, 10, 1), (2_000_001, 5, 1)]
    asks = [(1, 10, 1), (1_999_999, 7, 1)]
    assert equilibrium(bids, asks, 2_000_000, 1) == Equilibrium(1_999_999, 15, 15, 17)
