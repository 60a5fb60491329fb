"""Where numba caches compiled kernels, decided before numba is imported.

Invariant: importing the engine never fails for want of a writable cache directory. Numba
caches next to the source (__pycache__) and, when the install is read-only, in the user cache
directory (XDG_CACHE_HOME or ~/.cache, then "numba"). When neither is writable (a locked-down
service account) this points NUMBA_CACHE_DIR at a per-user directory under the system temp
dir, instead of letting numba refuse to decorate the kernel. An explicit NUMBA_CACHE_DIR wins.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _writable(directory: Path) -> bool:
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def configure() -> str | None:
    """Set NUMBA_CACHE_DIR if numba's own choices are unusable; returns what was set."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    if _writable(Path(__file__).parent / "book"):
        return None
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if _writable(Path(user_cache) / "numba"):
        return None
    fallback = Path(tempfile.gettempdir()) / f"cxe-numba-{os.getuid()}"
    os.environ["NUMBA_CACHE_DIR"] = str(fallback)
    return str(fallback)
