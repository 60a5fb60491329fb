"""Compliance surrender (清缴): allowances and CCER credits against a verified obligation.

Rules: 1 CCER = 1 t; CCER may cover at most 5% of the obligation (integer check:
ccer x 100 <= obligation x 5); the total surrendered may not exceed the obligation (a smaller
total is recorded with its shortfall); the member must hold, in the settled ledger, every
unit it surrenders. One transaction: the records and the ledger debits commit together.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.clearing.settlement import Ledger

CCER_CAP_PERCENT = 5


class SurrenderRefused(ValueError):
    pass


@dataclass(frozen=True)
class Surrender:
    member: int
    obligation: int
    allowances: dict[str, int]  # CEA vintage code -> tonnes
    ccer: int

    @property
    def total(self) -> int:
        return sum(self.allowances.values()) + self.ccer

    @property
    def shortfall(self) -> int:
        return self.obligation - self.total


def surrender(ledger: Ledger, request: Surrender, recorded: str) -> Surrender:
    if not ledger.has_account(request.member):
        raise SurrenderRefused(f"member {request.member} has no account in {ledger.path}")
    if request.obligation <= 0:
        raise SurrenderRefused("the obligation must be a positive number of tonnes")
    if any(q < 0 for q in request.allowances.values()) or request.ccer < 0:
        raise SurrenderRefused("quantities cannot be negative")
    if request.ccer * 100 > request.obligation * CCER_CAP_PERCENT:
        cap = request.obligation * CCER_CAP_PERCENT // 100
        raise SurrenderRefused(
            f"CCER may cover at most {CCER_CAP_PERCENT}% of the obligation: "
            f"{cap} t of {request.obligation} t, not {request.ccer} t"
        )
    if request.total > request.obligation:
        raise SurrenderRefused(
            f"surrendering {request.total} t against an obligation of {request.obligation} t"
        )
    wanted = {**request.allowances, "CCER": request.ccer}
    for asset, qty in wanted.items():
        held = ledger.balance(request.member, asset)
        if qty > held:
            raise SurrenderRefused(
                f"member {request.member} holds {held} t of {asset}, cannot surrender {qty} t"
            )
    db = ledger.db
    db.execute("BEGIN IMMEDIATE")
    try:
        for asset, qty in wanted.items():
            if qty:
                db.execute(
                    "INSERT INTO surrenders (member, obligation, asset, qty, recorded) "
                    "VALUES (?,?,?,?,?)",
                    (request.member, request.obligation, asset, qty, recorded),
                )
                db.execute(
                    "UPDATE balances SET amount = amount - ? WHERE member=? AND asset=?",
                    (qty, request.member, asset),
                )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return request
