"""The log of a long-running command (engine.logline): a closed pipe or a full disk never
stops the process; lines that could not be written are counted. (The engine's case, a real
`cxe serve`, is in tests/gateway/test_service_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, time
from engine.logline import LogLines
log = LogLines("cxe example")
time.sleep(0.5)  # the reader closes the pipe meanwhile
for i in range(3):
    log(f"line {i}")
print(f"lost {log.lost}, gone {log.gone}", file=sys.stderr)
"""


def test_a_log_whose_pipe_was_closed_counts_its_lines_and_the_process_ends_well():
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    said = stderr.decode()
    assert process.returncode == 0, said  # not 120: the flush at exit found /dev/null
    assert said.count("cxe example: its log (standard output) was closed; it goes on") == 1
    assert "lost 3, gone True" in said and "Traceback" not in said


def test_a_log_that_cannot_take_a_line_counts_it(monkeypatch):
    from engine.logline import LogLines

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    log = LogLines("cxe example")
    monkeypatch.setattr("builtins.print", full_disk)
    log("one")
    log("two")
    assert (log.lost, log.gone) == (2, False)  # a full disk may empty: each line is tried
