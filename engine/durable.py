"""Files written all or nothing, and directory entries made durable.

Invariants:
- `write_atomically` leaves `final` holding either its old content (or nothing) or all of
  `data`: a temporary file beside it is written, fsynced and renamed over it, and the
  directory is fsynced before it returns; a write that fails removes its temporary file (a
  probe's partial file on a full disk failed the next attempt); something other than a
  regular file in the way is refused (ValueError naming it);
- `fsync_directory` makes the entries made or renamed in a directory survive a crash of the
  machine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from engine.framing import require_regular_file


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(final: Path, data: bytes) -> Path:
    """`data` in `final`, all or nothing (the module's invariants); returns `final`."""
    require_regular_file(final)
    temporary = final.with_name(final.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_directory(final.parent)
    return final
