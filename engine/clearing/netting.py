"""End-of-day multilateral netting per member and instrument, vectorized with numpy.

For every (member, instrument): bought, sold, net quantity = bought - sold, buy value, sell
value, fees, net cash = sell value - buy value - fees. Fees are charged per trade and side,
value x rate rounded down to the fen (`Instrument.fee`, the rule pre-trade risk relies on).

Conservation is checked, not assumed (`check_conservation`): each instrument's net quantities
sum to zero; net cash sums to minus the total fees; every trade appears once on each side
(total bought = total sold = traded quantity). Netting efficiency compares the cash and
allowance legs of gross (trade-by-trade) settlement with the net obligations.
Overflow is refused, never wrapped: every trade's price and quantity must be positive with a
value below MAX_VALUE, and the day's traded value below DAY_VALUE_LIMIT, so every sum,
difference and fee above stays inside int64 (`NettingOverflow` otherwise).
Complexity O(trades): members map to rows through a lookup table (a sort only for ids outside
[0, LOOKUP_IDS)), then bincount over (member, instrument) keys; sums are exact integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.instruments import MAX_VALUE, fee_of

# A day's traded value, fen: with it below this, buy and sell values, fees (at most the
# value, on each side) and their differences all stay below 2**62, far inside int64.
DAY_VALUE_LIMIT = MAX_VALUE // 4


@dataclass(frozen=True)
class TradeArrays:
    """Column arrays of a day's trades (int64), instruments as indices into `codes`."""

    codes: list[str]
    instrument: np.ndarray
    buyer: np.ndarray
    seller: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    def __len__(self) -> int:
        return len(self.qty)


@dataclass(frozen=True)
class Netting:
    members: np.ndarray  # sorted member ids (rows)
    codes: list[str]  # instruments (columns)
    bought: np.ndarray  # [member, instrument] tonnes
    sold: np.ndarray
    buy_value: np.ndarray  # fen
    sell_value: np.ndarray
    fees: np.ndarray
    trades: int
    traded_qty: int
    traded_value: int

    @property
    def net_qty(self) -> np.ndarray:
        return self.bought - self.sold

    @property
    def net_cash(self) -> np.ndarray:
        return self.sell_value - self.buy_value - self.fees

    @property
    def total_fees(self) -> int:
        return int(self.fees.sum())

    def efficiency(self) -> dict[str, float]:
        """Share of gross legs that netting removes (cash: value moved; allowances: tonnes)."""
        net_cash = int(np.abs(self.net_cash.sum(axis=1)).sum()) // 2
        net_qty = int(np.abs(self.net_qty).sum()) // 2
        return {
            "gross_cash": self.traded_value,
            "net_cash": net_cash,
            "cash": 1 - net_cash / self.traded_value if self.traded_value else 0.0,
            "gross_qty": self.traded_qty,
            "net_qty": net_qty,
            "qty": 1 - net_qty / self.traded_qty if self.traded_qty else 0.0,
        }


class ConservationError(AssertionError):
    pass


class NettingOverflow(ValueError):
    """A trade or day whose values int64 netting cannot hold exactly."""


LOOKUP_IDS = 1 << 22  # member ids below this are mapped to rows by a table, not a sort


def member_rows(buyer: np.ndarray, seller: np.ndarray) -> tuple[np.ndarray, ...]:
    """(sorted member ids, row of each buyer, row of each seller). Ids in [0, LOOKUP_IDS)
    (the usual case) go through a lookup table in O(trades); others through a sort."""
    if not buyer.size:
        return np.zeros(0, dtype=np.int64), buyer, seller
    low = min(int(buyer.min()), int(seller.min()))
    high = max(int(buyer.max()), int(seller.max()))
    if low < 0 or high >= LOOKUP_IDS:
        members = np.unique(np.concatenate([buyer, seller]))
        return members, np.searchsorted(members, buyer), np.searchsorted(members, seller)
    present = np.zeros(high + 1, dtype=bool)
    present[buyer] = True
    present[seller] = True
    members = np.flatnonzero(present)
    row = np.zeros(high + 1, dtype=np.int64)
    row[members] = np.arange(len(members))
    return members.astype(np.int64), row[buyer], row[seller]


def trade_values(trades: TradeArrays) -> np.ndarray:
    """price x qty of every trade, exact: NettingOverflow for a non-positive price or
    quantity, a value of MAX_VALUE or more, or a day's total of DAY_VALUE_LIMIT or more."""
    if not len(trades):
        return trades.price * trades.qty
    if int(trades.qty.min()) <= 0 or int(trades.price.min()) <= 0:
        raise NettingOverflow("netting takes positive prices and quantities only")
    largest = int(trades.price.max()) * int(trades.qty.max())  # bounds every value
    if largest >= MAX_VALUE:
        too_big = np.flatnonzero(trades.price >= -(-MAX_VALUE // trades.qty))
        if too_big.size:
            i = int(too_big[0])
            raise NettingOverflow(
                f"trade at index {i}: {int(trades.price[i])} fen x {int(trades.qty[i])} t is "
                f"not below {MAX_VALUE:,} fen"
            )
    value = trades.price * trades.qty
    if largest * len(trades) >= DAY_VALUE_LIMIT:  # else the total is below it for sure
        total = float(value.sum(dtype=np.float64))
        if total >= DAY_VALUE_LIMIT:
            raise NettingOverflow(
                f"the day's traded value, about {total:.4g} fen, is not below "
                f"{DAY_VALUE_LIMIT:,} fen: too large to net exactly"
            )
    return value


def net(trades: TradeArrays, fee_ppm: np.ndarray) -> Netting:
    """`fee_ppm[i]`: the fee rate of instrument i in parts per million."""
    members, buy_row, sell_row = member_rows(trades.buyer, trades.seller)
    n_inst = len(trades.codes)
    size = len(members) * n_inst
    value = trade_values(trades)
    fee = fee_of(value, fee_ppm[trades.instrument])
    buy_key = buy_row * n_inst + trades.instrument
    sell_key = sell_row * n_inst + trades.instrument

    # float64 bincount is exact while every sum stays below 2**53; beyond that, int64 add.at
    exact_in_float = not value.size or int(value.max()) < 2**53 // len(value)

    def total(keys: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if exact_in_float:
            summed = np.rint(np.bincount(keys, weights=weights, minlength=size)).astype(np.int64)
        else:
            summed = np.zeros(size, dtype=np.int64)
            np.add.at(summed, keys, weights)
        return summed.reshape(len(members), n_inst)

    return Netting(
        members=members,
        codes=list(trades.codes),
        bought=total(buy_key, trades.qty),
        sold=total(sell_key, trades.qty),
        buy_value=total(buy_key, value),
        sell_value=total(sell_key, value),
        fees=total(buy_key, fee) + total(sell_key, fee),
        trades=len(trades),
        traded_qty=int(trades.qty.sum()),
        traded_value=int(value.sum()),
    )


def check_conservation(n: Netting) -> None:
    """Raise ConservationError with the offending figures if the netting does not add up."""
    problems = []
    for i, code in enumerate(n.codes):
        residual = int(n.net_qty[:, i].sum())
        if residual:
            problems.append(f"{code}: net quantities sum to {residual}, not 0")
    cash = int(n.net_cash.sum())
    if cash != -n.total_fees:
        problems.append(f"net cash sums to {cash}, not minus the fees {-n.total_fees}")
    if int(n.bought.sum()) != n.traded_qty or int(n.sold.sum()) != n.traded_qty:
        problems.append(
            f"bought {int(n.bought.sum())} / sold {int(n.sold.sum())} t, "
            f"traded {n.traded_qty} t: a trade is missing a side"
        )
    if int(n.buy_value.sum()) != n.traded_value or int(n.sell_value.sum()) != n.traded_value:
        problems.append("buy or sell value differs from the traded value")
    if problems:
        raise ConservationError("conservation check failed: " + "; ".join(problems))
