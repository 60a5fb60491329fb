"""Long-running `cxe` commands started the way a background job of a non-interactive shell starts
them (a CI runner's `cmd &`, a script's `nohup cmd &`): with SIGINT ignored.

A Python process that starts with SIGINT ignored keeps it ignored (it installs its
KeyboardInterrupt handler only over the default action), so a command relying on
KeyboardInterrupt cannot be stopped with SIGINT there; every long-running command sets its own
handlers. `wait_until_caught` waits for those handlers (the process's SigCgt mask in
/proc/PID/status: Linux only) before a test signals the process, so a signal is never sent
before the command can take it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def ignore_sigint() -> None:
    """A preexec_fn: the child starts with SIGINT ignored, as a background job's children do."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def caught(pid: int) -> set[int]:
    """The signals process `pid` has a handler for."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, mask.bit_length() + 1) if mask >> (n - 1) & 1}
    raise AssertionError(f"no SigCgt line in /proc/{pid}/status")


def wait_until_caught(process: subprocess.Popen, *signums: int, timeout: float = 120) -> None:
    """Wait until `process` handles every one of `signums`; AssertionError if it exits first or
    does not within `timeout` seconds (then it leaves them ignored or at their default)."""
    names = ", ".join(signal.Signals(n).name for n in signums)
    deadline = time.monotonic() + timeout
    while process.poll() is None:  # not reaped: /proc/PID stays readable
        if set(signums) <= caught(process.pid):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.args} set no handler for {names} in {timeout:g} s")
        time.sleep(0.05)
    raise AssertionError(f"{process.args} exited {process.returncode} before handling {names}")
