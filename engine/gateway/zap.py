"""The ZAP handler of a ZeroMQ context: the thread libzmq asks, during each handshake on a
socket with a ZAP domain, whether the peer may connect (ZeroMQ RFC 27).

It decides two things. Who: a CURVE key is admitted if `identify` names an identity for it
on the socket's domain (engine.gateway.security's key table), and a NULL peer (no key) only in
plain mode, where `identify` is None. When: a domain may have a gate
(engine.gateway.readerlimit's admission of feed readers), asked only for a peer the who-check
admitted. Nothing a peer sends reaches its socket before the answer: libzmq holds the
connection in its handshake until then.

Invariants:
- a handshake its gate does not let in now waits, and is never refused: libzmq 4.3
  terminates a connecting session whose handshake the server refused and never reconnects
  it (seen here with 300, 400 and 500 alike), so only a key that is not admitted is refused
  (400). The gate is asked again every RETRY_MS. Those waiting come in by source in turn
  (an identity under CURVE, else an address: `source_of`), each source's oldest first, so a
  source that floods waits behind its own handshakes, not others'. One source may have
  MAX_HELD_PER_SOURCE waiting and all together MAX_HELD; past that, or after HOLD_MS, a
  handshake is left unanswered: libzmq ends it when the socket's HANDSHAKE_IVL runs out (a
  gated socket's is HOLD_MS and a little more) and the peer's ZeroMQ connects again;
- a new handshake comes in at once only when none is waiting (else it would pass them);
- an admission is spent (`Gate.took`) only when the answer was delivered: an answer to a
  session that ended while it waited (a peer that hung up mid-handshake) is not delivered
  (ROUTER_MANDATORY) and costs nothing (`gone`), so abandoned handshakes cannot use up the
  admissions of those still waiting;
- one handler per context, bound at ZAP_ENDPOINT before any socket with a ZAP domain binds;
  a socket with ZMQ_ZAP_ENFORCE_DOMAIN refuses every handshake while none is bound;
- a request that is not RFC 27's (libzmq's own: none is expected) is counted and answered
  400 when it has a request id; a fault of the thread's own is logged once and it goes on:
  a handler that ended would stop every handshake of the context;
- `stop` ends the thread and closes its socket (by the owner, before the context closes).
"""

from __future__ import annotations

import errno
import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq looks for a context's handler
ZAP_VERSION = b"1.0"
WAKE_MS = 50  # how often the thread looks for `stop` when nothing happens
RETRY_MS = 5  # how often a gate is asked again for the handshakes waiting
HOLD_MS = 3000  # how long a handshake waits for its gate before it is left unanswered
MAX_HELD = 2048  # handshakes waiting at once
MAX_HELD_PER_SOURCE = MAX_HELD // 2  # of them, from one source (an identity, an address)
MAX_REQUESTS_PER_TURN = 1024  # requests read between two looks at `stop`
LOG_INTERVAL_NS = 10_000_000_000  # at most one line about waiting handshakes per 10 s

# identify(domain, z85_public_key): the identity admitted, or None
Identify = Callable[[str, bytes], "str | None"]


class Gate(Protocol):
    """When a domain's peers may come in (engine.gateway.readerlimit's admission)."""

    def open(self) -> bool:
        """May one more come in now?"""

    def took(self) -> None:
        """One came in (its handshake's answer was delivered)."""


@dataclass
class _Waiting:
    since_ns: int  # time.monotonic_ns() when the request came
    envelope: list[bytes]  # the session's routing id and the delimiter
    request_id: bytes
    domain: str
    identity: str


def source_of(address: bytes, identity: str) -> str:
    """Whose turn a waiting handshake takes: its identity (CURVE), else its address (an IPv6
    one by its /64); every loopback address is one source, as is a peer with no address."""
    if identity:
        return identity
    try:
        ip = ipaddress.ip_address(address.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return "local"
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ZapHandler:
    """Answers the ZAP requests of `context` (module docstring). `identify` None is plain
    mode: NULL peers are admitted and CURVE keys refused."""

    def __init__(
        self,
        context: zmq.Context,
        identify: Identify | None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.identify = identify
        self.log = log or (lambda line: None)
        self.gates: dict[str, Gate] = {}  # by domain: may a peer come in now?
        self.admitted = 0
        self.refused = 0  # keys not admitted (answered 400)
        self.held = 0  # handshakes that had to wait: the domain's gate was shut
        self.unanswered = 0  # of those, left unanswered (HOLD_MS passed, or too many waited)
        self.gone = 0  # answers not delivered: the connection had ended (costs no admission)
        self.malformed = 0  # requests that were not RFC 27's
        self.faults = 0
        self._context = context
        self._stopping = threading.Event()
        self._bound = threading.Event()
        self._bind_error: zmq.ZMQError | None = None
        self._said_ns: int | None = None  # when waiting handshakes were last logged
        self._queues: dict[str, deque[_Waiting]] = {}  # by source, oldest first
        self._turns: deque[str] = deque()  # the sources waiting, the next to be served first
        self._waiting = 0  # handshakes in the queues
        self._thread = threading.Thread(target=self._run, name="cxe-zap", daemon=True)
        self._thread.start()
        self._bound.wait()
        if self._bind_error is not None:
            self._thread.join()
            raise self._bind_error

    def gate(self, domain: str, gate: Gate) -> None:
        """From now on a peer of `domain` comes in only when `gate.open()` says so (asked from
        this handler's thread), and `gate.took()` is told of each that came in."""
        self.gates = {**self.gates, domain: gate}  # one assignment: the thread reads it

    def ask_to_stop(self) -> None:
        """Tell the thread to end, without waiting (it notices within WAKE_MS)."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        socket = self._context.socket(zmq.ROUTER)  # a ROUTER may leave a request unanswered
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an answer to an ended session raises
        try:
            socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._bind_error = exc
            socket.close(0)
            self._bound.set()
            return
        self._bound.set()
        try:
            while not self._stopping.is_set():
                if socket.poll(RETRY_MS if self._waiting else WAKE_MS):
                    for _ in range(MAX_REQUESTS_PER_TURN):
                        try:
                            request = socket.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._serve(socket, request)
                if self._waiting:
                    self._serve_waiting(socket)
        except zmq.ContextTerminated:  # the owner's context closed under it
            pass
        finally:
            socket.close(0)

    def _serve(self, socket: zmq.Socket, request: list[bytes]) -> None:
        """Answer one request (envelope and ZAP frames), or keep it waiting for its gate."""
        try:
            envelope, frames = request[:2], request[2:]
            if len(frames) < 6 or frames[0] != ZAP_VERSION:
                self.malformed += 1
                if len(frames) >= 2:
                    _deliver(socket, envelope, _reply(frames[1], b"400", b"bad request"))
                return
            request_id, domain_bytes, address, _routing_id, mechanism = frames[1:6]
            domain = domain_bytes.decode("utf-8", "replace")
            identity = self._who(domain, mechanism, frames[6:])
            if identity is None:
                self.refused += 1
                _deliver(socket, envelope, _reply(request_id, b"400", b"key not admitted"))
                return
            waiting = _Waiting(time.monotonic_ns(), envelope, request_id, domain, identity)
            gate = self.gates.get(domain)
            if gate is None or (not self._waiting and gate.open()):  # none waits before it
                self._admit(socket, waiting, gate)
            else:
                self._wait(waiting, source_of(address, identity))
        except zmq.ContextTerminated:
            raise
        except Exception as exc:  # a fault of its own: the next handshake is still answered
            self._fault(exc)

    def _wait(self, waiting: _Waiting, source: str) -> None:
        self.held += 1
        self._say_waiting(waiting.domain)
        queue = self._queues.get(source)
        if self._waiting >= MAX_HELD or (queue is not None and len(queue) >= MAX_HELD_PER_SOURCE):
            self.unanswered += 1
            return
        if queue is None:
            queue = self._queues[source] = deque()
            self._turns.append(source)
        queue.append(waiting)
        self._waiting += 1

    def _serve_waiting(self, socket: zmq.Socket) -> None:
        """Let go of the handshakes that waited HOLD_MS, then admit those the gates let in:
        one source after another, each its oldest first."""
        too_old = time.monotonic_ns() - HOLD_MS * 1_000_000
        try:
            for source in list(self._turns):
                queue = self._queues[source]
                while queue and queue[0].since_ns < too_old:
                    queue.popleft()
                    self._waiting -= 1
                    self.unanswered += 1
                if not queue:
                    self._forget(source)
            while self._turns:
                source = self._turns[0]
                queue = self._queues[source]
                gate = self.gates.get(queue[0].domain)
                if gate is not None and not gate.open():
                    return
                waiting = queue.popleft()
                self._waiting -= 1
                if queue:
                    self._turns.rotate(-1)  # its next one waits for the others' turns
                else:
                    self._forget(source)
                self._admit(socket, waiting, gate)
        except zmq.ContextTerminated:
            raise
        except Exception as exc:
            self._fault(exc)

    def _forget(self, source: str) -> None:
        del self._queues[source]
        self._turns.remove(source)

    def _admit(self, socket: zmq.Socket, waiting: _Waiting, gate: Gate | None) -> None:
        reply = _reply(waiting.request_id, b"200", b"OK", waiting.identity.encode())
        if not _deliver(socket, waiting.envelope, reply):
            self.gone += 1  # its connection ended while it waited: it costs no admission
            return
        self.admitted += 1
        if gate is not None:
            gate.took()

    def _say_waiting(self, domain: str) -> None:
        now = time.monotonic_ns()
        if self._said_ns is None or now - self._said_ns >= LOG_INTERVAL_NS:
            self._said_ns = now
            self.log(
                f"connections to {domain.replace('_', ' ')} wait to be admitted: more came in, "
                f"or their readers sent more, than may ({self.held} waited so far, "
                f"{self.unanswered} left unanswered to connect again)"
            )

    def _fault(self, exc: Exception) -> None:
        self.faults += 1
        if self.faults == 1:
            self.log(f"the ZAP handler failed ({exc!r}); it goes on, report it")

    def _who(self, domain: str, mechanism: bytes, credentials: list[bytes]) -> str | None:
        """The identity a handshake comes in as ("" for NULL in plain mode), None if none."""
        if mechanism == b"NULL":
            return "" if self.identify is None else None
        curve_key = mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32
        if curve_key and self.identify is not None:
            return self.identify(domain, z85.encode(credentials[0]))
        return None


def _deliver(socket: zmq.Socket, envelope: list[bytes], reply: list[bytes]) -> bool:
    """Send `reply` to the session of `envelope`: whether it was still there to take it."""
    try:
        socket.send_multipart([*envelope, *reply], zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.EAGAIN):
            return False
        raise
    return True


def _reply(request_id: bytes, status: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
    """A ZAP reply's frames (RFC 27): no metadata."""
    return [ZAP_VERSION, request_id, status, text, user, b""]
