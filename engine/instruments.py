"""Instrument specifications: what may trade, in which units, within which limits.

Invariants: all amounts are integers (price tick in fen, quantities in tonnes, fee rates in
parts per million of trade value); `band_lo`/`band_hi` round inward to the tick, so a price
the band admits is always on tick. Defaults follow ../shared/MARKET.md: tick 0.01 CNY, unit
1 t, single orders below 100,000 t, band +-10% of the previous close, fees 6 per mille per
side (a configurable default, rounded down per trade), block trades from 100,000 t within +-30%.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from engine.book.layout import MAX_TICKS, check_band

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
PPM = 1_000_000
MAX_VALUE = 2**62  # fen: any amount the core adds up stays below int64's limit


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Z0-9_]+$")]
    name: str
    product: Annotated[str, msgspec.Meta(pattern=r"^(CEA|CCER)$")]
    reference_price: Positive  # previous close, fen per tonne
    tick: Positive = 1  # fen
    unit: Positive = 1  # tonnes per trading unit
    min_qty: Positive = 1
    max_qty: Positive = 99_999  # orders of 100,000 t and more go to block trading
    band_ppm: NonNegative = 100_000  # +-10%
    fee_ppm: NonNegative = 6_000  # 6 per mille of trade value, each side
    block_min_qty: Positive = 100_000
    block_band_ppm: NonNegative = 300_000  # +-30%
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

    def reference_problem(self, reference: int) -> str | None:
        """Why `reference` cannot be this instrument's reference price, or None: its band must
        fit a book, and an order at the band's top must be worth less than MAX_VALUE fen (so
        no amount the core adds up can overflow int64)."""
        low, high = self.band(reference)
        try:
            check_band(low, high, self.tick)
        except ValueError:
            return (
                f"the band {low}-{high} fen around {reference} is beyond the highest price a "
                f"book holds ({MAX_TICKS:,} ticks of {self.tick} fen)"
            )
        if high * self.max_qty * (PPM + self.fee_ppm) // PPM > MAX_VALUE:
            return (
                f"an order of {self.max_qty:,} t at the top of the band ({high} fen) would be "
                f"worth more than {MAX_VALUE:,} fen"
            )
        return None

    def band(self, reference: int | None = None, band_ppm: int | None = None) -> tuple[int, int]:
        """(lowest, highest) admissible price around `reference`, rounded inward to the tick."""
        ref = self.reference_price if reference is None else reference
        width = ref * (self.band_ppm if band_ppm is None else band_ppm)
        low = -(-(ref * PPM - width) // (PPM * self.tick)) * self.tick  # ceil to tick
        high = (ref * PPM + width) // (PPM * self.tick) * self.tick  # floor to tick
        return max(low, self.tick), high

    def fee(self, value: int) -> int:
        """One side's fee in fen on one trade's value, rounded down to the fen.

        Rounded per trade and down, so an order's fills never pay more in fees than the fee
        on the order's whole value, which is what a buy freezes (`fee_ceiling`)."""
        return value * self.fee_ppm // PPM

    def fee_ceiling(self, value: int) -> int:
        """The fee on `value` rounded up: what pre-trade risk freezes for fees."""
        return -(-value * self.fee_ppm // PPM)


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
