"""A clean command file read with pyarrow's CSV reader and checked as whole columns.

engine.replay.sources reads a command file row by row, which is the reference: it names
every bad row. This reader takes the common case, a file with nothing wrong in it, at
column speed: pyarrow parses the numbers (ASCII digits only, as the reference), and every
rule of the reference is checked on whole columns. Anything it is not sure of (pyarrow not
installed, scales other than 1, quotes, blank lines, a value pyarrow refuses, any rule
broken by any row) makes it answer None, and the caller reads the file row by row instead,
so a file with a bad row gets the reference's report.
Invariant: when it answers, the answer equals the reference's for the same file and scale.
"""

from __future__ import annotations

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
    MAX_TICKS,
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

NUMBERS = ("time_ns", "order_id", "member", "owner", "price", "qty")
TEXTS = ("instrument", "action", "side", "type", "tif")


def _codes(column, choices: dict[str, int]) -> np.ndarray:
    """The code of each value (lower-cased, trimmed), -1 where it is not a choice."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.utf8_lower(pc.utf8_trim_whitespace(column))
    keys = list(choices)
    index = pc.fill_null(pc.index_in(values, value_set=pa.array(keys)), len(keys))
    lookup = np.array([choices[k] for k in keys] + [-1], dtype=np.int64)
    return lookup[index.to_numpy(zero_copy_only=False)]


def read_clean(path: Path, text: str, scale: Scale) -> CommandFile | None:
    """The file as `read_commands` reads it, or None (see the module docstring)."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    if scale.price_scale != 1 or scale.qty_scale != 1 or '"' in text:
        return None
    lines = text.splitlines()  # a blank line in them shows below: pyarrow skips it, so the
    if len(lines) < 2:  # row count differs; a line of spaces is a row of the wrong width
        return None
    names = [name.strip().lower() for name in lines[0].split(",")]
    if len(set(names)) != len(names) or any(c not in names for c in REQUIRED):
        return None
    if any(name not in COLUMNS for name in names):
        return None
    types = {n: pa.int64() if n in NUMBERS else pa.string() for n in names}
    try:
        table = pcsv.read_csv(
            pa.py_buffer(text.encode()),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pcsv.ParseOptions(newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    n = table.num_rows
    if n != len(lines) - 1:
        return None

    def number(name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values with 0 for empty, present)"""
        if name not in names:
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        column = table[name]
        present = pc.is_valid(column).to_numpy(zero_copy_only=False)
        return pc.fill_null(column, 0).to_numpy(zero_copy_only=False), present

    def text_column(name: str):
        return table[name] if name in names else pa.array([""] * n)

    instrument = pc.utf8_trim_whitespace(table["instrument"])
    action = _codes(table["action"], ACTIONS)
    time_ns, has_time = number("time_ns")
    order_id, has_id = number("order_id")
    member, _ = number("member")
    owner, has_owner = number("owner")
    price, has_price = number("price")
    qty, has_qty = number("qty")
    add, amend, reduce = action == CMD_ADD, action == CMD_AMEND, action == CMD_REDUCE
    side = np.where(add, _codes(text_column("side"), SIDES), 0)
    otype = np.where(add, _codes(text_column("type"), TYPES), 0)
    tif = np.where(add, _codes(text_column("tif"), TIFS), 0)
    market = add & (otype == TYPES["market"])
    priced = (add & ~market) | amend
    sized = add | amend | reduce
    ok = (
        (pc.utf8_length(instrument).to_numpy(zero_copy_only=False) > 0)
        & (action >= 0)
        & has_time
        & has_id
        & (side >= 0)
        & (otype >= 0)
        & (tif >= 0)
        & (~priced | (has_price & (price <= MAX_TICKS * scale.tick)))
        & (~market | ~has_price)
        & (~sized | (has_qty & (qty <= MAX_QTY)))
        & (~reduce | (qty > 0))
    )
    if "owner" in names:
        ok &= has_owner & (owner >= 0) & (owner < MAX_OWNER)
    if not ok.all() or (np.diff(time_ns) < 0).any():
        return None
    codes = pc.dictionary_encode(instrument).combine_chunks()
    index = codes.indices.to_numpy(zero_copy_only=False)
    commands = np.zeros((n, COMMAND_ROWS), dtype=np.int64)
    commands[:, C_KIND] = action
    commands[:, C_OID] = order_id
    commands[:, C_SIDE] = side
    commands[:, C_PRICE] = np.where(priced, price, 0)
    commands[:, C_QTY] = np.where(sized, qty, 0)
    commands[:, C_TYPE] = otype
    commands[:, C_TIF] = tif
    if "owner" in names:
        commands[:, C_OWNER] = owner
    else:  # every add its own owner, counted per instrument as the reference counts them
        commands[:, C_OWNER] = -1
        for code in range(len(codes.dictionary)):
            adds = add & (index == code)
            count = np.cumsum(adds)
            commands[adds, C_OWNER] = count[adds] % (MAX_OWNER - 1) + 1
    line = np.arange(2, n + 2, dtype=np.int64)
    flows = {
        str(code): Flow(time_ns[mask], line[mask], member[mask], commands[mask])
        for code, mask in ((c, index == k) for k, c in enumerate(codes.dictionary.to_pylist()))
    }
    texts = dict(zip(range(2, n + 2), lines[1:], strict=True))
    return CommandFile(path, scale, flows, [], texts, n, names)
