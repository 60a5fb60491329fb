"""The exchange core's declared state: everything the parts of `Exchange` share.

Invariants:
- Only the core's parts (engine.core.*) mutate a `CoreState`, and only inside
  `Exchange.apply`; everything that decides future behaviour is in `Exchange.state_hash`.
- `seq` is the sequence number of the command being applied (the sequencer's stamp) and
  `ts_ns` its timestamp; neither is read from a clock.
- `orders` holds only off-book orders (one-way auction offers and bids); an order in a book
  lives only in its book, and `LiveOrder` views of it are built on demand.
- `cl_ord_ids` holds the ClOrdIDs each member used on the open trading day (one compiled
  store, engine.core.clordid, that every order path checks and fills).
- `next_order_id` and `next_trade_id` are the ids the next order and trade will get.
- `public_seq`, `clearing_seq` and `private_seq[member]` are the last stream sequence numbers
  given to an event of each audience (engine.protocol.Audience): gap-free from 1, so they
  are state (a restart from a snapshot continues them).
- Every field is either in an exchange snapshot (engine.core.snapshot) or derived from the
  config (`config`, `zone`, `schedule`); a field added here goes into the snapshot too
  (tests/core/test_snapshot.py compares the state trees of dumped and restored exchanges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from engine.config import MarketConfig
from engine.core.clordid import ClOrdIds
from engine.core.market import Market
from engine.core.risk import Accounts


@dataclass(slots=True)
class LiveOrder:
    """What the core knows of a live order. `frozen` is the cash a buy still holds and always
    equals `risk.freeze_for(limit, leaves)`; a sell holds `leaves` allowances."""

    order_id: int
    member: int
    cl_ord_id: str
    code: str
    side: int
    limit: int  # price the buy freeze is computed at (band edge for a market order)
    leaves: int
    frozen: int = 0  # cash still frozen for a buy (sells freeze `leaves` allowances)
    venue: str = "book"  # or "one_way_bid", "one_way_offer", "block": not in the book


@dataclass(slots=True, eq=False)
class CoreState:
    config: MarketConfig
    accounts: Accounts
    markets: dict[str, Market]
    zone: ZoneInfo
    schedule: list[tuple[str, str]]
    last_date: str  # the latest trading day started: the next must come after it
    next_trade_id: int
    cl_ord_ids: ClOrdIds
    seq: int = 0
    ts_ns: int = 0
    date: str = ""  # the open trading day; "" between EndOfDay and StartOfDay
    next_order_id: int = 1
    calendar_done: int = 0  # schedule entries fired on the open day
    orders: dict[int, LiveOrder] = field(default_factory=dict)
    public_seq: int = 0
    clearing_seq: int = 0
    private_seq: dict[int, int] = field(default_factory=dict)  # member (-1: no member) -> last

    @classmethod
    def of(cls, config: MarketConfig, markets: dict[str, Market]) -> CoreState:
        return cls(
            config=config,
            accounts=Accounts(config.members, [i.code for i in config.instruments]),
            markets=markets,
            zone=ZoneInfo(config.timezone),
            schedule=sorted(config.schedule),
            last_date=config.last_trading_day,
            next_trade_id=config.first_trade_id,
            cl_ord_ids=ClOrdIds(),
        )

    def local_time(self) -> datetime:
        """The command's timestamp in the market's time zone."""
        return datetime.fromtimestamp(self.ts_ns // 1_000_000_000, UTC).astimezone(self.zone)
