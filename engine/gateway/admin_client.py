"""AdminClient: an operator's connection to the engine's admin endpoint (DEALER to its ROUTER).

Invariant: one request in flight; `ask` sends operator commands in one frame and returns the
engine's answer (every event the commands caused, or a StatusReport), or raises TimeoutError
when no answer comes in time (the connection is then replaced, so a late answer is never
taken for the next request's), or NotAdminAnswer when what came back is not an answer of an
admin endpoint (an operator pointed at the snapshots or trades port saw msgspec's decode
errors: a probe).
"""

from __future__ import annotations

import msgspec
import zmq

from engine.gateway import wire
from engine.gateway.security import KeyPair, allow_ipv6, secure_client

WHERE = "cxe serve prints its admin endpoint, and DATA/endpoints.json names it"


class NotAdminAnswer(ValueError):
    """What came back does not come from an engine's admin endpoint."""


class AdminClient:
    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context | None = None,
        curve_keys: tuple[KeyPair, bytes] | None = None,  # an operator's, for a CURVE engine
    ) -> None:
        self.endpoint = endpoint
        self.context = context or zmq.Context.instance()
        self.curve_keys = curve_keys
        self.socket: zmq.Socket | None = None
        self._connect()

    def _connect(self) -> None:
        self.close()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if self.curve_keys is not None:
            secure_client(self.socket, *self.curve_keys)
        allow_ipv6(self.socket, self.endpoint)
        self.socket.connect(self.endpoint)

    def ask(self, *commands, timeout_s: float = 30.0) -> list:
        self.socket.send_multipart(wire.messages_frame(list(commands)))
        if not self.socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            self._connect()
            raise TimeoutError(f"no answer from the admin endpoint {self.endpoint}")
        frames = self.socket.recv_multipart()
        try:
            if len(frames) != 2 or frames[0] != wire.MESSAGES:
                raise ValueError(f"{len(frames)} frames, the first {frames[0][:8]!r}")
            return wire.unpack(frames[1])
        except (ValueError, msgspec.DecodeError) as exc:
            self._connect()
            raise NotAdminAnswer(
                f"{self.endpoint} answered with what an admin endpoint never sends ({exc}): is "
                f"it the engine's admin endpoint? ({WHERE})"
            ) from None

    def status(self) -> wire.StatusReport:
        (report,) = self.ask(wire.Status())
        return report

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
