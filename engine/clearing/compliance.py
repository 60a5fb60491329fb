"""Compliance surrender (清缴): allowances and CCER credits against a verified obligation.

An obligation belongs to a member and a compliance period (e.g. "2025"): recorded by the first
surrender that names it, and the same figure on every later call for that member and period
(a different one is refused: corrections are not a surrender). Rules, over every surrender of
the member and period together, not per call:
- allowances are CEA instruments of the market (a CCER, cash or unlisted code is refused);
  1 CCER = 1 t;
- CCER may cover at most 5% of the obligation (integer check: ccer x 100 <= obligation x 5);
- the total surrendered may not exceed the obligation (a smaller total is recorded with its
  shortfall, which later calls may cover);
- the member must hold, in the settled ledger, every unit it surrenders;
- obligations and quantities are whole tonnes up to MAX_QTY (so SQLite's int64 holds them).
One transaction, with the checks inside it: the records and the ledger debits commit
together, and two processes surrendering for one member cannot both pass the caps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.book.layout import MAX_QTY
from engine.clearing.capture import write_transaction
from engine.clearing.settlement import Ledger
from engine.config import MarketConfig

CCER_CAP_PERCENT = 5
CCER = "CCER"
PERIOD = re.compile(r"^\d{4}(-\d{4})?$")  # a year, or a span of years such as 2021-2022


class SurrenderRefused(ValueError):
    pass


@dataclass(frozen=True)
class Surrender:
    """One call: what the member gives now. `obligation` 0: the one recorded before."""

    member: int
    period: str
    obligation: int
    allowances: dict[str, int]  # CEA instrument code -> tonnes
    ccer: int

    @property
    def total(self) -> int:
        return sum(self.allowances.values()) + self.ccer


@dataclass(frozen=True)
class Standing:
    """A member's position for a compliance period, over every surrender so far."""

    member: int
    period: str
    obligation: int
    allowances: int  # tonnes surrendered in allowances
    ccer: int

    @property
    def total(self) -> int:
        return self.allowances + self.ccer

    @property
    def shortfall(self) -> int:
        return self.obligation - self.total


def standing(ledger: Ledger, member: int, period: str) -> Standing | None:
    """The member's obligation and surrenders for `period`, or None if none is recorded."""
    row = ledger.db.execute(
        "SELECT obligation FROM obligations WHERE member=? AND period=?", (member, period)
    ).fetchone()
    if row is None:
        return None
    given = dict(
        ledger.db.execute(
            "SELECT asset = ?, SUM(qty) FROM surrenders WHERE member=? AND period=? GROUP BY 1",
            (CCER, member, period),
        ).fetchall()
    )
    return Standing(member, period, row[0], given.get(0, 0), given.get(1, 0))


def surrender(ledger: Ledger, request: Surrender, market: MarketConfig, recorded: str) -> Standing:
    """Record the surrender and debit the ledger; the standing after it. SurrenderRefused,
    with nothing changed, when a rule above would break."""
    _check_request(ledger, request, market)
    with write_transaction(ledger.db, ledger.path):
        before = standing(ledger, request.member, request.period)
        obligation = _obligation(request, before)
        ccer = request.ccer + (before.ccer if before else 0)
        total = request.total + (before.total if before else 0)
        if ccer * 100 > obligation * CCER_CAP_PERCENT:
            raise SurrenderRefused(
                f"CCER may cover at most {CCER_CAP_PERCENT}% of the obligation: "
                f"{obligation * CCER_CAP_PERCENT // 100:,} t of {obligation:,} t, not "
                f"{ccer:,} t{_so_far(before, 'ccer')}"
            )
        if total > obligation:
            raise SurrenderRefused(
                f"surrendering {total:,} t against an obligation of {obligation:,} t"
                f"{_so_far(before, 'total')}"
            )
        wanted = {**request.allowances, CCER: request.ccer}
        for asset, qty in wanted.items():
            held = ledger.balance(request.member, asset)
            if qty > held:
                raise SurrenderRefused(
                    f"member {request.member} holds {held:,} t of {asset}, cannot surrender "
                    f"{qty:,} t"
                )
        if before is None:
            ledger.db.execute(
                "INSERT INTO obligations VALUES (?,?,?)",
                (request.member, request.period, obligation),
            )
        after_date = ledger.last_settled()
        for asset, qty in wanted.items():
            if qty:
                ledger.db.execute(
                    "INSERT INTO surrenders (member, period, obligation, asset, qty, recorded, "
                    "after_date) VALUES (?,?,?,?,?,?,?)",
                    (request.member, request.period, obligation, asset, qty, recorded, after_date),
                )
                ledger.db.execute(
                    "UPDATE balances SET amount = amount - ? WHERE member=? AND asset=?",
                    (qty, request.member, asset),
                )
        done = standing(ledger, request.member, request.period)
    assert done is not None
    return done


def _check_request(ledger: Ledger, request: Surrender, market: MarketConfig) -> None:
    """The checks that need no transaction: the request's own fields."""
    if not 0 <= request.member < 2**31 or not ledger.has_account(request.member):
        raise SurrenderRefused(f"member {request.member} has no account in {ledger.path}")
    if not PERIOD.fullmatch(request.period):
        raise SurrenderRefused(
            f"compliance period {request.period!r}: give a year (2025) or a span (2021-2022)"
        )
    if not 0 <= request.obligation <= MAX_QTY:
        raise SurrenderRefused(f"the obligation must be between 1 and {MAX_QTY:,} t")
    products = {i.code: i.product for i in market.instruments}
    for code, qty in request.allowances.items():
        if products.get(code) != "CEA":
            listed = sorted(c for c, p in products.items() if p == "CEA")
            raise SurrenderRefused(
                f"{code} is not an allowance (CEA) instrument of the market: allowances are "
                f"{', '.join(listed)}" + ("; CCER goes with --ccer" if code == CCER else "")
            )
        if not 0 <= qty <= MAX_QTY:
            raise SurrenderRefused(f"{code}: {qty} t is not between 0 and {MAX_QTY:,} t")
    if not 0 <= request.ccer <= MAX_QTY:
        raise SurrenderRefused(f"CCER: {request.ccer} t is not between 0 and {MAX_QTY:,} t")


def _obligation(request: Surrender, before: Standing | None) -> int:
    """The obligation this surrender counts against: the recorded one, or the request's."""
    if before is None:
        if not request.obligation:
            raise SurrenderRefused(
                f"no obligation recorded for member {request.member} in {request.period}: "
                "give the verified emissions with --obligation"
            )
        return request.obligation
    if request.obligation and request.obligation != before.obligation:
        raise SurrenderRefused(
            f"member {request.member}'s obligation for {request.period} is recorded as "
            f"{before.obligation:,} t, not {request.obligation:,} t"
        )
    return before.obligation


def _so_far(before: Standing | None, figure: str) -> str:
    """', with N t surrendered before' for a message, when earlier calls count."""
    if before is None:
        return ""
    return f", counting {getattr(before, figure):,} t surrendered before"
