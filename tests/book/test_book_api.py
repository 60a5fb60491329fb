"""The book API on both books: bad input, growth without a fixed limit, large sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from engine.book import Book, EventKind
from engine.book.integrity import check_integrity
from engine.book.layout import CMD_ADD, CMD_CANCEL, M_LEN, MAX_PRICE
from engine.protocol import RejectCode
from engine.types import OrderType, Side, StpMode, TimeInForce


def snapshot(book):
    bids, asks = book.depth(1_000_000)
    live = {oid: book.order(oid) for oid in range(1, 20)}
    return bids, asks, live, book.fills, len(book)


def seeded(book):
    book.add(1, 1, Side.BUY, 1000, 5)
    book.add(2, 2, Side.SELL, 1010, 5)
    book.add(3, 1, Side.BUY, 995, 7)
    return book


BAD_COMMANDS = [
    ("add", (-1, 1, 0, 1000, 5), RejectCode.INVALID_ORDER_ID),
    ("add", (2**62, 1, 0, 1000, 5), RejectCode.INVALID_ORDER_ID),
    ("add", (9, -1, 0, 1000, 5), RejectCode.INVALID_FIELD),
    ("add", (9, 2**31, 0, 1000, 5), RejectCode.INVALID_FIELD),
    ("add", (9, 1, 2, 1000, 5), RejectCode.INVALID_FIELD),
    ("add", (9, 1, 0, 1000, 5, 3), RejectCode.INVALID_FIELD),
    ("add", (9, 1, 0, 1000, 5, 1, 3), RejectCode.INVALID_FIELD),
    ("add", (9, 1, 0, 1000, 5, 1, 0, 3), RejectCode.INVALID_FIELD),
    ("add", (9, 1, 0, 1000, 0), RejectCode.QTY_INVALID),
    ("add", (9, 1, 0, 1000, -5), RejectCode.QTY_INVALID),
    ("add", (9, 1, 0, 1000, 2**40 + 1), RejectCode.QTY_INVALID),
    ("add", (9, 1, 0, 1001, 5), RejectCode.PRICE_OFF_TICK),
    ("add", (9, 1, 0, 0, 5), RejectCode.PRICE_OUT_OF_RANGE),
    ("add", (9, 1, 0, -1000, 5), RejectCode.PRICE_OUT_OF_RANGE),
    ("add", (9, 1, 0, (MAX_PRICE // 5 + 1) * 5, 5), RejectCode.PRICE_OUT_OF_RANGE),
    ("add", (9, 1, 0, 1200, 5), RejectCode.PRICE_OUTSIDE_BAND),
    ("add", (1, 3, 1, 1010, 5), RejectCode.DUPLICATE_ORDER_ID),
    ("cancel", (77,), RejectCode.UNKNOWN_ORDER),
    ("cancel", (-4,), RejectCode.INVALID_ORDER_ID),
    ("cancel", (1, 2), RejectCode.NOT_OWNER),
    ("amend", (77, 1000, 5), RejectCode.UNKNOWN_ORDER),
    ("amend", (1, 1000, 0), RejectCode.QTY_INVALID),
    ("amend", (1, 1003, 5), RejectCode.PRICE_OFF_TICK),
    ("amend", (1, 800, 5), RejectCode.PRICE_OUTSIDE_BAND),
    ("amend", (1, 1000, 4, 2), RejectCode.NOT_OWNER),
    ("pick", (9, 3, 0, 77, 1), RejectCode.UNKNOWN_ORDER),
    ("pick", (9, 3, 0, 1, 1), RejectCode.PICK_WRONG_SIDE),
    ("pick", (9, 2, 0, 2, 1), RejectCode.SELF_TRADE),
    ("pick", (9, 3, 0, 2, 6), RejectCode.PICK_QTY_EXCEEDS_ORDER),
    ("pick", (9, 3, 0, 2, 0), RejectCode.QTY_INVALID),
    ("pick", (1, 3, 0, 2, 1), RejectCode.DUPLICATE_ORDER_ID),
]


@pytest.mark.parametrize(("method", "args", "code"), BAD_COMMANDS)
def test_bad_input_is_rejected_with_its_code_and_changes_nothing(make_book, method, args, code):
    book = seeded(make_book(tick=5, band=(900, 1100)))
    before = snapshot(book)
    assert getattr(book, method)(*args) == 1
    (event,) = book.events()
    assert event.kind == EventKind.REJECTED and event.code == code
    assert RejectCode(event.code).text
    assert snapshot(book) == before
    if isinstance(book, Book):
        check_integrity(book)


@pytest.mark.parametrize("bad", [1000.0, 1000.5, "1000", None, True, np.float64(1000)])
def test_non_integer_prices_raise_and_change_nothing(make_book, bad):
    book = seeded(make_book(tick=5, band=(900, 1100)))
    before = snapshot(book)
    with pytest.raises(TypeError, match="price must be an integer"):
        book.add(9, 1, Side.BUY, bad, 5)
    with pytest.raises(TypeError, match="price must be an integer"):
        book.amend(1, bad, 5)
    assert snapshot(book) == before


def test_enum_and_numpy_integers_are_accepted(make_book):
    book = make_book(tick=1)
    book.add(
        np.int64(1),
        np.int32(2),
        Side.SELL,
        np.int64(1000),
        5,
        OrderType.LIMIT,
        TimeInForce.DAY,
        StpMode.CANCEL_BOTH,
    )
    assert book.order(1) == (1, 1000, 5, 2)


def test_batch_refuses_float_commands():
    cmds = np.zeros((1, 10), dtype=np.float64)
    with pytest.raises(TypeError, match="integer array"):
        Book().apply_batch(cmds)
    with pytest.raises(ValueError, match=r"\(n, 10\)"):
        Book().apply_batch(np.zeros((3, 4), dtype=np.int64))


def test_ladder_grows_for_prices_far_apart(make_book):
    book = make_book(tick=1)
    prices = [5_000, 1, MAX_PRICE, 2_000_000, 3]
    for oid, price in enumerate(prices, 1):
        book.add(oid, oid, Side.BUY if price < 10_000 else Side.SELL, price, oid)
    bids, asks = book.depth(100)
    assert bids == [(5000, 1, 1), (3, 5, 1), (1, 2, 1)]
    assert asks == [(2_000_000, 4, 1), (MAX_PRICE, 3, 1)]
    assert book.add(9, 9, Side.SELL, MAX_PRICE + 1, 1) == 1
    assert book.events()[0].code == RejectCode.PRICE_OUT_OF_RANGE
    book.add(10, 10, Side.BUY, MAX_PRICE, 10)  # sweeps both asks, rests the rest
    assert book.depth(1)[0] == [(MAX_PRICE, 3, 1)]
    if isinstance(book, Book):
        check_integrity(book)


def test_ladder_rebases_around_what_rests_instead_of_growing_forever():
    book = Book(tick=1)
    for step in range(40):
        price = 1_000 + step * 100_000
        book.add(step + 1, 1, Side.BUY, price, 1)
        book.cancel(step + 1)
    assert int(book.state.meta[M_LEN]) <= 4096
    book.add(100, 1, Side.BUY, 10, 1)
    book.add(101, 1, Side.SELL, 4_000_000, 1)
    assert book.depth(5) == ([(10, 1, 1)], [(4_000_000, 1, 1)])
    check_integrity(book)


def test_a_sweep_of_thousands_of_orders_fills_each_in_time_order(make_book):
    book = make_book(tick=1)
    for oid in range(1, 5001):
        book.add(oid, 1 + oid % 3, Side.SELL, 1000 + oid % 7, 2)
    assert book.add(9999, 9, Side.BUY, 1006, 10_001) == 5001
    fills = book.events()[:-1]
    assert all(e.kind == EventKind.FILL for e in fills)
    assert [e.price for e in fills] == sorted(e.price for e in fills)
    for price in range(1000, 1007):
        makers = [e.oid2 for e in fills if e.price == price]
        assert makers == sorted(makers), "time priority within a level"
    assert book.events()[-1].kind == EventKind.RESTED and book.events()[-1].qty == 1
    assert book.depth(5) == ([(1006, 1, 1)], [])


def test_market_order_without_band_takes_every_level(make_book):
    book = make_book(tick=1)
    book.add(1, 1, Side.BUY, 10, 5)
    book.add(2, 1, Side.BUY, 3_000_000, 5)
    assert book.add(3, 2, Side.SELL, 0, 12, OrderType.MARKET) == 3
    assert [e.kind for e in book.events()] == [EventKind.FILL, EventKind.FILL, EventKind.CANCELLED]
    assert book.depth(5) == ([], [])


def test_a_million_resting_orders_fit_and_cost_under_128_bytes_each():
    n = 1_000_000
    rng = np.random.default_rng(3)
    cmds = np.zeros((n, 10), dtype=np.int64)
    side = rng.integers(0, 2, n)
    cmds[:, 0] = CMD_ADD
    cmds[:, 1] = np.arange(1, n + 1)
    cmds[:, 2] = rng.integers(0, 100, n)
    cmds[:, 3] = side
    cmds[:, 4] = np.where(side == 0, 6000 - rng.integers(0, 600, n), 6001 + rng.integers(0, 600, n))
    cmds[:, 5] = rng.integers(1, 1000, n)
    cmds[:, 6] = 1
    book = Book(tick=1, band=(5400, 6601))
    result = book.apply_batch(cmds, record="none")
    assert result.fills == 0 and result.rejects == 0 and len(book) == n
    bids, asks = book.depth(10_000)
    assert sum(q for _, q, _ in bids) + sum(q for _, q, _ in asks) == int(cmds[:, 5].sum())
    assert sum(c for _, _, c in bids) + sum(c for _, _, c in asks) == n
    assert book.state.nbytes() / n <= 128
    order = book.order(777_777)
    assert order == (
        int(side[777_776]),
        int(cmds[777_776, 4]),
        int(cmds[777_776, 5]),
        int(cmds[777_776, 2]),
    )
    cancels = np.zeros((n, 10), dtype=np.int64)
    cancels[:, 0] = CMD_CANCEL
    cancels[:, 1] = rng.permutation(n) + 1
    cancels[:, 2] = -1
    assert book.apply_batch(cancels, record="none").rejects == 0
    assert len(book) == 0 and book.depth(5) == ([], [])
    check_integrity(book)


def test_orders_lists_resting_orders_with_their_time_priority(make_book):
    book = make_book(tick=1)
    book.add(5, 1, Side.BUY, 100, 3)
    book.add(2, 2, Side.BUY, 100, 4)
    book.add(9, 3, Side.SELL, 105, 1)
    book.amend(5, 100, 6)  # a larger quantity goes to the back of the queue
    rows = book.orders()
    assert [r[:5] for r in rows] == [(2, 0, 100, 4, 2), (5, 0, 100, 6, 1), (9, 1, 105, 1, 3)]
    entries = {oid: entry for oid, *_, entry in rows}
    assert entries[2] < entries[9] < entries[5]


BEYOND_INT64 = [
    ("add", (2**64, 1, 0, 1000, 5), "order_id"),
    ("add", (9, 1, 0, 2**63, 5), "price"),
    ("add", (9, 1, 0, 1000, -(2**63) - 1), "qty"),
    ("add", (9, 2**70, 0, 1000, 5), "owner"),
    ("cancel", (2**64 - 1,), "order_id"),
    ("amend", (1, 1000, 2**64), "qty"),
    ("pick", (9, 3, 0, 2**63, 1), "target_id"),
    ("uncross", (2**63,), "price"),
]


@pytest.mark.parametrize(("method", "args", "field"), BEYOND_INT64)
def test_integers_beyond_int64_raise_naming_the_field_and_change_nothing(
    make_book, method, args, field
):
    """The compiled book holds int64; both books refuse a larger value the same way (the
    reference book once answered with a reject event, the compiled one with numba's
    unnamed OverflowError)."""
    book = seeded(make_book(tick=5, band=(900, 1100)))
    before = snapshot(book)
    with pytest.raises(OverflowError, match=f"{field} must fit in 64 bits"):
        getattr(book, method)(*args)
    assert snapshot(book) == before


@pytest.mark.parametrize("band", [(1100, 900), (-100, 900), (0, 900), (903, 1100)])
def test_a_band_the_book_cannot_hold_is_refused_by_both_books(make_book, band):
    """The reference book once took any band, where the compiled book refused it."""
    with pytest.raises(ValueError, match="must be on tick 5"):
        make_book(tick=5, band=band)
    book = seeded(make_book(tick=5, band=(900, 1100)))
    with pytest.raises(ValueError, match="must be on tick 5"):
        book.set_band(*band)
    assert book.add(9, 1, Side.BUY, 1105, 5) == 1  # the band it had still holds
    assert book.events()[0].code == RejectCode.PRICE_OUTSIDE_BAND


@pytest.mark.parametrize("side", [-1, 2, 7])
def test_a_side_that_is_neither_buy_nor_sell_is_refused_by_the_readers(make_book, side):
    """Side -1 once read the ask side in both books, and 2 read past the side's columns of
    the compiled book's arrays (the reference book raised an IndexError)."""
    book = seeded(make_book(tick=5, band=(900, 1100)))
    for read in (lambda: book.level(side, 1000), lambda: book.side_depth(side, 5)):
        with pytest.raises(ValueError, match="side must be 0 \\(buy\\) or 1 \\(sell\\)"):
            read()
