"""Market data: the public event stream on a PUB socket and its snapshot service (the zguide
Clone pattern); `engine.gateway.marketdata_client.MarketDataClient` is the other end, which
keeps a local book per instrument from both.

The feed (docs/MARKETDATA.md has the byte layouts):

- Every message on the PUB socket is three frames: [topic, header, payload].
  The topic is the instrument code and a full stop (b"CEA25."): a subscription to b"CEA2."
  never matches CEA25 (codes are [A-Z0-9_]+, so the stop cannot occur inside one). Public
  events that name no instrument go on b"*.", and heartbeats on b"*HB"; a subscriber taking
  some instruments also subscribes to b"*", which gives both.
  The header is HEADER (>QQI, 20 bytes): the public stream number (`stream_seq`) of the
  message's first event, the topic's own number of that event, and the event count n.
  The payload is one msgpack array of the n protocol events, as `engine.protocol` encodes
  them, each with its own public stream number (increasing within the message); their
  topic numbers are t .. t+n-1.
- Two sequences: the public stream numbers every public event of the market gap-free (the
  engine's `stream_seq`; they survive a restart). Each topic also numbers its own events
  gap-free from 1 (the publisher's; they restart with it). A subscriber checks the topic
  numbers of the topics it takes: it sees all of them, whatever else it filters out, so a
  missing message shows as a topic number that does not follow. The public stream number
  places each event and the snapshot in the market's one order.
- One `publish` call (a turn of the service loop) sends one message per topic (split past
  `max_batch` events), the topics in the order of their last event: fewer, larger messages
  than one per run of a topic, and the turn's last message ends at its last public event.
  Within a topic events keep their order; across topics only turn by turn.
- A heartbeat (`MarketDataPublisher.heartbeat`) says where the stream is: its header holds
  the public stream position (topic number and count 0) and its payload maps every topic to
  its position, so a subscriber notices the loss of a stream's last messages while the
  market is quiet. The service sends one every second, busy or idle: a subscriber that hears
  nothing for a few seconds has lost its connection (engine.gateway.marketdata_client).
- Snapshots (ROUTER, the Clone pattern): a client sends [b"SNAP?", token, codes] (token 1-32
  bytes of its choosing, codes a msgpack array of instrument codes, empty for all); the
  reply is one [b"INST", token, InstrumentState] per instrument, in code order, then
  [b"DONE", token, SnapshotEnd]: the public stream position and each topic's position the
  states are as of. A request that is not of this form gets [b"ERR", token or b"", text].

Invariants:
- Only public events (`Audience.PUBLIC`) leave the publisher; every public event goes out
  once, in one message, with its public stream number and its topic number.
- The publisher never blocks the service loop: the PUB socket drops a message for a
  subscriber whose queue is at its high-water mark (ZeroMQ's rule; the subscriber's gap
  check covers it) and every send is non-blocking; a send ZeroMQ refuses is counted
  (`send_failures`, `snapshot_failures`), never raised.
- A snapshot is answered only when the publisher has published every public event the
  exchange has emitted (`exchange.state.public_seq`): its depth, phase and indicative come
  from the exchange, its last trade from the stream, and both are as of the same position,
  which is a turn's end. A request that arrives earlier waits for the `publish` that
  catches up.
- `handle` never raises on what a peer sends: a malformed request is answered ERR and
  counted (`bad_requests`); frames beyond MAX_REQUEST_BYTES disconnect the peer (ZeroMQ's
  MAXMSGSIZE), and on the feed socket, whose peers only subscribe, frames beyond
  MAX_SUBSCRIPTION_BYTES (engine.gateway.subscriptions).
- Subscriptions cannot grow the engine's memory without bound: the feed socket is an XPUB
  and the loop (`handle`) holds its subscribers to the feed's topics with a
  `SubscriptionGuard` (engine.gateway.subscriptions: made-up topics counted per identity,
  past the limit the identity refused on the feed and snapshots and every feed connection
  ended, `bad_subscriptions`, `feed_resets`), and a `ReaderByteLimit`
  (engine.gateway.readerlimit) ends a subscriber's connection past the bytes a reader may
  send, from a thread of its own, since libzmq files subscriptions before the loop can
  judge them (`readers_cut`); with the context's ZAP handler (`zap`) it also admits
  subscribers' connections a few at a time, before they can subscribe (`readers_waited`,
  `readers_unanswered`); `close` stops it before the sockets close. The snapshot service
  (ZAP domain "snapshots" in CURVE mode) is not admitted so: it holds no subscriptions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

import msgspec
import numpy as np
import zmq

from engine.gateway.public import PublicRows, PublicRun, event_run
from engine.gateway.readerlimit import ReaderByteLimit
from engine.gateway.security import allow_ipv6, reconnect_all
from engine.gateway.subscriptions import MAX_SUBSCRIPTION_BYTES, SubscriptionGuard
from engine.gateway.topics import (
    HEARTBEAT_TOPIC,
    MARKET_TOPIC,
    Heartbeat,
    topic_name,
    topic_of,
)
from engine.gateway.zap import ZapHandler
from engine.instruments import Instrument
from engine.protocol import (
    Event,
    TradePrint,
)
from engine.types import Phase, Side

HEADER = struct.Struct(">QQI")  # first public stream number, first topic number, event count

SNAP_REQUEST = b"SNAP?"
SNAP_STATE = b"INST"
SNAP_END = b"DONE"
SNAP_ERROR = b"ERR"

MAX_BATCH = 256  # events per message at most
MAX_REQUESTS_PER_CALL = 16  # snapshot requests one `handle` call answers (the loop goes on)
MAX_REQUEST_BYTES = 64 * 1024
MAX_TOKEN = 32
DEFAULT_SNDHWM = 10_000  # messages queued per subscriber before the PUB drops
CALL_PHASES = frozenset({Phase.CALL, Phase.CLOSING_CALL})


class InstrumentState(msgspec.Struct, frozen=True):
    """One instrument as a snapshot gives it (and as the client's book compares):
    depth levels (price, qty, orders) best first; `indicative` (price, volume, imbalance) in
    call phases only, None otherwise; `last_trade` None when none was printed since the
    publisher started."""

    instrument: Instrument
    phase: Phase
    reference: int
    band_low: int
    band_high: int
    bids: list[tuple[int, int, int]]
    asks: list[tuple[int, int, int]]
    indicative: tuple[int, int, int] | None
    last_trade: TradePrint | None


class SnapshotEnd(msgspec.Struct, frozen=True):
    """The end marker: the states are as of public stream number `seq`, and each topic
    (by name: "CEA25.", "*.") had published up to its number in `topics`."""

    seq: int
    topics: dict[str, int]


_encode = msgspec.msgpack.Encoder().encode
_codes = msgspec.msgpack.Decoder(list[str])
_print = msgspec.msgpack.Decoder(TradePrint)


class MarketDataPublisher:
    """The service's market data: call `publish(events)` with the events of what it applied
    (once per loop turn with all of them: a message carries a run of one topic's events, so
    fewer calls mean fewer, larger messages; `publish_parts` when some come encoded from a
    batch's rows), poll `sockets` for input and pass a readable one to `handle`;
    `heartbeat()` every second."""

    def __init__(
        self,
        context: zmq.Context,
        pub_endpoint: str,
        snapshot_endpoint: str,
        exchange,
        *,
        sndhwm: int = DEFAULT_SNDHWM,
        sndbuf: int | None = None,
        max_batch: int = MAX_BATCH,
        secure: Callable[[zmq.Socket, str], None] | None = None,  # (socket, ZAP domain): hardening
        zap: ZapHandler | None = None,  # the context's ZAP handler: readers come in as it admits
        affinity: int = 0,  # the context's I/O threads the PUB socket's connections use (bits)
        refuse: Callable[[str], None] | None = None,  # refuse an identity on the feed
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.exchange = exchange
        self.max_batch = max_batch
        self._zap = zap
        self.pub = context.socket(zmq.XPUB)  # a PUB that tells the loop of new subscriptions
        self.pub.setsockopt(zmq.AFFINITY, affinity)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, sndhwm)
        self.pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)  # subscribers only subscribe
        if sndbuf is not None:  # the kernel's send buffer per connection (bytes)
            self.pub.setsockopt(zmq.SNDBUF, sndbuf)
        if secure is not None:
            secure(self.pub, "market_data")
        self.reader_limit = ReaderByteLimit(self.pub, "market data", log, zap)  # before the bind
        try:
            allow_ipv6(self.pub, pub_endpoint)
            self.pub.bind(pub_endpoint)
            self.router = context.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unsendable reply raises
            self.router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
            if secure is not None:
                secure(self.router, "snapshots")
            # the feed's readers reach this socket too: its bytes and connections are limited
            # the same way, without the feed's admission
            self.snapshot_limit = ReaderByteLimit(self.router, "snapshots", log)
            allow_ipv6(self.router, snapshot_endpoint)
            self.router.bind(snapshot_endpoint)
        except BaseException:  # the caller's context closes the sockets: the threads end first
            self.reader_limit.stop()
            if hasattr(self, "snapshot_limit"):
                self.snapshot_limit.stop()
            raise
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self.snapshot_endpoint = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sequence = exchange.state.public_seq  # the last public stream number published
        self._topics = {code: topic_of(code) for code in sorted(exchange.markets)}
        self._topic_seq = {topic: 0 for topic in (*self._topics.values(), MARKET_TOPIC)}
        codes = [i.code for i in exchange.config.instruments]
        self._topic_list = [*map(topic_of, codes), MARKET_TOPIC]  # topics by index
        self._topic_index = {code: k for k, code in enumerate(codes)}
        self._market_index = len(codes)
        self.subscriptions = SubscriptionGuard(
            self.pub, self.pub_endpoint, "market data", refuse=refuse,
            refused_on="market data and snapshots", log=log,
            listener_closed=self.reader_limit.listener_closed,
        )  # fmt: skip
        for topic in (*self._topic_list, HEARTBEAT_TOPIC):
            self.subscriptions.add_topic(topic)
        self._last_trade: dict[str, bytes] = {}  # the last TradePrint, encoded
        self._waiting: list[tuple[bytes, bytes, list[str]]] = []  # snapshot requests
        self.messages_sent = 0
        self.events_sent = 0
        self.send_failures = 0  # messages ZeroMQ refused (PUB drops at the HWM are silent)
        self.stream_breaks = 0  # public events that did not follow the last one published
        self.snapshots_sent = 0
        self.snapshot_failures = 0  # replies ZeroMQ refused (peer gone, its queue full)
        self.bad_requests = 0

    @property
    def bad_subscriptions(self) -> int:
        return self.subscriptions.bad_subscriptions

    @property
    def feed_resets(self) -> int:
        """Times every feed connection was ended for made-up topics."""
        return self.subscriptions.resets

    @property
    def readers_cut(self) -> int:
        """Subscribers' and snapshot clients' connections ended: for sending more than a
        reader may, or past the socket's cap on connections (engine.gateway.readerlimit)."""
        return self.reader_limit.cut + self.snapshot_limit.cut

    @property
    def readers_waited(self) -> int:
        """Subscribers' handshakes that had to wait for admission (engine.gateway.zap)."""
        return 0 if self._zap is None else self._zap.held

    @property
    def readers_unanswered(self) -> int:
        """Of those, the ones left unanswered (each reader's ZeroMQ connects again)."""
        return 0 if self._zap is None else self._zap.unanswered

    def counters(self) -> dict[str, int]:
        """What the publisher has done and refused, for the engine's status report."""
        names = ("messages_sent", "events_sent", "send_failures", "stream_breaks",
                 "snapshots_sent", "snapshot_failures", "bad_requests", "bad_subscriptions",
                 "feed_resets", "readers_cut", "readers_waited", "readers_unanswered")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    @property
    def sockets(self) -> tuple[zmq.Socket, ...]:
        """What the service loop polls for input: snapshot requests and subscriptions."""
        return (self.router, self.pub)

    @property
    def limits(self) -> tuple[ReaderByteLimit, ReaderByteLimit]:
        return self.reader_limit, self.snapshot_limit

    def close(self) -> None:
        self.reader_limit.stop()
        self.snapshot_limit.stop()
        self.pub.close(0)
        self.router.close(0)

    def end_connections(self) -> None:
        """End every subscriber's and snapshot client's connection (after a key revocation:
        each reconnects and is admitted again or refused); the snapshot requests waiting
        leave with their peers. zmq.ZMQError if an endpoint cannot be bound again."""
        self._waiting.clear()
        self.subscriptions.reconnect()
        reconnect_all(
            self.router, self.snapshot_endpoint, listener_closed=self.snapshot_limit.listener_closed
        )

    # -- the stream ----------------------------------------------------------------------------

    def publish(self, events: Iterable[Event]) -> None:
        """Send the public ones among `events` (the exchange's output, in order): one message
        per topic (of at most `max_batch` events), topics in the order of their last event."""
        self.publish_parts([events])

    def publish_parts(self, parts: Sequence[Iterable[Event] | PublicRows]) -> None:
        """`publish` for a turn's events in parts, in order: event objects, or a batch's
        events encoded from its rows (engine.gateway.public)."""
        runs = [
            p.public if isinstance(p, PublicRows) else event_run(p, self._topic_of) for p in parts
        ]
        runs = [r for r in runs if len(r)]
        if runs:
            run = PublicRun.join(runs)
            seqs = run.seqs
            self.stream_breaks += int(seqs[0] != self.sequence + 1)
            self.stream_breaks += int(np.count_nonzero(seqs[1:] - seqs[:-1] != 1))
            self.sequence = int(seqs[-1])
            self._keep_last_trades(run)
            topics = self._topic_list
            for index, seq, count, payload in run.messages(len(topics), self.max_batch):
                self._send(topics[index], seq, count, payload)
        if self._waiting and self._caught_up():
            self._answer_waiting()

    def _topic_of(self, event: Event) -> int:
        """The index in `_topic_list` of an event's topic (an unknown code gets one)."""
        code = getattr(event, "instrument", None)
        if not code:
            return self._market_index
        index = self._topic_index.get(code)
        if index is None:
            index = self._topic_index[code] = len(self._topic_list)
            self._topic_list.append(topic_of(code))
            self.subscriptions.add_topic(self._topic_list[-1])
        return index

    def _keep_last_trades(self, run: PublicRun) -> None:
        """Each instrument's last TradePrint of the run, kept encoded for snapshots."""
        prints = np.flatnonzero(run.prints)
        if not prints.size:
            return
        newest_first = prints[::-1]
        topics, at = np.unique(run.topics[newest_first], return_index=True)
        for index, event in zip(topics.tolist(), newest_first[at].tolist(), strict=True):
            self._last_trade[self._topic_list[index][:-1].decode()] = run.event(event)

    def _send(self, topic: bytes, stream_seq: int, count: int, payload: bytes) -> None:
        seqs = self._topic_seq
        first = seqs.get(topic, 0) + 1
        seqs[topic] = first + count - 1
        header = HEADER.pack(stream_seq, first, count)
        try:
            self.pub.send_multipart((topic, header, payload), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.send_failures += 1
            return
        self.messages_sent += 1
        self.events_sent += count

    def heartbeat(self) -> None:
        """Tell subscribers where every topic is (after the turn's `publish`)."""
        header = HEADER.pack(self.sequence, 0, 0)
        body = _encode(Heartbeat({topic_name(t): n for t, n in self._topic_seq.items()}))
        try:
            self.pub.send_multipart((HEARTBEAT_TOPIC, header, body), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.send_failures += 1

    # -- snapshots ---------------------------------------------------------------------------

    def handle(self, socket: zmq.Socket) -> None:
        """Read the snapshot requests waiting on `socket` (at most MAX_REQUESTS_PER_CALL) and
        answer them, a malformed one answered ERR and counted; or the feed's subscriptions."""
        if socket is self.pub:
            self.subscriptions.take()
            return
        if socket is not self.router:
            raise ValueError("MarketDataPublisher.handle takes one of its own `sockets`")
        for _ in range(MAX_REQUESTS_PER_CALL):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._request(frames)
        if self._waiting and self._caught_up():
            self._answer_waiting()

    def _request(self, frames: list[bytes]) -> None:
        peer, parts = frames[0], frames[1:]
        token = parts[1] if len(parts) > 1 and 0 < len(parts[1]) <= MAX_TOKEN else b""
        problem = None
        codes: list[str] = []
        if len(parts) != 3 or parts[0] != SNAP_REQUEST:
            problem = "expected three frames: SNAP?, a token of 1-32 bytes, a msgpack list"
        elif not token:
            problem = f"the token must be 1-{MAX_TOKEN} bytes"
        else:
            try:
                codes = _codes.decode(parts[2])
            except msgspec.MsgspecError:
                problem = "the third frame must be a msgpack array of instrument codes"
            else:
                unknown = sorted(set(codes) - set(self._topics))
                if unknown:
                    problem = f"no such instrument: {', '.join(unknown)}"
        if problem is not None:
            self.bad_requests += 1
            self._reply(peer, (SNAP_ERROR, token, problem.encode()))
            return
        self._waiting.append((peer, token, sorted(set(codes)) or list(self._topics)))

    def _caught_up(self) -> bool:
        return self.sequence == self.exchange.state.public_seq

    def _answer_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        for peer, token, codes in waiting:
            states = [(SNAP_STATE, token, _encode(self.instrument_state(c))) for c in codes]
            topics = {topic_name(self._topics[c]): self._topic_seq[self._topics[c]] for c in codes}
            topics[topic_name(MARKET_TOPIC)] = self._topic_seq[MARKET_TOPIC]
            end = (SNAP_END, token, _encode(SnapshotEnd(self.sequence, topics)))
            if all(self._reply(peer, frames) for frames in (*states, end)):
                self.snapshots_sent += 1

    def _reply(self, peer: bytes, frames: tuple[bytes, ...]) -> bool:
        try:
            self.router.send_multipart((peer, *frames), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.snapshot_failures += 1
            return False
        return True

    def instrument_state(self, code: str) -> InstrumentState:
        """The instrument as of the last event published: the exchange's own views."""
        market = self.exchange.markets[code]
        book = market.book
        bids, asks = book.order_counts()
        return InstrumentState(
            market.instrument,
            market.phase,
            market.reference,
            *market.band,
            book.side_depth(Side.BUY, bids),
            book.side_depth(Side.SELL, asks),
            market.published_indicative if market.phase in CALL_PHASES else None,
            _print.decode(self._last_trade[code]) if code in self._last_trade else None,
        )
