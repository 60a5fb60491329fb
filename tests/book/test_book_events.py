"""Reading a command's events: `events()` objects and `event_rows()` rows, on both books.

The two readers must give the same record (field for field, in the kernel's column order), stay
right after the event buffer is replaced (growth, a batch), and stay cheap: an event object is
not tracked by the garbage collector and the rows are a view, not a copy.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from msgspec.structs import astuple

from engine.book import Book, EventKind, layout
from engine.book.events import EVENT_DTYPE, FIELDS
from engine.types import Side


def rows_as_tuples(rows: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in row) for row in rows.tolist()]


def test_the_row_fields_are_the_kernel_event_columns_in_order():
    assert EVENT_DTYPE.names == FIELDS
    assert len(FIELDS) == layout.EVENT_ROWS
    for index, name in enumerate(FIELDS):
        assert getattr(layout, f"E_{name.upper()}") == index, name


def test_rows_and_objects_name_the_same_fill(make_book):
    book = make_book(tick=1)
    book.add(1, 7, Side.SELL, 100, 5)
    assert book.add(2, 8, Side.BUY, 101, 3) == 1
    (fill,) = book.event_rows()
    assert book.event_rows().dtype == EVENT_DTYPE
    named = {name: int(fill[name]) for name in FIELDS}
    assert named == {
        "kind": EventKind.FILL,
        "oid": 2,
        "oid2": 1,
        "price": 100,
        "qty": 3,
        "leaves": 0,
        "leaves2": 2,
        "code": 0,
        "side": Side.BUY,
        "owner": 8,
        "owner2": 7,
    }
    assert rows_as_tuples(book.event_rows()) == [astuple(e) for e in book.events()]


def test_rows_hold_only_the_last_commands_events(make_book):
    book = make_book(tick=1)
    assert book.events() == [] and len(book.event_rows()) == 0  # no command yet
    book.add(1, 7, Side.SELL, 100, 5)
    book.add(2, 7, Side.SELL, 101, 5)
    assert book.add(3, 8, Side.BUY, 101, 7) == 2
    assert list(book.event_rows()["oid2"]) == [1, 2]
    assert book.cancel(2) == 1
    assert list(book.event_rows()["kind"]) == [EventKind.CANCELLED]
    assert book.cancel(99) == 1
    assert list(book.event_rows()["kind"]) == [EventKind.REJECTED]


def test_event_objects_are_not_tracked_by_the_garbage_collector(make_book):
    book = make_book(tick=1)
    book.add(1, 7, Side.SELL, 100, 5)
    book.add(2, 8, Side.BUY, 100, 5)
    (event,) = book.events()
    assert event.kind == EventKind.FILL
    assert not gc.is_tracked(event)


def test_compiled_rows_are_a_read_only_view_of_the_event_buffer():
    book = Book(tick=1)
    book.add(1, 7, Side.SELL, 100, 5)
    rows = book.event_rows()
    assert np.shares_memory(rows, book.state.ev)
    with pytest.raises(ValueError, match="read-only"):
        rows["qty"] = 0


def test_readers_follow_the_event_buffer_when_it_grows(make_book):
    book = make_book(tick=1)
    for oid in range(1, 3001):
        book.add(oid, 1, Side.SELL, 1000 + oid % 5, 1)
    assert book.add(9999, 2, Side.BUY, 1004, 3000) == 3000
    rows = book.event_rows()
    assert len(rows) == 3000 and set(rows["kind"].tolist()) == {EventKind.FILL}
    assert int(rows["qty"].sum()) == 3000
    assert rows_as_tuples(rows) == [astuple(e) for e in book.events()]


def test_readers_follow_the_event_buffer_after_a_batch():
    book = Book(tick=1)
    cmds = np.zeros((2, layout.COMMAND_ROWS), dtype=np.int64)
    cmds[:] = (layout.CMD_ADD, 1, 7, Side.SELL, 100, 5, 1, 0, 0, 0)
    cmds[1, 1] = 2
    book.apply_batch(cmds, out=np.zeros((4, layout.EVENT_ROWS), dtype=np.int64))
    assert book.add(3, 8, Side.BUY, 100, 6) == 2
    assert list(book.event_rows()["oid2"]) == [1, 2]
    assert [e.oid2 for e in book.events()] == [1, 2]


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((8, layout.EVENT_ROWS), dtype=np.int32),
        np.zeros((8, 3), dtype=np.int64),
        np.zeros((8, 2 * layout.EVENT_ROWS), dtype=np.int64)[:, : layout.EVENT_ROWS],
    ],
    ids=["int32", "narrow", "strided"],
)
def test_a_bad_batch_buffer_is_refused_and_changes_nothing(out):
    book = Book(tick=1)
    cmds = np.zeros((1, layout.COMMAND_ROWS), dtype=np.int64)
    cmds[0] = (layout.CMD_ADD, 1, 7, Side.SELL, 100, 5, 1, 0, 0, 0)
    with pytest.raises(ValueError, match="out must be a C-contiguous"):
        book.apply_batch(cmds, record="none", out=out)
    assert len(book) == 0
    assert book.add(2, 7, Side.SELL, 100, 5) == 1  # still recording every event
    assert [e.kind for e in book.events()] == [EventKind.RESTED]
