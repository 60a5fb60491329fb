"""The compiled book against the reference book with prices over the whole price range.

The dense window covers the prices around the touch; every other level lives in the far store
(engine/book/far.py) and the window re-centres as the market moves. Nothing of that may show:
the state machine below spreads prices over 1..2**62, lets the market jump and drift far, and
requires the reference book's events, depth and orders after every step, plus
check_integrity() (which walks the far trees). The targeted tests drive each hand-over between
window and far store: re-centring, a sweep across the window's edge, cancels and amends of far
orders, a call auction over far orders, and the memory of the issue's $1 bid and $4 M ask.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from engine.book import Book, ReferenceBook
from engine.book.auction import run_uncross
from engine.book.book import apply_row
from engine.book.integrity import check_integrity
from engine.book.layout import (
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
    COMMAND_ROWS,
    M_BASE,
    M_FAR_LEVELS,
    M_LEN,
    M_WIN_END,
    MAX_PRICE,
)
from engine.book.state import MIN_LADDER
from tests.book.test_book_property import BooksAgree

HALF = MIN_LADDER // 2  # ticks from a fresh window's centre to its edge


class WideBooksAgree(BooksAgree):
    """BooksAgree's rules over prices anywhere in 1..MAX_PRICE, around a market that moves."""

    @initialize(tick=st.sampled_from([1, 7]), banded=st.booleans())
    def setup(self, tick: int, banded: bool) -> None:
        # a band wider than any window: the window still follows the touch inside it
        band = (tick, MAX_PRICE // tick * tick) if banded else None
        self.tick = tick
        self.compiled = Book(tick=tick, band=band, capacity=16)
        self.reference = ReferenceBook(tick=tick, band=band)
        self.next_id = 1
        self.mid = 1_000_000

    def _prices(self, side: int = 0):
        """Near the moving mid (mostly passive), around where its window's edges fall, anywhere
        in the range, passive beyond the window; a few invalid ones."""
        t, mid, sign = self.tick, self.mid, -1 if side == 0 else 1
        near = st.integers(-2, 9).map(lambda k: (mid + sign * k) * t)
        edge = st.integers(HALF - 260, HALF + 260).map(lambda k: (mid + sign * k) * t)
        anywhere = st.integers(1, MAX_PRICE // t).map(lambda k: k * t)
        if side == 0:  # passive and beyond the window: what piles up in the far store
            behind = st.integers(1, max(1, mid - HALF)).map(lambda k: k * t)
        else:
            top = MAX_PRICE // t
            behind = st.integers(min(mid + HALF, top), top).map(lambda k: k * t)
        odd = st.sampled_from([0, -t, MAX_PRICE // t * t + t, t, MAX_PRICE // t * t])
        return st.one_of(near, near, edge, anywhere, behind, behind, odd)

    @rule(
        data=st.data(),
        owner=st.integers(0, 3),
        side=st.sampled_from([0, 1]),
        qty=st.integers(1, 30),
    )
    def rest_far(self, data, owner: int, side: int, qty: int) -> None:
        """A valid day order beyond the window on its passive side: the far store fills up."""
        t, top = self.tick, MAX_PRICE // self.tick
        beyond = (1, max(1, self.mid - HALF)) if side == 0 else (min(self.mid + HALF, top), top)
        price = data.draw(st.integers(*beyond)) * t
        oid, self.next_id = self.next_id, self.next_id + 1
        self._both("add", oid, owner, side, price, qty, 1, 0, 0)

    @rule(
        step=st.integers(-3 * HALF, 3 * HALF),
        teleport=st.one_of(st.none(), st.integers(1, MAX_PRICE // 7), st.sampled_from([1, 40])),
    )
    def drift(self, step: int, teleport: int | None) -> None:
        """The market moves: a few ticks, past its window, or anywhere, the range's ends too."""
        mid = self.mid + step if teleport is None else teleport
        self.mid = min(max(mid, 1), MAX_PRICE // self.tick)

    @rule(width=st.one_of(st.none(), st.integers(0, 3 * HALF), st.just(MAX_PRICE)))
    def reband(self, width: int | None) -> None:
        """The band follows the market (the exchange's reference price), narrows, widens or
        goes: one narrower than a window pins the window to it and the levels left outside
        move to the far store, so the arrays are replaced and the book's entry points must
        follow (set_band once left them on the old arrays: the next add crashed)."""
        if width is None:
            self.compiled.clear_band()
            self.reference.clear_band()
            return
        top = MAX_PRICE // self.tick
        low, high = max(1, self.mid - width), min(top, self.mid + width)
        self.compiled.set_band(low * self.tick, high * self.tick)
        self.reference.set_band(low * self.tick, high * self.tick)

    @precondition(lambda self: self.reference.collecting)
    @rule()
    def uncross(self):
        got, got_rounds = run_uncross(self.compiled, self.mid * self.tick)
        want, want_rounds = run_uncross(self.reference, self.mid * self.tick)
        assert got == want and got_rounds == want_rounds


TestWideBooksAgree = WideBooksAgree.TestCase


def both(tick: int = 1) -> tuple[Book, ReferenceBook]:
    return Book(tick=tick), ReferenceBook(tick=tick)


def agree(books: tuple[Book, ReferenceBook], *rows: tuple[int, ...]) -> None:
    """Apply command rows (C_* order) to both books; each must give the same events."""
    compiled, reference = books
    for row in rows:
        padded = tuple(row) + (0,) * (COMMAND_ROWS - len(row))
        assert apply_row(compiled, padded) == apply_row(reference, padded), row
        assert compiled.events() == reference.events(), row
    assert compiled.depth(100_000) == reference.depth(100_000)
    assert compiled.orders() == reference.orders()
    check_integrity(compiled)


def add(oid: int, side: int, price: int, qty: int = 10, owner: int | None = None, tif: int = 0):
    return (CMD_ADD, oid, oid if owner is None else owner, side, price, qty, 1, tif)


def test_the_window_follows_a_market_that_drifts_far_and_back():
    """A market maker re-quotes around a mid that walks up and back down, leaving one bid
    behind at every step: the window moves with the quotes, the bids left behind become far
    levels, and the walk back down trades through them."""
    books = both()
    compiled = books[0]
    oid, quotes = 0, []
    bases, far = set(), 0
    for step in list(range(0, 40)) + list(range(40, -1, -3)):
        mid = 1_000_000 + step * 700
        agree(books, *[(CMD_CANCEL, q, -1) for q in quotes])
        quotes = []
        for k in range(1, 6):
            oid += 2
            quotes += [oid, oid + 1]
            agree(books, add(oid, 0, mid - k, k), add(oid + 1, 1, mid + k, k))
        oid += 2
        agree(books, add(oid, 0, mid + 3, 12, tif=1), add(oid + 1, 0, mid - 20, 1))
        bases.add(int(compiled.state.meta[M_BASE]))
        far = max(far, int(compiled.state.meta[M_FAR_LEVELS]))
    assert len(bases) > 10  # the window moved with the market
    assert int(compiled.state.meta[M_LEN]) <= 4 * MIN_LADDER
    assert far > 30  # the bids left behind became far levels


def test_a_sweep_crosses_the_window_edge_into_the_far_store_and_back():
    books = both(tick=5)
    mid = 5 * 2_000_000
    rows = [add(1, 0, mid, 1)]
    rows += [add(10 + k, 1, mid + 5 * k, k % 7 + 1) for k in range(1, 2 * MIN_LADDER, 3)]
    rows += [add(10_000 + k, 1, mid + 5 * 10**k, 3) for k in range(4, 17)]
    agree(books, *rows)
    assert int(books[0].state.meta[M_FAR_LEVELS + 1]) > 13
    agree(books, add(50_000, 0, MAX_PRICE // 5 * 5, 10_000, owner=9))  # eats every ask
    assert books[0].depth(1)[1] == []
    agree(books, add(50_001, 1, mid + 5, 4_000, owner=8))  # sells into the far bid first


def test_far_orders_cancel_and_amend_like_near_ones():
    books = both()
    mid = 700_000
    far = [1, 2, 3, mid - 10 * MIN_LADDER, mid + 10 * MIN_LADDER, 2**40, MAX_PRICE]
    rows = [add(1, 0, mid - 1), add(2, 1, mid + 1)]
    rows += [add(100 + i, 0 if p < mid else 1, p, 5 + i) for i, p in enumerate(far)]
    rows += [add(200 + i, 0 if p < mid else 1, p, 1) for i, p in enumerate(far)]  # behind
    agree(books, *rows)
    agree(
        books,
        (CMD_AMEND, 100, -1, 0, 1, 2),  # reduce: keeps its place ahead of order 200
        (CMD_AMEND, 101, -1, 0, mid - 2, 9),  # far -> window
        (CMD_AMEND, 1, -1, 0, 5, 9),  # window -> far
        (CMD_AMEND, 104, -1, 0, 2**50, 9),  # far -> elsewhere far
        (CMD_CANCEL, 200, -1),
        (CMD_CANCEL, 106, -1),
        (CMD_CANCEL, 206, -1),  # the level at MAX_PRICE empties: its far row is freed
    )
    assert books[0].next_to_trade(0) == 101


def test_a_call_auction_over_far_orders():
    books = both()
    for book in books:
        book.set_collecting(True)
    mid = 3_000_000
    rows = [add(1, 0, 2**45, 5), add(2, 1, 1, 7), add(3, 0, mid, 10), add(4, 1, mid - 3, 10)]
    rows += [add(5, 1, 2**44, 3), add(6, 0, 2, 3), add(7, 0, mid + 5 * MIN_LADDER, 4)]
    agree(books, *rows)
    got = run_uncross(books[0], mid)
    want = run_uncross(books[1], mid)
    assert got == want
    assert books[0].depth(10) == books[1].depth(10)
    check_integrity(books[0])


def test_many_far_levels_grow_and_empty_the_far_store():
    books = both()
    rng = np.random.default_rng(5)
    prices = [int(p) for p in rng.integers(1, 2**40, 3_000)]
    rows = [add(1, 0, 2**39, 1), add(2, 1, 2**39 + 1, 1)]
    rows += [add(10 + i, int(p > 2**39), p, 1 + i % 5) for i, p in enumerate(prices)]
    agree(books, *rows)
    meta = books[0].state.meta
    assert int(meta[M_FAR_LEVELS]) + int(meta[M_FAR_LEVELS + 1]) > 2_900
    agree(books, *[(CMD_CANCEL, 10 + i, -1) for i in range(len(prices))])
    meta = books[0].state.meta
    assert int(meta[M_FAR_LEVELS]) == int(meta[M_FAR_LEVELS + 1]) == 0


def test_a_dollar_bid_beside_a_four_million_dollar_ask_costs_no_dense_ladder():
    """The issue's case, at $1 ticks: a $78,000 market, a $1 bid and a $4 M ask. The dense
    ladder once spanned them all (4.2 M levels, 258 MiB)."""
    books = both()
    rows = [add(i, i % 2, 78_000 - 3 + 6 * (i % 2) + i % 3, 1) for i in range(1, 200)]
    rows += [add(1_000, 0, 1, 1), add(1_001, 1, 4_000_000, 1)]
    agree(books, *rows)
    assert books[0].state.nbytes() < 1 << 20


def test_orders_on_each_side_of_both_window_edges():
    """One tick inside and outside each edge of the window, both sides: each price lands in
    its own level (window row or far row), the depth walks across each edge in price order,
    and sweeps take them in that order."""
    books = both(tick=3)
    agree(books, add(1, 0, 3 * 500_000, 1), add(2, 1, 3 * 500_001, 1))
    meta = books[0].state.meta
    low, end = int(meta[M_BASE]), int(meta[M_WIN_END])
    edges = [low - 6, low - 3, low, low + 3, end - 6, end - 3, end, end + 3]
    agree(books, *[add(10 + i, 0, p, 1 + i) for i, p in enumerate(edges[:4])])
    agree(books, *[add(20 + i, 1, p, 1 + i) for i, p in enumerate(edges[4:])])
    assert (int(meta[M_BASE]), int(meta[M_WIN_END])) == (low, end)  # the window stayed
    assert books[0].state.far_levels() == 4
    agree(books, add(30, 1, 3, 100, owner=30), add(31, 0, end + 3, 100, owner=31))
