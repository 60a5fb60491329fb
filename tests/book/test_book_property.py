"""The compiled book against the reference book: random command sequences, identical results.

A hypothesis state machine sends every command kind (valid and invalid) to both books and
requires identical events, identical full depth and identical live orders after every step,
plus check_integrity() on the compiled book. Shrunk failures live in test_book_regressions.py.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.book import Book, ReferenceBook
from engine.book.auction import run_uncross
from engine.book.integrity import check_integrity
from tests.support.commands import BAND_PRICES

OWNERS = st.integers(0, 3)
SIDES = st.sampled_from([0, 1])
QTYS = st.one_of(st.integers(1, 30), st.sampled_from([0, -3, 2**41]))
TIFS = st.sampled_from([0, 0, 1, 2])
STPS = st.sampled_from([0, 1, 2])


class BooksAgree(RuleBasedStateMachine):
    @initialize(
        tick=st.sampled_from([1, 5]),
        banded=st.booleans(),
    )
    def setup(self, tick: int, banded: bool) -> None:
        band = (90 * tick, 110 * tick) if banded else None
        self.tick = tick
        self.compiled = Book(tick=tick, band=band, capacity=16)
        self.reference = ReferenceBook(tick=tick, band=band)
        self.next_id = 1

    def _prices(self, side: int = 0):
        """Mostly passive prices (a deep book), some marketable ones, some invalid, and each
        edge of the 90..110 tick band and one tick beyond it."""
        t = self.tick
        sign = -1 if side == 0 else 1
        near = st.integers(-2, 9).map(lambda k: (100 + sign * k) * t)
        odd = st.sampled_from([0, -t, t + 1 if t > 1 else 0, 10_000 * t, t, 2**23 * t])
        edges = st.sampled_from(BAND_PRICES).map(lambda k: k * t)
        return st.one_of(near, near, near, odd, edges)

    def _both(self, method: str, *args) -> None:
        got = getattr(self.compiled, method)(*args)
        want = getattr(self.reference, method)(*args)
        assert self.compiled.events() == self.reference.events(), (method, args)
        assert np.array_equal(self.compiled.event_rows(), self.reference.event_rows())
        assert got == want == len(self.reference.events())

    def _live(self) -> list[int]:
        return sorted(self.reference.live)

    @rule(
        data=st.data(),
        owner=OWNERS,
        side=SIDES,
        qty=QTYS,
        tif=TIFS,
        stp=STPS,
        market=st.booleans(),
        reuse=st.integers(0, 9),
    )
    def add(self, data, owner, side, qty, tif, stp, market, reuse):
        price = data.draw(self._prices(side))
        live = self._live()
        if reuse == 0 and live:
            oid = data.draw(st.sampled_from(live))
        else:
            oid, self.next_id = self.next_id, self.next_id + 1
        otype = 2 if market and reuse < 3 else 1
        self._both("add", oid, owner, side, price, qty, otype, tif, stp)

    @rule(data=st.data(), owner=st.sampled_from([-1, -1, 0, 1, 2, 3]))
    def cancel(self, data, owner):
        live = self._live()
        oid = data.draw(st.sampled_from(live) if live else st.integers(-2, 5))
        self._both("cancel", oid, owner)

    @precondition(lambda self: self.reference.live)
    @rule(data=st.data(), qty=QTYS, owner=st.sampled_from([-1, -1, 0, 1]), same=st.booleans())
    def amend(self, data, qty, owner, same):
        oid = data.draw(st.sampled_from(self._live()))
        order = self.reference.live[oid]
        price = order.price if same else data.draw(self._prices(order.side))
        self._both("amend", oid, price, qty, owner)

    @rule(data=st.data(), owner=OWNERS, side=SIDES, qty=QTYS)
    def pick(self, data, owner, side, qty):
        live = self._live()
        target = data.draw(st.sampled_from(live) if live else st.integers(0, 5))
        oid, self.next_id = self.next_id, self.next_id + 1
        self._both("pick", oid, owner, side, target, qty)

    @precondition(lambda self: not self.reference.collecting)
    @rule()
    def open_call(self):
        self.compiled.set_collecting(True)
        self.reference.set_collecting(True)

    @precondition(lambda self: self.reference.collecting)
    @rule()
    def uncross(self):
        got, got_rounds = run_uncross(self.compiled, 100 * self.tick)
        want, want_rounds = run_uncross(self.reference, 100 * self.tick)
        assert got == want and got_rounds == want_rounds
        assert sum(r.executed for r in want_rounds) == sum(e.qty for e in want if e.kind == 3)
        stp_cancels = any(e.kind == 4 for e in want)
        for r in want_rounds:
            assert r.executed == r.equilibrium.volume or stp_cancels

    @rule(oid=st.sampled_from([-1, 2**62, 0]))
    def unknown_ids(self, oid):
        self._both("cancel", oid)
        self._both("amend", oid, 100 * self.tick, 1)

    @invariant()
    def same_book(self):
        if not hasattr(self, "compiled"):
            return
        assert self.compiled.depth(10_000) == self.reference.depth(10_000)
        assert len(self.compiled) == len(self.reference)
        assert self.compiled.order_counts() == self.reference.order_counts()
        assert self.compiled.fills == self.reference.fills
        assert self.compiled.traded_qty == self.reference.traded_qty
        for oid in self._live():
            assert self.compiled.order(oid) == self.reference.order(oid)
        check_integrity(self.compiled)


TestBooksAgree = BooksAgree.TestCase
