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
Only the exchange core calls the mutators, after its own validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.config import Member
from engine.instruments import Instrument


@dataclass
class Holding:
    available: int = 0
    frozen: int = 0
    locked: int = 0  # bought today, sellable from the next trading day

    @property
    def total(self) -> int:
        return self.available + self.frozen + self.locked


@dataclass
class Account:
    member: int
    cash: int = 0  # available, fen
    cash_frozen: int = 0
    holdings: dict[str, Holding] = field(default_factory=dict)

    def holding(self, code: str) -> Holding:
        holding = self.holdings.get(code)
        if holding is None:
            holding = self.holdings[code] = Holding()
        return holding


def freeze_for(instrument: Instrument, price: int, qty: int) -> int:
    """Cash a buy of qty at price must freeze: value plus the fee on it, rounded up."""
    value = price * qty
    return value + instrument.fee_ceiling(value)


class Accounts:
    def __init__(self, members: list[Member]) -> None:
        self.accounts: dict[int, Account] = {}
        for member in members:
            account = Account(member.id, cash=member.cash)
            for code, qty in member.holdings.items():
                account.holding(code).available = qty
            self.accounts[member.id] = account
        self.fees = 0  # collected by the exchange, fen

    def __contains__(self, member: int) -> bool:
        return member in self.accounts

    def get(self, member: int) -> Account:
        return self.accounts[member]

    # -- freezing -------------------------------------------------------------------------------

    def can_freeze_cash(self, member: int, amount: int) -> bool:
        return self.accounts[member].cash >= amount

    def freeze_cash(self, member: int, amount: int) -> None:
        account = self.accounts[member]
        assert 0 <= amount <= account.cash, "freeze without funds"
        account.cash -= amount
        account.cash_frozen += amount

    def release_cash(self, member: int, amount: int) -> None:
        account = self.accounts[member]
        assert 0 <= amount <= account.cash_frozen, "release more than frozen"
        account.cash_frozen -= amount
        account.cash += amount

    def can_freeze_qty(self, member: int, code: str, qty: int) -> bool:
        return self.accounts[member].holding(code).available >= qty

    def freeze_qty(self, member: int, code: str, qty: int) -> None:
        holding = self.accounts[member].holding(code)
        assert 0 <= qty <= holding.available, "freeze without allowances"
        holding.available -= qty
        holding.frozen += qty

    def release_qty(self, member: int, code: str, qty: int) -> None:
        holding = self.accounts[member].holding(code)
        assert 0 <= qty <= holding.frozen, "release more than frozen"
        holding.frozen -= qty
        holding.available += qty

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
        buy, sell = self.accounts[buyer], self.accounts[seller]
        assert cost <= buy.cash_frozen, "buy fill beyond the order's frozen cash"
        buy.cash_frozen -= cost
        sold = sell.holding(instrument.code)
        assert qty <= sold.frozen, "sell fill beyond frozen allowances"
        sold.frozen -= qty
        bought = buy.holding(instrument.code)
        if instrument.same_day_resale:
            bought.available += qty
        else:
            bought.locked += qty
        sell.cash += proceeds
        self.fees += 2 * fee
        return cost, proceeds

    def start_day(self) -> None:
        """Allowances bought on the previous day become sellable."""
        for account in self.accounts.values():
            for holding in account.holdings.values():
                holding.available += holding.locked
                holding.locked = 0

    # -- views ----------------------------------------------------------------------------------

    def total_cash(self) -> int:
        return self.fees + sum(a.cash + a.cash_frozen for a in self.accounts.values())

    def total_qty(self, code: str) -> int:
        return sum(a.holding(code).total for a in self.accounts.values())

    def snapshot(self) -> list:
        """Plain, sorted data for the state hash."""
        return [
            (
                a.member,
                a.cash,
                a.cash_frozen,
                sorted((c, h.available, h.frozen, h.locked) for c, h in a.holdings.items()),
            )
            for a in sorted(self.accounts.values(), key=lambda a: a.member)
        ] + [("fees", self.fees)]
