"""Gateway sessions: who is connected, for which members, and what could not be delivered.

A session is one DEALER connection (its ZeroMQ routing id) that has logged on as a gateway of
the market config. Invariants:
- a routing id belongs to at most one session; a gateway may have several sessions (each
  gets the private events of every member the gateway lists: the drop copy);
- a private event of member m goes to every session of every gateway listing m;
- a frame that cannot be sent (the peer's queue is at the high-water mark, or the peer is
  gone) goes to the session's backlog, and every later frame behind it, so order is kept; the
  service retries the backlog each turn; when a session ends its backlog is kept for its
  gateway (unless another session of the gateway is still on: it has the same events) and
  sent, first, to the gateway's next logon: nothing addressed to a gateway is
  dropped (a cap, `max_kept_frames`, bounds the memory: beyond it the oldest are counted as
  lost, and the logon says how many frames follow);
- counters per gateway (commands, records, rejects, malformed, undeliverable, lost) only
  grow; `rejects` counts what the gateway sent that was refused, by the core (a Rejected)
  or before it (a SessionRejected for a member or an operator command it may not send).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from engine.config import Gateway, MarketConfig

MAX_TABLE_MEMBER = 1 << 20
COUNTERS = ("commands", "records", "rejects", "malformed", "undeliverable", "lost")


@dataclass
class Session:
    routing_id: bytes
    gateway: Gateway
    cancel_on_disconnect: bool
    heartbeat_ns: int
    last_heard_ns: int
    last_sent_ns: int = 0
    backlog: deque[bytes] = field(default_factory=deque)


@dataclass
class Sessions:
    config: MarketConfig
    max_kept_frames: int = 100_000
    by_routing_id: dict[bytes, Session] = field(default_factory=dict)
    kept: dict[str, deque[bytes]] = field(default_factory=lambda: defaultdict(deque))
    counters: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._members: dict[int, list[str]] = defaultdict(list)
        for gateway in self.config.gateways:
            self.counters[gateway.id] = dict.fromkeys(COUNTERS, 0)
            for member in gateway.members:
                self._members[member].append(gateway.id)
        self._routes: dict[int, tuple[bytes, ...]] = {}
        self._allowed = {g.id: frozenset(g.members) for g in self.config.gateways}
        self._tables: dict[str, np.ndarray] = {}

    def allowed(self, gateway_id: str) -> frozenset[int]:
        """The members a gateway may act for."""
        return self._allowed[gateway_id]

    def allowed_table(self, gateway_id: str) -> np.ndarray | None:
        """A boolean per member id up to the gateway's largest: True for those it may act for
        (a records frame's members are looked up in it); None when an id is negative or
        beyond MAX_TABLE_MEMBER (then members are looked up one by one)."""
        if gateway_id not in self._tables:
            members = sorted(self._allowed[gateway_id])
            table = None
            if all(0 <= m <= MAX_TABLE_MEMBER for m in members):
                table = np.zeros(max(members, default=-1) + 1, dtype=bool)
                table[members] = True
            self._tables[gateway_id] = table
        return self._tables[gateway_id]

    def count(self, gateway_id: str, counter: str, n: int = 1) -> None:
        self.counters[gateway_id][counter] += n

    def log_on(self, session: Session) -> None:
        self.by_routing_id[session.routing_id] = session
        self._routes.clear()

    def log_off(self, routing_id: bytes) -> Session | None:
        """End a session; its backlog is kept for the gateway's next logon."""
        session = self.by_routing_id.pop(routing_id, None)
        self._routes.clear()
        if session is not None and self.of_gateway(session.gateway.id):
            session.backlog.clear()  # its gateway's other sessions have the same events
        if session is not None and session.backlog:
            kept = self.kept[session.gateway.id]
            kept.extend(session.backlog)
            while len(kept) > self.max_kept_frames:
                kept.popleft()
                self.count(session.gateway.id, "lost")
        return session

    def of_gateway(self, gateway_id: str) -> list[Session]:
        return [s for s in self.by_routing_id.values() if s.gateway.id == gateway_id]

    def routes(self, member: int) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
        """Where `member`'s private events go: the routing ids of every session of the
        member's gateways, and the gateways with no session (their frames are kept)."""
        found = self._routes.get(member)
        if found is None:
            gateways = self._members.get(member, ())
            sessions = [(rid, s.gateway.id) for rid, s in self.by_routing_id.items()]
            rids = tuple(rid for rid, gateway in sessions if gateway in gateways)
            present = {gateway for _, gateway in sessions}
            absent = tuple(gateway for gateway in gateways if gateway not in present)
            found = self._routes[member] = (rids, absent)
        return found

    def keep(self, gateway_id: str, body: bytes) -> None:
        """A frame for a gateway with no session: kept for its next logon."""
        kept = self.kept[gateway_id]
        kept.append(body)
        self.count(gateway_id, "undeliverable")
        if len(kept) > self.max_kept_frames:
            kept.popleft()
            self.count(gateway_id, "lost")

    def defer(self, session: Session, body: bytes) -> None:
        """A frame the session could not take now: behind the rest of its backlog."""
        session.backlog.append(body)
        self.count(session.gateway.id, "undeliverable")
        if len(session.backlog) > self.max_kept_frames:
            session.backlog.popleft()
            self.count(session.gateway.id, "lost")
