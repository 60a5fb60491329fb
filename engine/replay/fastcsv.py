"""Command files and LOBSTER files read at column speed with pyarrow's CSV reader.

engine.replay.sources (command files) and engine.replay.lobster (LOBSTER files) read row by
row, which is the reference: it names every bad row. These readers take the common case, a
file with nothing wrong in it, at column speed: the bytes go to pyarrow as they are (no
decoding, no splitting into lines), pyarrow parses the numbers, text columns are compared
through their dictionary of distinct values (trimmed and lower-cased in Python, as the
reference does), and every rule of the reference is checked on whole columns. Anything they
are not sure of makes them answer None, and the caller reads the file row by row instead,
so a file with a bad row gets the reference's report: pyarrow not installed; scales other
than 1; quotes; `0x`, which pyarrow's integers take as hexadecimal; a blank line (a row of
nulls here, skipped there, which would shift the line numbers); a character Python splits
lines at but pyarrow does not; in a LOBSTER file any byte but ASCII digits, `.`, `,`, `-`,
spaces and line ends (no nan, inf, 1e20, 1_000, full-width digits); a value pyarrow refuses;
any rule broken by any row.
Invariants: when they answer, the answer equals the reference's for the same file; a row's
line is its index + 1 (+ 1 more after a command file's header); the file's text is split
into lines only when a row's text is asked for (`Texts`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from engine.book.layout import (
    C_KIND,
    C_OID,
    C_OWNER,
    C_PRICE,
    C_QTY,
    C_SIDE,
    C_TIF,
    C_TYPE,
    CMD_ADD,
    CMD_AMEND,
    COMMAND_ROWS,
    MAX_OWNER,
    MAX_QTY,
)
from engine.replay.sources import (
    ACTIONS,
    CMD_REDUCE,
    COLUMNS,
    REQUIRED,
    SIDES,
    TIFS,
    TYPES,
    CommandFile,
    Flow,
    Scale,
)

BOM = b"\xef\xbb\xbf"
NUMBERS = ("time_ns", "order_id", "member", "owner", "price", "qty")
STOPS = '"\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'  # a quote; where str.splitlines splits
HEX = re.compile(rb"0[xX]")
LOBSTER_BYTES = b"0123456789.,- \r\n"


class Texts(Mapping[int, str]):
    """Line number -> the row as written, for a file whose data rows are lines 2 to rows + 1;
    the text is decoded and split into lines on the first look-up only."""

    def __init__(self, data: bytes, rows: int) -> None:
        self._data = data
        self._rows = rows
        self._lines: list[str] | None = None

    def __getitem__(self, line: int) -> str:
        if not 2 <= line <= self._rows + 1:
            raise KeyError(line)
        if self._lines is None:
            self._lines = self._data.decode("utf-8-sig").splitlines()
        return self._lines[line - 1]

    def __iter__(self) -> Iterator[int]:
        return iter(range(2, self._rows + 2))

    def __len__(self) -> int:
        return self._rows


def _body(data: bytes) -> memoryview:
    """The file without its byte order mark."""
    return memoryview(data)[len(BOM) :] if data.startswith(BOM) else memoryview(data)


def _read(body: memoryview, names: list[str], types: dict, header: bool):
    """pyarrow's table of the file, or None when pyarrow refuses it."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        return pcsv.read_csv(
            pa.py_buffer(body),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
            parse_options=pcsv.ParseOptions(
                quote_char=False, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _column(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An integer column as (values with 0 where empty, present)."""
    import pyarrow.compute as pc

    column = table[name].combine_chunks()
    if column.null_count == 0:
        return column.to_numpy(), np.ones(len(column), dtype=bool)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    return pc.fill_null(column, 0).to_numpy(), present


def _distinct(table, name: str) -> tuple[list[str], np.ndarray] | None:
    """A text column (read dictionary-encoded) as (its distinct values, each row's index into
    them); None when a value holds a quote or a character Python would split the line at."""
    values: dict[str, int] = {}
    chunks = []
    for chunk in table[name].chunks:  # each chunk has its own dictionary
        words = chunk.dictionary.to_pylist()
        remap = np.array([values.setdefault(word, len(values)) for word in words], np.int64)
        chunks.append(remap[chunk.indices.to_numpy(zero_copy_only=False)])
    if any(ch in value for value in values for ch in STOPS):
        return None
    return list(values), np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def _codes(distinct: tuple[list[str], np.ndarray], choices: dict[str, int]) -> np.ndarray:
    """The code of each row's value (trimmed, lower-cased), -1 where it is not a choice."""
    values, index = distinct
    lookup = np.array([choices.get(v.strip().lower(), -1) for v in values], dtype=np.int64)
    return lookup[index] if len(values) else np.zeros(len(index), dtype=np.int64)


def read_clean(path: Path, data: bytes, scale: Scale) -> CommandFile | None:
    """The command file's bytes as `read_commands` reads them, or None (module docstring)."""
    try:
        import pyarrow as pa
    except ImportError:
        return None
    if scale.price_scale != 1 or scale.qty_scale != 1:
        return None
    if (b"x" in data or b"X" in data) and HEX.search(data):
        return None
    body = _body(data)
    end = bytes(body[:4096]).find(b"\n")
    head = bytes(body[: end if end >= 0 else 4096])
    try:
        header = head.decode().rstrip("\r")
    except UnicodeDecodeError:
        return None
    names = [name.strip().lower() for name in header.split(",")]
    if end < 0 or len(set(names)) != len(names) or any(c not in names for c in REQUIRED):
        return None
    if any(name not in COLUMNS for name in names):
        return None
    words = pa.dictionary(pa.int32(), pa.string())
    types = {n: pa.int64() if n in NUMBERS else words for n in names}
    table = _read(body, names, types, header=True)
    if table is None or table.num_rows == 0:
        return None
    n = table.num_rows
    texts = {name: _distinct(table, name) for name in names if name not in NUMBERS}
    if any(distinct is None for distinct in texts.values()):
        return None
    absent = ([""], np.zeros(n, dtype=np.int64))
    instruments, raw_index = texts["instrument"]
    codes = [value.strip() for value in instruments]
    code_list = sorted(set(codes))
    position = {code: k for k, code in enumerate(code_list)}
    index = np.array([position[c] for c in codes], dtype=np.int64)[raw_index]
    action = _codes(texts["action"], ACTIONS)
    time_ns, has_time = _column(table, "time_ns")
    order_id, has_id = _column(table, "order_id")
    zeros = (np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))
    member, _ = _column(table, "member") if "member" in names else zeros
    owner, has_owner = _column(table, "owner") if "owner" in names else zeros
    price, has_price = _column(table, "price") if "price" in names else zeros
    qty, has_qty = _column(table, "qty") if "qty" in names else zeros
    add, amend, reduce = action == CMD_ADD, action == CMD_AMEND, action == CMD_REDUCE
    side = np.where(add, _codes(texts.get("side", absent), SIDES), 0)
    otype = np.where(add, _codes(texts.get("type", absent), TYPES), 0)
    tif = np.where(add, _codes(texts.get("tif", absent), TIFS), 0)
    market = add & (otype == TYPES["market"])
    priced = (add & ~market) | amend
    sized = add | amend | reduce
    named = np.array([c != "" for c in code_list], dtype=bool)[index]
    ok = (
        named
        & (action >= 0)
        & has_time
        & has_id
        & (side >= 0)
        & (otype >= 0)
        & (tif >= 0)
        & (~priced | (has_price & (price <= scale.max_price)))
        & (~market | ~has_price)
        & (~sized | (has_qty & (qty <= MAX_QTY)))
        & (~reduce | (qty > 0))
    )
    if "owner" in names:
        ok &= has_owner & (owner >= 0) & (owner < MAX_OWNER)
    if not ok.all() or (np.diff(time_ns) < 0).any():
        return None
    if "owner" not in names:  # every add its own owner, counted per instrument below
        owner = np.full(n, -1, dtype=np.int64)
    columns = {
        C_KIND: action,
        C_OID: order_id,
        C_SIDE: side,
        C_PRICE: np.where(priced, price, 0),
        C_QTY: np.where(sized, qty, 0),
        C_TYPE: otype,
        C_TIF: tif,
    }
    line = np.arange(2, n + 2, dtype=np.int64)
    # a stable sort keeps file order within an instrument; on small integers numpy's stable
    # sort is a radix sort
    order = np.argsort(index.astype(np.min_scalar_type(len(code_list))), kind="stable")
    bounds = np.searchsorted(index[order], np.arange(len(code_list) + 1))
    flows = {}
    for k, code in enumerate(code_list):
        rows = order[bounds[k] : bounds[k + 1]]
        commands = np.zeros((len(rows), COMMAND_ROWS), dtype=np.int64)
        for column, values in columns.items():
            commands[:, column] = values[rows]
        commands[:, C_OWNER] = owner[rows]
        if "owner" not in names:  # as the reference counts them
            adds = add[rows]
            commands[adds, C_OWNER] = np.cumsum(adds)[adds] % (MAX_OWNER - 1) + 1
        flows[code] = Flow(time_ns[rows], line[rows], member[rows], commands)
    return CommandFile(path, scale, flows, [], Texts(data, n), n, names)


def read_lobster(data: bytes, width: int, seconds_first: bool) -> tuple | None:
    """A clean LOBSTER file's columns: (seconds, the other columns as an (n, width - 1) int64
    array) for a message file (`seconds_first`), else (None, the (n, width) int64 array),
    the arrays column-major; None when the file is not clean enough to be sure (module
    docstring)."""
    try:
        import pyarrow as pa
    except ImportError:
        return None
    if data.translate(None, LOBSTER_BYTES) != (BOM if data.startswith(BOM) else b""):
        return None
    body = _body(data)
    names = [f"c{k}" for k in range(width)]
    types = {name: pa.int64() for name in names}
    if seconds_first:
        types["c0"] = pa.float64()
    table = _read(body, names, types, header=False)
    if table is None or any(column.null_count for column in table.columns):
        return None
    first = 1 if seconds_first else 0
    columns = np.empty((width - first, table.num_rows), dtype=np.int64)  # each one contiguous
    for k in range(first, width):
        start = 0
        for chunk in table.column(k).chunks:
            columns[k - first, start : start + len(chunk)] = chunk.to_numpy()
            start += len(chunk)
    seconds = table.column(0).to_numpy() if seconds_first else None
    return seconds, columns.T
