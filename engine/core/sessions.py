"""Session commands of the exchange core: the trading day, phases, call auctions, calendar.

A part of `engine.core.Exchange` over the core's declared state (engine.core.state). Phase
transitions: CLOSED -> CALL -> (uncross) -> CONTINUOUS <-> HALTED -> (resume, or OpenCall)
CALL ...; CONTINUOUS -> CLOSING_CALL -> (uncross) -> CLOSED.
EndOfDay needs every market closed: it expires the day orders, fixes each close
(Market.close_price) as the next reference and publishes DayClosed.
The calendar replays the config's schedule from the commands' timestamps: the same actions,
in order, once per trading day; a market the operator halted stays halted through the
schedule's re-opening call until the operator opens a call or resumes it (or the day's
close). A halted market resumes through a re-opening call, whatever the halt interrupted.
Trading days only move forward and each ends before the next starts:
StartOfDay needs a real calendar date (YYYY-MM-DD) that the config's trading week and
holidays leave open, the sequencer's own date when the command is stamped (a mistyped day
cannot shut the days before it), after the last day started, and that day ended by EndOfDay
(so every day has its DayClosed records), so the calendar can always place it and a day's
ClOrdIDs and trades are never reopened. The band always holds every live order:
SetReference is refused while one would fall outside.
"""

from __future__ import annotations

from datetime import datetime

from engine.book.auction import run_uncross
from engine.core import validation as check
from engine.core.events import EventWriter
from engine.core.market import Market
from engine.core.state import CoreState
from engine.core.trading import Trading
from engine.core.validation import Reject, typed
from engine.protocol import (
    Close,
    CloseCall,
    EndOfDay,
    Halt,
    OpenCall,
    RejectCode,
    Resume,
    SetReference,
    StartOfDay,
    Uncross,
)
from engine.types import CancelReason, Phase, is_trading_date

CALENDAR_ACTIONS = {
    "open_call": OpenCall,
    "uncross": Uncross,
    "halt": Halt,
    "close_call": CloseCall,
    "close": Close,
}

NEVER = 2**63 - 1  # a timestamp no command reaches


class Sessions:
    """The trading day, phases, call auctions and the calendar."""

    def __init__(self, state: CoreState, emit: EventWriter, trading: Trading) -> None:
        self.state = state
        self.emit = emit
        self.trading = trading
        self._calendar_key: tuple[str, int] | None = None  # see _calendar_due
        self._calendar_due_ns = 0
        self.handlers = {
            StartOfDay: self.start_of_day,
            OpenCall: self.open_call,
            Uncross: self.uncross,
            Halt: self.halt,
            Resume: self.resume,
            CloseCall: self.close_call,
            Close: self.close,
            SetReference: self.set_reference,
            EndOfDay: self.end_of_day,
        }

    # -- sessions -----------------------------------------------------------------------------

    def _phase(self, market: Market, phase: Phase) -> None:
        market.set_phase(phase)
        self.emit.phase_changed(market)

    def _transition(self, code: str, allowed: tuple[Phase, ...], action: str) -> Market:
        market = check.market(self.state, code)
        if market.phase not in allowed:
            raise Reject(
                RejectCode.UNSUPPORTED_IN_PHASE, f"cannot {action} {code} in {market.phase.name}"
            )
        return market

    @typed
    def start_of_day(self, cmd: StartOfDay) -> set[str]:
        state = self.state
        if not is_trading_date(cmd.date):
            raise Reject(RejectCode.INVALID_FIELD, f"date {cmd.date!r} is not a YYYY-MM-DD day")
        closed = state.config.closed_because(cmd.date)
        if closed:
            raise Reject(
                RejectCode.MARKET_CLOSED, f"{cmd.date} is {closed}: not a trading day here"
            )
        if state.ts_ns:  # stamped by the sequencer (0: no clock, as in-process tests)
            today = state.local_time().strftime("%Y-%m-%d")
            if cmd.date != today:
                raise Reject(
                    RejectCode.INVALID_FIELD,
                    f"trading day {cmd.date} is not the sequencer's date, {today} "
                    f"({state.config.timezone}): a day starts on its own date",
                )
        if cmd.date <= state.last_date:  # ISO dates order as strings; "" before any
            raise Reject(
                RejectCode.INVALID_FIELD,
                f"trading day {cmd.date} does not come after the last one, {state.last_date}",
            )
        if state.date:  # EndOfDay needs every market closed and leaves no order live
            raise Reject(
                RejectCode.UNSUPPORTED_IN_PHASE,
                f"trading day {state.date} has not ended: close its markets, then EndOfDay",
            )
        state.date = state.last_date = cmd.date
        state.cl_ord_ids.clear()
        state.calendar_done = 0
        state.accounts.start_day()
        for market in state.markets.values():
            market.new_day()
        return set()

    @typed
    def open_call(self, cmd: OpenCall) -> set[str]:
        market = self._transition(cmd.instrument, (Phase.CLOSED, Phase.HALTED), "open a call")
        if not self.state.date:
            raise Reject(RejectCode.MARKET_CLOSED, "no trading day: StartOfDay first")
        return self._start_call(market)

    @typed
    def resume(self, cmd: Resume) -> set[str]:
        """复牌: a halted market resumes through a re-opening call (DESIGN.md), whether the
        halt interrupted continuous trading or a call."""
        return self._start_call(self._transition(cmd.instrument, (Phase.HALTED,), "resume"))

    def _start_call(self, market: Market) -> set[str]:
        market.operator_halt = False
        market.published_indicative = (0, 0, 0)  # the indicative is published afresh
        self._phase(market, Phase.CALL)
        return {market.code}

    def _run_auction(self, market: Market, label: str) -> None:
        limits = {order[0]: order[2] for order in market.book.orders()}
        events, rounds = run_uncross(market.book, market.reference)
        self.trading.book_events(market, "call", events, limits=limits)
        traded = [(r.equilibrium.price, r.executed) for r in rounds if r.executed]
        for price, volume in traded or [(0, 0)]:
            self.emit.auction_result(market.code, label, price, volume)

    @typed
    def uncross(self, cmd: Uncross) -> set[str]:
        market = self._transition(cmd.instrument, (Phase.CALL,), "uncross")
        self._run_auction(market, "call")
        self._phase(market, Phase.CONTINUOUS)
        return {market.code}

    @typed
    def halt(self, cmd: Halt) -> set[str]:
        market = self._transition(cmd.instrument, (Phase.CONTINUOUS, Phase.CALL), "halt")
        market.operator_halt = True  # the calendar clears this for its own halts
        self._phase(market, Phase.HALTED)
        return {market.code}

    @typed
    def close_call(self, cmd: CloseCall) -> set[str]:
        market = self._transition(cmd.instrument, (Phase.CONTINUOUS,), "start a closing call")
        self._phase(market, Phase.CLOSING_CALL)
        return {market.code}

    @typed
    def close(self, cmd: Close) -> set[str]:
        market = self._transition(
            cmd.instrument,
            (Phase.CONTINUOUS, Phase.CLOSING_CALL, Phase.HALTED, Phase.CALL),
            "close",
        )
        if market.phase == Phase.CLOSING_CALL:
            self._run_auction(market, "closing_call")
        market.book.set_collecting(False)
        market.operator_halt = False
        self._phase(market, Phase.CLOSED)
        return {market.code}

    @typed
    def set_reference(self, cmd: SetReference) -> set[str]:
        market = self._transition(cmd.instrument, (Phase.CLOSED,), "set the reference of")
        tick = market.instrument.tick
        if cmd.price <= 0 or cmd.price % tick:
            raise Reject(RejectCode.PRICE_OFF_TICK, "a reference must be a positive tick")
        problem = market.instrument.reference_problem(cmd.price)
        if problem:
            raise Reject(RejectCode.PRICE_OUT_OF_RANGE, problem)
        low, high = market.instrument.band(cmd.price)
        outside = sum(not low <= order[2] <= high for order in market.book.orders())
        if outside:  # day orders rest after a Close: re-opening would trade them outside
            raise Reject(
                RejectCode.PRICE_OUTSIDE_BAND,
                f"{outside} live order(s) of {market.code} outside the band {low}-{high} of "
                "this reference: cancel them first",
            )
        market.set_reference(cmd.price)
        self.emit.phase_changed(market)
        return set()

    @typed
    def end_of_day(self, cmd: EndOfDay) -> set[str]:
        state = self.state
        open_markets = [m.code for m in state.markets.values() if m.phase != Phase.CLOSED]
        if open_markets:
            raise Reject(
                RejectCode.UNSUPPORTED_IN_PHASE,
                f"markets still open: {', '.join(open_markets)} (close them first)",
            )
        auctions = [m.code for m in state.markets.values() if m.one_way]
        if auctions:
            raise Reject(
                RejectCode.UNSUPPORTED_IN_PHASE,
                f"a one-way auction is still open on {', '.join(auctions)}: close it first",
            )
        if not state.date:
            raise Reject(RejectCode.MARKET_CLOSED, "no trading day to end")
        for order_id, order in self.trading.live_orders().items():
            if order.venue == "book":
                state.markets[order.code].book.cancel(order_id)
                state.markets[order.code].touched.append((order.side, order.limit))
            self.trading.end(order, CancelReason.EXPIRED)
        for code in sorted(state.markets):  # the expiries' levels belong to the day they end
            self.trading.publish(state.markets[code])
        for code in sorted(state.markets):
            market = state.markets[code]
            close = market.close_price()
            self.emit.day_closed(market)
            market.set_reference(close)
        state.date = ""
        return set()

    # -- calendar -------------------------------------------------------------------------------

    def run_calendar(self) -> None:
        """Fire the schedule's entries that are due at the command's timestamp."""
        state = self.state
        if not state.schedule or not state.date or state.ts_ns < self._calendar_due():
            return
        local = state.local_time()
        if local.strftime("%Y-%m-%d") != state.date:
            return
        now = local.strftime("%H:%M")
        while state.calendar_done < len(state.schedule):
            when, action = state.schedule[state.calendar_done]
            if when > now:
                break
            command = CALENDAR_ACTIONS[action]
            state.calendar_done += 1
            for code in sorted(state.markets):
                market = state.markets[code]
                if action == "open_call" and market.operator_halt:
                    continue  # an operator's halt lasts until the operator lifts it
                try:
                    touched = self.handlers[command](command(code))
                except Reject:
                    continue  # a market not in the phase the action starts from stays as it is
                if action == "halt":
                    market.operator_halt = False  # the schedule's halt ends on schedule
                for touched_code in sorted(touched or ()):
                    self.trading.publish(state.markets[touched_code])

    def _calendar_due(self) -> int:
        """The earliest timestamp (ns) at which the next schedule entry can fire today, so
        commands before it skip the local-time conversion. A cache of (date, entries fired):
        derived state, not hashed."""
        state = self.state
        key = (state.date, state.calendar_done)
        if self._calendar_key != key:
            self._calendar_key = key
            if state.calendar_done >= len(state.schedule):
                self._calendar_due_ns = NEVER
            else:
                when = state.schedule[state.calendar_done][0]
                local = datetime.strptime(f"{state.date} {when}", "%Y-%m-%d %H:%M")
                self._calendar_due_ns = int(local.replace(tzinfo=state.zone).timestamp()) * 10**9
        return self._calendar_due_ns
