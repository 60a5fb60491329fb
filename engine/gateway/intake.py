"""Order-entry intake of the engine service (engine.gateway.service): frames read,
permission checks, sessions logged on and ended.

Invariants:
- a client's frame can never stop the loop: what cannot be decoded, is not permitted, or is
  too large is answered to its sender (or counted where there is no one to answer) and nothing
  is sequenced for it; a message is only queued (`Item`) once it has decoded as a command;
- a gateway acts only for the members its config lists: a records frame with one record of
  another member is refused whole (`_permit_records`), a message likewise; operator commands
  are refused on orders, members' commands on admin (engine.gateway.admin);
- with CURVE a frame is read only if its connection's key (ZMQ User-Id) is a gateway's on
  orders or an operator's on admin and not revoked since it connected (`_admitted`), and a
  Logon must name the key's own gateway;
- answers that need no sequencing keep their place among the turn's items (`Item.replies`);
- a session silent for three heartbeats, logged out or revoked ends; with cancel-on-disconnect
  a MassCancel per member is queued to be sequenced like any command. Silence is counted on
  the engine's running time: a gap between turns past STALL_NS (the process paused or
  swapped out, when no frame was read, even those already on the wire) is added to every
  session's last-heard time, so the engine's own stall never ends a session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.codec import COMMAND_DTYPE
from engine.core.events import rejected
from engine.core.validation import reject_text
from engine.gateway import wire
from engine.gateway.sessions import Session
from engine.protocol import (
    AmendOrder,
    AuctionBid,
    CancelOrder,
    Command,
    MalformedMessage,
    MassCancel,
    NewOrder,
    PickOrder,
    RejectCode,
    encode,
)

MEMBER_COMMANDS = (NewOrder, CancelOrder, AmendOrder, PickOrder, MassCancel, AuctionBid)
STALL_NS = 1_000_000_000  # a gap between turns this long is the engine's stall, not silence
SMALL_FRAME = 8  # records frames up to this size are checked record by record, not with numpy


@dataclass
class Item:
    """One thing to sequence: a decoded command (`wire_bytes` as received) or a records
    frame; `origin` is the routing id of the session (or admin peer) that sent it."""

    origin: bytes | None
    admin: bool
    command: Command | None = None
    wire_bytes: bytes = b""
    records: int = 0  # a records frame: how many (its body is `wire_bytes`)
    resend: bool = False
    replies: list[bytes] | None = None  # an answer that needs no sequencing, kept in order


class Intake:
    """The EngineService's reading of inbound frames (a part of it: the state is its own)."""

    def _admitted(self, rid: bytes, admin: bool) -> bool:
        """Whether the frame's key (self.peer) may use this socket: its kind of identity,
        and not revoked since it connected. A refused frame is answered and not read."""
        prefix = "operator:" if admin else "gateway:"
        self.peers[rid] = self.peer
        if self.peer.startswith(prefix) and rid not in self.revoked_peers:
            return True
        why = "was revoked" if rid in self.revoked_peers else f"is {self.peer or 'unknown'!r}"
        endpoint = "admin" if admin else "orders"
        text = f"this connection's key {why}: the {endpoint} endpoint takes {prefix[:-1]} keys"
        self._refuse(rid, admin, text, RejectCode.UNAUTHORISED)
        return False

    def _take(self, frames: list[bytes], admin: bool, items: list[Item]) -> None:
        """Read one inbound message: queue what is to be sequenced, answer the rest."""
        if len(frames) != 3 or frames[1] not in wire.KINDS:
            self.counters["malformed_frames"] += 1
            if frames:
                kinds = b", ".join(wire.KINDS).decode()
                self._refuse(frames[0], admin, f"expected two frames, a kind ({kinds}) and a body")
            return
        rid, kind, body = frames
        session = None if admin else self.sessions.by_routing_id.get(rid)
        if session is not None:
            session.last_heard_ns = time.monotonic_ns()  # any frame: a records flow too
        try:
            if kind == wire.RECORDS:
                if session is None:
                    raise wire.FrameRefused("log on first (Logon), then send records")
                n = wire.records_count(body)
                self._permit_records(session, body, n)
                items.append(Item(rid, False, records=n, wire_bytes=body))
                self.taken += n  # counted as the gateway's `records` once the run's check passes
                return
            messages = wire.split_messages(body)
        except wire.FrameRefused as exc:
            # a frame it may not send is refused, as a message would be; anything else is
            # malformed (a probe: records for another member counted as malformed)
            unauthorised = exc.code == RejectCode.UNAUTHORISED
            if not unauthorised:
                self.counters["malformed_frames"] += 1
            if session is not None:
                self.sessions.count(session.gateway.id, "rejects" if unauthorised else "malformed")
            self._refuse(rid, admin, str(exc), exc.code)
            return
        self.taken += len(messages)
        for raw in messages:
            self._take_message(rid, admin, session, bytes(raw), kind == wire.RESEND, items)
            if session is None and not admin:
                session = self.sessions.by_routing_id.get(rid)  # a Logon just now

    def _take_message(
        self,
        rid: bytes,
        admin: bool,
        session: Session | None,
        raw: bytes,
        resend: bool,
        items: list[Item],
    ) -> None:
        try:
            message = wire.decode_message(raw)
        except MalformedMessage as exc:
            self.counters["malformed_frames"] += 1
            if session is not None:
                self.sessions.count(session.gateway.id, "malformed")
            reply = rejected(
                0, None, RejectCode.MALFORMED, reject_text(RejectCode.MALFORMED, str(exc))
            )
            self._reply(rid, admin, [encode(reply)])
            return
        if isinstance(message, wire.Logon):
            self._log_on(rid, admin, message)
            return
        if isinstance(message, wire.Heartbeat):
            self._reply(rid, admin, [wire.encode_message(wire.Heartbeat())])
            return
        if isinstance(message, wire.Logout):
            if session is not None:
                self._end_session(rid, "logged out", items)
            return
        if admin:
            self._take_operator(rid, message, raw, items)
            return
        if not isinstance(message, MEMBER_COMMANDS):  # before the logon check: an operator
            name = type(message).__name__  # tool pointed here was told to log on (a probe)
            if session is not None:
                self.sessions.count(session.gateway.id, "rejects")
            text = (f"{name} is an operator command: this is the orders endpoint, send it to "
                    "the admin endpoint")  # fmt: skip
            self._refuse(rid, False, text, RejectCode.UNAUTHORISED)
            return
        if session is None:
            self._refuse(rid, False, "log on first (Logon)", RejectCode.UNAUTHORISED)
            return
        if message.member not in session.gateway.members:
            self.sessions.count(session.gateway.id, "rejects")
            text = reject_text(
                RejectCode.UNAUTHORISED,
                f"gateway {session.gateway.id!r} may act for members "
                f"{session.gateway.members}, not {message.member}",
            )
            self._reply(rid, False, [encode(rejected(0, message, RejectCode.UNAUTHORISED, text))])
            return
        self.sessions.count(session.gateway.id, "commands")
        items.append(Item(rid, False, message, raw, resend=resend))

    def _permit_records(self, session: Session, body: bytes, n: int) -> None:
        """FrameRefused unless every record's member is one the session's gateway lists (a
        lookup per record: no set operation on a frame of one or a few records)."""
        allowed = self.sessions.allowed(session.gateway.id)
        table = self.sessions.allowed_table(session.gateway.id)
        if n <= SMALL_FRAME or table is None:
            members = wire.record_members(body, n)
            bad = [i for i, m in enumerate(members) if m not in allowed]
        else:
            members = np.frombuffer(body, COMMAND_DTYPE)["member"]
            inside = (members >= 0) & (members < len(table))
            bad = np.flatnonzero(~inside | ~table[np.where(inside, members, 0)]).tolist()
        if bad:
            i = bad[0]
            raise wire.FrameRefused(
                f"record {i}: gateway {session.gateway.id!r} may act for members "
                f"{session.gateway.members}, not {int(members[i])}; nothing in the "
                "frame was taken",
                RejectCode.UNAUTHORISED,
            )

    def _log_on(self, rid: bytes, admin: bool, logon: wire.Logon) -> None:
        gateway = self.config.gateway(logon.gateway)
        if admin:  # a gateway pointed at the wrong port
            text = "Logon is for the orders endpoint: this is the admin endpoint (operators)"
            self._refuse(rid, admin, text, RejectCode.UNAUTHORISED)
            return
        if gateway is None:
            self._refuse(rid, admin, f"unknown gateway {logon.gateway!r}", RejectCode.UNAUTHORISED)
            return
        if self.authenticator is not None and self.peer != f"gateway:{gateway.id}":
            text = f"this connection's key is {self.peer!r}: it may not log on as {gateway.id!r}"
            self._refuse(rid, admin, text, RejectCode.UNAUTHORISED)
            return
        cancel = gateway.cancel_on_disconnect
        if logon.cancel_on_disconnect is not None:
            cancel = logon.cancel_on_disconnect
        heartbeat_ms = min(max(logon.heartbeat_ms, 100), 60_000)
        now = time.monotonic_ns()
        self.sessions.log_off(rid)  # a second logon on one connection: its backlog is kept
        self.sessions.log_on(Session(rid, gateway, cancel, heartbeat_ms * 1_000_000, now))
        private = self.exchange.state.private_seq
        kept = self.sessions.kept.pop(gateway.id, ())
        accepted = wire.LogonAccepted(
            gateway.id, list(gateway.members), heartbeat_ms, cancel,
            {m: private.get(m, 0) for m in gateway.members}, len(kept),
            [i.code for i in self.config.instruments], self.exchange.date,
        )  # fmt: skip
        self.outbox[rid].append(wire.encode_message(accepted))
        self._flush_session(rid)
        session = self.sessions.by_routing_id[rid]
        session.backlog.extend(kept)
        self._drain_backlog(session)
        self.log(f"gateway {gateway.id} logged on ({len(kept)} kept frames sent)")

    def _expire_sessions(self, now: int, items: list[Item]) -> None:
        stalled = now - self.last_turn_ns
        self.last_turn_ns = now
        if stalled > STALL_NS and self.sessions.by_routing_id:
            for session in self.sessions.by_routing_id.values():
                session.last_heard_ns += stalled
            self.log(f"the loop stalled for {stalled / 1e9:.1f} s: no session ends for it")
        for rid, session in list(self.sessions.by_routing_id.items()):
            if now - session.last_heard_ns > 3 * session.heartbeat_ns:
                self._end_session(rid, "silent for three heartbeats", items)

    def _end_session(self, rid: bytes, why: str, items: list[Item]) -> None:
        session = self.sessions.log_off(rid)
        if session is None:
            return
        self.log(f"gateway {session.gateway.id} session ended: {why}")
        if session.cancel_on_disconnect:
            for member in session.gateway.members:
                command = MassCancel(f"cancel-on-disconnect-{self.exchange.seq}", member)
                items.append(Item(None, False, command, encode(command)))
