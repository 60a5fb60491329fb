"""Live capture: clearing's consumer of the engine's trade stream (engine.gateway.tradestream)
into the trade store, as `cxe capture` runs it.

Invariants:
- the consumer asks the engine from the store's stream position (`TradeStore.
  stream_position`; from 1 in an empty store) and stores each message's events and the new
  position in one transaction (`TradeStore.capture_stream`): killed at any moment (kill -9
  included), a restart resumes exactly after the last event stored, so no trade is missed
  or doubled;
- the first answer on each connection is checked before anything is stored: the engine's
  event at the store's position must be the one the store took there (`TradeStore.
  continues`). If it is not, or the engine holds fewer events: under the store's history id
  (engine.journal.history) that engine's history changed under the store (its data
  directory restored from an older copy, copied and traded on, its journal short of
  acknowledged commands) and it is refused (`StreamRefused`); under another id it is
  another engine (the next trading day's, in a fresh data directory), whose stream the
  store follows from its number 1 once the store's last day is closed (`TradeStore.
  begin_history`; refused before that). An engine whose event matches under another id
  (a store or a history file from before ids were kept) gives the store its id;
- events at or below the position (a message that crossed a re-request) are dropped by
  stream number, and a Trade among them must equal the stored one; a message that skips a
  stream number is never stored: the consumer asks again from the position;
- when the engine is silent for `silence_s` (it sends a heartbeat each second to a consumer
  that is level), the consumer opens a new connection, looking the endpoint up again in the
  engine's endpoints.json when it follows a data directory (a restarted engine may listen on
  another port), and asks from the position again; so it rides out the engine's restarts;
- with `curve_keys` (an operator's key pair and the engine's public key) every connection
  is a CURVE client: a keyed engine serves its trade stream to operator keys only;
- a refusal by the engine (ERR) after that check ends the capture (`StreamRefused`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zmq

from engine.clearing.capture import OtherHistory, StreamGap, TradeStore
from engine.gateway.endpointsfile import NotThisDirectory, read_endpoints
from engine.gateway.security import KeyPair, allow_ipv6, secure_client
from engine.gateway.tradestream import ERROR, EVENTS, HEADER, HEARTBEAT, POSITION, REQUEST
from engine.protocol import DayClosed, Trade

SILENCE_S = 3.0  # without a message for this long the engine is taken to have gone
GAP_PAUSE_S = 0.1  # after a message that skipped a stream number, before asking again
_events = msgspec.msgpack.Decoder(list[Trade | DayClosed])


class StreamRefused(RuntimeError):
    """The engine refused the request (its text says why); nothing was captured from it."""


class EngineNotFound(OSError):
    pass


def endpoint_of(data_dir: str | Path) -> str | None:
    """The trade stream endpoint a running engine wrote into DATA/endpoints.json; None while
    there is none (the engine is starting or down)."""
    try:
        found = read_endpoints(data_dir)
    except NotThisDirectory as exc:
        raise EngineNotFound(str(exc)) from None
    if found is None:
        return None
    if "trades" not in found:
        raise EngineNotFound(
            f"the engine at {data_dir} serves no trade stream: run a cxe serve that has "
            "--trades (this version of cxe)"
        )
    return found["trades"]


@dataclass
class Progress:
    position: int  # the last stream number stored
    held: int  # the last stream number the engine said it holds
    trades: int  # trades stored by this run
    duplicates: int  # trades that were held already (by trade id)
    day_records: int
    last_trade_id: int
    day_closed: bool  # the last event stored is a DayClosed: the day is closed, none since
    reconnects: int


class LiveCapture:
    """Follows the engine's trade stream into `store`. `resolve()` gives the endpoint (None:
    not known yet); call `step()` repeatedly, or `run()`."""

    def __init__(
        self,
        store: TradeStore,
        resolve: Callable[[], str | None],
        *,
        context: zmq.Context | None = None,
        silence_s: float = SILENCE_S,
        curve_keys: tuple[KeyPair, bytes] | None = None,  # an operator's, the engine's public
    ) -> None:
        self.store = store
        self.curve_keys = curve_keys
        self.resolve = resolve
        self.context = context or zmq.Context.instance()
        self.silence_s = silence_s
        self.socket: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.heard = time.monotonic()
        position = store.stream_position()
        self.answered = False  # the engine has answered since the last connection
        self.ever_answered = False  # anything has answered at all
        self.checked = False  # its first answer was checked (`_check_first`)
        closed = store.day_closed()
        self.progress = Progress(position, position, 0, 0, 0, store.last_trade_id(), closed, -1)

    def _connect(self) -> None:
        """A fresh connection (nothing queued on the old one is read) and a new request."""
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None
        self.heard = time.monotonic()
        self.answered = False
        # where the store is now: another capture may have taken events, or moved it on to
        # the next day's engine (a helper's probe: a stale position took the store back)
        self.progress.position = self.store.stream_position()
        self.endpoint = self.resolve()
        if self.endpoint is None:
            return
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if self.curve_keys is not None:
            secure_client(self.socket, *self.curve_keys)
        allow_ipv6(self.socket, self.endpoint)
        self.socket.connect(self.endpoint)
        self.socket.send_multipart((REQUEST, POSITION.pack(max(self.progress.position, 1))))
        self.checked = False  # the first answer is checked before anything is stored
        self.progress.reconnects += 1

    def step(self, timeout_ms: int = 200) -> bool:
        """Wait up to `timeout_ms` for a message and take it; True if events were stored."""
        if self.socket is None or time.monotonic() - self.heard > self.silence_s:
            self._connect()
            if self.socket is None:
                time.sleep(timeout_ms / 1000)
                return False
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return False
        frames = self.socket.recv_multipart()
        self.heard = time.monotonic()
        self.answered = self.ever_answered = True
        kind = frames[0]
        if (kind, len(frames)) not in ((HEARTBEAT, 3), (EVENTS, 4), (ERROR, 3)):
            raise StreamRefused(
                f"{self.endpoint} is not an engine's trade stream (it answered "
                f'{kind[:16]!r}): give the endpoint endpoints.json names "trades" '
                f"(cxe serve --trades), or --data DIR"
            )
        history = frames[-1].decode("ascii", "replace")
        events = []
        if kind == EVENTS:
            first, count, held = HEADER.unpack(frames[1])
            events = _events.decode(frames[2])
            if len(events) != count or (events and events[0].stream_seq != first):
                raise StreamRefused(f"a message from {self.endpoint} does not match its header")
        if not self.checked and not self._check_first(history, events):
            return False
        if kind == ERROR:
            raise StreamRefused(f"the engine at {self.endpoint} refused: {frames[1].decode()}")
        if kind == HEARTBEAT:
            (self.progress.held,) = POSITION.unpack(frames[1])
            return False
        self.progress.held = held
        try:
            result = self.store.capture_stream(events, history)
        except StreamGap:
            time.sleep(GAP_PAUSE_S)  # not at once: another capture may be moving the store
            self._connect()  # ask again from the position: nothing of the message was stored
            return False
        progress = self.progress
        progress.position = self.store.stream_position()
        progress.trades += result.stored
        progress.duplicates += result.duplicates
        progress.day_records += result.day_records
        progress.last_trade_id = result.last_trade_id
        if events:
            progress.day_closed = type(events[-1]) is DayClosed
        return True

    def _check_first(self, history: str, events: list) -> bool:
        """Check the first answer of a connection (the module's invariants): True to take it;
        False when the store now follows this engine from its number 1 and asks again."""
        store, position = self.store, self.progress.position
        # asked from `position`: its event comes first, unless the engine is short
        continues = position == 0 or (bool(events) and store.continues(events[0]))
        if continues:
            if store.stream_history() != history:
                store.take_history(history)
            self.checked = True
            return True
        if store.stream_history() == history:
            held = "holds another event there" if events else "holds fewer events than the store"
            raise StreamRefused(
                f"the engine at {self.endpoint} is of the history the store follows "
                f"({history}) but {held} (the store's stream number {position}): its data "
                f"directory was restored from an older copy, or copied and traded on, or its "
                f"journal lost acknowledged commands. Nothing of it was stored; capture from "
                f"the data directory the store captured from"
            )
        try:
            store.begin_history(history)
        except OtherHistory as exc:
            raise StreamRefused(f"the engine at {self.endpoint}: {exc}") from None
        progress = self.progress
        progress.position = progress.held = 0
        progress.day_closed = False  # the new engine's day is its own
        self._connect()  # from its number 1, on a fresh connection
        return False

    @property
    def level(self) -> bool:
        """The store holds every event the engine said it holds since the connection."""
        return self.answered and self.progress.position >= self.progress.held

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None
