"""Snapshots written by a forked child, so the engine's loop pauses for a fork, not a write.

A snapshot in the loop's thread (the state hash, the state and order status table turned into
bytes, two files written and fsynced) stopped the market for 1.3 s on a day of 800,000 orders
(bench/RESULTS.md); a fork of that engine takes about 10 ms. The child sees the state as it
was at the fork (copy-on-write) while the loop goes on changing its own. Invariants:
- at most one writer at a time (`busy`); the service asks again after it is reaped;
- the child runs `work` and nothing else: it is born with the signals an operator's Ctrl-C or
  a service manager send blocked (the parent blocks them around the fork; it waits for the
  child as it stops); it first closes every descriptor it inherited (so it holds neither the
  data directory's lock nor the sockets' ports: an engine restarted after a kill -9 is never
  refused because of it), asks the kernel to kill it if the parent dies (it never outlives
  the engine) and switches the garbage collector off (no object of the parent's is
  finalised in it); it touches no socket, lock or thread of the
  parent's, and leaves with os._exit (no exit handler, no flush of the parent's buffers);
- the child's last words (at most ANSWER_BYTES, one write into a pipe: it never waits for
  the parent) are WRITTEN and its log line when `work` returned one, else NOT_WRITTEN and
  why it failed; `reap` (each
  turn, no waiting) and `wait` (at stop) hand them to `done` or `failed`; a child killed by
  a signal, or a fork that fails, is a failure too; none of them ever raises into the loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import os
import signal
import time
from collections.abc import Callable

ANSWER_BYTES = 4096  # within the pipe's buffer: the child's one write never blocks
PR_SET_PDEATHSIG = 1  # prctl(2): the signal the child gets when its parent dies
BLOCKED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
WRITTEN, NOT_WRITTEN = "+", "-"  # the first character of the child's answer
_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child calls it at once
SAY_WAITING_S = 5.0  # a stop waiting this long for the writer says so
WAIT_LIMIT_S = 600.0  # and ends it after this long (a large state takes seconds, not minutes)


class SnapshotWriter:
    """One snapshot at a time, written in a child process."""

    def __init__(self) -> None:
        self.pid = 0  # the child's, while one runs
        self._answers = -1  # the read end of the child's pipe
        self._done: Callable[[str], None] | None = None
        self._failed: Callable[[str], None] | None = None

    @property
    def busy(self) -> bool:
        return self.pid != 0

    def start(
        self,
        work: Callable[[], str],
        done: Callable[[str], None],
        failed: Callable[[str], None],
    ) -> None:
        """Fork a child that runs `work` (its log line is given to `done` once it is reaped;
        why it failed to `failed`); a fork that fails goes to `failed` at once."""
        if self.busy:
            raise RuntimeError("a snapshot is being written: reap it first")
        try:  # no descriptor left for the pipe (a probe's connection flood) is a failure too
            read_end, write_end = os.pipe()
        except OSError as exc:
            failed(f"its writer could not be started: {exc}")
            return
        parent = os.getpid()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)  # the child is born with them
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            failed(f"its writer could not be started: {exc}")
            return
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pid == 0:
            _child(work, write_end, parent)
        os.close(write_end)
        self.pid, self._answers, self._done, self._failed = pid, read_end, done, failed

    def reap(self) -> None:
        """Hand on the child's result if it has ended; return at once if it has not."""
        if self.busy:
            try:
                ended, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its answer tells
                ended, status = self.pid, -1
            if ended:
                self._settle(status)

    def wait(self, log: Callable[[str], None], limit_s: float = WAIT_LIMIT_S) -> None:
        """Wait for the child in hand, if any, and hand on its result (the service stops):
        said in `log` after SAY_WAITING_S, and ended with SIGKILL after `limit_s` (a probe's
        stopped child held a SIGTERM'd engine for good, without a word)."""
        started = time.monotonic()
        said = False
        while self.busy:
            self.reap()
            waited = time.monotonic() - started
            if not self.busy:
                return
            if waited >= SAY_WAITING_S and not said:
                log(
                    f"waiting for the snapshot writer, process {self.pid}, to finish (at most "
                    f"{limit_s:,.0f} s, then it is ended)"
                )
                said = True
            if waited >= limit_s:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                limit_s = math.inf  # killed: its end comes at once
            time.sleep(0.01)

    def _settle(self, status: int) -> None:
        """`status`: waitpid's, or -1 when the child's end was not seen."""
        pid, done, failed = self.pid, self._done, self._failed
        self.pid, self._done, self._failed = 0, None, None
        with os.fdopen(self._answers, "rb") as pipe:
            answer = pipe.read().decode("utf-8", "replace")
        if answer.startswith(WRITTEN):
            done(answer[len(WRITTEN) :])
        elif answer.startswith(NOT_WRITTEN):
            failed(answer[len(NOT_WRITTEN) :])
        elif status != -1 and os.WIFSIGNALED(status):
            killer = signal.Signals(os.WTERMSIG(status)).name
            failed(f"its writer, process {pid}, was killed by {killer}")
        else:
            failed(f"its writer, process {pid}, ended without a word")


def _child(work: Callable[[], str], answers: int, parent: int) -> None:
    """The child's whole life: never returns."""
    code, answer = 1, NOT_WRITTEN + "its writer failed before it began"
    try:
        os.closerange(3, answers)  # first: the lock and the ports are the parent's alone
        os.closerange(answers + 1, os.sysconf("SC_OPEN_MAX"))
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took hold
            os._exit(1)
        # short of memory, the kernel ends the writer first, not the engine (a probe's did)
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
        gc.disable()
        answer, code = WRITTEN + work(), 0
    except OSError as exc:
        answer = NOT_WRITTEN + str(exc)
    except BaseException as exc:  # a bug's text, for the parent's log: never a traceback here
        answer = f"{NOT_WRITTEN}{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            os.write(answers, answer.encode("utf-8", "replace")[:ANSWER_BYTES])
        os._exit(code)
