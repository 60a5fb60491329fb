"""Replay runner: a historical day through the book, then analytics, files and plots.

`replay_lobster` runs the faithful replay (engine.replay.lobster), which checks every row of
the order book file, and returns a `ReplayResult` with numpy arrays (notebook-friendly;
`.frames()` gives pandas DataFrames when pandas is installed). The command stream the replay
produced runs again straight through the compiled kernel with `batch_replay`, in a fraction
of the time, to the same final book. `write` produces CSV files (Parquet too with pyarrow)
and, with matplotlib, PNG plots (engine.replay.plots). Analytics per interval: mid and
spread, top-of-book depth, order-flow imbalance (Cont, Kukanov and Stoikov), executed volume
(visible and hidden) and VWAP.
Prices stay in the source's integer units (LOBSTER: dollars x 10,000) until a plot or a
report formats them.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.book import BatchResult, Book
from engine.replay.formats import is_zip
from engine.replay.lobster import (
    EXECUTE,
    LobsterDay,
    LobsterReplay,
    ReplayStats,
    load_day,
    load_zip,
)
from engine.replay.plots import day_figures, day_label, save
from engine.replay.sources import BadRow

HIDDEN_EXECUTE = 5
NS = 1_000_000_000


@dataclass
class ReplayResult:
    name: str  # the message file's name
    day: LobsterDay
    stats: ReplayStats
    commands: np.ndarray  # (n, 10) book commands in the batch layout
    depth: np.ndarray  # (messages, 2, levels, 2): [side][k] = (price, size) after each message
    tick: int
    book: Book  # the book after the last message

    def trades(self) -> np.ndarray:
        """Executions (visible and hidden) as a structured array: time, price, size, the side
        of the resting order (0 buy, 1 sell), hidden or not, and the index of the message
        (0 = the file's first row)."""
        day = self.day
        mask = (day.kind == EXECUTE) | (day.kind == HIDDEN_EXECUTE)
        out = np.zeros(
            int(mask.sum()),
            dtype=[
                ("time_ns", "i8"),
                ("price", "i8"),
                ("qty", "i8"),
                ("resting_side", "i8"),
                ("hidden", "?"),
                ("message", "i8"),
            ],
        )
        out["time_ns"], out["price"], out["qty"] = (
            day.time_ns[mask],
            day.price[mask],
            day.size[mask],
        )
        out["resting_side"] = np.where(day.direction[mask] == 1, 0, 1)
        out["hidden"] = day.kind[mask] == HIDDEN_EXECUTE
        out["message"] = np.flatnonzero(mask)
        return out

    def top(self) -> np.ndarray:
        """Top levels over time: time, then bid1, bid_size1, ask1, ask_size1, bid2, ..."""
        out = np.zeros(
            len(self.day),
            dtype=[("time_ns", "i8")]
            + [
                (f"{side}{field}{k}", "i8")
                for k in range(1, self.depth.shape[2] + 1)
                for side in ("bid", "ask")
                for field in ("", "_size")
            ],
        )
        out["time_ns"] = self.day.time_ns
        for k in range(self.depth.shape[2]):
            for s, side in enumerate(("bid", "ask")):
                out[f"{side}{k + 1}"] = self.depth[:, s, k, 0]
                out[f"{side}_size{k + 1}"] = self.depth[:, s, k, 1]
        return out

    @property
    def best(self) -> np.ndarray:
        """(messages, 4): best bid, its size, best ask, its size after every message."""
        return self.depth[:, :, 0, :].reshape(len(self.day), 4)

    def intervals(self, seconds: int = 60) -> np.ndarray:
        """Per interval: last mid, mean spread, mean top-of-book sizes, order-flow
        imbalance (two-sided rows only); the volume of all executions, visible and hidden,
        the hidden part, and their VWAP (0 where nothing traded)."""
        if seconds < 1:
            raise ValueError(f"an interval is at least 1 second, got {seconds}")
        t = self.day.time_ns
        bid, bid_size, ask, ask_size = (self.best[:, i] for i in range(4))
        two_sided = (bid_size > 0) & (ask_size > 0)
        bucket = (t - t[0]) // (seconds * NS)
        n = int(bucket[-1]) + 1 if len(bucket) else 0
        count = np.bincount(bucket[two_sided], minlength=n)

        def mean(values: np.ndarray) -> np.ndarray:
            sums = np.bincount(bucket[two_sided], weights=values[two_sided], minlength=n)
            return np.divide(sums, count, out=np.zeros(n), where=count > 0)

        mid2 = bid + ask  # twice the mid, exact
        last = np.full(n, -1)
        last[bucket[two_sided]] = np.flatnonzero(two_sided)
        ofi = np.zeros(len(t))
        prev = slice(None, -1)
        cur = slice(1, None)
        ofi[cur] = (
            (bid[cur] >= bid[prev]) * bid_size[cur]
            - (bid[cur] <= bid[prev]) * bid_size[prev]
            - (ask[cur] <= ask[prev]) * ask_size[cur]
            + (ask[cur] >= ask[prev]) * ask_size[prev]
        )
        trades = self.trades()
        trade_bucket = (trades["time_ns"] - t[0]) // (seconds * NS)
        volume = np.bincount(trade_bucket, weights=trades["qty"], minlength=n)
        hidden = np.bincount(trade_bucket, weights=trades["qty"] * trades["hidden"], minlength=n)
        value = np.bincount(trade_bucket, weights=trades["qty"] * trades["price"], minlength=n)
        out = np.zeros(
            n,
            dtype=[
                ("start_ns", "i8"),
                ("mid", "f8"),
                ("spread", "f8"),
                ("bid_size", "f8"),
                ("ask_size", "f8"),
                ("ofi", "f8"),
                ("volume_all", "i8"),
                ("volume_hidden", "i8"),
                ("vwap_all", "f8"),
            ],
        )
        out["start_ns"] = t[0] + np.arange(n) * seconds * NS
        out["mid"] = np.where(last >= 0, mid2[np.maximum(last, 0)] / 2, np.nan)
        out["spread"] = mean((ask - bid).astype(np.float64))
        out["bid_size"] = mean(bid_size.astype(np.float64))
        out["ask_size"] = mean(ask_size.astype(np.float64))
        out["ofi"] = np.bincount(bucket, weights=ofi, minlength=n)
        out["volume_all"] = volume.astype(np.int64)
        out["volume_hidden"] = hidden.astype(np.int64)
        out["vwap_all"] = np.divide(value, volume, out=np.zeros(n), where=volume > 0)
        return out

    def frames(self) -> dict:
        """Trades, top of book and 60-second intervals as pandas DataFrames, else polars
        DataFrames, else (neither installed) numpy structured arrays."""
        tables = {name: getattr(self, name)() for name in ("trades", "top", "intervals")}
        try:
            import pandas as pd

            return {name: pd.DataFrame(table) for name, table in tables.items()}
        except ImportError:
            pass
        try:
            import polars as pl

            return {
                name: pl.DataFrame({c: t[c] for c in t.dtype.names}) for name, t in tables.items()
            }
        except ImportError:
            return tables

    def tables(self, seconds: int = 60) -> dict[str, np.ndarray]:
        """The day's output tables by name: trades, top and intervals of `seconds`."""
        return {"trades": self.trades(), "top": self.top(), "intervals": self.intervals(seconds)}

    def write(
        self,
        out: str | Path,
        seconds: int = 60,
        plot: bool = False,
        date: str | None = None,
        log_depth: bool = False,
    ) -> list[Path]:
        """trades, top and intervals as CSV (and Parquet); with `plot`, PNG plots on the
        day's clock (`date` when the file name does not carry it; a log depth axis)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in self.tables(seconds).items():
            units = {column: lobster_units(column) for column in table.dtype.names}
            written.append(write_table(table, out / f"{name}.csv", units=units))
        if plot:
            label = day_label(self.name, self.day.levels, date)
            written += save(day_figures(self, seconds, label, log_depth), out)
        return written


def lobster_units(name: str) -> str:
    """The unit of a LOBSTER output column (docs/REPLAY.md lists them)."""
    if name.endswith("_ns"):
        return "ns after midnight (exchange time, New York)"
    if any(word in name for word in ("size", "qty", "volume", "ofi")):
        return "shares"
    if name in ("price", "mid", "spread", "vwap", "vwap_all") or name[:3] in ("bid", "ask"):
        return "USD x 10,000"
    if name in ("best_bid", "best_ask"):
        return "USD x 10,000 (0: an empty side)"
    return {
        "fills": "count",
        "rejects": "count",
        "resting_side": "0 buy, 1 sell",
        "hidden": "true for a hidden execution (type 5)",
        "message": "row of the message file, from 0",
    }.get(name, "")


def write_table(
    table: np.ndarray, path: Path, parquet: bool = True, units: dict[str, str] | None = None
) -> Path:
    """`table` as CSV at `path`, and (pyarrow installed, `parquet`) as Parquet beside it with
    `units` (column -> unit) as JSON under the schema metadata key "units"."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(table.dtype.names)
        writer.writerows(table.tolist())
    if not parquet:
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return path
    arrow = pa.table({n: table[n] for n in table.dtype.names})
    if units:
        arrow = arrow.replace_schema_metadata({"units": json.dumps(units)})
    pq.write_table(arrow, path.with_suffix(".parquet"))
    return path


def rejects_table(bad_rows: list[BadRow]) -> np.ndarray:
    """Bad rows as rejects.csv lists them: line, instrument, reason, detail, text."""
    return np.array(
        [(r.line, r.instrument, r.reason, r.detail, r.text) for r in bad_rows],
        dtype=[("line", "i8")] + [(n, "O") for n in ("instrument", "reason", "detail", "text")],
    )


def text_progress(done: int, total: int) -> None:
    sys.stderr.write(f"\rreplaying {done / total:6.1%} ({done:,} of {total:,} messages)")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def replay_lobster(
    message_path: str | Path,
    orderbook_path: str | Path | None = None,
    tick: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Faithful replay of a LOBSTER message file (the order book file is found beside it:
    the name with _message_ turned into _orderbook_) or of a LOBSTER zip as it ships."""
    message_path = Path(message_path)
    if is_zip(message_path):
        name, day = load_zip(message_path)
    else:
        if orderbook_path is None:
            if "_message_" not in message_path.name:
                raise ValueError(
                    f"{message_path}: give the order book file with --orderbook (it is "
                    "found beside a file named *_message_* only)"
                )
            orderbook_path = message_path.with_name(
                message_path.name.replace("_message_", "_orderbook_")
            )
        name, day = message_path.name, load_day(message_path, orderbook_path)
    replay = LobsterReplay(day.levels, tick=tick)
    stats = replay.run(day, progress)
    return ReplayResult(
        name, day, stats, replay.book.commands(), replay.depth, tick, replay.book.book
    )


def batch_replay(
    commands: np.ndarray, tick: int, out: np.ndarray | None = None
) -> tuple[Book, BatchResult]:
    """The command stream straight through the compiled kernel (fills recorded)."""
    book = Book(tick=tick)
    return book, book.apply_batch(commands, record="fills", out=out)
