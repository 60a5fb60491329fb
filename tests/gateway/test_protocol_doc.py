"""docs/PROTOCOL.md is held to the code: a gateway developer reads the document, not the code.

The document's tables are parsed and compared with engine.protocol and engine.gateway.wire:
every tagged message (commands, events, session messages) appears once under a heading
`#### Name (tag N)` with exactly its fields, in order, each with its wire type, its range
(the msgspec `Meta` annotation), its default; each event's audience; every RejectCode with
its number and text exactly as REJECT_TEXT has it; the frame kinds, the limits and the
RECORDS layout (engine.codec.COMMAND_DTYPE). The worked example's bytes are the encoding of
the message it shows.

Invariants: the expected strings are rendered here from the code's annotations alone
(`wire_type`, `wire_constraint`, `wire_default`); a cell may add prose after the rendered
constraint, separated by "; ".
"""

from __future__ import annotations

import re
import types
import typing
from enum import IntEnum
from pathlib import Path

import msgspec
import pytest
import zmq

from engine import protocol
from engine.codec import COMMAND_DTYPE
from engine.config import default_market
from engine.core import Exchange
from engine.gateway import wire
from engine.gateway.marketdata import MarketDataPublisher
from engine.gateway.service import EngineService, Options
from engine.gateway.tradestream import TradeStream

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
HEADING = re.compile(r"^#### (\w+) \(tag (\d+)\)$")
FIELD_COLUMNS = ["#", "field", "type", "constraints", "default", "unit, meaning"]
LOOPBACK = "tcp://127.0.0.1:*"
ENUM_LISTED_UP_TO = 8  # a larger enum (RejectCode) is named, its values are in their own table


# -- rendering the code's annotations as the document writes them ------------------------------


def _unwrap(annotation) -> tuple[object, msgspec.Meta | None]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        metas = [e for e in extras if isinstance(e, msgspec.Meta)]
        return base, (metas[0] if metas else None)
    return annotation, None


def wire_type(annotation) -> str:
    """The msgpack type of a field: int, str, bool, "int (Side)", "bool or nil", ..."""
    base, _ = _unwrap(annotation)
    origin = typing.get_origin(base)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(base) if a is not type(None)]
        (only,) = args
        return f"{wire_type(only)} or nil"
    if origin is list:
        (item,) = typing.get_args(base)
        return f"array of {wire_type(item)}"
    if origin is dict:
        key, value = typing.get_args(base)
        return f"map of {wire_type(key)} to {wire_type(value)}"
    if isinstance(base, type) and issubclass(base, IntEnum):
        return f"int ({base.__name__})"
    if base in (int, str, bool):
        return base.__name__
    raise AssertionError(f"no wire type for {annotation!r}: teach wire_type")


def _bound(value: int) -> str:
    if value > 1024 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return str(value)


def wire_constraint(annotation) -> str:
    """What the decoder enforces beyond the type: "0 <= v < 2**62", "1-32 chars", ..."""
    base, meta = _unwrap(annotation)
    if isinstance(base, type) and issubclass(base, IntEnum):
        if len(base) > ENUM_LISTED_UP_TO:
            return f"a {base.__name__} value"
        return ", ".join(f"{int(v)} {v.name}" for v in base)
    if meta is None:
        return ""
    parts = []
    if meta.ge is not None or meta.lt is not None:
        low = f"{_bound(meta.ge)} <= " if meta.ge is not None else ""
        high = f" < {_bound(meta.lt)}" if meta.lt is not None else ""
        parts.append(f"{low}v{high}")
    if meta.min_length is not None or meta.max_length is not None:
        parts.append(f"{meta.min_length or 0}-{meta.max_length} chars")
    if meta.pattern is not None:
        parts.append(f"pattern `{meta.pattern}`")
    return ", ".join(parts)


def wire_default(field: msgspec.structs.FieldInfo) -> str:
    """The default a decoder fills when the field is left off the end ("" if required)."""
    value = field.default
    if value is msgspec.NODEFAULT:
        return ""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, IntEnum):
        return f"{int(value)} ({value.name})"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _numpy_type(dtype) -> str:
    """'<i8', 'u1', 'u1x3', 'S32': numpy's type string without the '|' of byte-sized types."""
    base = dtype.base.str.lstrip("|")
    return base if dtype.shape == () else f"{base}x{dtype.shape[0]}"


# -- the code's messages -------------------------------------------------------------------------


def tagged_messages() -> dict[str, type]:
    """Every tagged Struct of engine.protocol (commands, events) and engine.gateway.wire."""
    found = {}
    for module, base in ((protocol, protocol._Message), (wire, wire._Session)):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, base) and value is not base:
                found[value.__name__] = value
    return found


def expected_rows(cls: type) -> list[list[str]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return [
        [str(i), f.name, wire_type(hints[f.name]), wire_constraint(hints[f.name]), wire_default(f)]
        for i, f in enumerate(msgspec.structs.fields(cls), start=1)
    ]


# -- reading the document ------------------------------------------------------------------------


def cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]


def table_after(lines: list[str], start: int) -> tuple[list[str], list[list[str]]]:
    """The first table at or after line `start` (before the next heading): header and rows."""
    i = start
    while i < len(lines) and not lines[i].startswith("|"):
        if lines[i].startswith("#"):
            return [], []
        i += 1
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append(cells(lines[i]))
        i += 1
    if len(rows) < 2:
        return [], []
    return rows[0], rows[2:]


def section(lines: list[str], heading: str) -> int:
    matches = [i for i, line in enumerate(lines) if line.strip() == heading]
    assert len(matches) == 1, f"{heading!r} must head exactly one section of {DOC.name}"
    return matches[0] + 1


def documented_messages(text: str) -> dict[str, tuple[int, list[str], int]]:
    """name -> (tag, its section's lines, line number)."""
    lines = text.splitlines()
    found: dict[str, tuple[int, list[str], int]] = {}
    heads = [(i, HEADING.match(line)) for i, line in enumerate(lines)]
    heads = [(i, m) for i, m in heads if m]
    for n, (i, match) in enumerate(heads):
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        body = lines[i + 1 : end]
        cut = next((k for k, line in enumerate(body) if line.startswith("#")), len(body))
        name = match.group(1)
        assert name not in found, f"{name} is documented twice (line {i + 1})"
        found[name] = (int(match.group(2)), body[:cut], i + 1)
    return found


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


# -- the tests -----------------------------------------------------------------------------------


def test_every_message_is_documented_with_its_tag_and_exactly_its_fields(doc):
    documented = documented_messages(doc)
    code = tagged_messages()
    assert sorted(set(code) - set(documented)) == [], "messages missing from the document"
    assert sorted(set(documented) - set(code)) == [], "documented messages the code lacks"
    for name, cls in code.items():
        tag, body, line = documented[name]
        assert tag == cls.__struct_config__.tag, f"{name} (line {line}): tag"
        header, rows = table_after(body, 0)
        expected = expected_rows(cls)
        if not expected:
            assert not rows and any("No fields" in b for b in body), f"{name} has no fields"
            continue
        assert header == FIELD_COLUMNS, f"{name} (line {line}): columns {header}"
        got = [(r[0], r[1], r[2], r[4]) for r in rows]
        want = [(e[0], e[1], e[2], e[4]) for e in expected]
        assert got == want, f"{name} (line {line}): #, field, type, default"
        for row, (_, field, _, constraint, _) in zip(rows, expected, strict=True):
            cell = row[3]
            if constraint:
                assert cell == constraint or cell.startswith(constraint + "; "), (
                    f"{name}.{field} (line {line}): constraints {cell!r}, want {constraint!r}"
                )


def test_every_event_names_its_audience(doc):
    documented = documented_messages(doc)
    for name, cls in tagged_messages().items():
        audience = getattr(cls, "audience", None)
        if audience is None:
            continue
        lines = [b for b in documented[name][1] if b.startswith("Audience: ")]
        assert lines, f"{name}: no 'Audience: ' line"
        assert lines[0].split()[1] == audience.name, f"{name}: audience {lines[0]!r}"


def test_every_reject_code_has_its_number_and_exact_text(doc):
    lines = doc.splitlines()
    header, rows = table_after(lines, section(lines, "### Reject codes"))
    assert header == ["code", "name", "text"]
    got = {(int(r[0]), r[1]): r[2] for r in rows}
    want = {(int(c), c.name): protocol.REJECT_TEXT[c] for c in protocol.RejectCode}
    assert got == want


def test_frame_kinds_limits_and_record_layout(doc):
    lines = doc.splitlines()
    header, rows = table_after(lines, section(lines, "### Frame kinds"))
    assert header[:2] == ["kind", "byte"]
    kinds = {r[0]: r[1] for r in rows}
    assert kinds == {name: f"`{getattr(wire, name).decode()}`" for name in ("MESSAGES", "RECORDS",
                                                                           "RESEND")}  # fmt: skip
    assert set(wire.KINDS) == {getattr(wire, name) for name in kinds}

    header, rows = table_after(lines, section(lines, "### Limits"))
    assert header[:2] == ["limit", "value"]
    sessions = wire.SESSION_TAGS
    want = {
        "MAX_FRAME_BYTES": f"{wire.MAX_FRAME_BYTES:,}",
        "MAX_MESSAGES_PER_FRAME": f"{wire.MAX_MESSAGES_PER_FRAME:,}",
        "record size": str(COMMAND_DTYPE.itemsize),
        "session message tags": f"{sessions.start}-{sessions.stop - 1}",
    }
    assert {r[0].strip("`"): r[1] for r in rows} == want

    header, rows = table_after(lines, section(lines, "### Record layout"))
    assert header[:3] == ["offset", "field", "type"]
    layout = [(int(r[0]), r[1].strip("`"), r[2].strip("`")) for r in rows]
    want_layout = [(offset, name, _numpy_type(dtype)) for name, (dtype, offset) in
                   COMMAND_DTYPE.fields.items()]  # fmt: skip
    assert layout == want_layout


def test_the_worked_example_bytes_are_the_encoding_of_its_message(doc):
    example = re.search(r"<!-- frame: (.+?) -->\s*```text\n(.+?)```", doc, re.S)
    assert example, "the worked example's frame is marked <!-- frame: [1, ...] -->"
    fields = msgspec.json.decode(example.group(1))
    message = protocol.decode_command(msgspec.msgpack.encode(fields))
    assert type(message) is protocol.NewOrder
    hex_bytes = [line.split(";")[0] for line in example.group(2).splitlines()]
    shown = bytes.fromhex("".join(hex_bytes))
    assert shown == wire.pack([protocol.encode(message)])


def test_the_status_counters_are_the_ones_the_engine_reports(doc, tmp_path):
    """The Status report's counters row names each counter the service, the market data
    publisher and the trade stream report (the row lacked the feed's two newest)."""
    (row,) = [line for line in doc.splitlines() if "service counters (" in line]
    market = default_market()
    context = zmq.Context()
    exchange = Exchange(market)
    publisher = MarketDataPublisher(context, LOOPBACK, LOOPBACK, exchange)
    trades = TradeStream(context, LOOPBACK, tmp_path, exchange)
    try:
        reported = {
            r"service counters \(([^)]*)\)": EngineService(market, Options(tmp_path)).counters,
            r"`market_data_`: ([^)]*)\)": publisher.counters(),
            r"`trade_stream_`: ([^)]*)\)": trades.counters(),
        }
    finally:
        publisher.close()
        trades.close()
        context.term()
    for pattern, counters in reported.items():
        listed = re.search(pattern, row)
        assert listed is not None, pattern
        assert listed.group(1).split(", ") == list(counters), pattern
