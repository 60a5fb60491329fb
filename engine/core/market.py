"""Market: one instrument's phase, price band, reference price, day statistics and book.

Invariants: the band always derives from the reference price (`Instrument.band`, rounded
inward to the tick) and is pushed into the book, which refuses prices outside it; the book
collects without matching exactly in the call phases; `params` (MK_* below)
always holds the phase, band and instrument limits the compiled pipeline checks; the day's
trades feed the day's digest (engine.digest, resumable from a snapshot: `trades_digest` of
the same trades, folded in batches of FOLD_EVERY and whenever the day's figures are read, so
recording a trade is mostly one append) and the
close is the VWAP of the day's call, continuous and pick trades, rounded half up to the tick
(block and one-way auction trades excluded), or the reference when there were none; the
open, high and low are those trades' first, highest and lowest price, with the same
fallback. Only the exchange core mutates a Market.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.book import Book
from engine.book.auction import AuctionBid
from engine.digest import DayDigest
from engine.instruments import Instrument
from engine.protocol import Trade, encode_trades
from engine.types import Phase

# `Market.params`: what the compiled pipeline (engine.core.pipeline) checks an order against.
(
    MK_PHASE,
    MK_UNIT,
    MK_MIN_QTY,
    MK_MAX_QTY,
    MK_BAND_LO,
    MK_BAND_HI,
    MK_TICK,
    MK_FEE_PPM,
    MK_RESALE,  # 1: allowances bought today are available at once
    MK_INSTRUMENT,
) = range(10)
MK_LEN = 10

LISTED_VENUES = frozenset({"continuous", "call", "pick"})  # count towards the close
CALL_PHASES = frozenset({Phase.CALL, Phase.CLOSING_CALL})
FOLD_EVERY = 64  # trades held before folding into the figures: few enough to be in cache


@dataclass
class OneWayAuction:
    """An open 单向竞价: the seller's frozen offer and the bids collected so far."""

    auction_id: int
    seller: int
    qty: int
    floor: int
    cap: int
    uniform: bool
    bids: list[AuctionBid] = field(default_factory=list)


class Market:
    def __init__(self, instrument: Instrument, book_factory: type = Book, index: int = 0) -> None:
        self.instrument = instrument
        self.code = instrument.code
        self.book = book_factory(tick=instrument.tick)
        self.params = np.zeros(MK_LEN, dtype=np.int64)
        for slot, value in (
            (MK_UNIT, instrument.unit),
            (MK_MIN_QTY, instrument.min_qty),
            (MK_MAX_QTY, instrument.max_qty),
            (MK_TICK, instrument.tick),
            (MK_FEE_PPM, instrument.fee_ppm),
            (MK_RESALE, int(instrument.same_day_resale)),
            (MK_INSTRUMENT, index),
        ):
            self.params[slot] = value
        self.set_phase(Phase.CLOSED)
        self.set_reference(instrument.reference_price)
        self.one_way: OneWayAuction | None = None
        self.operator_halt = False  # halted by the operator: the schedule does not re-open it
        self.touched: list[tuple[int, int]] = []  # (side, price) levels the command changed
        self.published_indicative: tuple = (0, 0, 0)
        self.new_day()

    def new_day(self) -> None:
        self.trades = 0
        self.volume = 0
        self.listed_volume = 0
        self.listed_value = 0
        self.open = self.high = self.low = 0  # of the listed trades; 0: none yet
        self.digest = DayDigest()
        self.unfolded: list[Trade] = []  # recorded, not yet in the figures above

    def set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.in_call = phase in CALL_PHASES
        self.params[MK_PHASE] = phase
        self.book.set_collecting(phase in CALL_PHASES)

    def set_reference(self, price: int) -> None:
        band = self.instrument.band(price)
        self.book.set_band(*band)  # refuses a band the book cannot hold, before any change
        self.reference, self.band = price, band
        self.params[MK_BAND_LO], self.params[MK_BAND_HI] = band

    def record(self, trade: Trade) -> None:
        self.unfolded.append(trade)
        if len(self.unfolded) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Bring the day's figures and digest up to date with the recorded trades."""
        trades = self.unfolded
        volume = listed_volume = listed_value = 0
        first, high, low = self.open, self.high, self.low
        for trade in trades:
            qty = trade.qty
            volume += qty
            if trade.venue in LISTED_VENUES:
                price = trade.price
                listed_volume += qty
                listed_value += qty * price
                if not first:
                    first = high = low = price
                elif price > high:
                    high = price
                elif price < low:
                    low = price
        self.open, self.high, self.low = first, high, low
        self.trades += len(trades)
        self.volume += volume
        self.listed_volume += listed_volume
        self.listed_value += listed_value
        self.digest.update(encode_trades(trades))
        trades.clear()

    def add_trades(
        self, encoded: bytes, trades: int, volume: int, value: int, first: int, high: int, low: int
    ) -> None:
        """Continuous trades recorded elsewhere (the compiled batch, engine.core.batch), after
        those recorded here: their encodings (as encode_trades writes them), count, volume,
        value, and the open, high and low the day's listed trades now have."""
        self.fold()
        self.trades += trades
        self.volume += volume
        self.listed_volume += volume
        self.listed_value += value
        self.open, self.high, self.low = first, high, low
        self.digest.update(encoded)

    def open_high_low(self) -> tuple[int, int, int]:
        """The day's first, highest and lowest listed trade price; the reference for each
        when there was none (docs/MARKET.md's open price rule)."""
        self.fold()
        if not self.listed_volume:
            return self.reference, self.reference, self.reference
        return self.open, self.high, self.low

    def close_price(self) -> int:
        self.fold()
        if not self.listed_volume:
            return self.reference
        tick = self.instrument.tick
        ticks = (2 * self.listed_value + self.listed_volume * tick) // (
            2 * self.listed_volume * tick
        )
        return ticks * tick

    def snapshot(self) -> list:
        self.fold()
        auction = None
        if self.one_way is not None:
            a = self.one_way
            auction = [
                a.auction_id,
                a.seller,
                a.qty,
                a.floor,
                a.cap,
                a.uniform,
                [(b.order_id, b.member, b.price, b.qty, b.entry) for b in a.bids],
            ]
        return [
            self.code,
            int(self.phase),
            self.operator_halt,
            self.reference,
            list(self.band),
            self.trades,
            self.volume,
            self.listed_volume,
            self.listed_value,
            [self.open, self.high, self.low],
            self.digest.hexdigest(),
            self.book.orders(),
            auction,
        ]
