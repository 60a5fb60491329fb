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
    sorted(BOOK_DIR.glob("*.py")),
    ids=lambda p: p.name,
)
def test_the_book_imports_only_itself_and_the_types_below_it(path):
    above = {
        name
        for name in engine_imports(path)
        if not any(name == ok or name.startswith(ok + ".") for ok in ALLOWED)
    }
    assert not above, f"{path.name} imports {sorted(above)} from above the book"


ENGINE_DIR = BOOK_DIR.parent
# what the modules below the core may import: nothing runs upward (to the core, the journal,
# clearing or the service), and instruments and config take nothing from the book
LOWER_LAYERS = {
    "types.py": (),
    "digest.py": (),  # the day's trades checksum: hashlib only
    "calendar_cn.py": (),  # China's holidays: data and datetime only
    "protocol.py": ("engine.types", "engine.digest"),
    "instruments.py": ("engine.types",),
    "config.py": ("engine.types", "engine.instruments", "engine.calendar_cn"),
    "codec.py": ("engine.types", "engine.protocol"),  # the binary layouts beside the messages
    "framing.py": (),
}


@pytest.mark.parametrize("name", sorted(LOWER_LAYERS))
def test_the_layers_below_the_core_import_nothing_above_them(name):
    allowed = LOWER_LAYERS[name]
    above = {
        module
        for module in engine_imports(ENGINE_DIR / name)
        if not any(module == ok or module.startswith(ok + ".") for ok in allowed)
    }
    assert not above, f"{name} imports {sorted(above)} from above it"
