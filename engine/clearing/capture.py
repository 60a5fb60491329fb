"""Trade capture: the exchange's trade stream into clearing's store, gap-free and exactly once.

The stream is a sequence of `Trade` and `DayClosed` records (engine.protocol); the exchange
writes it as a framed trade log (`TradeLogWriter`, engine.framing), and the engine service will
later send the same records over the network: capture only sees records, so the transport is a
detail. Invariants of the store (SQLite, WAL):
- trade ids are stored contiguously from 1: a record beyond the next id is a gap and stops the
  capture (`TradeGap` names the missing range, to re-request); one at or below the last stored
  id is a duplicate: ignored if identical, an error if it differs;
- each capture call is one transaction: stopped at any moment (even kill -9) it leaves either
  all of its records or none, so capturing again neither loses nor doubles a trade.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
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


class TradeGap(RuntimeError):
    def __init__(self, expected: int, got: int) -> None:
        super().__init__(
            f"trade stream gap: expected trade {expected}, got {got}; "
            f"re-request trades {expected}..{got - 1} from the engine"
        )
        self.expected, self.got = expected, got


class ConflictingDuplicate(RuntimeError):
    pass


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


def connect(path: str | Path) -> sqlite3.Connection:
    """The database at `path` (created if need be); OSError naming it if it cannot be opened."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise OSError(f"cannot open the database {path}: {exc}") from None
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class TradeStore:
    def __init__(self, path: str | Path) -> None:
        self.db = connect(path)
        self.db.executescript(SCHEMA)
        present = {row[1] for row in self.db.execute("PRAGMA table_info(day_records)")}
        for column in _ADDED_DAY_RECORD_COLUMNS:
            if column not in present:
                self.db.execute(
                    f"ALTER TABLE day_records ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                )

    def last_trade_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(trade_id), 0) FROM trades").fetchone()[0]

    def capture(self, records: Iterable[Trade | DayClosed]) -> CaptureResult:
        stored = duplicates = day_records = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
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
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return CaptureResult(stored, duplicates, day_records, last)

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

    def _check_duplicate(self, t: Trade) -> None:
        row = self.db.execute(
            "SELECT record FROM trades WHERE trade_id = ?", (t.trade_id,)
        ).fetchone()
        if row is None or bytes(row[0]) != encode(t):
            raise ConflictingDuplicate(f"trade {t.trade_id} arrived again with other contents")

    def _day_record(self, r: DayClosed) -> int:
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO day_records ({DAY_RECORD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (r.date, r.instrument, r.trades, r.volume, r.close, r.checksum, r.open, r.high, r.low),
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
