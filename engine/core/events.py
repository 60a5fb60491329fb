"""The one event writer: every event the core emits is built here, in the order emitted.

Invariants:
- Events of one command carry that command's sequence number (`CoreState.seq`) and are
  appended to `out` in the order they happen; `Exchange.apply` returns that list.
- A trade is one `Trade` (with the next trade id, the command's timestamp and the trading
  day) followed by one `Filled` for the buy order and one for the sell order; the market's
  day figures record it at once (Market.record).
- Nothing here validates or changes balances: callers have done that.
"""

from __future__ import annotations

from engine.book.kernel import K_AMENDED, K_CANCELLED, K_FILL
from engine.core.market import Market
from engine.core.pipeline import K_LEVEL
from engine.core.state import CoreState
from engine.protocol import (
    Accepted,
    Amended,
    AuctionResult,
    Cancelled,
    DayClosed,
    DepthUpdate,
    Event,
    Filled,
    Indicative,
    PhaseChanged,
    RejectCode,
    Rejected,
    Trade,
)
from engine.types import INT64_MAX, INT64_MIN, CancelReason

_REASONS = {int(reason): reason for reason in CancelReason}


def rejected(seq: int, command, code: RejectCode, text: str) -> Rejected:
    """The Rejected event answering `command` (seq 0: a command never sequenced). Its ClOrdID
    and member are echoed only when they are of their kinds (a str; an int within 64 bits), so
    the event always goes over the wire and back: a command built in process may hold anything
    there."""
    cl_ord_id = getattr(command, "cl_ord_id", "")
    member = getattr(command, "member", -1)
    if type(cl_ord_id) is not str:
        cl_ord_id = ""
    if type(member) is not int or not INT64_MIN <= member <= INT64_MAX:
        member = -1
    return Rejected(seq, cl_ord_id, member, code, text)


class EventWriter:
    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.out: list[Event] = []

    def begin(self) -> list[Event]:
        """A new command: a fresh list of events."""
        self.out = []
        return self.out

    def accepted(
        self, cl_ord_id: str, member: int, code: str, order_id: int, side: int, price: int, qty: int
    ) -> None:
        self.out.append(
            Accepted(self.state.seq, cl_ord_id, member, code, order_id, side, price, qty)
        )

    def rejected(self, command, code: RejectCode, text: str) -> None:
        self.out.append(rejected(self.state.seq, command, code, text))

    def cancelled(self, member: int, code: str, order_id: int, leaves: int, reason: int) -> None:
        self.out.append(Cancelled(self.state.seq, member, code, order_id, leaves, _REASONS[reason]))

    def amended(
        self, member: int, code: str, order_id: int, price: int, qty: int, kept: bool
    ) -> None:
        self.out.append(Amended(self.state.seq, member, code, order_id, price, qty, kept))

    def depth(self, code: str, side: int, price: int, qty: int, orders: int) -> None:
        self.out.append(DepthUpdate(self.state.seq, code, side, price, qty, orders))

    def indicative(self, code: str, price: int, volume: int, imbalance: int) -> None:
        self.out.append(Indicative(self.state.seq, code, price, volume, imbalance))

    def phase_changed(self, market: Market) -> None:
        self.out.append(
            PhaseChanged(self.state.seq, market.code, market.phase, market.reference, *market.band)
        )

    def auction_result(self, code: str, auction: str, price: int, volume: int) -> None:
        self.out.append(AuctionResult(self.state.seq, code, auction, price, volume))

    def day_closed(self, market: Market) -> None:
        self.out.append(
            DayClosed(
                self.state.seq,
                self.state.date,
                market.code,
                market.trades,
                market.volume,
                market.close_price(),
                market.digest.hexdigest(),
                *market.open_high_low(),
            )
        )

    def trade(
        self,
        market: Market,
        price: int,
        qty: int,
        buy: tuple[int, int, int],
        sell: tuple[int, int, int],
        aggressor: int,
        venue: str,
    ) -> None:
        """A trade between buy and sell, each (member, order id, leaves after the trade);
        `aggressor` is the incoming order's side, -1 for auctions and block trades."""
        state = self.state
        seq, trade_id, code = state.seq, state.next_trade_id, market.code
        state.next_trade_id = trade_id + 1
        trade = Trade(
            seq, trade_id, state.ts_ns, state.date, code, price, qty,
            buy[0], sell[0], buy[1], sell[1], aggressor, venue,
        )  # fmt: skip
        market.record(trade)
        self.out += (
            trade,
            Filled(seq, trade_id, buy[0], code, buy[1], 0, price, qty, buy[2], aggressor == 0),
            Filled(seq, trade_id, sell[0], code, sell[1], 1, price, qty, sell[2], aggressor == 1),
        )

    def pipeline_rows(self, market: Market, rows: list[list[int]]) -> None:
        """The events of the compiled pipeline's output rows (engine.core.pipeline): fills
        (buy order first), cancels, amends and changed levels, in the pipeline's order."""
        state = self.state
        out, seq, code = self.out, state.seq, market.code
        append = out.append
        record = market.record
        ts_ns, date = state.ts_ns, state.date
        for kind, oid, oid2, price, qty, leaves, leaves2, reason, side, owner, owner2 in rows:
            if kind == K_LEVEL:  # side, price, total (qty) and orders (leaves)
                append(DepthUpdate(seq, code, side, price, qty, leaves))
            elif kind == K_FILL:  # buy order first: oid, leaves, owner; sell: the *2
                trade_id = state.next_trade_id
                state.next_trade_id = trade_id + 1
                trade = Trade(
                    seq, trade_id, ts_ns, date, code, price, qty,
                    owner, owner2, oid, oid2, side, "continuous",
                )  # fmt: skip
                record(trade)
                out += (
                    trade,
                    Filled(seq, trade_id, owner, code, oid, 0, price, qty, leaves, side == 0),
                    Filled(seq, trade_id, owner2, code, oid2, 1, price, qty, leaves2, side == 1),
                )
            elif kind == K_CANCELLED:
                append(Cancelled(seq, owner, code, oid, qty, _REASONS[reason]))
            elif kind == K_AMENDED:
                append(Amended(seq, owner, code, oid, price, qty, reason == 1))
