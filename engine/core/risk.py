"""Pre-trade risk: members' cash and allowances, split into available and frozen.

Spot market, no credit. Invariants (property-tested):
- a buy order freezes limit x quantity plus the fee on that, rounded up (`freeze_for`); a sell
  freezes the allowances; fills spend from what the order froze; whatever an order still holds
  when it ends (filled, cancelled, expired) returns to available;
- every fill's fee is the fee on its value rounded down (Instrument.fee), per side, so the
  fees of an order's fills never exceed what it froze for fees;
- cash is conserved: the sum of members' cash plus collected fees never changes; allowances
  are conserved per instrument; no balance is ever negative;
- frozen cash equals the sum of live buy orders' remaining freezes, frozen allowances the sum
  of live sell orders' remaining quantities (plus one-way auction offers).
Allowances bought today are `locked` (not sellable) unless the instrument allows same-day
resale; `start_day` unlocks them. Sale proceeds are available at once.

Layout: one int64 array `acct` (the compiled pipeline, engine.core.pipeline, reads and
writes it in place), one row per member in ascending id order, then one row for the
exchange, whose available cash is the fees collected. Two views name its columns:
- `cash[row, CASH_AVAILABLE | CASH_FROZEN]` fen;
- `held[row, instrument, HELD_AVAILABLE | HELD_FROZEN | HELD_LOCKED]` tonnes, the
  instrument index following the market config's instrument order.
`row_of` maps member id -> row, `ids` row -> member id. Only the exchange core mutates these,
after its validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import Member
from engine.instruments import Instrument

# The accounts array's columns (the compiled pipeline, engine.core.pipeline, uses them too):
ACCT_CASH, ACCT_FROZEN, ACCT_HELD = 0, 1, 2  # available cash, frozen cash, first holding
HELD_AVAILABLE, HELD_FROZEN, HELD_LOCKED = 0, 1, 2  # per instrument, from ACCT_HELD + 3 * i
CASH_AVAILABLE, CASH_FROZEN = ACCT_CASH, ACCT_FROZEN


def freeze_for(instrument: Instrument, price: int, qty: int) -> int:
    """Cash a buy of qty at price must freeze: value plus the fee on it, rounded up."""
    value = price * qty
    return value + instrument.fee_ceiling(value)


@dataclass(frozen=True)
class Holding:
    """One member's allowances of one instrument (a copy, read from the arrays)."""

    available: int
    frozen: int
    locked: int  # bought today, sellable from the next trading day

    @property
    def total(self) -> int:
        return self.available + self.frozen + self.locked


class Account:
    """A read-only view of one member's balances."""

    def __init__(self, accounts: Accounts, member: int) -> None:
        self._accounts = accounts
        self.member = member
        self._row = accounts.row_of[member]

    @property
    def cash(self) -> int:
        """Available cash, fen."""
        return int(self._accounts.cash[self._row, CASH_AVAILABLE])

    @property
    def cash_frozen(self) -> int:
        return int(self._accounts.cash[self._row, CASH_FROZEN])

    def holding(self, code: str) -> Holding:
        held = self._accounts.held[self._row, self._accounts.index_of[code]]
        return Holding(*(int(x) for x in held))


class Accounts:
    def __init__(self, members: list[Member], codes: list[str]) -> None:
        self.index_of = {code: i for i, code in enumerate(codes)}
        self.ids = np.array(sorted(m.id for m in members), dtype=np.int64)
        self.row_of = {int(member): row for row, member in enumerate(self.ids)}
        rows, n_codes = len(members) + 1, max(len(codes), 1)
        self.acct = np.zeros((rows, ACCT_HELD + 3 * n_codes), dtype=np.int64)
        self.cash = self.acct[:, :ACCT_HELD]
        self.held = self.acct[:, ACCT_HELD:].reshape(rows, n_codes, 3)
        assert np.shares_memory(self.held, self.acct), "held must be a view of acct"
        for member in members:
            row = self.row_of[member.id]
            self.cash[row, CASH_AVAILABLE] = member.cash
            for code, qty in member.holdings.items():
                if code not in self.index_of:
                    raise ValueError(f"member {member.id} holds {code}, which is not listed")
                self.held[row, self.index_of[code], HELD_AVAILABLE] = qty
        self.exchange_row = len(members)

    def __contains__(self, member: int) -> bool:
        return member in self.row_of

    def get(self, member: int) -> Account:
        return Account(self, member)

    def all(self) -> list[Account]:
        """Every member's account, by member id."""
        return [Account(self, member) for member in sorted(self.row_of)]

    @property
    def fees(self) -> int:
        """Fees collected by the exchange, fen."""
        return int(self.cash[self.exchange_row, CASH_AVAILABLE])

    # -- freezing -------------------------------------------------------------------------------

    def can_freeze_cash(self, member: int, amount: int) -> bool:
        return int(self.cash[self.row_of[member], CASH_AVAILABLE]) >= amount

    def freeze_cash(self, member: int, amount: int) -> None:
        self._move_cash(member, amount, CASH_AVAILABLE, CASH_FROZEN, "freeze without funds")

    def release_cash(self, member: int, amount: int) -> None:
        self._move_cash(member, amount, CASH_FROZEN, CASH_AVAILABLE, "release more than frozen")

    def _move_cash(self, member: int, amount: int, source: int, target: int, error: str) -> None:
        row = self.cash[self.row_of[member]]
        assert 0 <= amount <= row[source], error
        row[source] -= amount
        row[target] += amount

    def can_freeze_qty(self, member: int, code: str, qty: int) -> bool:
        held = self.held[self.row_of[member], self.index_of[code]]
        return int(held[HELD_AVAILABLE]) >= qty

    def freeze_qty(self, member: int, code: str, qty: int) -> None:
        self._move_qty(member, code, qty, HELD_AVAILABLE, HELD_FROZEN, "freeze without allowances")

    def release_qty(self, member: int, code: str, qty: int) -> None:
        self._move_qty(member, code, qty, HELD_FROZEN, HELD_AVAILABLE, "release more than frozen")

    def _move_qty(
        self, member: int, code: str, qty: int, source: int, target: int, error: str
    ) -> None:
        held = self.held[self.row_of[member], self.index_of[code]]
        assert 0 <= qty <= held[source], error
        held[source] -= qty
        held[target] += qty

    # -- trades ---------------------------------------------------------------------------------

    def settle_trade(
        self,
        instrument: Instrument,
        buyer: int,
        seller: int,
        price: int,
        qty: int,
    ) -> tuple[int, int]:
        """Move a trade's cash and allowances: the buyer pays value plus fee from its frozen
        cash, the seller delivers frozen allowances and receives value minus fee. Returns
        (buyer's cost, seller's proceeds) in fen."""
        value = price * qty
        fee = instrument.fee(value)
        cost, proceeds = value + fee, value - fee
        buy, sell = self.row_of[buyer], self.row_of[seller]
        code = self.index_of[instrument.code]
        assert cost <= self.cash[buy, CASH_FROZEN], "buy fill beyond the order's frozen cash"
        assert qty <= self.held[sell, code, HELD_FROZEN], "sell fill beyond frozen allowances"
        self.cash[buy, CASH_FROZEN] -= cost
        self.held[sell, code, HELD_FROZEN] -= qty
        self.held[buy, code, HELD_AVAILABLE if instrument.same_day_resale else HELD_LOCKED] += qty
        self.cash[sell, CASH_AVAILABLE] += proceeds
        self.cash[self.exchange_row, CASH_AVAILABLE] += 2 * fee
        return cost, proceeds

    def start_day(self) -> None:
        """Allowances bought on the previous day become sellable."""
        self.held[:, :, HELD_AVAILABLE] += self.held[:, :, HELD_LOCKED]
        self.held[:, :, HELD_LOCKED] = 0

    # -- views ----------------------------------------------------------------------------------

    def total_cash(self) -> int:
        return int(self.cash.sum())

    def total_qty(self, code: str) -> int:
        return int(self.held[:, self.index_of[code]].sum())

    def load(self, acct: np.ndarray) -> None:
        """Take every balance from `acct` (a copy of `acct` of the same members and
        instruments), in place: the views and the compiled path's bindings stay valid."""
        if acct.shape != self.acct.shape:
            raise ValueError(f"accounts of shape {acct.shape}, not {self.acct.shape}")
        self.acct[...] = acct

    def snapshot(self) -> list:
        """Plain data for the state hash (rows in member id order, then the exchange's)."""
        return [self.ids.tolist(), self.acct.tolist()]
