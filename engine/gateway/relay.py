"""A market data relay: one subscriber of the engine's feed that republishes it to many.

The engine's service loop hands each feed message to ZeroMQ once, but its PUB socket then
writes it into one queue per subscriber, in the loop's own thread, and its I/O thread writes
it to every subscriber's connection: the loop's cost per message grows with the number of
subscribers. A relay takes that fan-out off the engine: the engine has one subscriber (the
relay, or a few), the relay has the many. Exchanges run such fan-out tiers on machines of
their own; `cxe relay` runs one (engine.cli.relay).

`FeedRelay(upstream, bind)` is a SUB socket connected to the engine's market data endpoint
and subscribed to everything, an XPUB socket bound for subscribers, and a loop between them
on a thread of its own (`start`); `stop()` ends it, `statistics()` says what it has carried.

Invariants:
- every message the relay receives goes out unchanged, frames and order kept: topic, header
  (both sequence numbers) and payload are the engine's, so a subscriber's gap checks,
  heartbeats and the engine's snapshot service (which subscribers still ask directly: the
  relay serves no snapshots) work through a relay exactly as they do direct
  (engine.gateway.marketdata);
- the relay subscribes upstream to everything once, at start, and forwards no subscription:
  the engine sends it every message whoever is behind it, so a subscriber's first messages
  never wait for its subscription to travel to the engine; the relay's socket filters by
  topic for each subscriber;
- it drops and never blocks, as the engine's feed does: a subscriber whose queue is at the
  high-water mark loses messages (its gap check resyncs it from the engine's snapshots); the
  engine drops for a relay that falls behind in the same way, and each subscriber behind it
  resyncs;
- its subscribers are held to the feed's topics as the engine's are (a SubscriptionGuard,
  engine.gateway.subscriptions): made-up topics are counted per identity and past the limit
  every subscriber's connection ends (and under CURVE the identity is refused on the relay
  until its keys are reloaded), so no reader grows the relay's memory without bound. The
  relay learns the topics from the engine's heartbeats (their payload names every topic);
  subscriptions that come before the first are judged when it comes;
- with CURVE (`security` and `client` given) the relay is a client of the engine's market
  data socket under a market data identity of the config, and a server to its subscribers
  with the config's key table (domain "market_data", failing closed as the engine does) and
  a key pair of its own (`server`) or else the engine's; `reload` rereads the key table and,
  if it revoked a key, ends every subscriber's connection (each is admitted again or
  refused as it reconnects), so no revoked key keeps a subscription;
- a subscriber's frames are subscriptions: one longer than MAX_SUBSCRIPTION_BYTES ends its
  connection (ZeroMQ's MAXMSGSIZE), so no peer makes the relay hold a large message, and
  a subscriber's connection that sends more than a reader may is ended from a thread of its
  own (engine.gateway.readerlimit), so no burst of subscriptions grows the relay before its
  loop can judge them;
- its sockets are used only by the loop's thread while it runs: they are made before it
  starts and touched again (`retarget`, `reload`, closing) only after it has ended; the
  caller holds only the other end of the control pair.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import count

import msgspec
import zmq

from engine.config import Security
from engine.gateway.readerlimit import ReaderByteLimit
from engine.gateway.security import (
    KeyPair,
    allow_ipv6,
    secure_client,
    secure_server,
    server_keys,
    start_authenticator,
)
from engine.gateway.subscriptions import MAX_SUBSCRIPTION_BYTES, SubscriptionGuard
from engine.gateway.topics import HEARTBEAT_TOPIC, MARKET_TOPIC, TOPIC_NAME, Heartbeat
from engine.gateway.zap import ZapHandler

DEFAULT_HWM = 10_000  # messages queued per subscriber, as many as the engine's feed queues
FORWARD_PER_TURN = 1024  # messages the loop forwards before it looks at subscriptions again
STOP = b"STOP"
_controls = count()
_heartbeat = msgspec.msgpack.Decoder(Heartbeat)


@dataclass(frozen=True)
class RelayStatistics:
    """What the relay has carried since it started: messages and bytes received from the
    engine, and sent on to the PUB socket (which then delivers each to every subscriber
    whose subscription matches; a message dropped at a subscriber's high-water mark is not
    counted apart); subscriptions to topics the feed does not have, and the times every
    subscriber's connection was ended for them; subscribers' connections ended for sending
    more than a reader may (engine.gateway.readerlimit), and those that waited to be admitted
    (engine.gateway.zap)."""

    received: int
    received_bytes: int
    sent: int
    sent_bytes: int
    bad_subscriptions: int = 0
    resets: int = 0
    readers_cut: int = 0
    readers_waited: int = 0


class FeedRelay:
    """The relay (module docstring): `start()`, then `stop()`; `endpoint` is where
    subscribers connect (the bound address, a port chosen by the system when `bind` asks
    for one)."""

    def __init__(
        self,
        upstream: str,
        bind: str,
        *,
        hwm: int = DEFAULT_HWM,
        sndbuf: int | None = None,  # the kernel's send buffer per subscriber (bytes)
        security: Security | None = None,
        client: tuple[KeyPair, bytes] | None = None,  # (relay's key pair, engine's public key)
        server: KeyPair | None = None,  # the pair subscribers see; default the engine's
        log: Callable[[str], None] | None = None,  # a line when subscribers are ended
    ) -> None:
        if (security is None) != (client is None):
            raise ValueError(
                "CURVE needs both the market config's [security] section (to admit "
                "subscribers) and the relay's own market data key (to subscribe to the engine)"
            )
        self.upstream = upstream
        self.context = zmq.Context()
        self.authenticator = None
        self.zap: ZapHandler | None = None
        self._thread = threading.Thread(target=self._run, name="cxe-relay", daemon=True)
        self.failure: zmq.ZMQError | None = None  # why the loop ended, if not by stop()
        self.received = self.received_bytes = self.sent = self.sent_bytes = 0
        self.reader_limit: ReaderByteLimit | None = None
        try:
            self._open(bind, hwm, sndbuf, security, client, server, log)
        except BaseException:  # a bad endpoint or key: nothing is left open
            self.stop()
            raise

    def _open(
        self,
        bind: str,
        hwm: int,
        sndbuf: int | None,
        security: Security | None,
        client: tuple[KeyPair, bytes] | None,
        server: KeyPair | None,
        log: Callable[[str], None] | None,
    ) -> None:
        context = self.context
        self.feed = context.socket(zmq.SUB)
        self.feed.setsockopt(zmq.LINGER, 0)
        self.feed.setsockopt(zmq.RCVHWM, hwm)
        if client is not None:
            secure_client(self.feed, *client)
        self.feed.setsockopt(zmq.SUBSCRIBE, b"")
        allow_ipv6(self.feed, self.upstream)
        self.feed.connect(self.upstream)
        self.pub = context.socket(zmq.XPUB)  # a PUB that tells the loop of new subscriptions
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, hwm)
        self.pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        if sndbuf is not None:
            self.pub.setsockopt(zmq.SNDBUF, sndbuf)
        if security is not None:
            secure_server(self.pub, server or server_keys(security), "market_data")
            self.authenticator = start_authenticator(context, security, log)
            self.zap = self.authenticator.zap
        else:  # plain mode: subscribers still come in through the reader limit's admission
            self.zap = ZapHandler(context, None, log)
        self.reader_limit = ReaderByteLimit(  # before the bind
            self.pub, "relay subscribers", log, self.zap
        )
        allow_ipv6(self.pub, bind)
        self.pub.bind(bind)
        self.endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        refuse = None
        if self.authenticator is not None:
            refuse = partial(self.authenticator.refuse, "market_data")
        self.subscriptions = SubscriptionGuard(
            self.pub, self.endpoint, "relay subscribers", refuse=refuse,
            refused_on="the relay", log=log, topics_known=False, fail_unserved=True,
            listener_closed=self.reader_limit.listener_closed,
        )  # fmt: skip
        for topic in (HEARTBEAT_TOPIC, MARKET_TOPIC):
            self.subscriptions.add_topic(topic)
        control = f"inproc://relay-control-{next(_controls)}"
        self._control = context.socket(zmq.PAIR)
        self._control.bind(control)
        self._steer = context.socket(zmq.PAIR)
        self._steer.connect(control)

    def start(self) -> FeedRelay:
        self._thread.start()
        return self

    def retarget(self, upstream: str) -> None:
        """Take the feed from `upstream` instead (an engine restarted on other ports): the
        loop is stopped, the feed socket moved and the loop started again; subscribers stay
        connected and see a gap, as after any loss."""
        self._halt()
        self.feed.disconnect(self.upstream)
        allow_ipv6(self.feed, upstream)
        self.feed.connect(upstream)
        self.upstream = upstream
        self._restart()

    def reload(self, security: Security | None) -> set[str]:
        """Reread the key table (engine.gateway.security.Authenticator.reload): the
        identities revoked. If there are any, every subscriber's connection ends (a PUB
        socket cannot drop one peer): each reconnects and is admitted again or refused, and
        those admitted resync from the gap. zmq.ZMQError if the endpoint cannot be bound
        again: the loop then stays ended (`running` false, `failure` says why)."""
        if self.authenticator is None:
            raise ValueError("the relay runs without CURVE: there are no keys to reload")
        if security is None:
            raise ValueError("the config has no [security] section now: the keys stay")
        revoked = self.authenticator.reload(security)
        if revoked:
            self._halt()
            try:
                self.subscriptions.reconnect()
            except zmq.ZMQError as exc:
                self.failure = exc
                raise
            self._restart()
        return revoked

    def _restart(self) -> None:
        """Run the loop again on the sockets as they are now."""
        self._thread = threading.Thread(target=self._run, name="cxe-relay", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        for socket in (self.feed, self.pub, self._control):
            poller.register(socket, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._control in ready:
                    self._control.recv()  # STOP
                    return
                if self.feed in ready:
                    self._forward()
                if self.pub in ready:
                    self.subscriptions.take()
        except zmq.ZMQError as exc:
            self.failure = exc

    def _forward(self) -> None:
        """Send on the messages waiting from the engine (at most FORWARD_PER_TURN), each
        unchanged; a heartbeat's topics teach the subscription guard the feed's."""
        for _ in range(FORWARD_PER_TURN):
            try:
                frames = self.feed.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if frames[0].bytes == HEARTBEAT_TOPIC:
                self._learn(frames[-1].bytes)
            size = sum(len(frame) for frame in frames)
            self.received += 1  # after the heartbeat's lesson: whoever sees it, sees that
            self.received_bytes += size
            self.pub.send_multipart(frames, zmq.NOBLOCK, copy=False)  # drops at the HWM
            self.sent += 1
            self.sent_bytes += size

    def _learn(self, payload: bytes) -> None:
        try:
            names = {n for n in _heartbeat.decode(payload).topics if TOPIC_NAME.fullmatch(n)}
        except (msgspec.MsgspecError, RecursionError):
            return  # not the engine's heartbeat: nothing to learn from it
        guard = self.subscriptions
        new = [topic for topic in map(str.encode, names) if topic not in guard.prefixes]
        if new or not guard.topics_known:
            guard.learned(new)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def statistics(self) -> RelayStatistics:
        """What the relay has carried since it started, across `retarget`s (RuntimeError if
        it has ended)."""
        if not self.running:
            raise RuntimeError(f"the relay has stopped ({self.failure or 'stop() was called'})")
        guard = self.subscriptions
        return RelayStatistics(
            self.received, self.received_bytes, self.sent, self.sent_bytes,
            guard.bad_subscriptions, guard.resets, self.reader_limit.cut,
            0 if self.zap is None else self.zap.held,
        )  # fmt: skip

    def _halt(self) -> None:
        if self._thread.is_alive():
            self._steer.send(STOP)
            self._thread.join()

    def stop(self) -> None:
        """End the loop and close everything (idempotent)."""
        self._halt()
        if self.reader_limit is not None:
            self.reader_limit.stop()
        if self.zap is not None:
            self.zap.stop()  # the authenticator's, in CURVE mode
            self.zap = self.authenticator = None
        self.context.destroy(linger=0)

    def __enter__(self) -> FeedRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
