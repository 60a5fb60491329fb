"""Exchange: the deterministic state machine. apply_stamped(seq, ts_ns, command) -> events.

Invariants:
- `apply_stamped` is the only mutator. It applies a command stamped by a sequencer (the
  demo, the journal's recorder, replay, the service): a sequence number that must follow the
  last one applied, and a timestamp (int64 nanoseconds, UTC); a stamp that does not is
  refused (`StampRefused`) before anything changes. `apply(command, ts_ns)` is the in-process
  sequencer for tests and research: it stamps the next number itself. `apply_batch` applies
  a run of stamped order-command records with the same result as `apply_stamped` on each
  (engine.core.batch).
- The core reads no clock, socket, environment or random source: time arrives as the stamp
  and every id (order, trade) derives from state, so the same stamped commands give
  byte-identical encoded events on any machine. A `Clock` command carries only its stamp:
  the calendar acts on it as on any command.
- Validation runs before any change: a rejected command produces one `Rejected` event (code
  and text) and leaves `state_hash()` unchanged (the sequence number is not state).
- The exchange is composed of parts over one declared state (engine.core.state.CoreState):
  `Trading` (what every order path shares), `Sessions` (the day, phases, auctions, the
  calendar), `OffBook` (one-way auctions, block trades), `MassCancels` and the order path
  (`CompiledOrders` here; the reference exchange, engine.core.reference, puts its plain
  handlers there). Each command type has exactly one handler; events are built by the one
  `EventWriter`.
- Each trade is one `Trade` event (public print and clearing record) plus a `Filled` for
  each side; `DayClosed` carries the day's trade count and `trades_digest` per instrument.

Operator commands (sessions, auctions, block trades) are applied as they come; a calendar in
the config can issue the same transitions from the commands' timestamps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec
import numpy as np

from engine.book import Book
from engine.config import MarketConfig
from engine.core.batch import BatchPath
from engine.core.events import EventWriter
from engine.core.market import Market
from engine.core.masscancel import MassCancels
from engine.core.offbook import OffBook
from engine.core.orders import CompiledOrders
from engine.core.risk import Accounts
from engine.core.sessions import Sessions
from engine.core.state import CoreState, LiveOrder
from engine.core.trading import Trading
from engine.core.validation import Reject
from engine.protocol import Clock, Command, Event, PickOrder, RejectCode, encode
from engine.types import INT64_MAX


class StampRefused(ValueError):
    """A stamp that does not follow (sequence) or is not an int64 timestamp: nothing changed."""


def _noop(command: Clock) -> None:
    """A Clock command: the calendar has already run at its timestamp."""


class Exchange:
    """The production exchange: compiled books, the compiled order pipeline."""

    book_factory: type = Book
    orders_factory: type = CompiledOrders

    def __init__(self, config: MarketConfig) -> None:
        markets = {
            i.code: Market(i, self.book_factory, index)
            for index, i in enumerate(config.instruments)
        }
        self.config = config
        self.state = state = CoreState.of(config, markets)
        self.emit = emit = EventWriter(state)
        self.trading = trading = Trading(state, emit)
        self.sessions = Sessions(state, emit, trading)
        self.offbook = OffBook(state, emit, trading)
        self.orders = self.orders_factory(state, emit, trading, self.offbook)
        self._batch: BatchPath | None = None  # made at the first batch
        self._handlers: dict[type, Callable] = {
            **self.orders.handlers,
            PickOrder: trading.pick,
            Clock: _noop,
            **self.sessions.handlers,
            **self.offbook.handlers,
            **MassCancels(state, emit, trading).handlers,
        }

    # -- the one entry point -----------------------------------------------------------------------

    def apply(self, command: Command, ts_ns: int = 0) -> list[Event]:
        """Stamp `command` with the next sequence number and apply it (in-process use)."""
        return self.apply_stamped(self.state.seq + 1, ts_ns, command)

    def apply_stamped(self, seq: int, ts_ns: int, command: Command) -> list[Event]:
        """Apply a sequenced command; its events, in order, all carrying `seq`."""
        state = self.state
        if type(seq) is not int or seq != state.seq + 1:
            raise StampRefused(f"sequence {seq!r} does not follow {state.seq}")
        if type(ts_ns) is not int or not 0 <= ts_ns <= INT64_MAX:
            raise StampRefused(f"timestamp {ts_ns!r} is not int64 nanoseconds since 1970")
        state.seq = seq
        state.ts_ns = ts_ns
        self.emit.out = out = []
        if state.schedule:
            self.sessions.run_calendar()
        try:
            handler = self._handlers.get(type(command))
            if handler is None:
                raise Reject(RejectCode.MALFORMED, f"not a command: {type(command).__name__}")
            touched = handler(command)
        except Reject as reject:
            touched = None
            for market in state.markets.values():  # nothing a refused command touched is shown
                market.touched.clear()
            self.emit.rejected(command, reject.code, reject.text)
        if touched:
            for code in sorted(touched):
                self.trading.publish(state.markets[code])
        return out

    def apply_batch(self, records: np.ndarray) -> bytes:
        """Apply a run of order-command records (engine.codec.COMMAND_DTYPE, stamped with the
        sequence numbers that follow `seq`) in one compiled call where it can: the bytes of
        their events' rows (engine.codec), exactly what applying them one by one gives."""
        if self._batch is None:
            self._batch = BatchPath(self)
        return self._batch.apply(records)

    # -- views -------------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number of the last command applied."""
        return self.state.seq

    @property
    def date(self) -> str:
        """The open trading day ("" between EndOfDay and StartOfDay)."""
        return self.state.date

    @property
    def next_order_id(self) -> int:
        return self.state.next_order_id

    @property
    def next_trade_id(self) -> int:
        return self.state.next_trade_id

    @property
    def accounts(self) -> Accounts:
        return self.state.accounts

    @property
    def markets(self) -> dict[str, Market]:
        return self.state.markets

    def stream_positions(self) -> dict[str, object]:
        """The last sequence number of the commands and of each event stream."""
        state = self.state
        return {
            "seq": state.seq,
            "public": state.public_seq,
            "clearing": state.clearing_seq,
            "private": dict(sorted(state.private_seq.items())),
        }

    def live_orders(self) -> dict[int, LiveOrder]:
        """Every order that can still trade (book and off-book), by id."""
        return self.trading.live_orders()

    def state_hash(self) -> str:
        """SHA-256 over everything that decides the market's future behaviour. The positions
        of the command sequence and of the event streams (`stream_positions`) are not in it:
        they number what happened, and a refused command moves them (a snapshot carries
        them beside the state)."""
        state = self.state
        payload = [
            state.date,
            state.last_date,
            state.next_order_id,
            state.next_trade_id,
            state.calendar_done,
            msgspec.Raw(state.cl_ord_ids.canonical()),  # its snapshot(), encoded
            [
                (
                    o.order_id,
                    o.member,
                    o.cl_ord_id,
                    o.code,
                    o.side,
                    o.limit,
                    o.leaves,
                    o.frozen,
                    o.venue,
                )
                for o in sorted(state.orders.values(), key=lambda o: o.order_id)  # off-book
            ],
            [state.markets[code].snapshot() for code in sorted(state.markets)],
            state.accounts.snapshot(),
        ]
        return hashlib.sha256(msgspec.msgpack.encode(payload)).hexdigest()

    @staticmethod
    def encoded(events: list[Event]) -> bytes:
        return b"".join(encode(e) for e in events)
