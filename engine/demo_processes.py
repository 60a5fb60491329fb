"""The processes of `cxe demo` (engine.demo_live) and how the demo process drives them.

- `Engine`: `cxe serve` as a subprocess on loopback ports chosen once (`free_ports`), so a
  restart after SIGKILL listens where the gateways, the subscriber and capture connect;
  `start` returns only when the new process has written its endpoints.json;
- `Gateway`: a broker gateway process (engine.demo_gateway), told what to do one JSON line
  at a time, its answers read on a thread into a queue shared by the gateways (a process
  that stops is an error, never a hang);
- `Capture`: `cxe capture --until-day-closed` into the demo's trade store;
- `Subscriber`: a MarketDataClient read on a thread under a lock, keeping the local books
  (compared with a fresh snapshot by `matches_snapshot`) and each instrument's public trades;
- `stop_process`: SIGTERM, then SIGKILL after a grace period: nothing outlives the demo.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.cli.clearing import STORE
from engine.demo import Figures


def cxe_command() -> list[str]:
    return [sys.executable, "-m", "engine.cli"]


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now (the engine binds them; a restart binds the same)."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def kernel_cached() -> bool:
    """Numba's cache holds compiled kernels of this install (else the engine compiles them
    at its start: a first run)."""
    import engine

    package = Path(engine.__file__).parent
    places = [package]
    if os.environ.get("NUMBA_CACHE_DIR"):
        places.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    places.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "numba")
    return any(next(place.rglob("*.nbi"), None) for place in places if place.is_dir())


def stop_process(process: subprocess.Popen, wait_s: float = 60) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it is still running after `wait_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


class Engine:
    """The `cxe serve` subprocess on fixed loopback ports, so a restart listens where the
    gateways, the subscriber and capture already connect."""

    def __init__(self, data: Path, log: Path, date: str, market_file: str | None) -> None:
        self.data, self.log = data, log
        ports = free_ports(5)
        names = ("orders", "admin", "market-data", "snapshots", "trades")
        self.endpoints = {n: f"tcp://127.0.0.1:{p}" for n, p in zip(names, ports, strict=True)}
        clock = f"{date}T09:10+08:00"  # a rehearsal clock on the day: any day can be shown
        self.command = [*cxe_command(), "serve", "--data", str(data), "--clock", clock]
        for name, endpoint in self.endpoints.items():
            self.command += [f"--{name}", endpoint]
        if market_file:
            self.command += ["--config", market_file]
        self.process: subprocess.Popen | None = None

    def start(self, waiting: Callable[[float], None], timeout: float = 900) -> float:
        """Start and wait until it listens; the seconds that took."""
        started = time.monotonic()
        (self.data / "endpoints.json").unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"cxe serve exited with status {self.process.returncode}; its output is in "
                    f"{self.log}"
                )
            try:
                found = json.loads((self.data / "endpoints.json").read_text())
            except (OSError, ValueError):
                found = {}
            if found.get("pid") == self.process.pid:
                return time.monotonic() - started
            waiting(time.monotonic() - started)
            time.sleep(0.1)
        raise TimeoutError(f"cxe serve did not start within {timeout:.0f} s: see {self.log}")

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class Gateway:
    """A broker gateway process (engine.demo_gateway). Its answers go, with the gateway, into
    `inbox` (shared by the demo's gateways; None for a gateway whose output ended)."""

    def __init__(
        self, name: str, engine: Engine, seed: int, out: Path, market: str | None,
        inbox: queue.Queue,
    ) -> None:  # fmt: skip
        self.name = name
        self.acks = out / "gateways" / f"acks-{name}.log"
        command = [sys.executable, "-m", "engine.demo_gateway", engine.endpoints["orders"]]
        command += [name, str(seed), str(self.acks), *([market] if market else [])]
        with (out / "logs" / f"gateway-{name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            )
        self.counts: Counter = Counter()
        self.progress = 0
        threading.Thread(target=self._read, args=(inbox,), daemon=True).start()

    def _read(self, inbox: queue.Queue) -> None:
        for line in self.process.stdout:
            inbox.put((self, json.loads(line)))
        inbox.put((self, None))

    def tell(self, **task) -> None:
        self.process.stdin.write((json.dumps(task) + "\n").encode())
        self.process.stdin.flush()

    def take(self, message: dict | None) -> bool:
        """Take one of its messages (progress, done); True when the instruction is done."""
        if message is None:
            status = self.process.wait()
            raise RuntimeError(f"gateway {self.name} stopped (status {status}): see its log")
        self.counts = Counter(message["counts"])
        self.progress = message.get("progress", self.progress)
        return "done" in message

    def stop(self) -> None:
        """Ask it to stop; kill it if it does not within seconds (stuck logging on again to
        an engine that is gone, it reads no instruction)."""
        if self.process.poll() is None:
            try:
                self.tell(do="stop")
                self.process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(30)


class Subscriber:
    """The market data subscriber: a MarketDataClient read on a thread, keeping its local
    books, and the public trades per instrument for the live view."""

    def __init__(self, engine: Engine) -> None:
        from engine.gateway.marketdata_client import MarketDataClient

        self.client = MarketDataClient(
            engine.endpoints["market-data"], engine.endpoints["snapshots"]
        )
        self.lock = threading.Lock()
        self.trades: dict[str, Figures] = {}
        self.last: dict[str, int] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from engine.protocol import TradePrint

        while not self.stopping.is_set():
            with self.lock:
                update = self.client.next_update(0.05)
            if type(update) is TradePrint:
                self.trades.setdefault(update.instrument, Figures()).add(update)
                self.last[update.instrument] = update.price
            elif update is None:
                time.sleep(0.01)

    def matches_snapshot(self, engine: Engine, timeout: float = 30) -> tuple[bool, str]:
        """The local books equal a fresh snapshot's (taken now, while nothing trades)."""
        from engine.gateway.marketdata_client import MarketDataClient

        fresh = MarketDataClient(engine.endpoints["market-data"], engine.endpoints["snapshots"])
        try:
            synced = fresh.next_update(timeout)
            if synced is None:
                return False, "no snapshot from the engine"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with self.lock:
                    if self.client.seq >= fresh.seq:
                        mine = {c: b.state() for c, b in self.client.books.items()}
                        break
                time.sleep(0.05)
            else:
                return False, "the subscriber did not catch up with the snapshot"
            theirs = {c: b.state() for c, b in fresh.books.items()}
            differ = [
                c
                for c in theirs
                if (mine[c].bids, mine[c].asks) != (theirs[c].bids, theirs[c].asks)
            ]
            levels = sum(len(s.bids) + len(s.asks) for s in theirs.values())
            if differ:
                return False, f"the local book differs on {', '.join(differ)}"
            return True, f"{levels} price levels of {len(theirs)} instruments equal"
        finally:
            fresh.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.client.close()


def snapshot_states(engine: Engine) -> dict:
    from engine.gateway.marketdata_client import MarketDataClient

    client = MarketDataClient(engine.endpoints["market-data"], engine.endpoints["snapshots"])
    try:
        if client.next_update(30) is None:
            raise RuntimeError("no market data snapshot from the engine")
        return {code: book.state() for code, book in client.books.items()}
    finally:
        client.close()


class Capture:
    """`cxe capture` following the engine's trade stream into OUT/clearing/clearing.db."""

    def __init__(self, engine: Engine, out: Path) -> None:
        self.store = out / "clearing" / STORE
        command = [*cxe_command(), "capture", "--data", str(engine.data)]
        command += ["--store", str(self.store), "--until-day-closed"]
        with (out / "logs" / "capture.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait_day_closed(self, waiting: Callable[[], None], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            waiting()
            time.sleep(0.1)
        if self.process.poll() is None:
            raise RuntimeError("cxe capture did not store the day's close in time")
        if self.process.returncode != 0:
            raise RuntimeError(f"cxe capture failed ({self.process.returncode}): see its log")

    def stop(self) -> None:
        stop_process(self.process)
