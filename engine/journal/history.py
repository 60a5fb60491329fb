"""A journal's history id: which engine's history its sequence numbers belong to.

Stream numbers (the trade stream's `stream_seq`) restart at 1 in a fresh data directory, so a
number alone cannot tell one engine's history from another's: a probe captured day 1 from one
engine and day 2 from a fresh one into the same store, which took the new engine's events
from the store's position on and silently left out the ones before it. The id, kept in
`journal/history`, can. Invariants:
- it is 32 lower-case hex digits (a random UUID), made the first time it is asked for and
  written atomically; after that it never changes: archiving segments away, taking a
  snapshot, restarting or copying the whole data directory keep it; a fresh data directory
  (or a journal directory made anew) gets a new one; snapshots carry it
  (engine.journal.snapshot), so a snapshot from another data directory is refused (and so
  is a snapshot carrying an id beside a journal holding segments but no file: whose it is
  cannot be told); a journal without segments takes the id of the snapshot it begins after;
- a file that is not such an id is refused (ValueError naming it and what to do), never
  replaced: replacing it would make every store that captured from this engine refuse it.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from engine.durable import write_atomically
from engine.framing import require_regular_file

HISTORY_FILE = "history"
_HISTORY = re.compile(r"[0-9a-f]{32}", re.ASCII)


def is_history_id(text: object, or_empty: bool = False) -> bool:
    """Whether `text` is a history id (or "" with `or_empty`: a snapshot written without)."""
    return isinstance(text, str) and (bool(_HISTORY.fullmatch(text)) or (or_empty and text == ""))


def read_history_id(journal: str | Path) -> str | None:
    """The history id of the journal in directory `journal`, None if it has none yet (read
    only: a start that refuses makes nothing)."""
    path = Path(journal) / HISTORY_FILE
    require_regular_file(path)
    try:
        text = path.read_bytes().decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None
    if not is_history_id(text):
        raise ValueError(
            f"{path} does not hold a history id (32 hex digits): restore it from a backup of "
            f"this data directory; or remove it: with a snapshot beside it, the start then "
            f"says which id to write; without one the journal gets a new id (trade stores "
            f"that captured from this engine will then refuse it)"
        )
    return text


def history_id(journal: str | Path, made: str | None = None) -> str:
    """The history id of the journal in directory `journal`, created with it if need be: as
    `made` (the id of the snapshot a journal without segments begins after) or else a new
    one."""
    held = read_history_id(journal)
    if held is not None:
        return held
    journal = Path(journal)
    journal.mkdir(parents=True, exist_ok=True)
    made = made or uuid.uuid4().hex
    write_atomically(journal / HISTORY_FILE, made.encode() + b"\n")
    return made
