"""What a turn of the engine service (engine.gateway.service) sends, after its fsync.

Invariants:
- a member's private events go to each session of each gateway listing the member (drop
  copy); the admin who sent a command gets all its events; public events go to market data
  and clearing's to the trade stream (DATA/trades.log first);
- a send that fails (the high-water mark, a peer gone) and what is for a gateway with no
  session is kept for the gateway (engine.gateway.sessions), never dropped; a session with a
  backlog gets nothing new before its backlog: order is kept;
- a turn hands its private and operator replies to ZeroMQ before its clearing events
  (trades.log, rebuilt from the journal, which already holds the turn) and its public ones:
  an acknowledgement waits for no publishing (a reply deferred to a backlog, or kept for a
  gateway with no session, goes later);
- market data says where it is every HEARTBEAT_NS, busy or idle (a subscriber to some
  instruments hears it while the others trade, so silence always means a lost connection);
  a session hears a Heartbeat when it has had nothing for its heartbeat interval.
"""

from __future__ import annotations

import time
from collections import defaultdict

import zmq

from engine.gateway import wire
from engine.gateway.intake import Item
from engine.gateway.public import PublicRows
from engine.gateway.replies import Encoded
from engine.gateway.sequencing import TradeLogFailed
from engine.gateway.sessions import Session
from engine.protocol import Audience, RejectCode, encode

HEARTBEAT_BODY = wire.pack([wire.encode_message(wire.Heartbeat())])
HEARTBEAT_NS = 1_000_000_000  # market data says where it is every second


class Outbound:
    """The EngineService's routing and sending (a part of it: the state is its own)."""

    def _route(self, item: Item | None, events: list) -> None:
        """Queue each event for its audience: private events to every session of the
        member's gateways; the admin who sent a command gets all its events."""
        outbox, absent, routes = self.outbox, self.absent_outbox, self.sessions.routes
        encoded = [encode(e) for e in events]
        self._queue_public(events)
        for event, data in zip(events, encoded, strict=True):
            if type(event).audience is not Audience.PRIVATE:
                continue
            rids, gateways = routes(event.member)
            for rid in rids:
                outbox[rid].append(data)
            for gateway in gateways:
                absent[gateway].append(data)
        if item is not None and item.admin and item.origin is not None:
            self.admin_outbox[item.origin].extend(encoded)

    def _queue_public(self, part: list | PublicRows) -> None:
        """Queue events for market data and the trade stream (they take theirs): a turn's
        parts in order, consecutive event lists as one (each part is a run to them)."""
        public = self.public
        if isinstance(part, PublicRows):
            public.append(part)
        elif part and public and isinstance(public[-1], list):
            public[-1].extend(part)
        elif part:
            public.append(list(part))

    def _route_encoded(self, encoded: Encoded) -> None:
        """Queue a batch's encoded private events (engine.gateway.replies) as _route does:
        to each session of each gateway listing the member, or kept for a gateway with
        none; one run of events per peer."""
        sessions: dict[bytes, list[int]] = defaultdict(list)
        absent: dict[str, list[int]] = defaultdict(list)
        for member in set(encoded.members[: encoded.count].tolist()):
            rids, gateways = self.sessions.routes(member)
            for rid in rids:
                sessions[rid].append(member)
            for gateway in gateways:
                absent[gateway].append(member)
        for rid, members in sessions.items():
            self.outbox[rid].add_run(*encoded.select(members))
        for gateway, members in absent.items():
            self.absent_outbox[gateway].add_run(*encoded.select(members))

    def _reply(self, rid: bytes, admin: bool, encoded: list[bytes]) -> None:
        """Answer `rid`: after what it sent before in this turn (while the turn's messages are
        being read), or at once (while they are being applied)."""
        if self.items is not None:
            self.items.append(Item(rid, admin, replies=encoded))
        else:
            (self.admin_outbox if admin else self.outbox)[rid].extend(encoded)

    def _refuse(
        self, rid: bytes, admin: bool, text: str, code: RejectCode = RejectCode.MALFORMED
    ) -> None:
        self._reply(rid, admin, [wire.encode_message(wire.SessionRejected(int(code), text))])

    def _flush_session(self, rid: bytes) -> None:
        messages = self.outbox.pop(rid, None)
        if messages:
            self._send_body(rid, messages.body())

    def _send(self) -> None:
        """Send the turn's outputs: the private and operator replies first (an
        acknowledgement waits for no publishing), then the trade stream (DATA/trades.log
        first) and market data."""
        for session in self.sessions.by_routing_id.values():
            if session.backlog:
                self._drain_backlog(session)
        for rid in list(self.outbox):
            self._flush_session(rid)
        for rid, messages in self.admin_outbox.items():
            try:
                self.admin.send_multipart([rid, wire.MESSAGES, wire.pack(messages)], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counters["unknown_peers"] += 1  # an operator tool that has gone away
        self.admin_outbox.clear()
        for gateway, messages in self.absent_outbox.items():
            self.sessions.keep(gateway, messages.body())
        try:
            self.trade_stream.publish_parts(self.public)  # into trades.log, then sent
        except OSError as exc:  # a full disk: the journal has the turn, the file does not
            raise TradeLogFailed(str(exc)) from exc
        if self.public:
            self.market_data.publish_parts(self.public)
        now = time.monotonic_ns()
        if now - self.last_heartbeat_ns > HEARTBEAT_NS:  # busy or idle: silence means loss
            self.market_data.heartbeat()
            self.last_heartbeat_ns = now
        for session in self.sessions.by_routing_id.values():
            if now - session.last_sent_ns >= session.heartbeat_ns and not session.backlog:
                self._send_body(session.routing_id, HEARTBEAT_BODY)

    def _drain_backlog(self, session: Session) -> None:
        backlog = session.backlog
        while backlog:
            try:
                self.orders.send_multipart(
                    [session.routing_id, wire.MESSAGES, backlog[0]], zmq.NOBLOCK
                )
            except zmq.ZMQError:
                return
            backlog.popleft()

    def _send_body(self, rid: bytes, body: bytes) -> None:
        session = self.sessions.by_routing_id.get(rid)
        if session is not None and session.backlog:
            self.sessions.defer(session, body)  # behind what is waiting: order is kept
            return
        try:
            self.orders.send_multipart([rid, wire.MESSAGES, body], zmq.NOBLOCK)
        except zmq.ZMQError:  # EAGAIN at the high-water mark, EHOSTUNREACH once gone
            if session is None:
                self.counters["unknown_peers"] += 1
                return
            self.sessions.defer(session, body)
            return
        if session is not None:
            session.last_sent_ns = time.monotonic_ns()
