"""What the book knows: its own reject codes (the wire's values) and no module above it.

engine/book/ knows orders, levels, matching and auctions; the reject codes on the wire, fees,
phases and instruments belong to the core. The book's `BookReject` codes are passed on by the
core unchanged, so each must equal the `RejectCode` of the same name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import engine.book
from engine.book import BookReject
from engine.protocol import RejectCode

BOOK_DIR = Path(engine.book.__file__).parent
ALLOWED = ("engine.book", "engine.types")  # the book's own modules, and the enums below it
NOT_THE_BOOK = {"orderpath.py"}  # the core's compiled order path, on its way to engine/core/


def engine_imports(path: Path) -> set[str]:
    """The engine modules `path` imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "engine" or name.startswith("engine.")}


@pytest.mark.parametrize("code", list(BookReject), ids=lambda code: code.name)
def test_each_book_reject_is_the_wire_code_of_the_same_name(code):
    assert code.value == RejectCode[code.name].value


@pytest.mark.parametrize(
    "path",
    sorted(p for p in BOOK_DIR.glob("*.py") if p.name not in NOT_THE_BOOK),
    ids=lambda p: p.name,
)
def test_the_book_imports_only_itself_and_the_types_below_it(path):
    above = {
        name
        for name in engine_imports(path)
        if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED)
    }
    assert not above, f"{path.name} imports {sorted(above)} from above the book"
