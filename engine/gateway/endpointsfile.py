"""DATA/endpoints.json: where the engine running on a data directory listens.

The engine writes it once its start has succeeded (atomically: temp file, rename) with its
endpoints, its pid and the data directory's identity (device and inode); `cxe admin`, `cxe
watch` and `cxe capture` read it. Invariant: `read_endpoints` never hands out the endpoints
of an engine running on another directory: a copy of a live data directory (a backup taken
with `cp -a`) carries the file, its pid alive and its ports, and a probe's `cxe admin --data
COPY halt` halted the live market; the copy's identity differs, and it is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENDPOINTS_FILE = "endpoints.json"


class NotThisDirectory(ValueError):
    """DATA/endpoints.json was written by an engine on another directory (DATA is a copy)."""


def directory_id(directory: Path) -> list[int]:
    stat = os.stat(directory)
    return [stat.st_dev, stat.st_ino]


def write_endpoints(data_dir: Path, endpoints: dict[str, str]) -> None:
    path = data_dir / ENDPOINTS_FILE
    temporary = path.with_suffix(".tmp")
    found = {**endpoints, "pid": os.getpid(), "directory": directory_id(data_dir)}
    temporary.write_text(json.dumps(found))
    os.replace(temporary, path)


def read_endpoints(data_dir: str | Path) -> dict | None:
    """What DATA/endpoints.json holds (None when there is none, or it is not JSON: the engine
    is starting or has never run); NotThisDirectory when another directory's engine wrote
    it (a file without the identity, of engines before, is taken as it is)."""
    path = Path(data_dir) / ENDPOINTS_FILE
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict):
        return None
    written = found.get("directory")
    if written is not None and written != directory_id(Path(data_dir)):
        raise NotThisDirectory(
            f"{path} was written by the engine of another data directory (pid "
            f"{found.get('pid')}): {data_dir} is a copy (a backup?), and no engine runs on "
            f"it; give the directory the engine runs on"
        )
    return found
