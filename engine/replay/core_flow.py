"""A command file through the full exchange core (`cxe replay FILE --market M`).

Unlike the bare book (engine.replay.flow), every command passes the core's validation, price
band, trading phase and pre-trade risk checks of the market config. The day is opened as the
exchange opens one: StartOfDay on the market's next trading day, then for every instrument
of the file an opening call that is uncrossed at once (the file's commands all arrive in
continuous trading). A row's `member` is the member that sends it; the member is also the
self-trade prevention owner, as in the exchange (so an `owner` column is refused). Prices
and quantities are the market's units (fen, tonnes): no scales, no --tick.

Invariants: commands go to the core in file order, each with the file's time_ns as its
stamp; the file's order ids map to the exchange's as orders are accepted (a command naming an id
the exchange never accepted is a reject, unknown_order, and is not sent); a reduce becomes
an amend of the order's current price to its remaining quantity minus qty (keeping its
place), or a cancel when nothing would be left; every Rejected event becomes a reject with
the line of the command behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.book.layout import C_OID, C_PRICE, C_QTY, C_SIDE, C_TIF, C_TYPE, CMD_ADD, CMD_AMEND
from engine.config import MarketConfig
from engine.core import Exchange
from engine.demo import demo_date
from engine.protocol import (
    Accepted,
    Amended,
    AmendOrder,
    Cancelled,
    CancelOrder,
    Filled,
    NewOrder,
    OpenCall,
    RejectCode,
    Rejected,
    StartOfDay,
    Trade,
    Uncross,
)
from engine.replay.flow import FILL_COLUMNS
from engine.replay.sources import CMD_REDUCE, BadRow, CommandFile


@dataclass
class CoreResult:
    exchange: Exchange
    date: str
    fills: np.ndarray  # FILL_COLUMNS, one row per trade
    rejects: list[BadRow] = field(default_factory=list)
    commands: int = 0


class _Orders:
    """The file's order ids per instrument mapped to the exchange's, with each live order's
    price and remaining quantity as the events report them."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, int], int] = {}
        self.file_id: dict[int, int] = {}
        self.live: dict[int, tuple[int, int]] = {}  # exchange id -> (price, leaves)

    def track(self, events: list, key: tuple[str, int] | None) -> None:
        for e in events:
            if isinstance(e, Accepted):
                if key is not None:
                    self.ids[key] = e.order_id
                    self.file_id[e.order_id] = key[1]
                self.live[e.order_id] = (e.price, e.qty)
            elif isinstance(e, Filled | Cancelled) and e.order_id in self.live:
                price = self.live[e.order_id][0]
                self.live[e.order_id] = (price, e.leaves)
            elif isinstance(e, Amended):
                self.live[e.order_id] = (e.price, e.qty)


def _command(orders: _Orders, code: str, member: int, line: int, row: tuple[int, ...]):
    """The protocol command for one row; None for a cancel, amend or reduce of an order id
    the exchange never accepted (nothing to send it to)."""
    cl_ord_id = f"L{line}"
    kind = row[0]
    if kind == CMD_ADD:
        return NewOrder(
            cl_ord_id,
            member,
            code,
            row[C_SIDE],
            row[C_PRICE],
            row[C_QTY],
            row[C_TYPE],
            row[C_TIF],
        )
    order_id = orders.ids.get((code, row[C_OID]))
    if order_id is None:
        return None
    if kind == CMD_AMEND:
        return AmendOrder(cl_ord_id, member, code, order_id, row[C_PRICE], row[C_QTY])
    if kind == CMD_REDUCE and order_id in orders.live:  # else: a cancel
        price, leaves = orders.live[order_id]
        if row[C_QTY] < leaves:
            return AmendOrder(cl_ord_id, member, code, order_id, price, leaves - row[C_QTY])
    return CancelOrder(cl_ord_id, member, code, order_id)


def run_in_core(source: CommandFile, market: MarketConfig) -> CoreResult:
    """Every good row of `source`, in file order, through a fresh exchange of `market`."""
    known = {i.code for i in market.instruments}
    if unknown := sorted(set(source.flows) - known):
        raise ValueError(
            f"{source.path}: instruments {unknown} are not in the market config (it lists "
            f"{sorted(known)})"
        )
    exchange = Exchange(market)
    date = demo_date(market, None)
    opening = [StartOfDay(date)]
    for code in sorted(source.flows):
        opening += [OpenCall(code), Uncross(code)]
    for command in opening:
        if refused := [e for e in exchange.apply(command) if isinstance(e, Rejected)]:
            raise ValueError(f"the market refused {command!r}: {refused[0].text}")
    rows = sorted(
        (line, code, time_ns, member, row)
        for code, flow in source.flows.items()
        for line, time_ns, member, row in zip(
            flow.lines.tolist(),
            flow.times.tolist(),
            flow.members.tolist(),
            flow.commands.tolist(),
            strict=True,
        )
    )
    orders = _Orders()
    fills = []
    out = CoreResult(exchange, date, np.zeros(0, dtype=FILL_COLUMNS), commands=len(rows))
    for line, code, time_ns, member, row in rows:
        command = _command(orders, code, member, line, row)
        if command is None:
            detail = f"order_id {row[C_OID]} names no order the exchange accepted from this file"
            out.rejects.append(BadRow(line, code, "unknown_order", detail, source.texts[line]))
            continue
        events = exchange.apply(command, time_ns)
        orders.track(events, (code, row[C_OID]) if row[0] == CMD_ADD else None)
        for e in events:
            if isinstance(e, Rejected):
                reason = RejectCode(e.code).name
                detail = f"the exchange rejected the command: {reason}: {e.text}"
                out.rejects.append(BadRow(line, code, reason.lower(), detail, source.texts[line]))
            elif isinstance(e, Trade):
                aggressor_id = e.buy_order_id if e.aggressor == 0 else e.sell_order_id
                resting_id = e.sell_order_id if e.aggressor == 0 else e.buy_order_id
                taker_member = e.buyer if e.aggressor == 0 else e.seller
                maker_member = e.seller if e.aggressor == 0 else e.buyer
                fills.append(
                    (
                        code,
                        time_ns,
                        line,
                        orders.file_id.get(aggressor_id, -1),
                        orders.file_id.get(resting_id, -1),
                        e.price,
                        e.qty,
                        e.aggressor,
                        taker_member,
                        maker_member,
                    )
                )
    out.fills = np.array(fills, dtype=FILL_COLUMNS)
    return out
