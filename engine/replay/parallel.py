"""Many sources replayed at once through Dask, their outputs combined into one table each.

`expand` turns what the command line names (files, directories, glob patterns) into the
list of sources; `run_sources` replays each one with a task function (`lobster_day`), on
a Dask local cluster of worker processes (no set-up), on an existing cluster (its
scheduler's address), or one after another in this process; `choose_workers` picks the
last for small inputs or one core (a local cluster's start costs more than it saves
there); `combine` stacks each output kind's tables into one with a `source` column. Before
a local cluster starts, `warm_kernels` loads (or compiles once) every kernel a day calls,
so its workers load them from numba's on-disk cache instead of each compiling them; the
largest days are handed out first; local workers run without Dask's sampling profiler.

Invariants: a source's run on a worker is the same function as in this process, so the
combined tables equal the serial run's whatever the workers; runs come back in the order of
the sources (sorted by path), and a combined table holds the rows of each source in that
order, each source's rows in their own order; a source that cannot be replayed (a bad row,
a file that is not LOBSTER) is reported with its error and leaves the others untouched;
a local cluster is closed (its processes ended) before `run_sources` returns.
"""

from __future__ import annotations

import glob
import logging
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.replay.formats import detect

INSTALL = "pip install 'cxe[parallel]' (or pip install 'dask[distributed]')"
GLOB_CHARS = set("*?[")
# a Dask worker samples its task's stack every 10 ms in a thread of its own, which also takes
# the GIL: the six LOBSTER samples took about 12% more CPU in the workers with it
NO_PROFILER = {"distributed.worker.profile.enabled": False}
PARALLEL_MIN_BYTES = 4_000_000  # of message files, about 100,000 messages (choose_workers)


@dataclass
class SourceRun:
    """One source's replay: its summary line, tables by output kind, exit code and (when it
    could not be replayed) the error."""

    source: str
    summary: str
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    code: int = 0
    error: str = ""


def expand(names: list[str]) -> list[Path]:
    """Every source named: a file as it is; a directory as the files in it whose content
    is a LOBSTER day or a command file (order book files, read-mes and the like left
    out); a pattern with * ? or [ that is no existing path as the files it matches. Sorted
    by path, each once; ValueError when a name matches nothing."""
    found: set[Path] = set()
    for name in names:
        path = Path(name)
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            found.update(p for p in path.iterdir() if p.is_file() and _replayable(p))
        elif GLOB_CHARS & set(name):
            matched = [Path(p) for p in glob.glob(name) if Path(p).is_file()]
            if not matched:
                raise ValueError(f"{name}: no file matches the pattern")
            found.update(matched)
        else:
            raise ValueError(f"{name}: no such file or directory")
    return sorted(found)


def _replayable(path: Path) -> bool:
    try:
        return detect(path) in ("lobster", "commands")
    except (ValueError, OSError):
        return False


def lobster_day(source: str, interval: int, counterfactual: bool) -> SourceRun:
    """A LOBSTER day (zip, or message file with its order book file beside it) replayed
    and checked row by row, then again through the kernel; its trades, top of book and
    intervals (and counterfactual outcomes)."""
    from engine.replay.counterfactual import compare, outcome_table
    from engine.replay.lobster import BadFile
    from engine.replay.runner import batch_replay, rejects_table, replay_lobster

    try:
        result = replay_lobster(source)
    except BadFile as exc:
        return SourceRun(source, "", {"rejects": rejects_table(exc.bad_rows)}, 2, str(exc))
    except ValueError as exc:
        return SourceRun(source, "", {}, 2, str(exc))
    stats = result.stats
    book, batch = batch_replay(result.commands, result.tick)
    same = book.depth(1 << 30) == result.book.depth(1 << 30)
    summary = (
        f"{result.name}: {stats.messages:,} messages, {stats.rows_mismatched:,} of "
        f"{stats.rows_checked:,} book rows differ from the order book file; "
        f"{stats.executions_matched:,} of {stats.executions_known_queue:,} executions with a "
        f"known queue hit the named order ({stats.match_rate:.3%}); kernel re-run "
        f"{batch.fills:,} fills, final book {'identical' if same else 'DIFFERENT'}"
    )
    tables = result.tables(interval)
    if counterfactual:
        tables["counterfactuals"] = outcome_table(compare(result.commands, result.tick))
    return SourceRun(source, summary, tables, 0 if stats.rows_mismatched == 0 and same else 1)


# a level-1 LOBSTER day of eight messages (time s, type, order id, size, price, direction;
# then the book after it: ask, ask size, bid, bid size): a submit on each side, a partial
# cancel, an execution, a hidden execution, a delete and an order far away, enough to call
# every kernel a day calls (tests/replay/test_replay_parallel.py checks it)
WARM_DAY = [
    (1, 1, 1, 5, 10_000, 1, 10**10, 0, 10_000, 5),
    (2, 1, 2, 7, 10_200, -1, 10_200, 7, 10_000, 5),
    (3, 2, 1, 2, 10_000, 1, 10_200, 7, 10_000, 3),
    (4, 4, 2, 3, 10_200, -1, 10_200, 4, 10_000, 3),
    (5, 5, 0, 2, 10_100, 1, 10_200, 4, 10_000, 3),
    (6, 3, 1, 3, 10_000, 1, 10_200, 4, -(10**10), 0),
    (7, 1, 3, 1, 5_000_000, -1, 10_200, 4, -(10**10), 0),  # far: the price ladder grows
    (8, 3, 3, 1, 5_000_000, -1, 10_200, 4, -(10**10), 0),
]


def warm_kernels() -> None:
    """Call every compiled kernel a LOBSTER day's task calls (`lobster_day` with
    counterfactuals) on a six-message day, in this process: numba loads each from its
    on-disk cache, or compiles it once and writes the cache, so that worker processes
    started afterwards load the kernels instead of each compiling its own copy."""
    from engine.replay.counterfactual import compare
    from engine.replay.lobster import LobsterDay, LobsterReplay
    from engine.replay.runner import NS, batch_replay

    rows = np.array(WARM_DAY, dtype=np.int64)
    day = LobsterDay(rows[:, 0] * NS, *rows[:, 1:6].T, rows[:, 6:], 1)
    replay = LobsterReplay(day.levels)
    replay.run(day)
    book, _ = batch_replay(replay.book.commands(), replay.tick)
    book.depth(1 << 30)
    compare(replay.book.commands(), replay.tick)


def _say_progress(done: int, total: int, source: str) -> None:
    """A bar on stderr, redrawn in place on a terminal, one line per source elsewhere."""
    width = 30
    filled = width * done // total
    bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} sources: {source}"
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K{bar}" + ("\n" if done == total else ""))
    else:
        sys.stderr.write(bar + "\n")
    sys.stderr.flush()


def run_sources(
    task: Callable[..., SourceRun],
    sources: list[Path],
    arguments: tuple = (),
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int, str], None] | None = _say_progress,
) -> list[SourceRun]:
    """`task(source, *arguments)` for every source, in source order: on the cluster at
    `scheduler`, else on a local cluster of `workers` processes (default: one per core, at
    most one per source), or in this process one after another when `workers` is 0.
    ImportError saying how to install Dask when a cluster is wanted and Dask is missing."""
    names = [str(source) for source in sources]
    if workers == 0 and scheduler is None:
        runs = []
        for done, name in enumerate(names, 1):
            runs.append(task(name, *arguments))
            if progress:
                progress(done, len(names), name)
        return runs
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ImportError(f"replaying sources in parallel needs Dask: {INSTALL}") from None
    if scheduler is not None:
        with Client(scheduler) as client:
            return _gather(client, as_completed, task, names, arguments, progress)
    import dask

    count = min(workers or _cores(), len(names))
    warm_kernels()
    with (
        dask.config.set(NO_PROFILER),  # the workers are started with this process's config
        warnings.catch_warnings(),
    ):
        # with no dashboard the scheduler still serves HTTP (health, metrics), on 8787 when it
        # is free, else on another port, with a warning the user can do nothing about
        warnings.filterwarnings("ignore", "Port 8787 is already in use", UserWarning)
        with (
            LocalCluster(
                n_workers=count,
                threads_per_worker=1,  # the kernel holds the GIL: one task per process
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            return _gather(client, as_completed, task, names, arguments, progress)


def message_bytes(path: Path) -> int:
    """The size of a LOBSTER day's message file (in a zip, uncompressed), about 41 bytes a
    message: the measure of a day's work; 0 for what cannot be read (its task reports it)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return sum(i.file_size for i in archive.infolist() if "_message_" in i.filename)
        return path.stat().st_size
    except (OSError, zipfile.BadZipFile):
        return 0


def choose_workers(sources: list[Path], workers: int | None) -> tuple[int | None, str]:
    """The local workers to use (None: one per core, at most one per source; 0: one after
    another in this process) and, when the choice was made here, why. Given a number,
    that number. Otherwise one after another when there is one core or the days hold less
    than PARALLEL_MIN_BYTES of messages in all (a local cluster's start, its workers'
    imports and its shutdown cost a few seconds, more than two workers save on that
    much), else a local cluster."""
    if workers is not None:
        return workers, ""
    if _cores() < 2:
        return 0, "one core"
    total = sum(message_bytes(source) for source in sources)
    if total < PARALLEL_MIN_BYTES:
        return 0, (
            f"{total / 1e6:.1f} MB of messages in all, under {PARALLEL_MIN_BYTES / 1e6:.0f} MB: "
            "starting a local cluster would cost more than it saves; --workers N to use one"
        )
    return None, ""


def _cores() -> int:
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _gather(
    client,
    as_completed: Callable,
    task: Callable[..., SourceRun],
    names: list[str],
    arguments: tuple,
    progress: Callable[[int, int, str], None] | None,
) -> list[SourceRun]:
    """Submit one task per source, report each as it finishes, return them in source order."""
    futures = [  # the largest first, so that no long day starts last
        client.submit(task, name, *arguments, pure=False, priority=message_bytes(Path(name)))
        for name in names
    ]
    where = {future.key: k for k, future in enumerate(futures)}
    runs: dict[int, SourceRun] = {}
    for done, future in enumerate(as_completed(futures), 1):
        k = where[future.key]
        runs[k] = future.result()
        if progress:
            progress(done, len(names), names[k])
    return [runs[k] for k in range(len(names))]


def with_source(table: np.ndarray, source: str) -> np.ndarray:
    """`table` with a first column `source` holding `source` on every row."""
    out = np.empty(len(table), dtype=[("source", "O"), *table.dtype.descr])
    out["source"] = source
    for name in table.dtype.names:
        out[name] = table[name]
    return out


def combine(runs: list[SourceRun]) -> dict[str, np.ndarray]:
    """Each output kind's tables stacked in source order, with a `source` column; kinds in
    the order they first appear."""
    kinds: dict[str, list[np.ndarray]] = {}
    for run in runs:
        for kind, table in run.tables.items():
            kinds.setdefault(kind, []).append(with_source(table, run.source))
    return {kind: np.concatenate(tables) for kind, tables in kinds.items()}
