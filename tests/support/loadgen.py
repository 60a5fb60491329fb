"""A gateway under load, as a separate process: `python -m tests.support.loadgen ENDPOINT
GATEWAY MEMBER INSTRUMENT PRICE OUT`.

Sends frames of new orders (both sides around PRICE, so they trade) and cancels, forever;
appends every acknowledgement it receives to OUT as "seq member cl_ord_id kind" lines (flushed
at once: what is in the file was acknowledged). When the engine stops answering it reconnects
and resends what was not answered (RESEND), as a broker's gateway does after an engine
restart. Stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import time

from engine.gateway import wire
from engine.gateway.client import GatewayClient, LogonRefused
from engine.protocol import Accepted, NewOrder, Rejected

running = True
PAUSE_S = 0.02  # between frames: a steady load whose journal stays small across many restarts


def stop(*_args) -> None:
    global running
    running = False


def reconnect(client: GatewayClient | None) -> GatewayClient | None:
    """A new logon; what was not answered is resent (RESEND). None while the engine is down."""
    if client is None:
        return None
    try:
        client.reconnect()
    except LogonRefused:
        return client if running else None
    return client


def main(endpoint: str, gateway: str, member: int, code: str, price: int, out: str) -> None:
    signal.signal(signal.SIGTERM, stop)
    client = None
    n = 0
    with open(out, "a") as log:
        while running:
            try:
                if client is None:
                    client = GatewayClient(endpoint, gateway, timeout_ms=1500, heartbeat_ms=300)
                elif client.logon is None:
                    client.reconnect()
                orders = []
                for _ in range(8):
                    n += 1
                    side = n % 2
                    orders.append(
                        NewOrder(
                            f"{gateway}-{member}-{n}",
                            member,
                            code,
                            side,
                            price + (n * 7) % 11 - 5,
                            100,
                        )
                    )
                time.sleep(PAUSE_S)
                client.send(orders)
                last = orders[-1].cl_ord_id
                for reply in client.wait_for(
                    lambda r, last=last: getattr(r, "cl_ord_id", "") == last
                ):
                    if isinstance(reply, Accepted | Rejected | wire.OrderStatus):
                        seq = getattr(reply, "seq", 0)
                        log.write(
                            f"{seq} {reply.member} {reply.cl_ord_id} {type(reply).__name__}\n"
                        )
                        log.flush()
            except (TimeoutError, LogonRefused):
                client = reconnect(client)


if __name__ == "__main__":
    endpoint, gateway, member, code, price, out = sys.argv[1:7]
    main(endpoint, gateway, int(member), code, int(price), out)
