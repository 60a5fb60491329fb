"""What a feed's readers may subscribe to: the engine's feed (engine.gateway.marketdata) and a
relay's (engine.gateway.relay) both hold their subscribers to it with one `SubscriptionGuard`.

ZeroMQ keeps every distinct subscription of every connection in the publishing socket (about
170 bytes each: 300,000 made-up topics from one reader cost a PUB socket 51 MB, and nothing
else limits them). So a feed socket is an XPUB: it hands its owner each subscription to a
topic no connection held before, and every frame that is no subscription at all (which an
XPUB queues for its owner, with no limit, where a PUB drops it), each with its connection's
identity (CURVE's User-Id; "" in plain mode). `take` reads them.

Invariants:
- A subscription to a prefix of a topic the feed has (`add_topic`; b"" is one) is free, and
  so is an unsubscription (the socket reports one for each topic a connection that ends
  held, made-up ones too); anything else is bad (`bad_subscriptions`). Past
  MAX_BAD_SUBSCRIPTIONS for one identity (one of its bad frames is forgiven every
  BAD_FORGIVEN_NS: an honest reader with a stale topic in its list, which repeats it at each
  reconnection, was refused after its hundredth, and every reader with it), the identity is
  refused (`refuse`: the
  authenticator's, until the keys are reloaded) and every connection of the socket ends
  (`resets`): that frees what they held, and every other reader reconnects and resyncs by
  itself. Plain mode has no identity to refuse: the offender may connect again and is ended
  again (logged once per RESET_LOG_INTERVAL_NS, the others counted).
- A topic some connection holds already is not reported again, so what is not counted is
  bounded by the topics counted times the connections the process may hold (its file
  descriptors). The notifications queued when the connections end belong to connections that
  have gone: they are read then and not counted (at most MAX_DISCARDED).
- A guard made with `topics_known=False` (a relay, which learns the feed's topics from the
  engine's heartbeats) keeps the subscriptions it cannot judge yet (at most MAX_PENDING: an
  honest feed's readers subscribe to a few distinct prefixes, and a reader that reconnects
  repeats the same ones, which are kept once) and judges them at `learned`; past MAX_PENDING
  it counts each one as bad at once, so nobody grows the socket without bound before the
  topics come.
- A guard made with `fail_unserved` lets the zmq.ZMQError of a reset whose endpoint cannot
  be bound again go to its caller (a relay's loop ends and says why); without, it is logged
  and the owner goes on unserved on that socket (the engine trades on).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import zmq

from engine.gateway.security import not_served, reconnect_all, user_id

MAX_SUBSCRIPTION_BYTES = 4096  # a subscription is a byte and a topic prefix; CURVE handshakes fit
MAX_SUBSCRIPTIONS_PER_CALL = 1024  # subscription notifications one `take` reads
MAX_BAD_SUBSCRIPTIONS = 100  # frames not subscribing to a feed topic, per identity, then refused
BAD_FORGIVEN_NS = 60_000_000_000  # one bad frame of an identity forgiven per minute
MAX_PENDING = 4 * MAX_BAD_SUBSCRIPTIONS  # subscriptions kept until the topics are known
RESET_LOG_INTERVAL_NS = 10_000_000_000  # at most one line about resets per 10 s
MAX_DISCARDED = 100_000  # notifications of ended connections read at once after a reset
SUBSCRIBE, UNSUBSCRIBE = b"\x01", b"\x00"  # the first byte of a subscription frame


class SubscriptionGuard:
    """The subscriptions of `socket` (an XPUB bound at `endpoint`), judged as the module says;
    `name` is what the log calls the feed ("market data", "relay subscribers")."""

    def __init__(
        self,
        socket: zmq.Socket,
        endpoint: str,
        name: str,
        *,
        refuse: Callable[[str], None] | None = None,  # refuse an identity on the feed
        refused_on: str = "",  # what the log says a refused identity is refused on
        log: Callable[[str], None] | None = None,
        topics_known: bool = True,
        fail_unserved: bool = False,
        listener_closed: threading.Event | None = None,  # the socket's monitor's, if it has one
    ) -> None:
        self.socket = socket
        self.endpoint = endpoint
        self.name = name
        self.refused_on = refused_on or name
        self.refuse = refuse
        self.log = log or (lambda line: None)
        self.topics_known = topics_known
        self.fail_unserved = fail_unserved
        self.listener_closed = listener_closed
        self.prefixes: set[bytes] = set()  # every prefix of every topic: what one may take
        self._pending: dict[tuple[bytes, str], None] = {}  # (frame, identity), kept once
        # per identity: bad frames not forgiven yet, and when the last forgiveness is due from
        self._bad: dict[str, tuple[int, int]] = {}
        self._reset_said_ns: int | None = None  # when a reset was last logged
        self._resets_unsaid = 0  # resets since, not logged
        self.bad_subscriptions = 0
        self.resets = 0  # times every connection was ended for made-up topics

    def add_topic(self, topic: bytes) -> None:
        self.prefixes.update(topic[:k] for k in range(len(topic) + 1))

    def learned(self, topics: Iterable[bytes]) -> None:
        """The feed's topics are known now (`topics` added): the subscriptions kept until
        then are judged."""
        for topic in topics:
            self.add_topic(topic)
        self.topics_known = True
        pending, self._pending = self._pending, {}
        for data, identity in pending:
            if self._judge(data, identity):
                return

    def take(self) -> None:
        """Read the subscription notifications waiting (at most MAX_SUBSCRIPTIONS_PER_CALL);
        the first identity past MAX_BAD_SUBSCRIPTIONS is refused and every connection ends
        at once."""
        for _ in range(MAX_SUBSCRIPTIONS_PER_CALL):
            try:
                frame = self.socket.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if self._judge(frame.bytes, user_id(frame)):
                return

    def _judge(self, data: bytes, identity: str) -> bool:
        """Count a bad frame (keep a subscription that cannot be judged yet); True when it
        ended every connection."""
        kind = data[:1]
        if kind == UNSUBSCRIBE:  # also what a connection that ends held, even made-up ones
            return False
        if kind == SUBSCRIBE:
            if data[1:] in self.prefixes:
                return False
            key = (data, identity)
            if not self.topics_known and (key in self._pending or len(self._pending) < MAX_PENDING):
                self._pending[key] = None
                return False
        self.bad_subscriptions += 1
        if self._counted_bad(identity, time.monotonic_ns()) > MAX_BAD_SUBSCRIPTIONS:
            self._end_for(identity)
            return True
        return False

    def _counted_bad(self, identity: str, now: int) -> int:
        """One more bad frame of `identity`: those not forgiven yet, this one included."""
        count, since = self._bad.get(identity, (0, now))
        forgiven = (now - since) // BAD_FORGIVEN_NS
        if forgiven >= count:
            count, since = 0, now
        elif forgiven:
            count, since = count - forgiven, since + forgiven * BAD_FORGIVEN_NS
        self._bad[identity] = (count + 1, since)
        return count + 1

    def reconnect(self) -> None:
        """End every connection; zmq.ZMQError if the endpoint cannot be bound again."""
        reconnect_all(self.socket, self.endpoint, listener_closed=self.listener_closed)
        self._bad.clear()
        self._pending.clear()
        for _ in range(MAX_DISCARDED):  # the ended connections' notifications: not counted
            try:
                self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break

    def _end_for(self, identity: str) -> None:
        refused = self.refuse is not None and identity != ""
        if refused:
            self.refuse(identity)
        try:
            self.reconnect()
        except zmq.ZMQError as exc:
            if self.fail_unserved:
                raise
            self.log(not_served(self.name, exc))
            return
        self.resets += 1
        now = time.monotonic_ns()
        if self._reset_said_ns is not None and now - self._reset_said_ns < RESET_LOG_INTERVAL_NS:
            self._resets_unsaid += 1
            return
        then = (
            f"is refused on {self.refused_on} until the keys are reloaded"
            if refused
            else "may connect again (plain mode has no identity to refuse)"
        )
        named = identity or "a plain-mode reader"
        since = ""
        if self._resets_unsaid:
            since = f" ({self._resets_unsaid} more resets since the last such line)"
        self.log(
            f"{self.name}: {named} sent more than {MAX_BAD_SUBSCRIPTIONS} subscriptions to "
            f"topics the feed does not have (or frames that subscribe to nothing); every feed "
            f"connection ended (the others resync) and it {then}{since}"
        )
        self._reset_said_ns, self._resets_unsaid = now, 0
