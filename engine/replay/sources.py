"""Command files: order flow as CSV (or Parquet with pyarrow) for the batch replay.

Schema, one row per command, with a header:

    time_ns,instrument,member,action,side,price,qty,order_id,tif
    34200000000000,CEA25,3,add,buy,6200,100,1,day
    34200500000000,CEA25,3,amend,,6201,80,1,
    34201000000000,CEA25,3,cancel,,,,1,

time_ns: nanoseconds (any epoch; rows must not go back in time); instrument: a code;
member: an integer; action: add, cancel or amend; side: buy or sell (adds only); price:
an integer in the instrument's price unit (fen for the engine's markets), for adds and
amends; qty: an integer (for amends, the new remaining quantity); order_id: the caller's
integer id; tif: day, ioc or fok (optional, default day).
Invariant: a file either loads completely or raises ValueError naming the line and field.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.book.layout import CMD_ADD, CMD_AMEND, CMD_CANCEL, COMMAND_ROWS
from engine.types import INT64_MAX, INT64_MIN

ACTIONS = {"add": CMD_ADD, "cancel": CMD_CANCEL, "amend": CMD_AMEND}
SIDES = {"buy": 0, "sell": 1}
TIFS = {"": 0, "day": 0, "ioc": 1, "fok": 2}
COLUMNS = ["time_ns", "instrument", "member", "action", "side", "price", "qty", "order_id"]


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [
            {k: "" if v is None else str(v) for k, v in r.items()}
            for r in pq.read_table(path).to_pylist()
        ]
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _integer(path: Path, line: int, row: dict, field: str, required: bool = True) -> int:
    text = (row.get(field) or "").strip()
    if not text and not required:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{path}:{line}: {field} must be an integer, got {text!r}") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{path}:{line}: {field} must fit in 64 bits (int64), got {text}")
    return value


def read_commands(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{instrument: (time_ns array, (n, 10) command array)} in file order."""
    path = Path(path)
    rows = _rows(path)
    if rows and (missing := [c for c in COLUMNS if c not in rows[0]]):
        raise ValueError(f"{path}: missing columns {missing}; expected {COLUMNS} (+ tif)")
    by_instrument: dict[str, list] = {}
    last_time = None
    for line, row in enumerate(rows, 2):
        action = (row["action"] or "").strip().lower()
        if action not in ACTIONS:
            raise ValueError(f"{path}:{line}: action must be add, cancel or amend, got {action!r}")
        kind = ACTIONS[action]
        side_text = (row["side"] or "").strip().lower()
        if kind == CMD_ADD and side_text not in SIDES:
            raise ValueError(f"{path}:{line}: side must be buy or sell, got {side_text!r}")
        tif_text = (row.get("tif") or "").strip().lower()
        if tif_text not in TIFS:
            raise ValueError(f"{path}:{line}: tif must be day, ioc or fok, got {tif_text!r}")
        time_ns = _integer(path, line, row, "time_ns")
        if last_time is not None and time_ns < last_time:
            raise ValueError(f"{path}:{line}: time goes back ({time_ns} < {last_time})")
        last_time = time_ns
        priced = kind != CMD_CANCEL
        command = (
            kind,
            _integer(path, line, row, "order_id"),
            _integer(path, line, row, "member"),
            SIDES.get(side_text, 0),
            _integer(path, line, row, "price", priced),
            _integer(path, line, row, "qty", priced),
            1,
            TIFS[tif_text],
            0,
            0,
        )
        by_instrument.setdefault(row["instrument"].strip(), []).append((time_ns, command))
    return {
        code: (
            np.array([t for t, _ in items], dtype=np.int64),
            np.array([c for _, c in items], dtype=np.int64).reshape(-1, COMMAND_ROWS),
        )
        for code, items in by_instrument.items()
    }
