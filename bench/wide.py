"""replay_wide: a replay-like day with 1% of its orders far from the touch, against the same day
without them.

The workload is the seeded mixed stream (bench/workload.py) around a $78,000 market in cent
ticks, run through a bare book (no band, as a replay of external data runs) with
`apply_batch`, fills recorded into a reused buffer. The wide variant moves 1% of the adds,
chosen with a seeded generator, to a passive price far from the touch: bids anywhere in
1..(mid - 10,000) ticks, asks anywhere in (mid + 10,000)..2**40 ticks; every other command is
the same. value = msg/s of the wide day, reference = msg/s of the plain day (median of the
rounds, each on a fresh book, after a warm-up run outside the timer); the final book of each
is asserted equal to the reference book's (engine.book.reference) after the same commands.

`issue_case` is the issue's example at $1 ticks: the same kind of day around $78,000 with a $1
bid and a $4 M ask resting from the start (a dense ladder from $1 to $4 M once took 4.2 M
levels, 258 MiB); its time and final bytes are reported beside the figures above.

Memory is the peak of the bytes tracemalloc saw allocated while a fresh book ran the day
(numpy reports its arrays to tracemalloc; the command array and the event buffer are made
before tracing starts, so this is the book's own state, growth copies included), and the
arrays' nbytes once the day is over.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np

from bench.book import Outcome, verify
from bench.workload import mixed_workload
from engine.book import Book, ReferenceBook
from engine.book.book import apply_row
from engine.book.layout import C_KIND, C_PRICE, C_SIDE, C_TIF, CMD_ADD

MID = 7_800_000  # $78,000.00 in cent ticks
SPAN = 2**40  # far asks reach this many ticks
GAP = 10_000  # far orders lie at least this many ticks from the mid
FAR_SHARE = 0.01


def wide_workload(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(plain, wide): the mixed day around MID and the same day with FAR_SHARE of its adds
    moved to far passive prices (day orders, so they rest)."""
    band = (MID * 9 // 10, MID * 11 // 10)  # only keeps the generator's walk near MID
    plain = mixed_workload(n, seed=seed, mid=MID, band=band)
    wide = plain.copy()
    rng = np.random.default_rng(seed)
    adds = np.flatnonzero(plain[:, C_KIND] == CMD_ADD)
    far = rng.choice(adds, size=int(len(adds) * FAR_SHARE), replace=False)
    bids = far[plain[far, C_SIDE] == 0]
    asks = far[plain[far, C_SIDE] == 1]
    wide[bids, C_PRICE] = rng.integers(1, MID - GAP, len(bids))
    wide[asks, C_PRICE] = rng.integers(MID + GAP, SPAN + 1, len(asks))
    wide[far, C_TIF] = 0
    return plain, wide


def _rate(cmds: np.ndarray, rounds: int, out: np.ndarray) -> tuple[float, Book]:
    rates, book = [], None
    for _ in range(rounds):
        book = Book(tick=1)
        gc.collect()
        start = time.perf_counter()
        book.apply_batch(cmds, record="fills", out=out)
        rates.append(len(cmds) / (time.perf_counter() - start))
    return float(np.median(rates)), book


def _memory(cmds: np.ndarray, out: np.ndarray) -> tuple[int, int]:
    """(peak bytes traced while a fresh book runs the day, the arrays' bytes at its end)."""
    gc.collect()
    tracemalloc.start()
    book = Book(tick=1)
    book.apply_batch(cmds, record="fills", out=out)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, book.state.nbytes()


def _reference(cmds: np.ndarray) -> Outcome:
    book = ReferenceBook(tick=1)
    for row in cmds.tolist():
        apply_row(book, row)
    return Outcome.of(book)


def issue_case(messages: int, seed: int = 11) -> tuple[float, int, int]:
    """The issue's case at $1 ticks: a $78,000 market (the mixed day) with a $1 bid and a
    $4 M ask resting from the start. (seconds for the day, the arrays' bytes at its end,
    ladder rows)."""
    cmds = mixed_workload(messages, seed=seed, mid=78_000, band=(70_200, 85_800))
    book = Book(tick=1)
    book.add(2**40, 1, 0, 1, 1)
    book.add(2**40 + 1, 2, 1, 4_000_000, 1)
    start = time.perf_counter()
    book.apply_batch(cmds, record="fills")
    return time.perf_counter() - start, book.state.nbytes(), book.state.lad.shape[0]


def wide_benchmark(messages: int, rounds: int, seed: int = 11) -> dict:
    plain, wide = wide_workload(messages, seed)
    out = Book(tick=1).apply_batch(wide, record="fills").events.base  # warm-up, outside timing
    Book(tick=1).apply_batch(plain, record="fills", out=out)
    wide_rate, wide_book = _rate(wide, rounds, out)
    plain_rate, plain_book = _rate(plain, rounds, out)
    verify("replay_wide", Outcome.of(wide_book), _reference(wide))
    verify("replay_wide (plain)", Outcome.of(plain_book), _reference(plain))
    wide_peak, wide_bytes = _memory(wide, out)
    plain_peak, plain_bytes = _memory(plain, out)
    issue_case(messages // 10)  # warm
    issue_seconds, issue_bytes, issue_rows = issue_case(messages)
    return {
        "bench": "replay_wide",
        "value": wide_rate,
        "unit": "msg/s",
        "reference": plain_rate,
        "messages": messages,
        "seed": seed,
        "far_orders": len(np.flatnonzero(wide[:, C_PRICE] != plain[:, C_PRICE])),
        "far_levels_at_end": wide_book.state.far_levels(),
        "peak_bytes": wide_peak,
        "reference_peak_bytes": plain_peak,
        "memory_ratio": wide_peak / plain_peak,
        "final_bytes": wide_bytes,
        "reference_final_bytes": plain_bytes,
        "ladder_bytes": wide_book.state.lad.nbytes,
        "reference_ladder_bytes": plain_book.state.lad.nbytes,
        "resting_orders": len(wide_book),
        "reference_resting_orders": len(plain_book),
        "issue_case_seconds": issue_seconds,
        "issue_case_bytes": issue_bytes,
        "issue_case_ladder_rows": issue_rows,
        "memory": "tracemalloc peak while a fresh book runs the day; final = arrays' nbytes",
        "note": "reference = the same day without the far orders",
    }
