"""Many sources replayed at once through Dask, their outputs combined into one table each.

`expand` turns what the command line names (files, directories, glob patterns) into the
list of sources; `run_sources` replays each one with a task function (`lobster_day`), on
a Dask local cluster of worker processes (no set-up), on an existing cluster (its
scheduler's address), or one after another in this process; `combine` stacks each output
kind's tables into one with a `source` column.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.replay.formats import detect

INSTALL = "pip install 'cxe[parallel]' (or pip install 'dask[distributed]')"
GLOB_CHARS = set("*?[")


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
    count = min(workers or _cores(), len(names))
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
    futures = [client.submit(task, name, *arguments, pure=False) for name in names]
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
