"""Golden scenarios (tests/golden/book/*.book) pin the documented book behaviour on both books."""

from __future__ import annotations

import pytest

from engine.book import Book
from engine.book.integrity import check_integrity
from tests.support.golden import parse, run_step, scenario_files


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_golden_scenario(make_book, path):
    scenario = parse(path)
    book = make_book(tick=scenario.tick, band=scenario.band)
    for step in scenario.steps:
        actual = run_step(book, step, path)
        assert actual == step.expected, f"{path.name}:{step.line_no}: {step.text}"
        if isinstance(book, Book):
            check_integrity(book)


def test_every_scenario_checks_something():
    files = scenario_files()
    assert len(files) >= 10
    for path in files:
        steps = parse(path).steps
        assert any(s.expected for s in steps), f"{path.name} expects nothing"
        assert any(s.text == "depth" for s in steps), f"{path.name} never checks the book"
