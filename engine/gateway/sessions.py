"""Gateway sessions: who is connected, for which members, and what could not be delivered.

A session is one DEALER connection (its ZeroMQ routing id) that has logged on as a gateway of
the market config. Invariants:
- a routing id belongs to at most one session; a gateway may have several sessions (each
  gets the private events of every member the gateway lists: the drop copy);
- a private event of member m goes to every session of every gateway listing m;
- a frame that cannot be sent (the peer is gone, or its queue is at the high-water mark) is
  kept, in order, for its gateway and sent when the gateway next logs on: nothing addressed to
  a gateway is dropped (a cap, `max_kept_frames`, bounds the memory: beyond it the oldest are
  counted as lost and the gateway is told how many at logon);
- counters per gateway (commands, rejects, malformed, undeliverable, lost) only grow.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

from engine.config import Gateway, MarketConfig

COUNTERS = ("commands", "records", "rejects", "malformed", "undeliverable", "lost", "throttled")


@dataclass
class Session:
    routing_id: bytes
    gateway: Gateway
    cancel_on_disconnect: bool
    heartbeat_ns: int
    last_heard_ns: int


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

    def count(self, gateway_id: str, counter: str, n: int = 1) -> None:
        self.counters[gateway_id][counter] += n

    def log_on(self, session: Session) -> None:
        self.by_routing_id[session.routing_id] = session
        self._routes.clear()

    def log_off(self, routing_id: bytes) -> Session | None:
        session = self.by_routing_id.pop(routing_id, None)
        self._routes.clear()
        return session

    def of_gateway(self, gateway_id: str) -> list[Session]:
        return [s for s in self.by_routing_id.values() if s.gateway.id == gateway_id]

    def routes(self, member: int) -> tuple[bytes, ...]:
        """The routing ids of every session that gets `member`'s private events."""
        found = self._routes.get(member)
        if found is None:
            gateways = self._members.get(member, ())
            found = tuple(rid for rid, s in self.by_routing_id.items() if s.gateway.id in gateways)
            self._routes[member] = found
        return found

    def gateways_of(self, member: int) -> list[str]:
        return self._members.get(member, [])

    def keep(self, gateway_id: str, body: bytes) -> None:
        """Keep a frame the gateway did not get, for its next logon."""
        kept = self.kept[gateway_id]
        kept.append(body)
        self.count(gateway_id, "undeliverable")
        if len(kept) > self.max_kept_frames:
            kept.popleft()
            self.count(gateway_id, "lost")
