"""Replay benchmarks: LOBSTER sample days and a synthetic day through the compiled kernel.

replay_lobster: the faithful replay (parse, seed, every row checked) of the largest sample,
then its command stream through the kernel; value = messages/s of the kernel pass (parsing
excluded); beside it the rate with parsing (both files read from the zip as it ships and
every value checked) included, the faithful replay's rate, and parsing on its own in rows/s
(best of 3): the day's message and order book files from the zip (parsing_rows_per_s) and
already unzipped (lobster_parse_rows_per_s), every value checked, and a seeded
1,000,000-row command file of the mixed workload (commands_parse_rows_per_s: read with
`read_commands`, every rule checked); each also per CPU-second (all threads) and with the
seconds its threads waited for a core (*_waiting_seconds: on a shared machine, where the
wall clock goes beyond the CPU time). The kernel's final book must equal the faithful
replay's. replay_parallel: the six LOBSTER samples replayed (faithful replay, then the
kernel pass) one after another in this process and on a local Dask cluster of 2 worker
processes, start and shutdown of the cluster included; value = messages/s over all six days
on the cluster, reference = one after another; every table of every day must be the same
both ways. replay_synthetic: a seeded
synthetic day of the mixed workload through `apply_batch` (fills recorded into a reused
buffer); its first million messages are also run command by command, and both books must
end the same.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.book import Outcome, WrongResult
from bench.workload import DEFAULT_BAND, mixed_workload
from engine.book import Book
from engine.replay.lobster import load_day, load_zip
from engine.replay.parallel import lobster_day, run_sources
from engine.replay.runner import batch_replay, replay_lobster
from engine.replay.sources import read_commands

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"
SAMPLE = "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
COMMAND_ROWS = 1_000_000


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The shortest of `runs` timings of `work`, in seconds."""
    return best_times(runs, work)[0]


def best_times(runs: int, work: Callable[[], object]) -> tuple[float, float]:
    """The shortest wall-clock time and the shortest CPU time (this process, all threads)
    of `runs` runs of `work`, in seconds: on a shared machine the CPU time shows the work
    when the wall clock also counts waiting for a core."""
    wall, cpu, _ = timed(runs, work)
    return wall, cpu


def run_queue_seconds() -> float:
    """Seconds this process's threads have spent runnable but waiting for a core (Linux
    /proc/self/task/*/schedstat, second field); 0.0 where it cannot be read."""
    waited = 0
    for task in Path("/proc/self/task").glob("*"):
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return waited / 1e9


def timed(runs: int, work: Callable[[], object]) -> tuple[float, float, float]:
    """`best_times` and, for the run with the shortest wall-clock time, the seconds its
    threads waited for a core (summed over threads, so it can exceed the wall clock when
    several wait at once): wall ~ CPU + waiting, for the main thread."""
    best = (float("inf"), float("inf"), 0.0)
    cpu = float("inf")
    for _ in range(runs):
        start, start_cpu, start_wait = time.perf_counter(), time.process_time(), run_queue_seconds()
        work()
        wall = time.perf_counter() - start
        cpu = min(cpu, time.process_time() - start_cpu)
        if wall < best[0]:
            best = (wall, 0.0, run_queue_seconds() - start_wait)
    return best[0], cpu, best[2]


def command_file(path: Path, rows: int) -> None:
    """A seeded day of the mixed workload as a command file (two instruments)."""
    words = {1: "add", 2: "cancel", 3: "amend"}
    tifs = ("day", "ioc", "fok")
    with path.open("w") as f:
        f.write("time_ns,instrument,member,action,side,price,qty,order_id,tif\n")
        for i, (kind, oid, member, side, price, qty, _, tif, *_) in enumerate(
            mixed_workload(rows, seed=4).tolist()
        ):
            priced = kind != 2
            f.write(
                f"{i},{'AB'[i % 2]},{member},{words[kind]},{('buy', 'sell')[side]},"
                f"{price if priced else ''},{qty if priced else ''},{oid},"
                f"{tifs[tif] if kind == 1 else ''}\n"
            )


def parsing_rates(archive: Path) -> dict:
    """Rows/s of the LOBSTER and command file readers (module docstring)."""
    with zipfile.ZipFile(archive) as z:
        messages = next(n for n in z.namelist() if "_message_" in n)
        orderbook = messages.replace("_message_", "_orderbook_")
        message_data, orderbook_data = z.read(messages), z.read(orderbook)
    day = load_day(messages, orderbook, message_data, orderbook_data)
    rows = 2 * len(day)
    unzipped, unzipped_cpu, unzipped_wait = timed(
        3, lambda: load_day(messages, orderbook, message_data, orderbook_data)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "flow.csv"
        command_file(path, COMMAND_ROWS)
        loaded = read_commands(path)
        if loaded.bad_rows or loaded.rows != COMMAND_ROWS:
            raise WrongResult("replay_lobster: the command file does not read whole")
        commands, commands_cpu, commands_wait = timed(3, lambda: read_commands(path))
    return {
        "lobster_parse_rows": rows,
        "lobster_parse_seconds": unzipped,
        "lobster_parse_rows_per_s": rows / unzipped,
        "lobster_parse_cpu_seconds": unzipped_cpu,
        "lobster_parse_rows_per_cpu_s": rows / unzipped_cpu,
        "lobster_parse_waiting_seconds": unzipped_wait,
        "commands_parse_rows": COMMAND_ROWS,
        "commands_parse_seconds": commands,
        "commands_parse_rows_per_s": COMMAND_ROWS / commands,
        "commands_parse_cpu_seconds": commands_cpu,
        "commands_parse_rows_per_cpu_s": COMMAND_ROWS / commands_cpu,
        "commands_parse_waiting_seconds": commands_wait,
        "load_average": os.getloadavg()[0],
    }


def lobster_benchmark() -> dict | None:
    archive = SAMPLES / SAMPLE
    if not archive.exists():
        return None
    load_zip(archive)  # pyarrow imported
    parsing = best_of(3, lambda: load_zip(archive))
    start = time.perf_counter()
    result = replay_lobster(archive)
    faithful = time.perf_counter() - start
    if result.stats.rows_mismatched:
        raise WrongResult("replay_lobster: the faithful replay differs from the book file")
    batch_replay(result.commands[:1000], result.tick)
    start = time.perf_counter()
    book, _ = batch_replay(result.commands, result.tick)
    kernel = time.perf_counter() - start
    if book.depth(1 << 30) != result.book.depth(1 << 30):
        raise WrongResult("replay_lobster: the kernel pass ends with another book")
    n = len(result.day)
    return {
        "bench": "replay_lobster",
        "value": n / kernel,
        "unit": "msg/s",
        "reference": n / faithful,
        "sample": SAMPLE,
        "messages": n,
        "commands": len(result.commands),
        "kernel_seconds": kernel,
        "parsing_seconds": parsing,
        "parsing_rows_per_s": 2 * n / parsing,  # message and order book rows, unzipped, checked
        "msg_per_s_with_parsing": n / (parsing + kernel),
        "faithful_seconds_with_parsing": faithful,
        **parsing_rates(archive),
        "note": "reference = the faithful replay (parsing and row checks included)",
    }


def same_tables(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[kind].dtype == b[kind].dtype
        and all(
            np.array_equal(a[kind][n], b[kind][n], equal_nan=a[kind].dtype[n].kind == "f")
            for n in a[kind].dtype.names
        )
        for kind in a
    )


def parallel_benchmark(workers: int = 2) -> dict | None:
    days = sorted(SAMPLES.glob("LOBSTER_SampleFile_*.zip"))
    if len(days) < 2:
        return None
    batch_replay(replay_lobster(days[0]).commands[:1000], 100)  # the kernel loaded here too
    start, start_cpu = time.perf_counter(), time.process_time()
    serial = run_sources(lobster_day, days, (60, False), workers=0, progress=None)
    one_by_one, serial_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    start, start_cpu = time.perf_counter(), time.process_time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    parallel = run_sources(lobster_day, days, (60, False), workers=workers, progress=None)
    on_cluster, here_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, ended and waited for
    workers_cpu = sum(getattr(after, f) - getattr(before, f) for f in ("ru_utime", "ru_stime"))
    for a, b in zip(serial, parallel, strict=True):
        if a.error or a.code or (a.source, a.summary) != (b.source, b.summary):
            raise WrongResult(f"replay_parallel: {a.source} differs or failed: {a.error}")
        if not same_tables(a.tables, b.tables):
            raise WrongResult(f"replay_parallel: the tables of {a.source} differ")
    messages = sum(len(run.tables["top"]) for run in serial)
    return {
        "bench": "replay_parallel",
        "value": messages / on_cluster,
        "unit": "msg/s",
        "reference": messages / one_by_one,
        "days": len(days),
        "messages": messages,
        "workers": workers,
        "parallel_seconds": on_cluster,
        "serial_seconds": one_by_one,
        "serial_cpu_seconds": serial_cpu,
        "parallel_cpu_seconds_here": here_cpu,
        "parallel_cpu_seconds_workers": workers_cpu,
        "load_average": os.getloadavg()[0],
        "note": "faithful replay + kernel pass + tables per day; the cluster's start and "
        "shutdown (worker processes loading the compiled kernels) included; reference = "
        "the same days one after another in this process",
    }


def synthetic_benchmark(messages: int) -> dict:
    cmds = mixed_workload(messages, seed=3)
    warm = Book(tick=1, band=DEFAULT_BAND)
    out = warm.apply_batch(cmds[: messages // 10], record="fills").events.base
    book = Book(tick=1, band=DEFAULT_BAND)
    start = time.perf_counter()
    result = book.apply_batch(cmds, record="fills", out=out)
    elapsed = time.perf_counter() - start
    if result.fills != book.fills or len(result.events) != result.fills:
        raise WrongResult("replay_synthetic: fill rows do not match the fill count")
    check = cmds[:1_000_000]
    first = Book(tick=1, band=DEFAULT_BAND)
    first.apply_batch(check, record="none")
    again = Book(tick=1, band=DEFAULT_BAND)
    for row in check.tolist():
        if row[0] == 1:
            again.add(*row[1:9])
        else:
            again.cancel(row[1], row[2])
    if Outcome.of(first) != Outcome.of(again):
        raise WrongResult("replay_synthetic: batch and per-command books disagree")
    return {
        "bench": "replay_synthetic",
        "value": messages / elapsed,
        "unit": "msg/s",
        "reference": None,
        "messages": messages,
        "fills": result.fills,
        "seconds": elapsed,
    }
