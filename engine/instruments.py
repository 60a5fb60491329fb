"""Instrument specifications: what may trade, in which units, within which limits.

Invariants: all amounts are integers (price tick in fen, quantities in tonnes, fee rates in
parts per million of trade value); a band rounds inward to the tick, so a price the band
admits is always on tick, and stops at `max_price`, so no trade or close can leave the range
the books and the int64 accounts hold. Defaults follow docs/MARKET.md: tick 0.01 CNY, unit
1 t, single orders below 100,000 t, band +-10% of the previous close, fees 6 per mille per
side (a configurable default, rounded down per trade), block trades from 100,000 t within +-30%,
one-way auction bids within +-10% of the previous close.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from engine.types import MAX_TICKS

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
PPM = 1_000_000
MAX_VALUE = 2**62  # fen: any amount the core adds up stays below int64's limit


class Instrument(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Z0-9_]+$")]
    name: str
    product: Annotated[str, msgspec.Meta(pattern=r"^(CEA|CCER)$")]
    reference_price: Positive  # previous close, fen per tonne
    tick: Positive = 1  # fen
    unit: Positive = 1  # tonnes per trading unit
    min_qty: Positive = 1
    max_qty: Positive = 99_999  # orders of 100,000 t and more go to block trading
    band_ppm: Annotated[int, msgspec.Meta(ge=0, le=PPM)] = 100_000  # +-10%, at most 100%
    fee_ppm: Annotated[int, msgspec.Meta(ge=0, le=PPM)] = 6_000  # 6 per mille, each side
    block_min_qty: Positive = 100_000
    block_band_ppm: Annotated[int, msgspec.Meta(ge=0, le=PPM)] = 300_000  # +-30%
    # One-way auction (单向竞价): floor the previous close or that minus this, cap the close
    # plus this (docs/MARKET.md: 10%), whatever the listed band
    one_way_band_ppm: Annotated[int, msgspec.Meta(ge=0, le=PPM)] = 100_000
    same_day_resale: bool = False  # may allowances bought today be sold today?

    def __post_init__(self) -> None:
        if self.reference_price % self.tick:
            raise ValueError(f"{self.code}: reference price is not on the {self.tick} fen tick")
        if not self.min_qty <= self.max_qty:
            raise ValueError(f"{self.code}: min_qty {self.min_qty} > max_qty {self.max_qty}")
        if self.min_qty % self.unit or self.max_qty % self.unit:
            raise ValueError(f"{self.code}: order size limits are not whole units")
        problem = self.reference_problem(self.reference_price)
        if problem:
            raise ValueError(f"{self.code}: {problem}")

    @property
    def max_price(self) -> int:
        """The highest price this instrument can trade at (fen, on tick): inside a book's
        range, and low enough that an order of max_qty t there, fee included, is worth less
        than MAX_VALUE fen. Bands stop here, so every close a day can print is a reference
        the next day can use."""
        by_value = MAX_VALUE * PPM // (self.max_qty * (PPM + self.fee_ppm))
        return min(MAX_TICKS, by_value // self.tick) * self.tick

    def reference_problem(self, reference: int) -> str | None:
        """Why `reference` (positive, on tick: the callers check that first) cannot be this
        instrument's reference price, or None: it must not exceed max_price. Its band then
        always fits a book: low <= reference <= high <= max_price."""
        top = self.max_price
        if reference > top:
            if top == MAX_TICKS * self.tick:
                limit = f"the highest price a book holds ({MAX_TICKS:,} ticks of {self.tick} fen)"
            else:
                limit = (
                    f"the highest price at which an order of {self.max_qty:,} t is worth less "
                    f"than {MAX_VALUE:,} fen"
                )
            return f"the reference {reference} fen is above {top} fen, {limit}"
        return None

    def band(self, reference: int | None = None, band_ppm: int | None = None) -> tuple[int, int]:
        """(lowest, highest) admissible price around `reference`, rounded inward to the tick
        and stopping at max_price."""
        ref = self.reference_price if reference is None else reference
        width = ref * (self.band_ppm if band_ppm is None else band_ppm)
        low = -(-(ref * PPM - width) // (PPM * self.tick)) * self.tick  # ceil to tick
        high = (ref * PPM + width) // (PPM * self.tick) * self.tick  # floor to tick
        return max(low, self.tick), min(high, self.max_price)

    def fee(self, value: int) -> int:
        """One side's fee in fen on one trade's value, rounded down to the fen.

        Rounded per trade and down, so an order's fills never pay more in fees than the fee
        on the order's whole value, which is what a buy freezes (`fee_ceiling`)."""
        return fee_of(value, self.fee_ppm)

    def fee_ceiling(self, value: int) -> int:
        """The fee on `value` rounded up: what pre-trade risk freezes for fees."""
        return fee_of(value, self.fee_ppm, True)


def fee_of(value, rate, round_up=False):
    """value * rate / PPM rounded down (or up), for Python ints, numpy arrays and (compiled)
    int64 scalars alike. Taken as whole millionths of `value` plus the rest, so nothing in it
    exceeds value plus its fee: exact in int64 for any value below MAX_VALUE and rate <= PPM,
    where the plain product passes int64 from a value of about 1.5e15 fen at 6 per mille."""
    whole = value // PPM
    return whole * rate + ((value - whole * PPM) * rate + (PPM - 1 if round_up else 0)) // PPM


def cea(vintage: int, reference_price: int) -> Instrument:
    return Instrument(
        code=f"CEA{vintage % 100:02d}",
        name=f"National carbon emission allowance, vintage {vintage}",
        product="CEA",
        reference_price=reference_price,
    )


def ccer(reference_price: int) -> Instrument:
    return Instrument(
        code="CCER",
        name="China certified emission reduction",
        product="CCER",
        reference_price=reference_price,
    )
