"""GatewayClient: a broker gateway's connection to the engine service (DEALER).

Two flavours over one session logic (`_Session`): `GatewayClient` (blocking calls with
timeouts) and `AsyncGatewayClient` (pyzmq's asyncio sockets). Invariants:
- every NewOrder sent is remembered until the engine answers it (Accepted, Rejected or an
  OrderStatus), with the trading day of the logon it was sent under; `reconnect()` logs on
  again on a fresh connection and resends those of the engine's current day as a RESEND
  frame, which the engine answers with the order's state and never turns into a second
  order. The engine knows the ClOrdIDs of its open day only, so an order sent under another
  day is not resent (it would be taken as new): it is answered locally with `NotResent`;
- a Heartbeat goes out whenever nothing was sent for `heartbeat_ms` while the client is
  waiting, so an idle but alive client keeps its session (the engine ends one silent for
  three intervals, and cancels its orders if cancel-on-disconnect is on);
- replies come back as protocol events (engine.protocol) and session messages
  (engine.gateway.wire), in the order the engine sent them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

import msgspec
import numpy as np
import zmq
import zmq.asyncio

from engine.gateway import wire
from engine.gateway.security import KeyPair, allow_ipv6, secure_client
from engine.protocol import (
    Accepted,
    AmendOrder,
    CancelOrder,
    MassCancel,
    NewOrder,
    PickOrder,
    Rejected,
)


class LogonRefused(ConnectionError):
    pass


class NotResent(msgspec.Struct, frozen=True):
    """A NewOrder left unanswered when the connection was lost, not resent at the reconnect
    because the engine has opened another trading day since it was sent (a resend would be
    taken as a new order of that day). If the engine took it, it ended with its day (the
    member's drop copy or the day's trade report tells); if not, it was never entered."""

    member: int
    cl_ord_id: str
    order: NewOrder
    sent_on: str  # the trading day of the logon it was sent under ("" between days)
    engine_day: str  # the engine's trading day at the reconnect


class _Session:
    """What both flavours share: frames out, replies in, the unanswered NewOrders."""

    def __init__(
        self,
        endpoint: str,
        gateway: str,
        cancel_on_disconnect: bool | None = None,
        heartbeat_ms: int = 1000,
        curve_keys: tuple[KeyPair, bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.curve_keys = curve_keys  # (this gateway's key pair, the engine's public key)
        self.gateway = gateway
        self.cancel_on_disconnect = cancel_on_disconnect
        self.heartbeat_ms = heartbeat_ms
        self.unanswered: dict[tuple[int, str], NewOrder] = {}
        self.sent_on: dict[tuple[int, str], str] = {}  # each unanswered order's logon day
        self.received: deque = deque()
        self.logon: wire.LogonAccepted | None = None
        self.last_sent = time.monotonic()

    def _logon_frames(self) -> list[bytes]:
        logon = wire.Logon(self.gateway, self.cancel_on_disconnect, self.heartbeat_ms)
        return wire.messages_frame([logon])

    def _frames(self, commands: Iterable, resend: bool = False) -> list[bytes]:
        commands = list(commands)
        day = self.logon.date if self.logon is not None else ""
        for command in commands:
            if type(command) is NewOrder:
                key = (command.member, command.cl_ord_id)
                self.unanswered[key] = command
                self.sent_on.setdefault(key, day)  # a resend keeps the day of the first send
        kind, body = wire.messages_frame(commands)
        return [wire.RESEND if resend else kind, body]

    def _take(self, body: bytes) -> list:
        replies = wire.unpack(body)
        for reply in replies:
            kind = type(reply)
            if kind is Accepted or kind is Rejected or kind is wire.OrderStatus:
                self.unanswered.pop((reply.member, reply.cl_ord_id), None)
                self.sent_on.pop((reply.member, reply.cl_ord_id), None)
        return replies

    def _not_resent(self, day: str) -> list[NotResent]:
        """The unanswered NewOrders sent under another trading day than `day` (the engine's
        at a new logon; between days, "", every one may still be resent: the ClOrdIDs of
        the day that ended are kept until the next opens), taken out of `unanswered`."""
        if not day:
            return []
        stale = [key for key in self.unanswered if self.sent_on.get(key, day) != day]
        return [
            NotResent(*key, self.unanswered.pop(key), self.sent_on.pop(key), day) for key in stale
        ]

    def _check_logon(self, replies: list) -> None:
        for reply in replies:
            if isinstance(reply, wire.LogonAccepted):
                self.logon = reply
                return
            if isinstance(reply, wire.SessionRejected):
                raise LogonRefused(f"logon as {self.gateway!r} refused: {reply.text}")

    def _socket_options(self, socket: zmq.Socket) -> None:
        if self.curve_keys is not None:
            secure_client(socket, *self.curve_keys)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, 0)  # keep everything the engine sends us
        socket.setsockopt(zmq.SNDHWM, 100_000)


class GatewayClient(_Session):
    """Blocking client. `submit`, `cancel`, `amend`, `pick`, `mass_cancel` send one command;
    `send` many in one frame; `send_records` a COMMAND_DTYPE array; `replies` and `wait_for`
    read what the engine answered."""

    def __init__(self, endpoint: str, gateway: str, *, context: zmq.Context | None = None,
                 timeout_ms: int = 10_000, **session) -> None:  # fmt: skip
        super().__init__(endpoint, gateway, **session)
        self.context = context or zmq.Context.instance()
        self.timeout_ms = timeout_ms
        self.socket: zmq.Socket | None = None
        self.connect()

    def connect(self) -> wire.LogonAccepted:
        self.socket = self.context.socket(zmq.DEALER)
        self._socket_options(self.socket)
        allow_ipv6(self.socket, self.endpoint)
        self.socket.connect(self.endpoint)
        self._send(self._logon_frames())
        deadline = time.monotonic() + self.timeout_ms / 1000
        while self.logon is None or self.logon.gateway != self.gateway:
            body = self._recv(deadline)
            if body is None:
                wait = f"{self.timeout_ms} ms"
                raise LogonRefused(
                    f"no answer to logon from {self.endpoint} within {wait}: is `cxe serve` "
                    "running there?"
                )
            replies = self._take(body)
            self._check_logon(replies)
            self.received.extend(r for r in replies if not isinstance(r, wire.LogonAccepted))
        return self.logon

    def reconnect(self) -> wire.LogonAccepted:
        """A fresh connection and logon; NewOrders still unanswered are resent (RESEND), those
        sent under another trading day than the engine's now answered with NotResent."""
        self.socket.close(0)
        self.logon = None
        accepted = self.connect()
        self.received.extend(self._not_resent(accepted.date))
        if self.unanswered:
            self._send(self._frames(list(self.unanswered.values()), resend=True))
        return accepted

    def close(self, logout: bool = True) -> None:
        if self.socket is not None:
            if logout:
                self._send(wire.messages_frame([wire.Logout()]))
            self.socket.close(linger=100 if logout else 0)
            self.socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sending -------------------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames, copy=False)
        self.last_sent = time.monotonic()

    def send(self, commands: Iterable) -> None:
        self._send(self._frames(commands))

    def resend(self, commands: Iterable) -> None:
        self._send(self._frames(commands, resend=True))

    def send_records(self, records: np.ndarray) -> None:
        self._send([wire.RECORDS, records.tobytes()])

    def submit(self, cl_ord_id: str, member: int, instrument: str, side: int, price: int,
               qty: int, **fields) -> NewOrder:  # fmt: skip
        order = NewOrder(cl_ord_id, member, instrument, side, price, qty, **fields)
        self.send([order])
        return order

    def cancel(self, cl_ord_id: str, member: int, instrument: str, order_id: int) -> None:
        self.send([CancelOrder(cl_ord_id, member, instrument, order_id)])

    def amend(self, cl_ord_id: str, member: int, instrument: str, order_id: int, price: int,
              qty: int) -> None:  # fmt: skip
        self.send([AmendOrder(cl_ord_id, member, instrument, order_id, price, qty)])

    def pick(self, cl_ord_id: str, member: int, instrument: str, side: int, target: int,
             qty: int) -> None:  # fmt: skip
        self.send([PickOrder(cl_ord_id, member, instrument, side, target, qty)])

    def mass_cancel(self, cl_ord_id: str, member: int, instrument: str = "") -> None:
        self.send([MassCancel(cl_ord_id, member, instrument)])

    def heartbeat(self) -> None:
        self._send(wire.messages_frame([wire.Heartbeat()]))

    # -- receiving ---------------------------------------------------------------------------------

    def _recv(self, deadline: float) -> bytes | None:
        """One body from the engine before `deadline`, sending heartbeats while waiting."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now - self.last_sent >= self.heartbeat_ms / 1000:
                self.heartbeat()
            wait = min(deadline - now, self.heartbeat_ms / 1000)
            if self.socket.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                frames = self.socket.recv_multipart()
                if len(frames) == 2 and frames[0] == wire.MESSAGES:
                    return frames[1]

    def replies(self, timeout_ms: int = 0) -> list:
        """Everything received so far, waiting up to `timeout_ms` for the first if none."""
        deadline = time.monotonic() + timeout_ms / 1000
        if not self.received:
            body = self._recv(deadline) if timeout_ms else self._recv_nowait()
            if body is not None:
                self.received.extend(self._take(body))
        while (body := self._recv_nowait()) is not None:
            self.received.extend(self._take(body))
        out = list(self.received)
        self.received.clear()
        return [r for r in out if not isinstance(r, wire.Heartbeat)]

    def _recv_nowait(self) -> bytes | None:
        try:
            frames = self.socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        return frames[1] if len(frames) == 2 else None

    def wait_for(self, match: Callable[[object], bool], timeout_ms: int | None = None) -> list:
        """Replies up to and including the first that `match`es (TimeoutError if none
        arrives in time); the ones after it stay for the next call."""
        deadline = time.monotonic() + (timeout_ms or self.timeout_ms) / 1000
        seen = []
        while True:
            while self.received:
                reply = self.received.popleft()
                if isinstance(reply, wire.Heartbeat):
                    continue
                seen.append(reply)
                if match(reply):
                    return seen
            body = self._recv(deadline)
            if body is None:
                raise TimeoutError(f"no matching reply within the timeout; got {seen[-5:]}")
            self.received.extend(self._take(body))


class AsyncGatewayClient(_Session):
    """The asyncio flavour: `await AsyncGatewayClient.open(...)`, then the same calls as
    GatewayClient's, awaited, and `await next_replies(timeout_ms)`."""

    def __init__(self, endpoint: str, gateway: str, *, context: zmq.asyncio.Context | None = None,
                 timeout_ms: int = 10_000, **session) -> None:  # fmt: skip
        super().__init__(endpoint, gateway, **session)
        self.context = context or zmq.asyncio.Context.instance()
        self.timeout_ms = timeout_ms
        self.socket: zmq.asyncio.Socket | None = None

    @classmethod
    async def open(cls, endpoint: str, gateway: str, **kwargs) -> AsyncGatewayClient:
        client = cls(endpoint, gateway, **kwargs)
        await client.connect()
        return client

    async def connect(self) -> wire.LogonAccepted:
        self.socket = self.context.socket(zmq.DEALER)
        self._socket_options(self.socket)
        allow_ipv6(self.socket, self.endpoint)
        self.socket.connect(self.endpoint)
        await self._send(self._logon_frames())
        while self.logon is None:
            replies = await self._next(self.timeout_ms)
            if replies is None:
                raise LogonRefused(f"no answer to logon from {self.endpoint}")
            self._check_logon(replies)
            self.received.extend(r for r in replies if not isinstance(r, wire.LogonAccepted))
        return self.logon

    async def _send(self, frames: list[bytes]) -> None:
        await self.socket.send_multipart(frames)
        self.last_sent = time.monotonic()

    async def send(self, commands: Iterable) -> None:
        await self._send(self._frames(commands))

    async def send_records(self, records: np.ndarray) -> None:
        await self._send([wire.RECORDS, records.tobytes()])

    async def submit(self, cl_ord_id: str, member: int, instrument: str, side: int, price: int,
                     qty: int, **fields) -> NewOrder:  # fmt: skip
        order = NewOrder(cl_ord_id, member, instrument, side, price, qty, **fields)
        await self.send([order])
        return order

    async def cancel(self, cl_ord_id: str, member: int, instrument: str, order_id: int) -> None:
        await self.send([CancelOrder(cl_ord_id, member, instrument, order_id)])

    async def mass_cancel(self, cl_ord_id: str, member: int, instrument: str = "") -> None:
        await self.send([MassCancel(cl_ord_id, member, instrument)])

    async def _next(self, timeout_ms: int) -> list | None:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now - self.last_sent >= self.heartbeat_ms / 1000:
                await self._send(wire.messages_frame([wire.Heartbeat()]))
            wait = min(deadline - now, self.heartbeat_ms / 1000)
            if await self.socket.poll(max(1, int(wait * 1000)), zmq.POLLIN):
                frames = await self.socket.recv_multipart()
                if len(frames) == 2 and frames[0] == wire.MESSAGES:
                    return self._take(frames[1])

    async def next_replies(self, timeout_ms: int | None = None) -> list:
        """The next replies (at least one unless the timeout passes: then [])."""
        if self.received:
            out = list(self.received)
            self.received.clear()
        else:
            out = await self._next(timeout_ms or self.timeout_ms) or []
        return [r for r in out if not isinstance(r, wire.Heartbeat)]

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None
