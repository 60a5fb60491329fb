"""Command files: order flow as CSV (or Parquet with pyarrow) for the batch replay.

Schema, one row per command, with a header (columns in any order; docs/REPLAY.md):

    time_ns,instrument,member,owner,action,type,side,price,qty,order_id,tif
    34200000000000,CEA25,3,3,add,limit,buy,6200,100,1,day
    34200000500000,CEA25,4,4,add,market,sell,,30,2,ioc
    34200001000000,CEA25,3,3,reduce,,,,20,1,
    34201000000000,CEA25,3,3,cancel,,,,,1,

Required: time_ns, instrument, action, order_id; the others are optional columns (a missing
column reads as empty). action: add, cancel, amend (new price and remaining quantity) or
reduce (take qty off the order, keeping its place, as a fill or partial-cancel report does);
type: limit (default) or market (no price); side: buy or sell (adds); tif: day (default),
ioc or fok; member: who is reported in fills (default 0); owner: the self-trade prevention
owner (orders of one owner never trade with each other): without an owner column every order
is its own owner, so nothing is prevented.

Numbers are ASCII digits only (no `1_000`, no full-width digits). Prices and quantities in the
file are multiplied by `Scale.price_scale` / `Scale.qty_scale` (so `78000.12` with
price_scale 100 is 7800012 book units) and must come out whole; without a scale a decimal
point is refused. Book prices are multiples of `Scale.tick`, at most MAX_PRICE book units (the
book's own limit: far levels live in its sparse store, so a wide span costs no memory); a
quantity is at most MAX_QTY.

A clean CSV file is read at column speed by engine.replay.fastcsv, which gives the same
answer; any other file is read here row by row.
Invariants: reading never stops at the first bad row: every bad row becomes a `BadRow` (line,
reason key, what is wrong, its text) and is left out; the rows kept keep file order; a line
number is the CSV line (the header is line 1; for Parquet, the row number + 1 as if written
as CSV). A value beyond the book's limits is a bad row with reason "beyond_limits".
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.book.layout import (
    CMD_ADD,
    CMD_AMEND,
    CMD_CANCEL,
    COMMAND_ROWS,
    MAX_OWNER,
    MAX_PRICE,
    MAX_QTY,
)
from engine.types import INT64_MAX, INT64_MIN, OrderType, TimeInForce

CMD_REDUCE = 16  # replay only (engine.replay.flow): take qty off a live order, keeping its place
ACTIONS = {"add": CMD_ADD, "cancel": CMD_CANCEL, "amend": CMD_AMEND, "reduce": CMD_REDUCE}
SIDES = {"buy": 0, "sell": 1}
TIFS = {"": int(TimeInForce.DAY), "day": 0, "ioc": int(TimeInForce.IOC), "fok": 2}
TYPES = {"": int(OrderType.LIMIT), "limit": 1, "market": int(OrderType.MARKET)}
REQUIRED = ["time_ns", "instrument", "action", "order_id"]
OPTIONAL = ["member", "owner", "type", "side", "price", "qty", "tif"]
COLUMNS = REQUIRED + OPTIONAL
INTEGER = re.compile(r"[+-]?[0-9]+")
DECIMAL = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")


@dataclass(frozen=True)
class Scale:
    """How the file's numbers map to the book's integers (see the module docstring)."""

    tick: int = 1
    price_scale: int = 1
    qty_scale: int = 1

    def __post_init__(self) -> None:
        for name in ("tick", "price_scale", "qty_scale"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")

    @property
    def max_price(self) -> int:
        """The highest price the book holds on this tick, in book units."""
        return MAX_PRICE // self.tick * self.tick

    def limits(self) -> str:
        return (
            f"prices up to {self.max_price:,} book units (on a tick of {self.tick}), "
            f"quantities up to {MAX_QTY:,} units"
        )


@dataclass(frozen=True)
class BadRow:
    line: int
    instrument: str
    reason: str  # a short key: counts on the terminal group by it
    detail: str  # what is wrong, in words
    text: str  # the row as written


class RowError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Flow:
    """One instrument's commands: book rows (layout C_*), their time and file line, and the
    member each command reports in fills; one entry per command, in file order."""

    times: np.ndarray  # int64
    lines: np.ndarray  # int64
    members: np.ndarray  # int64
    commands: np.ndarray  # (n, COMMAND_ROWS) int64


@dataclass
class CommandFile:
    path: Path
    scale: Scale
    flows: dict[str, Flow]
    bad_rows: list[BadRow]
    texts: Mapping[int, str]  # line -> the row as written (for reports)
    rows: int  # data rows read, good and bad
    columns: list[str]  # the header's column names


def _integer(text: str, name: str) -> int:
    if not INTEGER.fullmatch(text):
        raise RowError("not_a_number", f"{name} must be a whole number, got {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise RowError("out_of_range", f"{name} must fit in 64 bits (int64), got {text}")
    return value


def scaled(text: str, scale: int, name: str, option: str) -> int:
    """`text` (ASCII decimal) times `scale`, exactly; RowError unless it is whole."""
    match = DECIMAL.fullmatch(text)
    if not match:
        raise RowError("not_a_number", f"{name} must be a number, got {text!r}")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    numerator = int(whole + fraction) * scale
    denominator = 10 ** len(fraction)
    if numerator % denominator:
        if scale == 1:
            raise RowError(
                "not_whole",
                f"{name} {text} is not a whole number: give {option} (book units per file unit)",
            )
        raise RowError(
            "not_whole", f"{name} {text} times {option} {scale} is not a whole number of units"
        )
    value = numerator // denominator * (-1 if sign == "-" else 1)
    if not INT64_MIN <= value <= INT64_MAX:
        raise RowError("out_of_range", f"{name} must fit in 64 bits (int64), got {text}")
    return value


def _choice(text: str, choices: dict[str, int], name: str) -> int:
    if text not in choices:
        allowed = ", ".join(c for c in choices if c)
        raise RowError(f"bad_{name}", f"{name} must be one of {allowed}, got {text!r}")
    return choices[text]


class _Parser:
    def __init__(self, scale: Scale, has_owner: bool) -> None:
        self.scale = scale
        self.has_owner = has_owner
        self.last_time: int | None = None
        self.adds: dict[str, int] = {}

    def row(self, values: dict[str, str]) -> tuple[int, int, tuple[int, ...]]:
        """(time_ns, member, command row) of one file row; RowError says what is wrong."""
        action = _choice(values["action"].lower(), ACTIONS, "action")
        order_id = _integer(values["order_id"], "order_id")
        time_ns = _integer(values["time_ns"], "time_ns")
        member = _integer(values["member"], "member") if values["member"] else 0
        owner = _integer(values["owner"], "owner") if self.has_owner else -1
        if self.has_owner and not 0 <= owner < MAX_OWNER:
            raise RowError("beyond_limits", f"owner must be 0 to {MAX_OWNER - 1}, got {owner}")
        price = qty = 0
        side = otype = tif = 0
        if action == CMD_ADD:
            side = _choice(values["side"].lower(), SIDES, "side")
            otype = _choice(values["type"].lower(), TYPES, "type")
            tif = _choice(values["tif"].lower(), TIFS, "tif")
            qty = self._qty(values["qty"])
            if otype == TYPES["market"]:
                if values["price"]:
                    raise RowError("price_on_market", "a market order has no price")
            else:
                price = self._price(values["price"])
            if not self.has_owner:  # every order its own owner: no self-trade prevention
                count = self.adds.get(values["instrument"], 0) + 1
                self.adds[values["instrument"]] = count
                owner = count % (MAX_OWNER - 1) + 1
        elif action == CMD_AMEND:
            price, qty = self._price(values["price"]), self._qty(values["qty"])
        elif action == CMD_REDUCE:
            qty = self._qty(values["qty"])
            if qty <= 0:
                raise RowError("bad_qty", f"reduce takes a positive qty, got {values['qty']}")
        if self.last_time is not None and time_ns < self.last_time:
            raise RowError(
                "time_goes_back", f"time_ns goes back ({time_ns} after {self.last_time})"
            )
        self.last_time = time_ns
        return time_ns, member, (action, order_id, owner, side, price, qty, otype, tif, 0, 0)

    def _price(self, text: str) -> int:
        if not text:
            raise RowError("missing_field", "price is required here")
        price = scaled(text, self.scale.price_scale, "price", "--price-scale")
        if price > self.scale.max_price:
            raise RowError(
                "beyond_limits",
                f"price {text} is {price:,} book units, beyond the book's limit "
                f"({self.scale.limits()}): give prices in a coarser unit",
            )
        return price

    def _qty(self, text: str) -> int:
        if not text:
            raise RowError("missing_field", "qty is required here")
        qty = scaled(text, self.scale.qty_scale, "qty", "--qty-scale")
        if qty > MAX_QTY:
            raise RowError(
                "beyond_limits",
                f"qty {text} is {qty:,} units, beyond the book's limit "
                f"({self.scale.limits()}): give a smaller --qty-scale",
            )
        return qty


def _text(path: Path, data: bytes) -> str:
    """The file's bytes as text, UTF-8 with or without a byte order mark."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {exc.start}): save the command file as UTF-8 CSV"
        ) from None


def _csv_rows(path: Path, text: str) -> tuple[list[str], list[tuple[int, list[str], str]]]:
    """Header and (line, fields, text) of every non-empty data line."""
    lines = text.splitlines()
    records = [
        (number, fields, lines[number - 1])
        for number, fields in enumerate(csv.reader(lines), 1)
        if fields and any(f.strip() for f in fields)
    ]
    if not records:
        raise ValueError(f"{path}: the command file is empty (no header, no rows)")
    _, header, _ = records[0]
    return header, records[1:]


def _parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str], str]]]:
    """Header and (line, fields, text) of every row, as if written as CSV."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ValueError(
            f"{path}: reading Parquet needs pyarrow: pip install 'cxe[research]' "
            "(in a checkout: pip install -e '.[research]')"
        ) from exc
    table = pq.read_table(path)
    columns = [
        ["" if v is None else str(v) for v in table.column(i).to_pylist()]
        for i in range(table.num_columns)
    ]
    rows = [list(values) for values in zip(*columns, strict=True)]
    return table.column_names, [(n + 2, row, ",".join(row)) for n, row in enumerate(rows)]


def read_commands(
    path: str | Path, scale: Scale = Scale(), parquet: bool = False, row_by_row: bool = False
) -> CommandFile:
    """Every row of a command file, good rows per instrument in file order; ValueError for
    a file that cannot be read as one at all (not UTF-8, empty, header only, wrong columns).
    `row_by_row` skips the column-speed reader (tests compare the two)."""
    path = Path(path)
    if parquet:
        header, records = _parquet_rows(path)
    else:
        from engine.replay.fastcsv import read_clean  # it builds on this module

        data = path.read_bytes()
        if not row_by_row and (clean := read_clean(path, data, scale)) is not None:
            return clean
        header, records = _csv_rows(path, _text(path, data))
    names = [name.strip().lower() for name in header]
    if missing := [c for c in REQUIRED if c not in names]:
        raise ValueError(f"{path}: missing columns {missing}; the header must name {REQUIRED}")
    if unknown := [c for c in names if c not in COLUMNS]:
        raise ValueError(f"{path}: unknown columns {unknown}; the columns are {COLUMNS}")
    if not records:
        raise ValueError(f"{path}: the command file has a header but no rows")
    parser = _Parser(scale, "owner" in names)
    kept: dict[str, tuple[list, list, list, list]] = {}
    bad: list[BadRow] = []
    texts: dict[int, str] = {}
    for line, fields, text in records:
        texts[line] = text
        values = dict.fromkeys(COLUMNS, "")
        values.update(zip(names, (f.strip() for f in fields), strict=False))
        instrument = values["instrument"]
        try:
            if len(fields) != len(names):
                raise RowError(
                    "wrong_column_count", f"{len(fields)} fields, the header has {len(names)}"
                )
            if not instrument:
                raise RowError("missing_field", "instrument is required")
            time_ns, member, row = parser.row(values)
        except RowError as exc:
            bad.append(BadRow(line, instrument, exc.reason, str(exc), text))
            continue
        times, lines, members, rows = kept.setdefault(instrument, ([], [], [], []))
        times.append(time_ns)
        lines.append(line)
        members.append(member)
        rows.append(row)
    flows = {
        code: Flow(
            np.array(times, dtype=np.int64),
            np.array(lines, dtype=np.int64),
            np.array(members, dtype=np.int64),
            np.array(rows, dtype=np.int64).reshape(-1, COMMAND_ROWS),
        )
        for code, (times, lines, members, rows) in kept.items()
    }
    return CommandFile(path, scale, flows, bad, texts, len(records), names)
