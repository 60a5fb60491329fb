"""A real `cxe serve` process for end-to-end tests: start, talk to, stop, kill -9, restart.

The engine runs on loopback with ports it picks (`*`), its endpoints read from the data
directory's endpoints.json; the clock is a rehearsal clock on a fixed trading day so tests do
not depend on today's date.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

from engine.gateway import wire
from engine.gateway.admin_client import AdminClient
from engine.gateway.security import KeyPair
from tests.cli.test_cli import cxe_command
from tests.support.signals import ignore_sigint

DAY = "2026-11-24"
CLOCK = f"{DAY}T09:10+08:00"


class EngineProcess:
    def __init__(
        self,
        data: Path,
        *extra: str,
        fsync: bool = True,
        max_file_bytes: int | None = None,
        admin_keys: tuple[KeyPair, bytes] | None = None,  # an operator's, for a CURVE engine
        sigint_ignored: bool = False,  # started as a background job's children are
        max_descriptors: int | None = None,  # RLIMIT_NOFILE, soft and hard
        stdout_pipe: bool = False,  # its log into `process.stdout`, a pipe (stderr: the file)
    ) -> None:
        self.data = Path(data)
        self.admin_keys = admin_keys
        self.max_file_bytes = max_file_bytes  # RLIMIT_FSIZE: a write past it fails (EFBIG)
        self.sigint_ignored = sigint_ignored
        self.max_descriptors = max_descriptors
        self.stdout_pipe = stdout_pipe
        self.extra = list(extra) + ([] if fsync else ["--no-fsync"])
        self.process: subprocess.Popen | None = None
        self.endpoints: dict[str, str] = {}
        self.log = self.data.parent / f"{self.data.name}.log"
        self.clock = CLOCK  # where the service's clock starts (`cxe serve --clock`)

    def start(self, timeout: float = 240) -> EngineProcess:
        endpoints = self.data / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        loopback = ["--orders", "tcp://127.0.0.1:*", "--admin", "tcp://127.0.0.1:*"]
        loopback += ["--market-data", "tcp://127.0.0.1:*", "--snapshots", "tcp://127.0.0.1:*"]
        loopback += ["--trades", "tcp://127.0.0.1:*"]
        command = [
            *cxe_command(),
            "serve",
            "--data",
            str(self.data),
            "--clock",
            self.clock,
            *loopback,
            *self.extra,
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE if self.stdout_pipe else log,
                stderr=log if self.stdout_pipe else subprocess.STDOUT,
                preexec_fn=self._limits,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cxe serve exited {self.process.returncode}: {self.output()}")
            try:
                found = json.loads(endpoints.read_text())
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if found.get("pid") == self.process.pid:
                self.endpoints = found
                return self
        raise TimeoutError(f"cxe serve did not start: {self.output()}")

    def _limits(self) -> None:
        if self.max_file_bytes is not None:
            limit = self.max_file_bytes
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        if self.sigint_ignored:
            ignore_sigint()
        if self.max_descriptors is not None:
            limit = self.max_descriptors
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def admin(self, *commands, timeout_s: float = 30.0) -> list:
        """Send operator commands; the engine's answer (TimeoutError after `timeout_s`)."""
        with AdminClient(self.endpoints["admin"], curve_keys=self.admin_keys) as client:
            return client.ask(*commands, timeout_s=timeout_s)

    def status(self) -> wire.StatusReport:
        (report,) = self.admin(wire.Status())
        return report

    def snapshot(self, timeout: float = 60.0) -> wire.SnapshotRequested:
        """Ask for a snapshot and wait until it is written (a child process writes it while
        the engine trades on: the status counts it once it is on disk)."""
        written = self.status().counters["snapshots_written"]
        (requested,) = self.admin(wire.SnapshotNow())
        assert isinstance(requested, wire.SnapshotRequested), requested
        deadline = time.monotonic() + timeout
        while self.status().counters["snapshots_written"] == written:
            assert time.monotonic() < deadline, f"no snapshot written: {self.output()}"
            time.sleep(0.05)
        return requested

    def open_market(self, *codes: str, day: str = DAY) -> None:
        from engine.protocol import OpenCall, StartOfDay, Uncross

        commands = [StartOfDay(day)]
        for code in codes:
            commands += [OpenCall(code), Uncross(code)]
        answers = self.admin(*commands)
        assert not [a for a in answers if type(a).__name__ == "Rejected"], answers

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
