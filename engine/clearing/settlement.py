"""Delivery versus payment into the settled ledger (SQLite), once per trading day.

Ledger schema (a real database file):
    balances(member, asset, amount)      settled holdings; asset 'CASH' (fen) or an
                                         instrument code (tonnes); member -1 is the exchange
                                         (fees); PRIMARY KEY (member, asset)
    settlements(date PRIMARY KEY, mode, trades, traded_qty, traded_value, fees, postings)
    postings(date, member, asset, amount)  every balance change of a settlement
    surrenders(id, member, obligation, asset, qty, ccer_share_ppm, recorded)  compliance
Invariants:
- a day settles only after the captured trades match the exchange's end-of-day records
  (count and trades_digest per instrument) and netting passes its conservation check;
- one transaction per day: the settlements row (its primary key makes a second settlement of
  the same date impossible), the postings and the balance changes commit together or not at
  all, so a crash mid-settlement leaves the ledger as it was;
- no balance goes negative: a member whose obligations exceed its settled balance is a
  settlement failure, reported with the figures, and nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from engine.clearing.capture import TradeStore, connect
from engine.clearing.netting import Netting, TradeArrays, check_conservation, net
from engine.config import MarketConfig, Member
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
"""


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


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = connect(self.path)
        self.db.executescript(SCHEMA)

    def is_empty(self) -> bool:
        return self.db.execute("SELECT COUNT(*) FROM balances").fetchone()[0] == 0

    def load_opening(self, members: list[Member]) -> None:
        """Opening balances from the market config (only into an empty ledger)."""
        if not self.is_empty():
            raise SettlementRefused(f"{self.path} already holds balances")
        self.db.execute("BEGIN IMMEDIATE")
        for m in members:
            self.db.execute("INSERT INTO balances VALUES (?,?,?)", (m.id, CASH, m.cash))
            for code, qty in m.holdings.items():
                self.db.execute("INSERT INTO balances VALUES (?,?,?)", (m.id, code, qty))
        self.db.execute("COMMIT")

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

    def settled(self, date: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM settlements WHERE date=?", (date,)).fetchone()
            is not None
        )

    # -- settlement -------------------------------------------------------------------------------

    def settle(
        self, date: str, store: TradeStore, market: MarketConfig, gross: bool = False
    ) -> SettlementReport:
        codes = [i.code for i in market.instruments]
        trades = store.trades_of(date)
        records = verify_day(date, trades, store, codes)
        netting = net(
            trade_arrays(trades, codes),
            np.array([i.fee_ppm for i in market.instruments], dtype=np.int64),
        )
        check_conservation(netting)
        report = SettlementReport(date, "gross" if gross else "net", netting, records=records)
        if self.settled(date):
            report.already_settled = True
            return report
        postings = gross_postings(trades, market) if gross else net_postings(netting)
        report.failures = self._shortfalls(postings)
        if report.failures:
            return report
        report.postings = len(postings)
        self._post(date, report, postings)
        return report

    def _shortfalls(self, postings: list[tuple[int, str, int]]) -> list[str]:
        change: dict[tuple[int, str], int] = {}
        for member, asset, amount in postings:
            change[(member, asset)] = change.get((member, asset), 0) + amount
        failures = []
        for (member, asset), amount in sorted(change.items()):
            held = self.balance(member, asset)
            if member != EXCHANGE and held + amount < 0:
                unit = "fen" if asset == CASH else "t"
                failures.append(
                    f"member {member} {asset}: owes {-amount} {unit}, "
                    f"holds {held} {unit}, short {-(held + amount)} {unit}"
                )
        return failures

    def _post(
        self, date: str, report: SettlementReport, postings: list[tuple[int, str, int]]
    ) -> None:
        n = report.netting
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
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
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- next day -------------------------------------------------------------------------------

    def opening_market(
        self,
        market: MarketConfig,
        closes: dict[str, int] | None = None,
        first_trade_id: int = 1,
        settled_day: str = "",
    ) -> MarketConfig:
        """The market config with members' cash and holdings from the settled ledger, each
        instrument's reference price set to the day's close, the next trade id (the one
        after the last captured trade) and the settled day, which the next trading day must
        follow: what the exchange core loads at the next start of day."""
        held = self.balances()
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
