"""LOBSTER message files replayed through the compiled book, checked against the book file.

LOBSTER (NASDAQ) message columns: time (s after midnight), type (1 submit, 2 partial cancel,
3 delete, 4 visible execution, 5 hidden execution, 6 cross, 7 halt), order id, size, price
($ x 10000), direction (1 buy, -1 sell; for executions the side of the resting order hit).
The order book file has one row per message, the state after it: per level ask price, ask
size, bid price, bid size; empty levels hold +-9999999999 with size 0.

The two traps (shared/data/lobster/README.md) and how they are handled:
- the book at the open is not empty: the state before the first message (the first row with
  that message undone) is seeded as one anonymous resting order per level;
- a level-N file only carries events of the best N levels: when the visible range widens,
  newly exposed levels are re-seeded (anonymous volume added or removed so the level matches
  the row), and only levels in view are compared.

Executions (type 4) become marketable IOC orders that the engine matches, when the engine's
next order in line is the one LOBSTER names; otherwise (the order was not first in line here)
the execution is applied to the named order directly and counted as a priority exception.
Invariants checked on every row: the book's levels in view equal the row's levels.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.book import Book, EventKind
from engine.book.layout import CMD_ADD, CMD_AMEND, CMD_CANCEL, COMMAND_ROWS
from engine.replay.fastcsv import BOM, read_lobster
from engine.replay.sources import INTEGER, BadRow
from engine.types import INT64_MAX, INT64_MIN

EMPTY = 9_999_999_999
DEPTH_RECORDED = 5  # levels per side kept after every message
SUBMIT, PARTIAL_CANCEL, DELETE, EXECUTE = 1, 2, 3, 4
SEED_OWNER, RESTING_OWNER, TAKER_OWNER = 0, 1, 2
IOC = 1
MESSAGE_COLUMNS = ["time", "type", "order id", "size", "price", "direction"]
DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # seconds after midnight, as LOBSTER writes them


@dataclass(frozen=True)
class LobsterDay:
    """A message file and its order book file as integer arrays."""

    time_ns: np.ndarray
    kind: np.ndarray
    order_id: np.ndarray
    size: np.ndarray
    price: np.ndarray
    direction: np.ndarray
    rows: np.ndarray  # (messages, 4 x levels): ask price, ask size, bid price, bid size
    levels: int

    def __len__(self) -> int:
        return len(self.kind)


class BadFile(ValueError):
    """A file that cannot be replayed, carrying every bad row found (BadRow records)."""

    def __init__(self, message: str, bad_rows: list[BadRow]) -> None:
        super().__init__(message)
        self.bad_rows = bad_rows


def _decoded(name: str, data: bytes) -> str:
    """A file's text, UTF-8 with or without a byte order mark; ValueError naming it if it is
    not text."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a text file (byte {exc.start} is not UTF-8)") from None


def _fast(data: bytes, columns: int | None) -> tuple | None:
    """The file's columns read at column speed (engine.replay.fastcsv.read_lobster) when its
    first line has the width LOBSTER's layout wants; None for the reference to read."""
    start = len(BOM) if data.startswith(BOM) else 0
    end = data.find(b"\n", start)
    first = data[start : end if end >= 0 else len(data)]
    width = first.count(b",") + 1
    if not first.strip() or (width != columns if columns is not None else width % 4):
        return None
    return read_lobster(data, width, seconds_first=columns is not None)


def _lines(name: str, text: str, what: str) -> list[str]:
    """The file's lines, trailing blank lines dropped; ValueError when there are none."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{name}: the LOBSTER {what} file is empty")
    return lines


def _table(name: str, lines: list[str], what: str, columns: int | None) -> np.ndarray:
    """The whole-number columns of a LOBSTER file (a message file's time column is read by
    `_checked_messages`); BadFile listing every bad row when a value is not a whole number
    or a row has the wrong number of columns."""
    width = lines[0].count(",") + 1
    if columns is not None and width != columns:
        raise ValueError(
            f"{name}: a LOBSTER message row has 6 columns (time, type, order id, size, price, "
            f"direction), found {width}"
        )
    if columns is None and width % 4:
        raise ValueError(
            f"{name}: a LOBSTER order book row has 4 columns per level (ask price, ask size, "
            f"bid price, bid size), found {width}"
        )
    first = 1 if columns is not None else 0
    if all(line.strip() for line in lines):  # np.loadtxt skips blank lines: rows would shift
        try:
            return np.loadtxt(
                lines, delimiter=",", dtype=np.int64, ndmin=2, usecols=range(first, width)
            )
        except ValueError:
            pass
    bad = _bad_rows(lines, width, first, what)
    if not bad:  # np.loadtxt refused something the row check let through
        raise ValueError(f"{name}: not a LOBSTER {what} file")
    raise _bad_file(name, what, bad)


def _bad_rows(lines: list[str], width: int, first: int, what: str) -> list[BadRow]:
    """Every row with the wrong number of columns or a value that is not a whole number
    (ASCII digits: no NaN, 1e20, 100.7, 1_000 or full-width digits); columns before `first`
    may be decimals."""
    bad = []
    for number, line in enumerate(lines, 1):
        fields = [f.strip() for f in line.split(",")]
        if not line.strip():
            bad.append(BadRow(number, "", "empty_row", "an empty row", line))
        elif len(fields) != width:
            detail = f"{len(fields)} columns, not {width}"
            bad.append(BadRow(number, "", "wrong_column_count", detail, line))
        elif problem := _first_bad_value(fields, first, what):
            bad.append(BadRow(number, "", "not_a_number", problem, line))
    return bad


def _first_bad_value(fields: list[str], first: int, what: str) -> str:
    names = MESSAGE_COLUMNS if what == "message" else None
    for k, text in enumerate(fields):
        name = names[k] if names else f"column {k + 1}"
        if k < first:
            if not DECIMAL.fullmatch(text):
                return f"{name} must be a number of seconds, got {text!r}"
        elif not INTEGER.fullmatch(text) or not INT64_MIN <= int(text) <= INT64_MAX:
            return f"{name} must be a whole number (int64), got {text!r}"
    return ""


def _bad_file(name: str, what: str, bad: list[BadRow]) -> BadFile:
    first = bad[0]
    return BadFile(
        f"{name}: {len(bad):,} bad row{'s' if len(bad) > 1 else ''} in the LOBSTER {what} file "
        f"(line {first.line}: {first.detail}); nothing was replayed",
        bad,
    )


def _reference_messages(name: str, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, the five integer columns) of a message file read row by row; BadFile listing
    every row whose values do not parse."""
    ints = _table(name, lines, "message", 6)
    try:  # numpy's float parser takes nan and inf, refused below; not 1_000 or full width
        seconds = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=1, usecols=0)
    except ValueError:
        syntax = [
            BadRow(n, "", "not_a_number", f"time must be a number of seconds, got {t!r}", line)
            for n, line in enumerate(lines, 1)
            if not DECIMAL.fullmatch(t := line.split(",", 1)[0].strip())
        ]
        raise (
            _bad_file(name, "message", syntax)
            if syntax
            else ValueError(
                f"{name}: not a LOBSTER message file (its time column does not read as numbers)"
            )
        ) from None
    return seconds, ints


def _checked_messages(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(time_ns, the five integer columns) of a message file; BadFile listing every row with
    a bad time (not a number, not finite, negative, or before the row above), type, order
    id, size or direction."""
    fast = _fast(data, 6)
    if fast is not None:
        seconds, ints = fast
    else:
        seconds, ints = _reference_messages(name, _lines(name, _decoded(name, data), "message"))
    kind, oid, size, _, direction = ints.T
    with np.errstate(invalid="ignore"):  # nan compares False
        valid = np.isfinite(seconds) & (seconds >= 0)
    # a time goes back when it is before the last valid time above it (a bad time is
    # reported once, as bad_time, not again for the rows around it)
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(len(seconds)), -1))
    before = np.r_[-1, last_valid[:-1]]
    later = valid & (before >= 0) & (seconds < seconds[np.maximum(before, 0)])
    problems = [
        (~valid, "bad_time", "time must be seconds after midnight"),
        ((kind < 1) | (kind > 7), "bad_type", "type must be 1 to 7"),
        (oid < 0, "bad_order_id", "order id must not be negative"),
        ((size <= 0) & (kind <= 5), "bad_size", "size must be positive"),
        ((direction != 1) & (direction != -1), "bad_direction", "direction must be 1 or -1"),
        (later, "time_goes_back", "time goes back"),
    ]
    if not any(mask.any() for mask, _, _ in problems):
        return np.rint(seconds * 1e9).astype(np.int64), ints
    lines = _lines(name, _decoded(name, data), "message")
    bad = sorted(
        (
            BadRow(n + 1, "", reason, detail, lines[n])
            for mask, reason, detail in problems
            for n in np.flatnonzero(mask).tolist()
        ),
        key=lambda row: row.line,
    )
    raise _bad_file(name, "message", bad)


def load_day(
    message_path: str | Path,
    orderbook_path: str | Path,
    message_data: bytes | None = None,
    orderbook_data: bytes | None = None,
) -> LobsterDay:
    """Both files of a day (their bytes read from the paths unless given, as from a zip);
    ValueError naming the file for anything that is not LOBSTER's layout (6 message
    columns; 4 order book columns per level; one row per message), BadFile with every bad
    row for values that are not what LOBSTER writes."""
    if message_data is None:
        message_data = Path(message_path).read_bytes()
    if orderbook_data is None:
        orderbook_data = Path(orderbook_path).read_bytes()
    time_ns, ints = _checked_messages(str(message_path), message_data)
    book_name = str(orderbook_path)
    fast = _fast(orderbook_data, None)
    if fast is not None:
        rows = fast[1]
    else:
        lines = _lines(book_name, _decoded(book_name, orderbook_data), "order book")
        rows = _table(book_name, lines, "order book", None)
    if len(ints) != len(rows):
        raise ValueError(
            f"{message_path} has {len(ints)} messages but {orderbook_path} "
            f"has {len(rows)} rows: they must pair one to one"
        )
    return LobsterDay(
        time_ns,
        ints[:, 0],
        ints[:, 1],
        ints[:, 2],
        ints[:, 3],
        ints[:, 4],
        rows,
        rows.shape[1] // 4,
    )


def load_zip(path: str | Path) -> tuple[str, LobsterDay]:
    """A LOBSTER zip as it ships (a message file, its order book file and a read-me):
    (the message file's name, the day)."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        messages = [n for n in names if "_message_" in Path(n).name and n.endswith(".csv")]
        if len(messages) != 1:
            raise ValueError(
                f"{path}: a LOBSTER zip holds one *_message_*.csv and its *_orderbook_*.csv; "
                f"found {len(messages)} message files among {names}"
            )
        message = messages[0]
        orderbook = message.replace("_message_", "_orderbook_")
        if orderbook not in names:
            raise ValueError(f"{path}: {orderbook}, the order book file of {message}, is missing")

        day = load_day(
            f"{path}:{message}",
            f"{path}:{orderbook}",
            archive.read(message),
            archive.read(orderbook),
        )
    return Path(message).name, day


Levels = list[tuple[int, int]]


def row_levels(row: list[int], levels: int) -> tuple[Levels, Levels]:
    """(bids, asks) of one book row, best first, empty levels dropped."""
    asks = [(row[4 * i], row[4 * i + 1]) for i in range(levels) if row[4 * i + 1] > 0]
    bids = [(row[4 * i + 2], row[4 * i + 3]) for i in range(levels) if row[4 * i + 3] > 0]
    return bids, asks


class RecordingBook:
    """A Book that also records every command sent to it, in the batch layout (C_*), with
    the index of the message that caused it: the replay's output is a command stream that
    `Book.apply_batch` reproduces at kernel speed."""

    def __init__(self, book: Book) -> None:
        self.book = book
        self.rows: list[tuple[int, ...]] = []
        self.messages: list[int] = []
        self.message = 0

    def add(self, oid, owner, side, price, qty, otype=1, tif=0, stp=0) -> int:
        self.rows.append((CMD_ADD, oid, owner, side, price, qty, otype, tif, stp, 0))
        self.messages.append(self.message)
        return self.book.add(oid, owner, side, price, qty, otype, tif, stp)

    def cancel(self, oid, owner=-1) -> int:
        self.rows.append((CMD_CANCEL, oid, owner, 0, 0, 0, 0, 0, 0, 0))
        self.messages.append(self.message)
        return self.book.cancel(oid, owner)

    def amend(self, oid, price, qty, owner=-1) -> int:
        self.rows.append((CMD_AMEND, oid, owner, 0, price, qty, 0, 0, 0, 0))
        self.messages.append(self.message)
        return self.book.amend(oid, price, qty, owner)

    def commands(self) -> np.ndarray:
        return np.array(self.rows, dtype=np.int64).reshape(-1, COMMAND_ROWS)

    def __getattr__(self, name):
        return getattr(self.book, name)


@dataclass
class ReplayStats:
    messages: int = 0
    rows_checked: int = 0
    rows_mismatched: int = 0
    first_mismatches: list[str] = field(default_factory=list)
    executions: int = 0
    executions_known_queue: int = 0
    executions_matched: int = 0
    priority_exceptions: list[tuple[int, int, int]] = field(default_factory=list)
    reseeded_levels: int = 0
    crossing_submits: int = 0

    @property
    def match_rate(self) -> float:
        known = self.executions_known_queue
        return self.executions_matched / known if known else 1.0


class LobsterReplay:
    def __init__(self, levels: int, tick: int = 100) -> None:
        self.levels = levels
        self.tick = tick
        self.book = RecordingBook(Book(tick=tick))
        self.top = np.zeros((2, DEPTH_RECORDED, 2), dtype=np.int64)
        self.ids: dict[int, int] = {}  # LOBSTER order id -> engine order id
        self.lobster_id: dict[int, int] = {}  # and back
        self.seeds: dict[tuple[int, int], list[int]] = {}  # (side, price) -> seed orders
        self.seed_ids: set[int] = set()
        # levels whose queue order is partly guessed (re-seeded, or volume removed unseen):
        # executions there do not count for or against time priority until the level empties
        self.guessed: set[tuple[int, int]] = set()
        self.next_id = 1
        self.stats = ReplayStats()

    # -- book helpers ---------------------------------------------------------------------

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _seed(self, side: int, price: int, qty: int) -> None:
        oid = self._new_id()
        self.book.add(oid, SEED_OWNER, side, price, qty)
        self.seeds.setdefault((side, price), []).append(oid)
        self.seed_ids.add(oid)

    def _reduce(self, oid: int, qty: int) -> int:
        """Take up to qty off a live order (keeps its priority); returns what was taken."""
        order = self.book.order(oid)
        if order is None:
            return 0
        _, price, leaves, _ = order
        if qty >= leaves:
            self.book.cancel(oid)
            return leaves
        self.book.amend(oid, price, leaves - qty)
        return qty

    def _reduce_seeds(self, side: int, price: int, qty: int) -> int:
        taken = 0
        for oid in self.seeds.get((side, price), []):
            if taken == qty:
                break
            taken += self._reduce(oid, qty - taken)
        return taken

    def _level(self, side: int, price: int) -> int:
        for p, q, _ in self.book.side_depth(side, 1 << 20):
            if p == price:
                return q
            if (p < price) if side == 0 else (p > price):
                return 0
        return 0

    # -- view ---------------------------------------------------------------------------------

    def _bound(self, levels: Levels) -> int | None:
        """The worst price in view, or None when every level of that side is shown."""
        return levels[-1][0] if len(levels) == self.levels else None

    @staticmethod
    def _in_view(side: int, price: int, bound: int | None) -> bool:
        return bound is None or (price >= bound if side == 0 else price <= bound)

    def _visible(self, side: int, bound: int | None) -> Levels:
        out = []
        for p, q, _ in self.book.side_depth(side, self.levels + 1):
            if self._in_view(side, p, bound):
                out.append((p, q))
        return out

    # -- the replay ---------------------------------------------------------------------------

    def run(
        self, day: LobsterDay, progress: Callable[[int, int], None] | None = None
    ) -> ReplayStats:
        """Replay the day; afterwards `self.depth[i, side, k]` holds (price, size) of the best
        DEPTH_RECORDED levels after message i,
        every message and `self.book.rows` the book commands the replay issued."""
        self.depth = np.zeros((len(day), 2, DEPTH_RECORDED, 2), dtype=np.int64)
        rows = day.rows.tolist()
        bids, asks = row_levels(rows[0], day.levels)
        before = self._undo_first(day, bids, asks)
        for side, levels in enumerate(before):
            for price, qty in levels:
                self._seed(side, price, qty)
        bounds = [self._bound(before[0]), self._bound(before[1])]
        columns = zip(
            day.kind.tolist(),
            day.order_id.tolist(),
            day.size.tolist(),
            day.price.tolist(),
            day.direction.tolist(),
            rows,
            strict=True,
        )
        for i, (kind, lid, size, price, direction, row) in enumerate(columns):
            side = 0 if direction == 1 else 1
            if kind == SUBMIT:
                self._submit(lid, side, price, size)
            elif kind in (PARTIAL_CANCEL, DELETE):
                self._cancel(lid, side, price, size)
            elif kind == EXECUTE:
                self._execute(i, lid, side, price, size)
            self.stats.messages += 1
            if progress is not None and (i + 1) % 20_000 == 0:
                progress(i + 1, len(day))
            self.book.message = i + 1
            self.book.refresh_top(self.top)
            self.depth[i] = self.top
            if (side, price) in self.guessed and self._level(side, price) == 0:
                self.guessed.discard((side, price))
            bounds = self._check(i, row_levels(row, day.levels), bounds)
        if progress is not None:
            progress(len(day), len(day))
        return self.stats

    @staticmethod
    def _undo_first(day: LobsterDay, bids: Levels, asks: Levels) -> tuple[Levels, Levels]:
        """The book before the first message: the first row with that message undone."""
        kind, size, price = int(day.kind[0]), int(day.size[0]), int(day.price[0])
        side = 0 if day.direction[0] == 1 else 1
        change = {SUBMIT: -size, PARTIAL_CANCEL: size, DELETE: size, EXECUTE: size}.get(kind, 0)
        sides = [dict(bids), dict(asks)]
        sides[side][price] = sides[side].get(price, 0) + change
        return tuple(
            sorted(((p, q) for p, q in levels.items() if q > 0), reverse=(s == 0))
            for s, levels in enumerate(sides)
        )

    def _submit(self, lid: int, side: int, price: int, size: int) -> None:
        oid = self._new_id()
        self.ids[lid] = oid
        self.lobster_id[oid] = lid
        self.book.add(oid, RESTING_OWNER, side, price, size)
        if any(e.kind == EventKind.FILL for e in self.book.events()):
            self.stats.crossing_submits += 1

    def _cancel(self, lid: int, side: int, price: int, size: int) -> None:
        oid = self.ids.get(lid)
        if oid is not None and self.book.order(oid) is not None:
            self._reduce_named(oid, side, price, size)
        else:  # from before the sample (seeded volume), or dropped by an earlier re-seed
            self._reduce_level(side, price, size)

    def _execute(self, i: int, lid: int, side: int, price: int, size: int) -> None:
        self.stats.executions += 1
        oid = self.ids.get(lid)
        known = oid is not None and self.book.order(oid) is not None
        head = self.book.next_to_trade(side)
        best = self.book.best_bid() if side == 0 else self.book.best_ask()
        queue_known = head is not None and head not in self.seed_ids and best == price
        if known and queue_known and (side, price) not in self.guessed:
            self.stats.executions_known_queue += 1
            if head == oid:
                self.stats.executions_matched += 1
                taker = self._new_id()
                self.book.add(taker, TAKER_OWNER, 1 - side, price, size, 1, IOC)
                return
            self.stats.priority_exceptions.append((i, lid, self.lobster_id.get(head, -1)))
        if known:
            self._reduce_named(oid, side, price, size)
        else:  # executions take the oldest volume at the level, as matching would
            self._reduce_level(side, price, size, newest_first=False)

    def _check(self, i: int, row: tuple[Levels, Levels], bounds: list) -> list:
        new_bounds = [self._bound(row[0]), self._bound(row[1])]
        for side in (0, 1):
            old, new = bounds[side], new_bounds[side]
            wider = old is not None and (new is None or (new < old if side == 0 else new > old))
            if wider:
                self._reseed(side, row[side], old, new)
        self.stats.rows_checked += 1
        for side in (0, 1):
            mine = self._visible(side, new_bounds[side])
            if mine != row[side]:
                self.stats.rows_mismatched += 1
                if len(self.stats.first_mismatches) < 5:
                    self.stats.first_mismatches.append(
                        f"row {i} side {side}: engine {mine[:3]}... file {row[side][:3]}..."
                    )
                break
        return new_bounds

    def _reseed(self, side: int, levels: Levels, old_bound: int, bound: int | None) -> None:
        """Levels beyond the old view came into view: make them match the row."""

        def beyond(p: int) -> bool:
            return p < old_bound if side == 0 else p > old_bound

        shown = {p: q for p, q in levels if beyond(p)}
        mine = {p: q for p, q, _ in self.book.side_depth(side, 1 << 20) if beyond(p)}
        for price in sorted(set(shown) | set(mine)):
            diff = shown.get(price, 0) - mine.get(price, 0)
            if diff > 0:
                self._seed(side, price, diff)
                self.guessed.add((side, price))
                self.stats.reseeded_levels += 1
            elif diff < 0 and self._in_view(side, price, bound):
                self._reduce_level(side, price, -diff)
                self.stats.reseeded_levels += 1

    def _reduce_named(self, oid: int, side: int, price: int, size: int) -> None:
        """Take `size` off the named order; if it holds less here (an earlier re-seed guessed
        wrong about whose volume vanished out of view), the rest comes off the seeded volume
        at that level, then the newest orders: the message proves the named order's size."""
        short = size - self._reduce(oid, size)
        if short:
            self.guessed.add((side, price))
            short -= self._reduce_seeds(side, price, short)
        if short:
            self._reduce_level(side, price, short)

    def _reduce_level(self, side: int, price: int, qty: int, newest_first: bool = True) -> None:
        """Remove volume the file no longer shows at a level that was out of view (its
        messages were not in the file): the newest orders first, since short-lived orders
        are the ones most often cancelled unseen."""
        self.guessed.add((side, price))
        taken = 0
        at_level = [
            (entry, oid)
            for oid, s, p, _, _, entry in self.book.orders()
            if s == side and p == price
        ]
        for _, oid in sorted(at_level, reverse=newest_first):
            if taken == qty:
                break
            taken += self._reduce(oid, qty - taken)


EXCEPTION_REASONS = {
    "replace": "the named order replaced another at its price in the same nanosecond (a delete "
    "and a submit) and NASDAQ kept the old order's place in the queue",
    "served_later_order": "the order ahead here was still resting (it trades or is cancelled "
    "later in the file), so NASDAQ served a later order first",
    "ahead_never_seen_again": "the order ahead here never appears in the file again: it left "
    "the book without a message this file carries",
}


def classify_exceptions(day: LobsterDay, stats: ReplayStats) -> list[tuple[int, int, str]]:
    """(message index, named order, reason key) for each priority exception; the key is one
    of EXCEPTION_REASONS, or "unexplained"."""
    kind, ids, price, t = (
        day.kind.tolist(),
        day.order_id.tolist(),
        day.price.tolist(),
        day.time_ns.tolist(),
    )
    history: dict[int, list[int]] = {}
    for j, lid in enumerate(ids):
        history.setdefault(lid, []).append(j)
    out = []
    for i, named, ahead in stats.priority_exceptions:
        submits = [j for j in history.get(named, []) if kind[j] == SUBMIT]
        j = submits[0] if submits else 0
        later = [k for k in history.get(ahead, []) if k > i]
        if j > 0 and kind[j - 1] == DELETE and price[j - 1] == price[j] and t[j - 1] == t[j]:
            reason = "replace"
        elif any(kind[k] in (EXECUTE, DELETE, PARTIAL_CANCEL) for k in later):
            reason = "served_later_order"
        elif not later:
            reason = "ahead_never_seen_again"
        else:
            reason = "unexplained"
        out.append((i, named, reason))
    return out
