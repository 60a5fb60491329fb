"""Delivery versus payment into the settled ledger (SQLite), once per trading day, in order.

Ledger schema (a real database file):
    balances(member, asset, amount)      settled holdings; asset 'CASH' (fen) or an
                                         instrument code (tonnes); member -1 is the exchange
                                         (fees); PRIMARY KEY (member, asset)
    settlements(date PRIMARY KEY, mode, trades, traded_qty, traded_value, fees, postings)
    postings(date, member, asset, amount)  every balance change of a settlement
    ledger_info(key PRIMARY KEY, value)  'opening_day': the trading day the opening balances
                                         follow (an opening-after file's last_trading_day)
    obligations(member, period, obligation)  verified emissions per compliance period, t
    surrenders(id, member, period, obligation, asset, qty, recorded, after_date)  compliance;
                                         after_date: the last settled day when it was made
Invariants:
- every field of every trade of a day is checked before anything else (`check_trades`): a
  listed instrument, a known venue, positive quantity at most MAX_QTY, a positive price on
  tick inside the widest band of the day (around the previous close), a value below
  MAX_VALUE, two different members of the market, a positive seq, a time from 0, two order
  ids, the aggressor its venue prints (trade_id and date are capture's and the query's); the
  first bad field refuses the day, naming the trade;
- a day settles only after the captured trades match the exchange's end-of-day records
  (count and trades_digest per instrument) and netting passes its conservation check;
- days settle in order: a date after the opening day, after the last settled day, and with no
  captured day between them left unsettled;
- one transaction per day: the settlements row (its primary key makes a second settlement of
  the same date impossible), the postings and the balance changes commit together or not at
  all, so a crash mid-settlement leaves the ledger as it was; the order and settled-once checks
  run inside it, so two processes settling one ledger settle the day once;
- no balance goes negative, and none passes MAX_VALUE (SQLite's integers are int64): a member
  whose obligations exceed its settled balance is a settlement failure, reported with the
  figures, and nothing is written. A balance of exactly zero is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from engine.book.layout import MAX_QTY
from engine.clearing.capture import TradeStore, connect, write_transaction
from engine.clearing.netting import Netting, TradeArrays, check_conservation, net
from engine.config import MarketConfig, Member
from engine.instruments import MAX_VALUE, Instrument
from engine.protocol import DayClosed, Trade, trades_digest

CASH = "CASH"
EXCHANGE = -1  # the exchange's own account: fees

SCHEMA = """
CREATE TABLE IF NOT EXISTS balances (
    member INTEGER NOT NULL, asset TEXT NOT NULL, amount INTEGER NOT NULL,
    PRIMARY KEY (member, asset));
CREATE TABLE IF NOT EXISTS settlements (
    date TEXT PRIMARY KEY, mode TEXT NOT NULL, trades INTEGER NOT NULL,
    traded_qty INTEGER NOT NULL, traded_value INTEGER NOT NULL, fees INTEGER NOT NULL,
    postings INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS postings (
    date TEXT NOT NULL, member INTEGER NOT NULL, asset TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS surrenders (
    id INTEGER PRIMARY KEY, member INTEGER NOT NULL, obligation INTEGER NOT NULL,
    asset TEXT NOT NULL, qty INTEGER NOT NULL, recorded TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS obligations (
    member INTEGER NOT NULL, period TEXT NOT NULL, obligation INTEGER NOT NULL,
    PRIMARY KEY (member, period));
"""
# columns a ledger made before them gains: (table, column, declaration)
_ADDED_COLUMNS = (
    ("surrenders", "period", "TEXT NOT NULL DEFAULT ''"),
    ("surrenders", "after_date", "TEXT NOT NULL DEFAULT ''"),
)
# how a trade printed -> its aggressor: the incoming order's side (0 buy, 1 sell) in the book,
# -1 for auctions and block trades
AGGRESSORS = {
    "continuous": frozenset({0, 1}),
    "pick": frozenset({0, 1}),
    "call": frozenset({-1}),
    "one_way": frozenset({-1}),
    "block": frozenset({-1}),
}
VENUES = frozenset(AGGRESSORS)


class SettlementRefused(RuntimeError):
    """The day cannot settle; the message says why and what to do."""


@dataclass
class SettlementReport:
    date: str
    mode: str
    netting: Netting
    postings: int = 0
    already_settled: bool = False
    failures: list[str] = field(default_factory=list)
    records: dict[str, DayClosed] = field(default_factory=dict)  # the exchange's, per code


def trade_arrays(trades: list[Trade], codes: list[str]) -> TradeArrays:
    index = {code: i for i, code in enumerate(codes)}
    cols = np.array(
        [(index[t.instrument], t.buyer, t.seller, t.price, t.qty) for t in trades],
        dtype=np.int64,
    ).reshape(-1, 5)
    return TradeArrays(codes, *(cols[:, i].copy() for i in range(5)))


def check_trades(trades: list[Trade], market: MarketConfig, references: dict[str, int]) -> None:
    """SettlementRefused naming the first trade with a field the exchange could not have
    printed. `references`: each instrument's previous close (the day's band centre)."""
    listed = {i.code: i for i in market.instruments}
    members = {m.id for m in market.members}
    for t in trades:
        problem = _trade_problem(t, listed, members, references)
        if problem:
            raise SettlementRefused(
                f"trade {t.trade_id} of {t.date} ({t.instrument}): {problem}; the trade log is "
                "not the exchange's, or --market is not the config the day ran with: nothing "
                "was settled"
            )


def _trade_problem(
    t: Trade, listed: dict[str, Instrument], members: set[int], references: dict[str, int]
) -> str | None:
    """What is wrong with one trade record (field first), or None."""
    inst = listed.get(t.instrument)
    if inst is None:
        return f"instrument {t.instrument!r} is not listed in the market config"
    if t.venue not in VENUES:
        return f"venue {t.venue!r} is not one of {sorted(VENUES)}"
    if not 0 < t.qty <= MAX_QTY:
        return f"qty {t.qty} t is not between 1 and {MAX_QTY:,} t"
    if t.price <= 0 or t.price % inst.tick:
        return f"price {t.price} fen is not a positive multiple of the tick {inst.tick}"
    reference = references.get(t.instrument, inst.reference_price)
    widest = max(inst.band_ppm, inst.block_band_ppm, inst.one_way_band_ppm)
    low, high = inst.band(reference, widest)
    if not low <= t.price <= high:
        return (
            f"price {t.price} fen is outside {low}-{high}, the widest band of the day "
            f"around the previous close {reference}"
        )
    if t.price * t.qty >= MAX_VALUE:
        return f"value {t.price} fen x {t.qty} t is not below {MAX_VALUE:,} fen"
    for side, member in (("buyer", t.buyer), ("seller", t.seller)):
        if member not in members:
            return f"{side} {member} is not a member of the market"
    if t.buyer == t.seller:
        return f"seller {t.seller} is also the buyer"
    if t.seq < 1 or t.ts_ns < 0:
        return f"seq {t.seq} or ts_ns {t.ts_ns} is not a command's (seq from 1, time from 0)"
    if t.buy_order_id < 1 or t.sell_order_id < 1 or t.buy_order_id == t.sell_order_id:
        return (
            f"buy_order_id {t.buy_order_id} and sell_order_id {t.sell_order_id} are not two "
            "order ids"
        )
    sides = AGGRESSORS[t.venue]
    if t.aggressor not in sides:
        return f"aggressor {t.aggressor} is not one of {sorted(sides)} for venue {t.venue!r}"
    return None


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = connect(self.path)
        self.db.executescript(SCHEMA)
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def is_empty(self) -> bool:
        return self.db.execute("SELECT COUNT(*) FROM balances").fetchone()[0] == 0

    def open_if_empty(self, members: list[Member], opening_day: str = "") -> bool:
        """Opening balances from the market config, and the trading day they follow (an
        opening-after file's last_trading_day), if the ledger holds no balance yet: True if
        it loaded them. One transaction, so two processes cannot both load."""
        with write_transaction(self.db, self.path):
            if not self.is_empty():
                return False
            for m in members:
                self.db.execute("INSERT INTO balances VALUES (?,?,?)", (m.id, CASH, m.cash))
                for code, qty in m.holdings.items():
                    self.db.execute("INSERT INTO balances VALUES (?,?,?)", (m.id, code, qty))
            if opening_day:
                self.db.execute(
                    "INSERT OR REPLACE INTO ledger_info VALUES ('opening_day', ?)", (opening_day,)
                )
        return True

    def load_opening(self, members: list[Member], opening_day: str = "") -> None:
        """Opening balances (only into an empty ledger): see `open_if_empty`."""
        if not self.open_if_empty(members, opening_day):
            raise SettlementRefused(f"{self.path} already holds balances")

    def opening_day(self) -> str:
        """The trading day the opening balances follow ('' if none was given)."""
        row = self.db.execute("SELECT value FROM ledger_info WHERE key='opening_day'").fetchone()
        return "" if row is None else row[0]

    def has_account(self, member: int) -> bool:
        """True when the ledger holds any balance of `member` (its cash row at least)."""
        row = self.db.execute("SELECT 1 FROM balances WHERE member=? LIMIT 1", (member,))
        return row.fetchone() is not None

    def balance(self, member: int, asset: str) -> int:
        row = self.db.execute(
            "SELECT amount FROM balances WHERE member=? AND asset=?", (member, asset)
        ).fetchone()
        return 0 if row is None else row[0]

    def balances(self) -> dict[tuple[int, str], int]:
        return {(m, a): v for m, a, v in self.db.execute("SELECT * FROM balances")}

    def balances_after(self, date: str) -> dict[tuple[int, str], int]:
        """The balances as they stood before the first settlement after `date`: today's, less
        the later days' postings, plus what was surrendered after a later day settled."""
        held = self.balances()
        later = self.db.execute(
            "SELECT member, asset, SUM(amount) FROM postings WHERE date > ? GROUP BY 1, 2",
            (date,),
        ).fetchall()
        for member, asset, amount in later:
            held[(member, asset)] = held.get((member, asset), 0) - amount
        surrendered = self.db.execute(
            "SELECT member, asset, SUM(qty) FROM surrenders WHERE after_date > ? GROUP BY 1, 2",
            (date,),
        ).fetchall()
        for member, asset, qty in surrendered:
            held[(member, asset)] = held.get((member, asset), 0) + qty
        return held

    def settled(self, date: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM settlements WHERE date=?", (date,)).fetchone()
            is not None
        )

    def last_settled(self) -> str:
        """The latest settled trading day ('' if none)."""
        return self.db.execute("SELECT COALESCE(MAX(date), '') FROM settlements").fetchone()[0]

    # -- settlement -------------------------------------------------------------------------------

    def settle(
        self, date: str, store: TradeStore, market: MarketConfig, gross: bool = False
    ) -> SettlementReport:
        if not self.settled(date):
            self._check_order(date, store)  # again in the transaction; early for its message
        codes = [i.code for i in market.instruments]
        trades = store.trades_of(date)
        check_trades(trades, market, previous_closes(store, date))
        records = verify_day(date, trades, store, codes)
        netting = net(
            trade_arrays(trades, codes),
            np.array([i.fee_ppm for i in market.instruments], dtype=np.int64),
        )
        check_conservation(netting)
        report = SettlementReport(date, "gross" if gross else "net", netting, records=records)
        postings = gross_postings(trades, market) if gross else net_postings(netting)
        with write_transaction(self.db, self.path):
            if self.settled(date):
                report.already_settled = True
                return report
            self._check_order(date, store)
            report.failures = self._shortfalls(postings)
            if report.failures:
                return report
            report.postings = len(postings)
            self._post(date, report, postings)
        return report

    def _check_order(self, date: str, store: TradeStore) -> None:
        """SettlementRefused unless `date` is the next day to settle: after the opening day
        and the last settled day, with every captured day before it settled."""
        opening, last = self.opening_day(), self.last_settled()
        if opening and date <= opening:
            raise SettlementRefused(
                f"{self.path} opened with the balances after {opening}: {date} is on or before "
                "that day, so its trades are already in them; settle a later day"
            )
        if date < last:
            raise SettlementRefused(
                f"{self.path} has settled {last} already: days settle in order, and {date} "
                "comes before it"
            )
        floor = max(opening, last)
        skipped = [d for d in store.days() if floor < d < date and not self.settled(d)]
        if skipped:
            raise SettlementRefused(
                f"{store.path} holds {', '.join(skipped)}, not settled in {self.path}: settle "
                f"{'them' if len(skipped) > 1 else 'it'} first, days settle in order"
            )

    def _shortfalls(self, postings: list[tuple[int, str, int]]) -> list[str]:
        change: dict[tuple[int, str], int] = {}
        for member, asset, amount in postings:
            change[(member, asset)] = change.get((member, asset), 0) + amount
        failures = []
        for (member, asset), amount in sorted(change.items()):
            held = self.balance(member, asset)
            unit = "fen" if asset == CASH else "t"
            if member != EXCHANGE and held + amount < 0:
                failures.append(
                    f"member {member} {asset}: owes {-amount} {unit}, "
                    f"holds {held} {unit}, short {-(held + amount)} {unit}"
                )
            elif held + amount > MAX_VALUE:
                failures.append(
                    f"member {member} {asset}: receives {amount} {unit} on top of {held} "
                    f"{unit}, more than the {MAX_VALUE:,} a balance may hold"
                )
        return failures

    def _post(
        self, date: str, report: SettlementReport, postings: list[tuple[int, str, int]]
    ) -> None:
        """The day's rows and balance changes, inside the caller's transaction."""
        n = report.netting
        db = self.db
        db.execute(
            "INSERT INTO settlements VALUES (?,?,?,?,?,?,?)",
            (
                date,
                report.mode,
                n.trades,
                n.traded_qty,
                n.traded_value,
                n.total_fees,
                len(postings),
            ),
        )
        for member, asset, amount in postings:
            db.execute("INSERT INTO postings VALUES (?,?,?,?)", (date, member, asset, amount))
            db.execute(
                "INSERT INTO balances VALUES (?,?,?) ON CONFLICT(member, asset) "
                "DO UPDATE SET amount = amount + excluded.amount",
                (member, asset, amount),
            )

    # -- next day -------------------------------------------------------------------------------

    def opening_market(
        self,
        market: MarketConfig,
        closes: dict[str, int] | None = None,
        first_trade_id: int = 1,
        settled_day: str = "",
    ) -> MarketConfig:
        """The market config with members' cash and holdings from the settled ledger (as they
        stood after `settled_day` when given, so a later rerun writes the same day's file),
        each instrument's reference price set to the day's close, the next trade id (the one
        after the day's last captured trade) and the settled day, which the next trading day
        must follow: what the exchange core loads at the next start of day."""
        held = self.balances_after(settled_day) if settled_day else self.balances()
        closes = closes or {}
        instruments = [
            msgspec.structs.replace(i, reference_price=closes.get(i.code, i.reference_price))
            for i in market.instruments
        ]
        members = [
            Member(
                id=m.id,
                name=m.name,
                kind=m.kind,
                cash=held.get((m.id, CASH), 0),
                holdings={i.code: held.get((m.id, i.code), 0) for i in market.instruments},
            )
            for m in market.members
        ]
        return msgspec.structs.replace(
            market,
            instruments=instruments,
            members=members,
            first_trade_id=first_trade_id,
            last_trading_day=settled_day or market.last_trading_day,
        )

    def close(self) -> None:
        self.db.close()


def previous_closes(store: TradeStore, date: str) -> dict[str, int]:
    """Each instrument's close on the last day before `date` the store holds a record of."""
    rows = store.db.execute(
        "SELECT instrument, close FROM day_records d WHERE date = (SELECT MAX(date) FROM "
        "day_records e WHERE e.instrument = d.instrument AND e.date < ?)",
        (date,),
    )
    return {code: close for code, close in rows if close > 0}


def verify_day(
    date: str, trades: list[Trade], store: TradeStore, codes: list[str]
) -> dict[str, DayClosed]:
    """The captured trades must match the exchange's end-of-day record of every instrument;
    returns those records."""
    records = store.day_records(date)
    if not records:
        raise SettlementRefused(
            f"no end-of-day record captured for {date}: the day is not "
            "closed on the exchange, or capture has not reached its end"
        )
    for code in codes:
        mine = [t for t in trades if t.instrument == code]
        record = records.get(code)
        if record is None:
            raise SettlementRefused(f"{date} {code}: the end-of-day record is missing")
        if record.trades != len(mine) or record.checksum != trades_digest(mine):
            raise SettlementRefused(
                f"{date} {code}: the exchange reports {record.trades} trades (checksum "
                f"{record.checksum[:12]}), clearing holds {len(mine)} (checksum "
                f"{trades_digest(mine)[:12]}); capture the missing trades before settling"
            )
    return records


def net_postings(n: Netting) -> list[tuple[int, str, int]]:
    """One cash posting per member, one allowance posting per member and instrument, the fees
    to the exchange: DVP of the net obligations."""
    postings = []
    for row, member in enumerate(n.members.tolist()):
        cash = int(n.net_cash[row].sum())
        if cash:
            postings.append((member, CASH, cash))
        for col, code in enumerate(n.codes):
            qty = int(n.net_qty[row, col])
            if qty:
                postings.append((member, code, qty))
    if n.total_fees:
        postings.append((EXCHANGE, CASH, n.total_fees))
    return postings


def gross_postings(trades: list[Trade], market: MarketConfig) -> list[tuple[int, str, int]]:
    """Trade-by-trade DVP: each trade's cash, allowances and fees as separate postings."""
    fee_of = {i.code: i.fee for i in market.instruments}
    postings = []
    for t in trades:
        value = t.price * t.qty
        fee = fee_of[t.instrument](value)
        postings += [
            (t.buyer, CASH, -value - fee),
            (t.seller, CASH, value - fee),
            (t.buyer, t.instrument, t.qty),
            (t.seller, t.instrument, -t.qty),
            (EXCHANGE, CASH, 2 * fee),
        ]
    return [posting for posting in postings if posting[2]]
