"""Long seeded command streams: the compiled book and the reference agree at every step.

Complements the hypothesis state machine (short, shrinkable sequences) with long ones that
build deep books, exercise the ladder's re-basing with far prices, and the batch entry point.
"""

from __future__ import annotations

import numpy as np
import pytest
from msgspec.structs import astuple

from engine.book import Book, ReferenceBook
from engine.book.book import apply_row
from engine.book.integrity import check_integrity
from tests.support.commands import random_commands

CASES = [
    pytest.param(1, 1, (90, 110), False, id="tick1-band"),
    pytest.param(2, 5, (90, 110), False, id="tick5-band"),
    pytest.param(3, 1, None, True, id="tick1-noband-far-prices"),
    pytest.param(4, 10, None, True, id="tick10-noband-far-prices"),
]


@pytest.mark.parametrize(("seed", "tick", "band", "far"), CASES)
def test_books_agree_on_long_streams(seed, tick, band, far):
    band = None if band is None else (band[0] * tick, band[1] * tick)
    compiled = Book(tick=tick, band=band, capacity=16)
    reference = ReferenceBook(tick=tick, band=band)
    cmds = random_commands(6000, seed, tick=tick, far=far)
    for step, row in enumerate(cmds):
        assert apply_row(compiled, row) == apply_row(reference, row)
        assert compiled.events() == reference.events(), f"step {step}: {row.tolist()}"
        assert np.array_equal(compiled.event_rows(), reference.event_rows()), f"step {step}"
        assert compiled.depth(3) == reference.depth(3), f"step {step}"
        if step % 500 == 0:
            assert compiled.depth(100_000) == reference.depth(100_000)
            check_integrity(compiled)
    assert compiled.depth(100_000) == reference.depth(100_000)
    assert compiled.fills == reference.fills > 100
    check_integrity(compiled)


@pytest.mark.parametrize("record", ["all", "fills"])
def test_batch_matches_per_command(record):
    cmds = random_commands(8000, seed=11, far=True)
    per_command = Book(tick=1)
    expected = []
    for row in cmds:
        apply_row(per_command, row)
        expected += per_command.events()
    batch = Book(tick=1)
    result = batch.apply_batch(cmds, record=record)
    rows = [tuple(r) for r in result.events.tolist()]
    if record == "fills":
        expected = [e for e in expected if e.kind == 3]
    assert rows == [astuple(e) for e in expected]
    assert result.fills == per_command.fills and result.traded_qty == per_command.traded_qty
    assert result.rejects == sum(1 for e in expected if e.kind == 1) or record == "fills"
    assert batch.depth(100_000) == per_command.depth(100_000)
    check_integrity(batch)


def test_batch_in_chunks_with_a_reused_buffer_equals_one_batch():
    cmds = random_commands(6000, seed=5)
    whole = Book(tick=1).apply_batch(cmds).events
    book, out, parts = Book(tick=1), np.zeros((8, 11), dtype=np.int64), []
    for chunk in np.array_split(cmds, 7):
        result = book.apply_batch(chunk, out=out)
        parts.append(result.events.copy())
        out = result.events.base if result.events.base is not None else out
    assert np.array_equal(np.concatenate(parts), whole)
