"""The log of a long-running command (`cxe serve`, `cxe relay`, `cxe capture`): lines to
standard output, flushed, that can never stop the process.

A probe closed the pipe `cxe serve` wrote its log to (`cxe serve | tee`, tee gone): the engine
stopped at its next line with exit status 0 and no word, the CLI taking the broken pipe for a
reader that had all it wanted. Invariants:
- a line that cannot be written (a closed pipe, a full disk) is counted in `lost`, never
  raised; any thread may write;
- once standard output is a closed pipe it is made /dev/null (what it had buffered, and the
  flush at exit, go nowhere), standard error says so once, and later lines are only counted.
"""

from __future__ import annotations

import contextlib
import os
import sys


class LogLines:
    """`LogLines("cxe serve")(line)`: one line of the log of the command named."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.lost = 0  # lines not written
        self.gone = False  # standard output was a closed pipe

    def __call__(self, line: str) -> None:
        if self.gone:
            self.lost += 1
            return
        try:
            print(line, flush=True)
        except BrokenPipeError:
            self.lost += 1
            self.gone = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            with contextlib.suppress(OSError):
                print(
                    f"{self.command}: its log (standard output) was closed; it goes on, and "
                    f"counts the lines it could not write",
                    file=sys.stderr,
                    flush=True,
                )
        except OSError:
            self.lost += 1
