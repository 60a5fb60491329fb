"""Trade capture: the exchange's trade stream into clearing's store, gap-free and exactly once.

The stream is a sequence of `Trade` and `DayClosed` records (engine.protocol); the exchange
writes it as a framed trade log (`TradeLogWriter`, engine.framing), and the engine service will
later send the same records over the network: capture only sees records, so the transport is a
detail. Invariants of the store (SQLite, WAL):
- trade ids are stored contiguously from 1: a record beyond the next id is a gap and stops the
  capture (`TradeGap` names the missing range, to re-request); one at or below the last stored
  id is a duplicate: ignored if identical, an error if it differs;
- each capture call is one transaction: stopped at any moment (even kill -9) it leaves either
  all of its records or none, so capturing again neither loses nor doubles a trade;
- captured from the engine's trade stream (`capture_stream`, engine.clearing.live), the store
  also holds the stream number of the last clearing event it took (`stream_position`),
  written in the same transaction as the events: a consumer resumes from it + 1 exactly.
  Stream numbers must follow it gap-free (StreamGap otherwise); events at or below it are
  duplicates, and a Trade among them must equal the stored one (ConflictingDuplicate). It
  also keeps the event at its position, encoded (`continues` tells whether an engine's
  event there is the same), and the history id of the engine it captures from
  (engine.journal.history; table `stream_source`): stream numbers begin again at 1 in each
  fresh data directory (each trading day under its opening file), and events are stored
  only under the store's current history (OtherHistory otherwise). `begin_history` moves
  the store to another engine's stream, from its number 1, only once the store's last day
  is closed (trade ids must still follow the store's last: the opening file carries them);
Every clearing database (store and ledger) opens through `connect`, and every write goes
through `write_transaction`: a file that is not an SQLite database, or one another process
holds longer than BUSY_TIMEOUT_S, is an OSError naming the file and what to do, never a
sqlite3 traceback.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.framing import FramedWriter, read_records
from engine.protocol import DayClosed, Event, Trade, encode

_stream_decoder = msgspec.msgpack.Decoder(Trade | DayClosed)

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    trade_id INTEGER PRIMARY KEY,   -- contiguous from 1
    seq INTEGER NOT NULL,           -- the engine command that printed it
    ts_ns INTEGER NOT NULL,
    date TEXT NOT NULL,             -- trading day (settlement date)
    instrument TEXT NOT NULL,
    price INTEGER NOT NULL,         -- fen per tonne
    qty INTEGER NOT NULL,           -- tonnes
    buyer INTEGER NOT NULL,
    seller INTEGER NOT NULL,
    buy_order_id INTEGER NOT NULL,
    sell_order_id INTEGER NOT NULL,
    aggressor INTEGER NOT NULL,     -- 0 buy, 1 sell, -1 auction or block
    venue TEXT NOT NULL,            -- continuous, call, pick, one_way, block
    record BLOB NOT NULL            -- the exact encoded Trade, for checksums
);
CREATE INDEX IF NOT EXISTS trades_by_day ON trades (date, instrument, trade_id);
CREATE TABLE IF NOT EXISTS stream_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    clearing_seq INTEGER NOT NULL,  -- the last clearing stream number captured
    last_event BLOB                 -- that event, encoded (NULL in a store made before it)
);
CREATE TABLE IF NOT EXISTS stream_source (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    history TEXT NOT NULL           -- the history id of the engine captured from
);
CREATE TABLE IF NOT EXISTS day_records (
    date TEXT NOT NULL,
    instrument TEXT NOT NULL,
    trades INTEGER NOT NULL,
    volume INTEGER NOT NULL,
    close INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    open INTEGER NOT NULL DEFAULT 0,  -- first, highest and lowest listed trade price;
    high INTEGER NOT NULL DEFAULT 0,  -- 0 in records captured before the engine sent them
    low INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (date, instrument)
);
"""
DAY_RECORD_COLUMNS = "date, instrument, trades, volume, close, checksum, open, high, low"
_ADDED_DAY_RECORD_COLUMNS = ("open", "high", "low")  # a store made before them gains them


def day_record_row(r: DayClosed) -> tuple:
    """A DayClosed as a row of day_records, in DAY_RECORD_COLUMNS' order."""
    return (r.date, r.instrument, r.trades, r.volume, r.close, r.checksum, r.open, r.high, r.low)


class TradeGap(RuntimeError):
    def __init__(self, expected: int, got: int) -> None:
        if expected == 1:  # an empty store: a later day's engine goes on from earlier days
            told = (
                f"this store is empty, and the first trade is {got}: trades 1..{got - 1} "
                f"are of earlier days (the engine runs on an opening file that goes on from "
                f"them). Capture or clear into the store that holds those days (its --store "
                f"or --out), or give the earlier days' trades first"
            )
        else:
            told = f"re-request trades {expected}..{got - 1} from the engine"
        super().__init__(f"trade stream gap: expected trade {expected}, got {got}; {told}")
        self.expected, self.got = expected, got


class ConflictingDuplicate(RuntimeError):
    pass


class OtherHistory(RuntimeError):
    """Events of an engine whose history is not the store's: nothing was stored."""


class StreamGap(RuntimeError):
    def __init__(self, expected: int, got: int) -> None:
        super().__init__(
            f"clearing stream gap: expected event {expected}, got {got}; ask the engine "
            f"from {expected}"
        )
        self.expected, self.got = expected, got


@dataclass(frozen=True)
class CaptureResult:
    stored: int
    duplicates: int
    day_records: int
    last_trade_id: int


class TradeLogWriter(FramedWriter):
    """What the exchange writes for clearing: its Trade and DayClosed events, in order."""

    def record(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Trade | DayClosed):
                self.write(encode(event))


def read_trade_log(path: str | Path) -> Iterator[Trade | DayClosed]:
    return read_records(path, _stream_decoder, "a trade log record (Trade or DayClosed)")


BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's transaction


class DatabaseBusy(OSError):
    """Another process held the database for longer than BUSY_TIMEOUT_S."""


def connect(path: str | Path) -> sqlite3.Connection:
    """The database at `path` (created if need be); OSError naming it if it cannot be opened
    or is not an SQLite database."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        _enter_wal(db)
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise OSError(
                f"{path} is not an SQLite database ({exc}): name the clearing store or "
                "ledger file, or a new file to create"
            ) from None
        raise OSError(f"cannot open the database {path}: {exc}") from None
    return db


def _enter_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode. Two processes creating one database at once (two cxe
    clear of one store) meet in a lock upgrade that SQLite answers 'database is locked' at
    once, without its busy timeout: the switch is retried until BUSY_TIMEOUT_S has passed."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def write_transaction(db: sqlite3.Connection, path: str | Path) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; DatabaseBusy when another
    process keeps the database locked past the busy timeout."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise DatabaseBusy(
                f"{path} is in use by another process (a cxe clear, capture or surrender) "
                f"and stayed locked for {BUSY_TIMEOUT_S:.0f} s: try again when it has finished"
            ) from None
        raise
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class TradeStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = connect(path)
        self.db.executescript(SCHEMA)
        present = {row[1] for row in self.db.execute("PRAGMA table_info(day_records)")}
        for column in _ADDED_DAY_RECORD_COLUMNS:
            if column not in present:
                self.db.execute(
                    f"ALTER TABLE day_records ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                )
        present = {row[1] for row in self.db.execute("PRAGMA table_info(stream_position)")}
        if "last_event" not in present:  # a store made before it
            self.db.execute("ALTER TABLE stream_position ADD COLUMN last_event BLOB")

    def last_trade_id(self, through: str | None = None) -> int:
        """The last captured trade id (of the days up to `through`, YYYY-MM-DD, if given)."""
        if through is None:
            return self.db.execute("SELECT COALESCE(MAX(trade_id), 0) FROM trades").fetchone()[0]
        return self.db.execute(
            "SELECT COALESCE(MAX(trade_id), 0) FROM trades WHERE date <= ?", (through,)
        ).fetchone()[0]

    def days(self) -> list[str]:
        """Every trading day the store holds trades or end-of-day records of, in order."""
        rows = self.db.execute(
            "SELECT date FROM day_records UNION SELECT date FROM trades ORDER BY date"
        )
        return [row[0] for row in rows]

    def capture(self, records: Iterable[Trade | DayClosed]) -> CaptureResult:
        with write_transaction(self.db, self.path):
            return self._capture(records)

    def _capture(self, records: Iterable[Trade | DayClosed]) -> CaptureResult:
        stored = duplicates = day_records = 0
        last = self.last_trade_id()
        for record in records:
            if isinstance(record, DayClosed):
                day_records += self._day_record(record)
            elif record.trade_id <= last:
                self._check_duplicate(record)
                duplicates += 1
            elif record.trade_id == last + 1:
                self._insert(record)
                last += 1
                stored += 1
            else:
                raise TradeGap(last + 1, record.trade_id)
        return CaptureResult(stored, duplicates, day_records, last)

    def stream_position(self) -> int:
        """The stream number of the last clearing event captured from the engine (0: none)."""
        row = self.db.execute("SELECT clearing_seq FROM stream_position").fetchone()
        return 0 if row is None else row[0]

    def day_closed(self) -> bool:
        """The store's latest day (of trades and day records) has end-of-day records, one
        for each instrument it has trades of (a helper's probe: one instrument's record was
        taken for the whole day's, and the store moved on without the others)."""
        days = self.days()
        if not days:
            return False
        recorded = self.day_records(days[-1])
        traded = {row[0] for row in self.db.execute(
            "SELECT DISTINCT instrument FROM trades WHERE date = ?", (days[-1],)
        )}  # fmt: skip
        return bool(recorded) and traded <= recorded.keys()

    def stream_history(self) -> str | None:
        """The history id of the engine the store captures from (None: none yet, or a store
        made before it was kept)."""
        row = self.db.execute("SELECT history FROM stream_source").fetchone()
        return None if row is None else row[0]

    def continues(self, event: Trade | DayClosed) -> bool:
        """Is `event` (an engine's at the store's position) the event the store took there?
        In a store made before it kept that event: a Trade must be its last trade, a
        DayClosed its day record."""
        row = self.db.execute("SELECT last_event FROM stream_position").fetchone()
        if row is not None and row[0] is not None:
            return bytes(row[0]) == encode(event)
        if self.stream_history() is not None:  # it follows a stream, from its number 1
            return False
        if isinstance(event, Trade):
            last = event.trade_id == self.last_trade_id()
            return last and self._stored_record(event.trade_id) == encode(event)
        held = self.db.execute(
            f"SELECT {DAY_RECORD_COLUMNS} FROM day_records WHERE date = ? AND instrument = ?",
            (event.date, event.instrument),
        ).fetchone()
        return held == day_record_row(event)

    def take_history(self, history: str) -> None:
        """Name the store's stream `history`, where it is: the engine's event at the store's
        position was the store's (`continues`), under another id or none (a store made
        before ids were kept; a journal whose history file was made anew)."""
        with write_transaction(self.db, self.path):
            self._name_history(history)

    def _name_history(self, history: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO stream_source (id, history) VALUES (1, ?)", (history,)
        )

    def begin_history(self, history: str) -> None:
        """Follow the stream of another engine (`history`) from its number 1: allowed in an
        empty store and once the store's last day is closed (OtherHistory otherwise: the
        rest of that day is in the engine the store captured from)."""
        with write_transaction(self.db, self.path):
            position = self.stream_position()
            if position and not self.day_closed():
                days = self.days()
                last_day = days[-1] if days else "?"
                raise OtherHistory(
                    f"{self.path} follows the stream of engine history "
                    f"{self.stream_history() or '(not recorded)'} to stream number {position}, "
                    f"and its last day, {last_day}, is not closed; this engine's history is "
                    f"{history}: another engine (another data directory, or its journal's "
                    f"history file replaced or removed). The rest of {last_day} is in the "
                    f"engine the store captured from: capture it from there first (cxe "
                    f"capture --until-day-closed), then from this one"
                )
            self._name_history(history)
            self.db.execute(
                "INSERT OR REPLACE INTO stream_position (id, clearing_seq, last_event) "
                "VALUES (1, 0, NULL)"
            )

    def capture_stream(self, events: list[Trade | DayClosed], history: str) -> CaptureResult:
        """Capture clearing events of the engine history `history` (the store's: OtherHistory
        otherwise) as the trade stream numbers them, in one transaction with the new stream
        position and its event (see the module's invariants)."""
        with write_transaction(self.db, self.path):
            held = self.stream_history()
            if held != history:
                raise OtherHistory(
                    f"{self.path} follows the stream of engine history {held}, not {history}"
                )
            position = self.stream_position()
            fresh = []
            for event in events:
                if event.stream_seq <= position:
                    if isinstance(event, Trade):
                        self._check_duplicate(event)
                    continue
                if event.stream_seq != position + 1:
                    raise StreamGap(position + 1, event.stream_seq)
                position += 1
                fresh.append(event)
            result = self._capture(fresh)
            if fresh:
                self.db.execute(
                    "INSERT OR REPLACE INTO stream_position (id, clearing_seq, last_event) "
                    "VALUES (1, ?, ?)",
                    (position, encode(fresh[-1])),
                )
        return result

    def _insert(self, t: Trade) -> None:
        self.db.execute(
            "INSERT INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                t.trade_id,
                t.seq,
                t.ts_ns,
                t.date,
                t.instrument,
                t.price,
                t.qty,
                t.buyer,
                t.seller,
                t.buy_order_id,
                t.sell_order_id,
                t.aggressor,
                t.venue,
                encode(t),
            ),
        )

    def _stored_record(self, trade_id: int) -> bytes | None:
        """The encoded Trade the store holds under `trade_id` (None: none)."""
        row = self.db.execute("SELECT record FROM trades WHERE trade_id = ?", (trade_id,))
        held = row.fetchone()
        return None if held is None else bytes(held[0])

    def _check_duplicate(self, t: Trade) -> None:
        if self._stored_record(t.trade_id) != encode(t):
            raise ConflictingDuplicate(
                f"trade {t.trade_id} arrived again with other contents: the store holds "
                f"another trade {t.trade_id}. Trade ids go on from day to day only when each "
                f"day's engine runs on the opening file cxe clear wrote for it "
                f"(opening-after-DATE.json); this engine's began again, or it is another "
                f"market's: capture it into a store of its own"
            )

    def _day_record(self, r: DayClosed) -> int:
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO day_records ({DAY_RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            day_record_row(r),
        )
        return cursor.rowcount

    def trades_of(self, date: str) -> list[Trade]:
        rows = self.db.execute(
            "SELECT record FROM trades WHERE date = ? ORDER BY trade_id", (date,)
        ).fetchall()
        return [msgspec.msgpack.decode(bytes(r[0]), type=Trade) for r in rows]

    def day_records(self, date: str) -> dict[str, DayClosed]:
        rows = self.db.execute(
            f"SELECT {DAY_RECORD_COLUMNS} FROM day_records WHERE date = ?", (date,)
        ).fetchall()
        return {r[1]: DayClosed(0, *r) for r in rows}

    def close(self) -> None:
        self.db.close()


def capture_file(store: TradeStore, path: str | Path) -> CaptureResult:
    return store.capture(read_trade_log(path))
