"""The ZAP handler of a ZeroMQ context: the thread libzmq asks, during each handshake on a
socket with a ZAP domain, whether the peer may connect (ZeroMQ RFC 27).

It decides two things. Who: a CURVE key is admitted if `identify` names an identity for it
on the socket's domain (engine.gateway.security's key table), and a NULL peer (no key) only in
plain mode, where `identify` is None. When: a domain may have a gate
(engine.gateway.readerlimit's admission of feed readers), asked only for a peer the who-check
admitted. Nothing a peer sends reaches its socket before the answer: libzmq holds the
connection in its handshake until then.

Invariants:
- a handshake the gate does not admit now waits, first come first served: the gate is asked
  again every RETRY_MS for the oldest waiting, for up to HOLD_MS (at most MAX_HELD wait; one
  more is not kept). One not admitted by then is not answered: libzmq ends the connection
  when the socket's HANDSHAKE_IVL runs out (a gated socket's is HOLD_MS and a little more; the
  reader limit may end it sooner) and the peer's ZeroMQ connects again by itself. A refusal
  would end that for good: libzmq 4.3 terminates a connecting session whose handshake the
  server refused and never reconnects it (seen here with 300, 400 and 500 alike). So only a
  key that is not admitted is refused (400);
- one handler per context, bound at ZAP_ENDPOINT before any socket with a ZAP domain binds;
  a socket with ZMQ_ZAP_ENFORCE_DOMAIN refuses every handshake while none is bound;
- a request that is not RFC 27's (libzmq's own: none is expected) is counted and answered
  400 when it has a request id; a fault of the thread's own is logged once and it goes on:
  a handler that ended would stop every handshake of the context;
- `stop` ends the thread and closes its socket (by the owner, before the context closes).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq looks for a context's handler
ZAP_VERSION = b"1.0"
WAKE_MS = 50  # how often the thread looks for `stop` when nothing happens
RETRY_MS = 5  # how often a gate is asked again for a handshake waiting
HOLD_MS = 3000  # how long a handshake waits for its gate before it is left unanswered
MAX_HELD = 1024  # handshakes waiting at once
LOG_INTERVAL_NS = 10_000_000_000  # at most one line about waiting handshakes per 10 s
MAX_REQUESTS_PER_TURN = 1024  # requests answered between two looks at `stop`

# identify(domain, z85_public_key): the identity admitted, or None
Identify = Callable[[str, bytes], "str | None"]


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
        self.gates: dict[str, Callable[[], bool]] = {}  # by domain: may a peer come in now?
        self.admitted = 0
        self.refused = 0  # keys not admitted (answered 400)
        self.held = 0  # handshakes that had to wait: the domain's gate was shut
        self.unanswered = 0  # of those, left unanswered (HOLD_MS passed, or too many waited)
        self.malformed = 0  # requests that were not RFC 27's
        self.faults = 0
        self._context = context
        self._stopping = threading.Event()
        self._bound = threading.Event()
        self._bind_error: zmq.ZMQError | None = None
        # handshakes waiting for their gate: (since when, envelope, request id, domain, identity)
        self._said_ns: int | None = None  # when waiting handshakes were last logged
        self._waiting: deque[tuple[int, list[bytes], bytes, str, str]] = deque()
        self._thread = threading.Thread(target=self._run, name="cxe-zap", daemon=True)
        self._thread.start()
        self._bound.wait()
        if self._bind_error is not None:
            self._thread.join()
            raise self._bind_error

    def gate(self, domain: str, admit: Callable[[], bool]) -> None:
        """From now on a peer of `domain` comes in only when `admit()` says so (it is asked
        from this handler's thread, once per handshake the who-check admitted)."""
        self.gates = {**self.gates, domain: admit}  # one assignment: the thread reads it

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        socket = self._context.socket(zmq.ROUTER)  # a ROUTER may leave a request unanswered
        socket.setsockopt(zmq.LINGER, 0)
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
                    socket.send_multipart([*envelope, *_reply(frames[1], b"400", b"bad request")])
                return
            request_id, domain_bytes, _address, _routing_id, mechanism = frames[1:6]
            domain = domain_bytes.decode("utf-8", "replace")
            identity = self._who(domain, mechanism, frames[6:])
            if identity is None:
                self.refused += 1
                socket.send_multipart([*envelope, *_reply(request_id, b"400", b"key not admitted")])
            elif self._admits(domain):
                self._admit(socket, envelope, request_id, identity)
            else:
                self.held += 1
                self._say_waiting(domain)
                if len(self._waiting) < MAX_HELD:
                    self._waiting.append(
                        (time.monotonic_ns(), envelope, request_id, domain, identity)
                    )
                else:
                    self.unanswered += 1
        except zmq.ContextTerminated:
            raise
        except Exception as exc:  # a fault of its own: the next handshake is still answered
            self._fault(exc)

    def _serve_waiting(self, socket: zmq.Socket) -> None:
        """Admit the waiting handshakes their gates now let in, oldest first; leave those that
        waited HOLD_MS unanswered."""
        too_old = time.monotonic_ns() - HOLD_MS * 1_000_000
        try:
            while self._waiting:
                since, envelope, request_id, domain, identity = self._waiting[0]
                if since < too_old:
                    self.unanswered += 1
                elif self._admits(domain):
                    self._admit(socket, envelope, request_id, identity)
                else:
                    return
                self._waiting.popleft()
        except zmq.ContextTerminated:
            raise
        except Exception as exc:
            self._waiting.popleft()  # not asked about again
            self._fault(exc)

    def _admits(self, domain: str) -> bool:
        admit = self.gates.get(domain)
        return admit is None or admit()

    def _admit(
        self, socket: zmq.Socket, envelope: list[bytes], request_id: bytes, identity: str
    ) -> None:
        self.admitted += 1
        socket.send_multipart([*envelope, *_reply(request_id, b"200", b"OK", identity.encode())])

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


def _reply(request_id: bytes, status: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
    """A ZAP reply's frames (RFC 27): no metadata."""
    return [ZAP_VERSION, request_id, status, text, user, b""]
