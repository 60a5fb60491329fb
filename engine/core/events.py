"""The one event writer: every event the core emits is built here, in the order emitted.

Invariants:
- Events of one command carry that command's sequence number (`CoreState.seq`) and are
  appended to `out` in the order they happen; `Exchange.apply_stamped` returns that list.
- Each event carries its audience (the event type's `audience`: private to one member,
  public market data, or clearing) and the next number of that audience's stream
  (`stream_seq`: per member for private events, member -1 for refusals of commands that name
  none), gap-free from 1 across commands and days.
- A trade is one clearing `Trade` (both members, both orders, each side's fee), one public
  `TradePrint` (no member), then one private `Filled` for the buy order and one for the sell
  order; the market's day figures record it at once (Market.record).
- Nothing here validates or changes balances: callers have done that.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.book.eventrows import K_AMENDED, K_CANCELLED, K_FILL
from engine.core.market import Market
from engine.core.pipeline import K_LEVEL
from engine.core.state import CoreState
from engine.protocol import (
    Accepted,
    Amended,
    AuctionResult,
    Cancelled,
    DayClosed,
    DaySummary,
    DepthUpdate,
    Event,
    Filled,
    Indicative,
    MassCancelled,
    PhaseChanged,
    RejectCode,
    Rejected,
    Trade,
    TradePrint,
)
from engine.types import INT64_MAX, INT64_MIN, CancelReason

_REASONS = {int(reason): reason for reason in CancelReason}


def rejected(seq: int, command, code: RejectCode, text: str, stream_seq: int = 0) -> Rejected:
    """The Rejected event answering `command` (seq 0: a command never sequenced). Its ClOrdID
    and member (`_sender`) are echoed only when they are of their kinds (a str; an int within
    64 bits), so the event always goes over the wire and back: a command built in process may
    hold anything there."""
    cl_ord_id, member = _sender(command)
    return Rejected(seq, cl_ord_id, member, code, text, stream_seq)


def _sender(command) -> tuple[str, int]:
    """The ClOrdID and the member a refusal answers: the command's member; for a block trade
    the buyer (whose ClOrdID it is), for a one-way auction's offer the seller; -1 for an
    operator command."""
    cl_ord_id = getattr(command, "cl_ord_id", "")
    member = getattr(command, "member", getattr(command, "buyer", getattr(command, "seller", -1)))
    if type(cl_ord_id) is not str:
        cl_ord_id = ""
    if type(member) is not int or not INT64_MIN <= member <= INT64_MAX:
        member = -1
    return cl_ord_id, member


def print_of(trade: Trade, stream_seq: int = 0) -> TradePrint:
    """The public print of a clearing trade record (no member, no order), numbered
    `stream_seq` in the public stream."""
    return TradePrint(
        trade.seq, trade.trade_id, trade.ts_ns, trade.instrument, trade.price, trade.qty,
        trade.aggressor, trade.venue, stream_seq,
    )  # fmt: skip


class EventWriter:
    """Appends to `out`, the events of the command being applied (Exchange.apply_stamped
    gives it a new list for each command)."""

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.out: list[Event] = []

    # -- stream numbers -----------------------------------------------------------------------

    def _private(self, member: int) -> int:
        seqs = self.state.private_seq
        n = seqs.get(member, 0) + 1
        seqs[member] = n
        return n

    def _public(self) -> int:
        self.state.public_seq += 1
        return self.state.public_seq

    def _clearing(self) -> int:
        self.state.clearing_seq += 1
        return self.state.clearing_seq

    # -- private --------------------------------------------------------------------------------

    def accepted(
        self, cl_ord_id: str, member: int, code: str, order_id: int, side: int, price: int, qty: int
    ) -> None:
        seqs = self.state.private_seq  # _private, inlined: an order's commonest event
        n = seqs.get(member, 0) + 1
        seqs[member] = n
        self.out.append(
            Accepted(self.state.seq, cl_ord_id, member, code, order_id, side, price, qty, n)
        )

    def rejected(self, command, code: RejectCode, text: str) -> None:
        self.refused(*_sender(command), code, text)

    def refused(self, cl_ord_id: str, member: int, code: RejectCode, text: str) -> None:
        """A refusal of a command whose ClOrdID and member are known to be of their kinds."""
        self.out.append(
            Rejected(self.state.seq, cl_ord_id, member, code, text, self._private(member))
        )

    def mass_cancelled(self, cl_ord_id: str, member: int, code: str, cancelled: int) -> None:
        self.out.append(
            MassCancelled(self.state.seq, cl_ord_id, member, code, cancelled, self._private(member))
        )

    def cancelled(self, member: int, code: str, order_id: int, leaves: int, reason: int) -> None:
        self.out.append(
            Cancelled(
                self.state.seq, member, code, order_id, leaves, _REASONS[reason],
                self._private(member),
            )
        )  # fmt: skip

    def amended(
        self, member: int, code: str, order_id: int, price: int, qty: int, kept: bool
    ) -> None:
        self.out.append(
            Amended(self.state.seq, member, code, order_id, price, qty, kept, self._private(member))
        )

    # -- public -----------------------------------------------------------------------------------

    def depth(self, code: str, side: int, price: int, qty: int, orders: int) -> None:
        state = self.state  # _public, inlined: a command's commonest event
        state.public_seq += 1
        self.out.append(DepthUpdate(state.seq, code, side, price, qty, orders, state.public_seq))

    def indicative(self, code: str, price: int, volume: int, imbalance: int) -> None:
        self.out.append(Indicative(self.state.seq, code, price, volume, imbalance, self._public()))

    def phase_changed(self, market: Market) -> None:
        self.out.append(
            PhaseChanged(
                self.state.seq, market.code, market.phase, market.reference, *market.band,
                self._public(),
            )
        )  # fmt: skip

    def auction_result(self, code: str, auction: str, price: int, volume: int) -> None:
        self.out.append(AuctionResult(self.state.seq, code, auction, price, volume, self._public()))

    # -- end of day -----------------------------------------------------------------------------

    def day_closed(self, market: Market) -> None:
        """The day's control totals for clearing, then its figures for market data."""
        state = self.state
        close = market.close_price()
        first, high, low = market.open_high_low()
        self.out += (
            DayClosed(
                state.seq, state.date, market.code, market.trades, market.volume, close,
                market.digest.hexdigest(), first, high, low, self._clearing(),
            ),
            DaySummary(
                state.seq, state.date, market.code, first, high, low, close, market.volume,
                market.trades, self._public(),
            ),
        )  # fmt: skip

    # -- trades ---------------------------------------------------------------------------------

    def trade(
        self,
        market: Market,
        price: int,
        qty: int,
        fee: int,
        buy: tuple[int, int, int],
        sell: tuple[int, int, int],
        aggressor: int,
        venue: str,
    ) -> None:
        """A trade between buy and sell, each (member, order id, leaves after the trade),
        each side paying `fee`; `aggressor` is the incoming order's side, -1 for auctions and
        block trades."""
        self._trade(
            market, price, qty, fee, buy[0], buy[1], buy[2], sell[0], sell[1], sell[2],
            aggressor, venue,
        )  # fmt: skip

    def _trade(
        self, market, price, qty, fee, buyer, buy_id, buy_leaves, seller, sell_id, sell_leaves,
        aggressor, venue,
    ) -> None:  # fmt: skip
        state = self.state
        seq, trade_id, code, ts_ns = state.seq, state.next_trade_id, market.code, state.ts_ns
        state.next_trade_id = trade_id + 1
        state.clearing_seq += 1
        state.public_seq += 1
        trade = Trade(
            seq, trade_id, ts_ns, state.date, code, price, qty, buyer, seller, buy_id, sell_id,
            aggressor, venue, fee, fee, state.clearing_seq,
        )  # fmt: skip
        market.record(trade)
        private = state.private_seq
        buyer_n = private.get(buyer, 0) + 1
        private[buyer] = buyer_n
        seller_n = private.get(seller, 0) + 1
        private[seller] = seller_n
        self.out += (
            trade,
            print_of(trade, state.public_seq),
            Filled(
                seq, trade_id, buyer, code, buy_id, 0, price, qty, buy_leaves, aggressor == 0,
                buyer_n,
            ),
            Filled(
                seq, trade_id, seller, code, sell_id, 1, price, qty, sell_leaves, aggressor == 1,
                seller_n,
            ),
        )  # fmt: skip

    def pipeline_rows(self, market: Market, rows: Iterable[tuple[int, ...]]) -> None:
        """The events of the compiled pipeline's output rows (engine.core.pipeline): fills
        (buy order first, the fee each side pays in the code column), cancels, amends and
        changed levels, in the pipeline's order."""
        out = self.out
        seq, code = self.state.seq, market.code
        for kind, oid, oid2, price, qty, leaves, leaves2, column, side, owner, owner2 in rows:
            if kind == K_LEVEL:  # side, price, total (qty) and orders (leaves)
                self.state.public_seq += 1
                out.append(DepthUpdate(seq, code, side, price, qty, leaves, self.state.public_seq))
            elif kind == K_FILL:  # buy order first: oid, leaves, owner; sell: the *2
                self._trade(
                    market, price, qty, column, owner, oid, leaves, owner2, oid2, leaves2, side,
                    "continuous",
                )  # fmt: skip
            elif kind == K_CANCELLED:
                out.append(
                    Cancelled(seq, owner, code, oid, qty, _REASONS[column], self._private(owner))
                )
            elif kind == K_AMENDED:
                out.append(
                    Amended(seq, owner, code, oid, price, qty, column == 1, self._private(owner))
                )
