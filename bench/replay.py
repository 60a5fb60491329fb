"""Replay benchmarks: a LOBSTER sample day and a synthetic day through the compiled kernel.

replay_lobster: the faithful replay (parse, seed, every row checked) of the largest sample,
then its command stream through the kernel; value = messages/s of the kernel pass (parsing
excluded); beside it the rate with parsing (both files read from the zip as it ships and
every value checked) included, the parsing rate in rows/s, and the faithful replay's rate.
The kernel's final book must equal the faithful replay's. replay_synthetic: a seeded
synthetic day of the mixed workload through `apply_batch` (fills recorded into a reused
buffer); its first million messages are also run command by command, and both books must
end the same.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.book import Outcome, WrongResult
from bench.workload import DEFAULT_BAND, mixed_workload
from engine.book import Book
from engine.replay.lobster import load_zip
from engine.replay.runner import batch_replay, replay_lobster

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"
SAMPLE = "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"


def lobster_benchmark() -> dict | None:
    archive = SAMPLES / SAMPLE
    if not archive.exists():
        return None
    start = time.perf_counter()
    load_zip(archive)
    parsing = time.perf_counter() - start
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
        "parsing_rows_per_s": 2 * n / parsing,  # message and order book rows, checked
        "msg_per_s_with_parsing": n / (parsing + kernel),
        "faithful_seconds_with_parsing": faithful,
        "note": "reference = the faithful replay (parsing and row checks included)",
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
