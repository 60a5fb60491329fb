"""What a replay source is, told from its content (never from its name alone).

Formats: "lobster" (a LOBSTER message file, or a LOBSTER zip as it ships), "commands" (a
command file, CSV or Parquet: engine.replay.sources), "log" (an engine command log) and
"trades" (an engine trade log: `cxe log dump` reads it; it cannot be replayed).
Invariant: `detect` reads only the file's first bytes and first record or line, and raises
ValueError saying what it saw and to give --format when the content fits none of them.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from engine.framing import first_payload

FORMATS = ("lobster", "commands", "log")
ZIP_MAGIC = b"PK\x03\x04"
PARQUET_MAGIC = b"PAR1"
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_any_msgpack = msgspec.msgpack.Decoder()


def is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ZIP_MAGIC


def is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == PARQUET_MAGIC


def framed_kind(head: bytes) -> str | None:
    """ "log" or "trades" when `head` starts with a complete framed record of that kind."""
    payload = first_payload(head)
    if payload is None:
        return None
    try:
        record = _any_msgpack.decode(payload)
    except msgspec.DecodeError:
        return None
    if isinstance(record, list) and len(record) == 3:  # [seq, ts_ns, command]
        return "log"
    return "trades" if isinstance(record, list) else None


def _first_line(head: bytes) -> str | None:
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # a cut multi-byte character at the end is fine
        if exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8-sig")
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def detect(path: str | Path) -> str:
    """The format of `path` from its content: one of FORMATS, or "trades"."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(1 << 16)
    if head.startswith(ZIP_MAGIC):
        return "lobster"
    if head.startswith(PARQUET_MAGIC):
        return "commands"
    if kind := framed_kind(head):
        return kind
    line = _first_line(head)
    if line == "":
        raise ValueError(f"{path} is empty: nothing to replay")
    if line is not None:
        fields = [f.strip().lower() for f in line.split(",")]
        if "time_ns" in fields and "action" in fields:
            return "commands"
        if len(fields) == 6 and all(NUMBER.fullmatch(f) for f in fields):
            return "lobster"
    seen = "binary data" if line is None else f"a first line {line[:60]!r}"
    raise ValueError(
        f"cannot tell what {path} is (found {seen}): a LOBSTER message file has 6 numeric "
        "columns, a command file a header with time_ns and action (docs/REPLAY.md), a command "
        "log framed records; give --format lobster, commands or log"
    )
