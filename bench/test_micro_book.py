"""pytest-benchmark micro-benchmarks of single book operations (python -m pytest bench/).

Each benchmark warms the JIT outside the timer, runs against a book of 10,000 resting orders,
and asserts the book is back in its starting state afterwards, so a wrong answer fails. The
same operations on the reference book run in the same session for comparison.
"""

from __future__ import annotations

import itertools

import pytest

from engine.book import Book, EventKind, ReferenceBook

BOOKS = {"compiled": Book, "reference": ReferenceBook}


def resting_book(kind: str):
    book = BOOKS[kind](tick=1, band=(5400, 6600))
    for oid in range(1, 10_001):
        side = oid % 2
        book.add(oid, oid % 40, side, 6000 - 1 - oid % 50 if side == 0 else 6001 + oid % 50, 10)
    return book


@pytest.mark.parametrize("kind", sorted(BOOKS))
def test_add_then_cancel(benchmark, kind):
    book = resting_book(kind)
    ids = itertools.count(1_000_000)
    before = book.depth(10)

    def add_cancel():
        oid = next(ids)
        book.add(oid, 7, 0, 5990, 5)
        book.cancel(oid)

    add_cancel()
    benchmark(add_cancel)
    assert book.depth(10) == before


@pytest.mark.parametrize("kind", sorted(BOOKS))
def test_marketable_order_and_replenish(benchmark, kind):
    book = resting_book(kind)
    ids = itertools.count(1_000_000)
    before = book.depth(10)

    best = book.best_ask()

    def take_and_replenish():
        taker, maker = next(ids), next(ids)
        assert book.add(taker, 99, 0, best, 10, 1, 1) == 1  # IOC buy fills the head order
        book.add(maker, 98, 1, best, 10)  # the level is rebuilt at its back

    take_and_replenish()
    benchmark(take_and_replenish)
    assert book.depth(10) == before


@pytest.mark.parametrize("kind", sorted(BOOKS))
def test_take_read_the_fill_and_replenish(benchmark, kind):
    book = resting_book(kind)
    ids = itertools.count(1_000_000)
    before = book.depth(10)
    best = book.best_ask()

    def take_read_and_replenish():
        taker, maker = next(ids), next(ids)
        book.add(taker, 99, 0, best, 10, 1, 1)  # IOC buy fills the head order
        (fill,) = book.events()
        book.add(maker, fill.owner2, 1, fill.price, fill.qty)  # its maker comes back
        return fill

    fill = take_read_and_replenish()
    assert (fill.kind, fill.price, fill.qty, fill.leaves2) == (EventKind.FILL, best, 10, 0)
    benchmark(take_read_and_replenish)
    assert book.depth(10) == before
