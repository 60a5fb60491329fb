"""MarketDataClient: the subscriber's end of the market data feed (engine.gateway.marketdata
has the feed's layout, docs/MARKETDATA.md the procedure): subscribe, take a snapshot, keep a
local book per instrument, notice a gap and resynchronise by itself.

Invariants:
- The client applies each event at most once, in its topic's order, and only when it
  returns it from `next_update` (so its books are exactly the updates returned so far).
- After a snapshot it drops the events its topics' positions in the snapshot cover; on a
  gap (a topic number that does not follow, or a heartbeat whose positions differ from its
  own) it asks for a fresh snapshot by itself (`resyncs` counts them) and keeps what
  arrives meanwhile to replay after it.
- Only the reply to its current request (its token) is installed; replies to requests it
  gave up after `snapshot_timeout` are ignored.
- A snapshot is asked for only while the feed's connection is up (its handshake done, so
  the subscriptions are on their way ahead of the request): a snapshot taken before the
  feed admits the client would be followed by updates it never receives, a gap. When the
  feed's connection comes up during a sync the request is made afresh.
- Nothing blocks beyond the timeout given: a snapshot request with no connection to go on
  (the engine not up yet, the feed not admitting the client yet, or its key refused) is
  not sent, and asked again after `snapshot_timeout` (`snapshot_retries` counts the times
  asked again, `snapshot_requests` the requests that went out).
- Silence is loss: the engine heartbeats every second, so when nothing has arrived on the
  feed for `silence_timeout` seconds (at least MIN_SILENCE_S; math.inf for never) the
  client connects both sockets afresh and resyncs
  (`reconnects`); ZeroMQ itself never tries again a connection whose key was refused, e.g.
  one ended by a key reload that revoked it and later admitted it again.
- With CURVE keys, `refused` says whether the engine's last answer to a handshake of either
  socket was a refusal of the key (`auth_failures` counts them): a key not listed for market
  data, revoked, or refused for bad subscriptions (engine.gateway.marketdata); it turns
  False when a handshake succeeds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgspec
import zmq
from sortedcontainers import SortedDict
from zmq.utils.monitor import recv_monitor_message

from engine.gateway.marketdata import (
    CALL_PHASES,
    HEADER,
    HEARTBEAT_TOPIC,
    SNAP_END,
    SNAP_ERROR,
    SNAP_REQUEST,
    SNAP_STATE,
    Heartbeat,
    InstrumentState,
    SnapshotEnd,
    topic_name,
    topic_of,
)
from engine.gateway.security import KeyPair, allow_ipv6, next_monitor_address, secure_client
from engine.gateway.topics import MARKET_WIDE
from engine.instruments import Instrument
from engine.protocol import (
    AuctionResult,
    DaySummary,
    DepthUpdate,
    Event,
    Indicative,
    PhaseChanged,
    TradePrint,
)
from engine.types import Phase, Side

_encode = msgspec.msgpack.Encoder().encode
_events = msgspec.msgpack.Decoder(list[Event])
_state = msgspec.msgpack.Decoder(InstrumentState)
_end = msgspec.msgpack.Decoder(SnapshotEnd)
_heartbeat = msgspec.msgpack.Decoder(Heartbeat)
SILENCE_S = 5.0  # nothing on the feed this long, where the engine heartbeats each second: gone
MIN_SILENCE_S = 2.0  # two heartbeats: any less and a healthy feed would look gone
HANDSHAKE_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
CONNECTION_EVENTS = HANDSHAKE_EVENTS | zmq.EVENT_DISCONNECTED


@dataclass
class LocalBook:
    """One instrument as the client holds it: depth by price both sides (price -> (qty,
    orders)), phase, reference and band, indicative in call phases, last trade, last auction
    result and the day's summary."""

    instrument: Instrument
    phase: Phase
    reference: int
    band: tuple[int, int]
    bids: SortedDict
    asks: SortedDict
    indicative: tuple[int, int, int] | None
    last_trade: TradePrint | None
    last_auction: AuctionResult | None = None
    day: DaySummary | None = None

    @classmethod
    def of(cls, state: InstrumentState) -> LocalBook:
        return cls(
            state.instrument,
            state.phase,
            state.reference,
            (state.band_low, state.band_high),
            SortedDict({p: (q, n) for p, q, n in state.bids}),
            SortedDict({p: (q, n) for p, q, n in state.asks}),
            state.indicative,
            state.last_trade,
        )

    def depth(self, side: Side, levels: int | None = None) -> list[tuple[int, int, int]]:
        """(price, qty, orders) best first."""
        book = self.bids if side == Side.BUY else self.asks
        prices = reversed(book.keys()) if side == Side.BUY else iter(book.keys())
        return [(p, *book[p]) for p in itertools.islice(prices, levels)]

    def state(self) -> InstrumentState:
        """The same record a snapshot gives, to compare with the engine's."""
        return InstrumentState(
            self.instrument,
            self.phase,
            self.reference,
            *self.band,
            self.depth(Side.BUY),
            self.depth(Side.SELL),
            self.indicative,
            self.last_trade,
        )

    def apply(self, event: Event) -> None:
        kind = type(event)
        if kind is DepthUpdate:
            book = self.bids if event.side == Side.BUY else self.asks
            if event.qty:
                book[event.price] = (event.qty, event.orders)
            else:
                book.pop(event.price, None)
        elif kind is TradePrint:
            self.last_trade = event
        elif kind is Indicative:
            self.indicative = (event.price, event.volume, event.imbalance)
        elif kind is PhaseChanged:
            self.phase = event.phase
            self.reference = event.reference
            self.band = (event.band_low, event.band_high)
            # a call starts with no indicative (0, 0, 0) until one is published
            self.indicative = (0, 0, 0) if event.phase in CALL_PHASES else None
        elif kind is AuctionResult:
            self.last_auction = event
        elif kind is DaySummary:
            # EndOfDay makes the close the next reference; the band follows from it
            self.day = event
            self.reference = event.close
            self.band = self.instrument.band(event.close)


class SnapshotRefused(RuntimeError):
    """The snapshot service refused the client's request (its text says why, e.g. an
    instrument that is not listed)."""


@dataclass(frozen=True)
class Synced:
    """An update that replaced the local books from a snapshot as of public stream `seq`."""

    seq: int
    resync: bool  # False for the first snapshot, True when a gap caused it


Update = Event | Synced


@dataclass
class _Sync:
    token: bytes
    deadline: float
    states: dict[str, InstrumentState] = field(default_factory=dict)


def _release(sockets: list[zmq.Socket], context: zmq.Context | None) -> None:
    """Close a MarketDataClient's sockets (its monitors stopped first) and end `context`,
    the client's own if it made one."""
    for socket in sockets:
        if socket.type != zmq.PAIR:  # a monitored socket (its monitors are PAIRs)
            socket.disable_monitor()
    for socket in sockets:
        socket.close(0)
    if context is not None:
        context.term()


class MarketDataClient:
    """Subscribes, takes a snapshot, then keeps `books` (code -> LocalBook) up to date.

    `next_update(timeout)` gives the next thing applied (a public event, or `Synced` when the
    books were replaced from a snapshot) or None at the timeout; iterating gives updates
    until `close()`. Nothing runs in the background: the client reads its sockets only
    inside these calls, so one that does not call them for a while falls behind (and, past
    the high-water marks, loses messages, notices and resynchronises)."""

    def __init__(
        self,
        sub_endpoint: str,
        snapshot_endpoint: str,
        instruments: Iterable[str] | None = None,
        *,
        context: zmq.Context | None = None,
        rcvhwm: int = 100_000,
        rcvbuf: int | None = None,
        snapshot_timeout: float = 2.0,
        buffer_limit: int = 1_000_000,
        curve_keys: tuple[KeyPair, bytes] | None = None,  # (own key pair, engine's public key)
        silence_timeout: float = SILENCE_S,
        feed_server_key: bytes | None = None,  # a relay's own public key, if the feed is its
    ) -> None:
        self.instruments = None if instruments is None else sorted(set(instruments))
        if self.instruments == []:
            raise ValueError("instruments: name at least one code, or pass None for all")
        if not isinstance(silence_timeout, int | float) or not silence_timeout >= MIN_SILENCE_S:
            raise ValueError(
                f"silence_timeout: at least {MIN_SILENCE_S:g} s (the engine heartbeats every "
                f"second), not {silence_timeout!r}; math.inf never reconnects"
            )
        self.context = context or zmq.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.dealer = self.context.socket(zmq.DEALER)
        sockets = [self.sub, self.dealer]  # and the monitors, once made
        # closes the sockets and ends a context of the client's own, from `close()` or when
        # the client is collected unclosed: before the context's own finalizer, which waited
        # for ever for its sockets (a test run hung so, in a later test's garbage collection)
        self._release = weakref.finalize(
            self, _release, sockets, None if context is not None else self.context
        )
        if curve_keys is not None:
            own, engine = curve_keys
            secure_client(self.sub, own, feed_server_key or engine)
            secure_client(self.dealer, own, engine)
        elif feed_server_key is not None:
            raise ValueError("feed_server_key is for CURVE: give curve_keys too")
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf is not None:
            self.sub.setsockopt(zmq.RCVBUF, rcvbuf)
        for prefix in (
            [b""] if self.instruments is None else [*map(topic_of, self.instruments), MARKET_WIDE]
        ):
            self.sub.setsockopt(zmq.SUBSCRIBE, prefix)
        self.endpoints = ((self.sub, sub_endpoint), (self.dealer, snapshot_endpoint))
        self.dealer.setsockopt(zmq.LINGER, 0)
        # the monitors first: a handshake done before its monitor was attached was never
        # seen, and the client waited, asking nothing, until its silence timeout reconnected
        # it (a test saw no Synced within 10 s, now and then, on a loaded machine)
        self.feed_monitor = self.sub.get_monitor_socket(CONNECTION_EVENTS, next_monitor_address())
        self.snapshot_monitor = self.dealer.get_monitor_socket(
            HANDSHAKE_EVENTS, next_monitor_address()
        )
        sockets += [self.feed_monitor, self.snapshot_monitor]
        allow_ipv6(self.sub, sub_endpoint)
        self.sub.connect(sub_endpoint)
        allow_ipv6(self.dealer, snapshot_endpoint)
        self.dealer.connect(snapshot_endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.dealer, zmq.POLLIN)
        for monitor in (self.feed_monitor, self.snapshot_monitor):
            self.poller.register(monitor, zmq.POLLIN)
        self.feed_up = False  # the feed's connection has done its handshake and not ended
        self.refused = False
        self.auth_failures = 0
        self.snapshot_timeout = snapshot_timeout
        self.silence_timeout = silence_timeout
        self._heard = time.monotonic()  # when the feed last gave anything
        self.books: dict[str, LocalBook] = {}
        self.seq = 0  # public stream number of the last update applied (or the snapshot's)
        self._position = 0  # the highest public stream number received (or heartbeat's)
        self._topic_seq: dict[bytes, int] = {}
        self._ready: deque[tuple] = deque()  # (event, its book) or (Synced, the new books)
        self._held: deque[list[bytes]] = deque(maxlen=buffer_limit)  # while syncing
        self._sync: _Sync | None = None
        self.synced = False  # False while a snapshot is awaited
        self.resyncs = 0
        self.snapshot_retries = 0
        self.snapshot_requests = 0
        self.reconnects = 0
        self.messages = 0
        self.undecodable = 0  # messages whose payload was not a list of events
        self._request_snapshot()

    # -- reading -----------------------------------------------------------------------------

    def next_update(self, timeout: float | None = None) -> Update | None:
        """The next update applied, waiting at most `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            now = time.monotonic()
            wait = max(0.0, self._heard + self.silence_timeout - now)
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            if self._sync is not None:
                wait = min(wait, max(0.0, self._sync.deadline - now))
            ready = dict(self.poller.poll(int(wait * 1000) + 1))
            if self.feed_monitor in ready:
                self._read_monitor(self.feed_monitor)
            if self.snapshot_monitor in ready:
                self._read_monitor(self.snapshot_monitor)
            if self.dealer in ready:
                self._read_snapshot()
            if self.sub in ready:
                self._read_stream()
            if time.monotonic() - self._heard >= self.silence_timeout:
                self._reconnect()
            elif self._sync is not None and time.monotonic() >= self._sync.deadline:
                self.snapshot_retries += 1
                self._request_snapshot()
            if not self._ready and deadline is not None and time.monotonic() >= deadline:
                return None
        update, target = self._ready.popleft()
        if type(update) is Synced:
            self.books = target
            self.seq = update.seq
        else:
            if target is not None:
                target.apply(update)
            self.seq = update.stream_seq
        return update

    def poll(self, timeout: float = 0.0) -> list[Update]:
        """Every update available now, waiting at most `timeout` seconds for the first."""
        first = self.next_update(timeout)
        if first is None:
            return []
        out = [first]
        while (update := self.next_update(0)) is not None:
            out.append(update)
        return out

    def __iter__(self) -> Iterator[Update]:
        while not self.sub.closed:
            update = self.next_update(None)
            if update is not None:
                yield update

    def close(self) -> None:
        self._release()  # once: later calls do nothing

    def _read_monitor(self, monitor: zmq.Socket) -> None:
        while monitor.poll(0):
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.refused = True
                self.auth_failures += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.refused = False
                if monitor is self.feed_monitor:
                    self.feed_up = True
                    if self._sync is not None:  # asked before the feed was up: ask afresh
                        self._request_snapshot()
            elif event == zmq.EVENT_DISCONNECTED and monitor is self.feed_monitor:
                self.feed_up = False

    # -- snapshot ----------------------------------------------------------------------------

    def _request_snapshot(self) -> None:
        token = os.urandom(8)
        self._sync = _Sync(token, time.monotonic() + self.snapshot_timeout)
        self.synced = False
        if not self.feed_up:
            return  # asked when the feed's connection comes up, or again when time is up
        body = _encode(self.instruments or [])
        # no connection to send on (none yet, or its key was refused): asked again when the
        # request's time is up
        with contextlib.suppress(zmq.Again):
            self.dealer.send_multipart((SNAP_REQUEST, token, body), zmq.NOBLOCK)
            self.snapshot_requests += 1

    def _reconnect(self) -> None:
        """Connect both sockets afresh (the subscriptions stay on the SUB socket and go out
        on the new connection) and resync."""
        self._read_monitor(self.feed_monitor)  # what the old connection said is done with
        self.feed_up = False
        for socket, endpoint in self.endpoints:
            with contextlib.suppress(zmq.ZMQError):  # not connected there any more
                socket.disconnect(endpoint)
            socket.connect(endpoint)
        self.reconnects += 1
        self._heard = time.monotonic()
        self._resync()

    def _resync(self) -> None:
        self.resyncs += 1
        self._held.clear()
        self._request_snapshot()

    def _read_snapshot(self) -> None:
        while True:
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            sync = self._sync
            if len(frames) != 3 or sync is None or frames[1] != sync.token:
                continue  # an answer to a request given up
            kind, _, body = frames
            if kind == SNAP_STATE:
                state = _state.decode(body)
                sync.states[state.instrument.code] = state
            elif kind == SNAP_END:
                self._install(_end.decode(body), sync.states)
            elif kind == SNAP_ERROR:
                self._sync = None
                raise SnapshotRefused(body.decode(errors="replace"))

    def _install(self, end: SnapshotEnd, states: dict[str, InstrumentState]) -> None:
        books = {code: LocalBook.of(state) for code, state in states.items()}
        self._position = end.seq
        self._topic_seq = {name.encode(): n for name, n in end.topics.items()}
        self._sync = None
        self.synced = True
        self._ready.append((Synced(end.seq, self.resyncs > 0), books))
        held, self._held = self._held, deque(maxlen=self._held.maxlen)
        for frames in held:  # after a gap among them, the rest is held for the next snapshot
            self._message(frames)

    # -- the stream --------------------------------------------------------------------------

    def _read_stream(self) -> None:
        """While syncing, hold everything waiting; otherwise take messages until one gives
        updates to return."""
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._heard = time.monotonic()
            self.messages += 1
            if not self.feed_up:  # a message is proof of a connection whose event was missed
                self.feed_up = True
                if self._sync is not None:
                    self._request_snapshot()
            if self._sync is not None:
                self._held.append(frames)
                continue
            self._message(frames)
            if self._ready:
                return

    def _message(self, frames: list[bytes]) -> None:
        if self._sync is not None:
            self._held.append(frames)
            return
        if len(frames) != 3 or len(frames[1]) != HEADER.size:
            return  # not of this feed
        topic, header, payload = frames
        position, topic_first, n = HEADER.unpack(header)
        if topic == HEARTBEAT_TOPIC:
            self._heartbeat(position, payload)
            return
        known = self._topic_seq.get(topic)
        if known is None:  # a topic the snapshot did not name: it is not ours to judge
            return
        if topic_first + n - 1 <= known:
            return  # already in the snapshot
        skip = max(0, known + 1 - topic_first)
        if topic_first + skip != known + 1:
            self._resync()
            return
        try:
            events = _events.decode(payload)
        except msgspec.MsgspecError:
            self.undecodable += 1
            self._resync()
            return
        books = self._books_ahead()
        for event in events[skip:]:
            code = getattr(event, "instrument", None)
            self._ready.append((event, books.get(code) if code else None))
        self._topic_seq[topic] = topic_first + n - 1
        self._position = max(self._position, events[-1].stream_seq)

    def _books_ahead(self) -> dict[str, LocalBook]:
        """The books the events now received apply to: those of the last snapshot queued,
        if one is still waiting to be returned, else the current ones."""
        for update, target in reversed(self._ready):
            if type(update) is Synced:
                return target
        return self.books

    def _heartbeat(self, position: int, payload: bytes) -> None:
        if position < self._position:
            return  # sent before the snapshot was taken
        self._position = position
        topics = _heartbeat.decode(payload).topics
        if any(topics.get(topic_name(topic), 0) != n for topic, n in self._topic_seq.items()):
            self._resync()
