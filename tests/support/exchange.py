"""Helpers for exchange-core tests: a small market and a session driver."""

from __future__ import annotations

from engine.config import MarketConfig, Member
from engine.core import Exchange
from engine.instruments import Instrument
from engine.protocol import (
    AmendOrder,
    CancelOrder,
    NewOrder,
    OpenCall,
    Rejected,
    StartOfDay,
    Uncross,
)

CASH = 100_000_000_00  # 100 million CNY in fen
STOCK = 1_000_000  # tonnes


def small_market(**instrument_fields) -> MarketConfig:
    fields = {"code": "CEA25", "name": "CEA 2025", "product": "CEA", "reference_price": 10_000}
    fields.update(instrument_fields)
    members = [
        Member(id=i, name=f"M{i}", cash=CASH, holdings={fields["code"]: STOCK}) for i in range(1, 5)
    ]
    return MarketConfig(name="test", instruments=[Instrument(**fields)], members=members)


class Session:
    """An exchange with a trading day started and CEA25 in continuous trading.

    `make_exchange` (the fixture's class, called with the config) builds the exchange under
    test; without it, an `Exchange` over `book_factory`'s books."""

    def __init__(
        self,
        config: MarketConfig | None = None,
        continuous: bool = True,
        exchange: type[Exchange] = Exchange,
    ) -> None:
        self.x = exchange(config or small_market())
        self.code = next(iter(self.x.markets))
        self.n = 0
        self.x.apply(StartOfDay("2026-11-24"))
        if continuous:
            self.x.apply(OpenCall(self.code))
            self.x.apply(Uncross(self.code))

    def send(self, command):
        return self.x.apply(command)

    def order(self, member, side, price, qty, **kw):
        self.n += 1
        return self.send(NewOrder(f"c{self.n}", member, self.code, side, price, qty, **kw))

    def cancel(self, member, order_id):
        self.n += 1
        return self.send(CancelOrder(f"c{self.n}", member, self.code, order_id))

    def amend(self, member, order_id, price, qty):
        self.n += 1
        return self.send(AmendOrder(f"c{self.n}", member, self.code, order_id, price, qty))


def only_reject(events) -> Rejected:
    assert len(events) == 1 and isinstance(events[0], Rejected), events
    return events[0]


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]
