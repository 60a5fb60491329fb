"""`cxe watch`: a terminal view of a running engine, fed from its market data (through
engine.gateway.marketdata_client.MarketDataClient) and its admin socket (Status).

`render` is a pure function from what the view knows (books, last trades, the latest
StatusReport) to a rich renderable; `cmd_watch` only feeds it, live or once (`--once`).

Invariants:
- the books shown are exactly the MarketDataClient's (the public updates applied so far);
- the last trades of an instrument are the TradePrints received since the view started (and
  a snapshot's last trade, when newer than any of them), newest first, at most `keep` each;
- the live view's footer says STALE while the client awaits a snapshot (after a gap, or
  after the feed went silent and it reconnected): the books shown may be behind;
- the counters shown are those of the latest StatusReport; at most one Status request is
  outstanding, and one unanswered past its timeout is dropped with its socket, so an answer
  always belongs to the request it is taken for;
- SIGINT and SIGTERM leave (exit status 0, the last view printed if it was live) wherever
  they come, however the command was started: its handlers are set explicitly, since a Python
  started with SIGINT ignored (a background job of a non-interactive shell, as a CI runner
  may start it) never raises KeyboardInterrupt; signals on the way out are ignored;
- against an engine with CURVE (`--key`, `--server-key`: an operator's pair, since the admin
  socket admits operators only) both sockets are CURVE clients with the same keys; a
  connection the engine refuses shows as the snapshot's or the Status's timeout, whose
  message names the keys (market data's says the key was refused, which its client sees);
- prices are shown in yuan (engine.types.format_price, exact), quantities in tonnes; an
  indicative's imbalance (buy minus sell quantity at its price) as its size and the side in
  surplus.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING

from engine.cli.common import add_key_options, market_of, positive_int, positive_seconds
from engine.cli.serve import DEFAULT_DATA, engine_endpoints
from engine.gateway.security import allow_ipv6
from engine.types import Phase, Side, format_price

if TYPE_CHECKING:
    import zmq
    from rich.console import RenderableType

    from engine.gateway.marketdata_client import LocalBook, MarketDataClient, Update
    from engine.gateway.security import KeyPair
    from engine.gateway.wire import StatusReport
    from engine.protocol import TradePrint

LEVELS = 5
KEYS_HINT = {  # why an engine may not answer, by whether the view has CURVE keys
    False: " (an engine with CURVE answers only --key and --server-key)",
    True: " (does the engine's config list --key as an operator, and is --server-key its key?)",
}
CALL_PHASES = (Phase.CALL, Phase.CLOSING_CALL)
AGGRESSOR = {Side.BUY: "buy", Side.SELL: "sell"}


# -- what the view keeps ------------------------------------------------------------------------


class Tape:
    """The last `keep` TradePrints per instrument, newest first."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.trades: dict[str, deque[TradePrint]] = {}

    def add(self, trade: TradePrint) -> None:
        tape = self.trades.setdefault(trade.instrument, deque(maxlen=self.keep))
        if not tape or trade.trade_id > tape[0].trade_id:
            tape.appendleft(trade)

    def take(self, update: Update, books: Mapping[str, LocalBook]) -> None:
        """Note an update the client applied: a trade print, or a snapshot installed (whose
        last trades are newer than the tape's when the view missed them in a gap)."""
        from engine.gateway.marketdata_client import Synced
        from engine.protocol import TradePrint

        if type(update) is TradePrint:
            self.add(update)
        elif type(update) is Synced:
            for book in books.values():
                if book.last_trade is not None:
                    self.add(book.last_trade)


class StatusPoller:
    """Asks the admin socket for the engine's Status, without blocking the view."""

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context,
        timeout: float,
        curve_keys: tuple[KeyPair, bytes] | None = None,  # (operator's pair, engine's public)
    ) -> None:
        self.endpoint = endpoint
        self.context = context
        self.timeout = timeout
        self.curve_keys = curve_keys
        self.report: StatusReport | None = None
        self.error = ""
        self.sent_at: float | None = None
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket:
        import zmq

        from engine.gateway.security import secure_client

        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        if self.curve_keys is not None:
            secure_client(socket, *self.curve_keys)
        allow_ipv6(socket, self.endpoint)
        socket.connect(self.endpoint)
        return socket

    def request(self) -> None:
        """Send a Status request, unless one is outstanding; one that cannot be sent (no
        connection: a handshake the engine refused is not tried again) is answered by the
        timeout."""
        import zmq

        from engine.gateway import wire

        if self.sent_at is None:
            with contextlib.suppress(zmq.Again):  # no connection (refused): the timeout says so
                poll = wire.Status(with_state_hash=False)  # the hash costs the engine's loop
                self.socket.send_multipart(wire.messages_frame([poll]), zmq.NOBLOCK)
            self.sent_at = time.monotonic()

    def collect(self, wait: float = 0.0) -> None:
        """Take the answer if it came within `wait` seconds; give the request up past the
        timeout."""
        import zmq

        from engine.gateway import wire

        if self.sent_at is None:
            return
        if self.socket.poll(int(wait * 1000), zmq.POLLIN):
            self.sent_at = None
            frames = self.socket.recv_multipart()
            replies = wire.unpack(frames[1]) if len(frames) == 2 else []
            reports = [r for r in replies if type(r) is wire.StatusReport]
            if reports:
                self.report, self.error = reports[-1], ""
            else:
                texts = [getattr(r, "text", type(r).__name__) for r in replies]
                self.error = f"admin {self.endpoint} answered {'; '.join(texts) or 'nothing'}"
        elif time.monotonic() - self.sent_at >= self.timeout:
            self.sent_at = None
            self.error = f"no answer from admin {self.endpoint} within {self.timeout:g} s"
            self.error += KEYS_HINT[self.curve_keys is not None]
            self.socket.close(0)
            self.socket = self._connect()

    def fetch(self) -> None:
        """Request and wait for the answer (or the timeout)."""
        self.request()
        self.collect(self.timeout)

    def close(self) -> None:
        self.socket.close(0)


# -- rendering (pure) ---------------------------------------------------------------------------


def _depth_table(book: LocalBook, levels: int):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, expand=False)
    for header in ("orders", "bid qty", "bid"):
        table.add_column(header, justify="right")
    for header in ("ask", "ask qty", "orders"):
        table.add_column(header, justify="right")
    bids, asks = book.depth(Side.BUY, levels), book.depth(Side.SELL, levels)
    for i in range(max(len(bids), len(asks))):
        row: list[str] = []
        if i < len(bids):
            price, qty, orders = bids[i]
            row += [str(orders), f"{qty:,}", format_price(price)]
        else:
            row += ["", "", ""]
        if i < len(asks):
            price, qty, orders = asks[i]
            row += [format_price(price), f"{qty:,}", str(orders)]
        else:
            row += ["", "", ""]
        table.add_row(*row)
    return table


def _trades_table(trades: Sequence[TradePrint], tz: tzinfo):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title="last trades", title_justify="left")
    for header, justify in (("time", "left"), ("price", "right"), ("qty", "right")):
        table.add_column(header, justify=justify)
    table.add_column("aggressor")
    for trade in trades:
        moment = datetime.fromtimestamp(trade.ts_ns // 1_000_000_000, tz).strftime("%H:%M:%S")
        aggressor = AGGRESSOR.get(trade.aggressor, "none")
        table.add_row(moment, format_price(trade.price), f"{trade.qty:,}", aggressor)
    return table


def instrument_panel(
    book: LocalBook, trades: Sequence[TradePrint], tz: tzinfo, levels: int = LEVELS
):
    """One instrument: phase, reference and band, indicative in call phases, the best
    `levels` of each side, the last trades and the last auction."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    low, high = book.band
    lines: list = [
        Text(
            f"{book.phase.name}  reference {format_price(book.reference)}  "
            f"band {format_price(low)} - {format_price(high)}"
        )
    ]
    if book.phase in CALL_PHASES:
        price, volume, imbalance = book.indicative or (0, 0, 0)
        if price:
            surplus = " (buy)" if imbalance > 0 else " (sell)" if imbalance < 0 else ""
            lines.append(
                Text(
                    f"indicative {format_price(price)}  volume {volume:,} t  "
                    f"imbalance {abs(imbalance):,} t{surplus}"
                )
            )
        else:
            lines.append(Text("indicative: no cross"))
    if book.bids or book.asks:
        lines.append(_depth_table(book, levels))
    else:
        lines.append(Text("book empty"))
    if trades:
        lines.append(_trades_table(trades, tz))
    if book.last_auction is not None:
        auction = book.last_auction
        lines.append(
            Text(
                f"last auction ({auction.auction}): {format_price(auction.price)} "
                f"x {auction.volume:,} t"
            )
        )
    return Panel(Group(*lines), title=book.instrument.code, title_align="left", expand=False)


def gateway_table(status: StatusReport | None, error: str = ""):
    """Per-gateway counters of the latest StatusReport, with the engine's sequence and
    service counters in the caption (the state hash is not polled for: it costs the engine's
    loop time that grows with the day; `cxe admin status` prints it)."""
    from rich.table import Table
    from rich.text import Text

    if status is None:
        return Text(f"engine status: {error or 'not yet known'}")
    names = list(dict.fromkeys(n for counters in status.gateways.values() for n in counters))
    engine = "  ".join(f"{name} {value:,}" for name, value in status.counters.items())
    state = f"  state {status.state_hash[:12]}" if status.state_hash else ""
    caption = f"engine seq {status.seq:,}{state}  {engine}"
    if error:
        caption += f"\n(stale: {error})"
    table = Table(title="gateways", title_justify="left", caption=caption, caption_justify="left")
    table.add_column("gateway")
    for name in names:
        table.add_column(name, justify="right")
    for gateway, counters in sorted(status.gateways.items()):
        table.add_row(gateway, *(f"{counters.get(name, 0):,}" for name in names))
    return table


def render(
    books: Mapping[str, LocalBook],
    trades: Mapping[str, Iterable[TradePrint]],
    status: StatusReport | None,
    *,
    error: str = "",
    footer: str = "",
    tz: tzinfo = UTC,
    levels: int = LEVELS,
) -> RenderableType:
    """The whole view: a panel per instrument (in code order), then the gateways' counters."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.text import Text

    panels = [
        instrument_panel(books[code], list(trades.get(code, ())), tz, levels)
        for code in sorted(books)
    ]
    parts: list = [Columns(panels) if panels else Text("no instruments")]
    parts.append(gateway_table(status, error))
    if footer:
        parts.append(Text(footer))
    return Group(*parts)


# -- the command --------------------------------------------------------------------------------


def watch_endpoints(args: argparse.Namespace) -> tuple[str, str, str]:
    """(market data, snapshots, admin): all three given, or read from the data directory."""
    given = (args.market_data, args.snapshots, args.admin)
    if all(given):
        return given
    if any(given):
        raise ValueError(
            "give all three of --market-data, --snapshots and --admin, or none (then --data "
            "names the engine's data directory)"
        )
    found = engine_endpoints(args.data, "--market-data, --snapshots and --admin")
    return found["market_data"], found["snapshots"], found["admin"]


def footer(client: MarketDataClient, tz: tzinfo) -> str:
    """The live view's last line: where the feed is, and loudly when the books shown may be
    stale (no snapshot since a gap, or since the feed went silent)."""
    now = datetime.now(tz).strftime("%H:%M:%S")
    state = "" if client.synced else "  STALE: waiting for the engine's snapshot"
    return (
        f"market data seq {client.seq:,}  resyncs {client.resyncs}  reconnects "
        f"{client.reconnects}{state}  at {now}  (Ctrl-C to leave)"
    )


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT or SIGTERM: leave the view, once (the way out is not interrupted again)."""
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        return _watch(args)
    except KeyboardInterrupt:  # wherever it came: before the view, or while closing it
        return 0


def _watch(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    import zmq
    from rich.console import Console
    from rich.live import Live

    from engine.gateway.marketdata_client import MarketDataClient, SnapshotRefused
    from engine.gateway.security import client_keys, server_public_key

    market_data, snapshots, admin = watch_endpoints(args)
    tz = ZoneInfo(market_of(args.config).timezone)
    keys = client_keys(args.key, args.server_key)
    if args.feed_server_key and keys is None:
        raise ValueError("--feed-server-key is for CURVE: give --key and --server-key too")
    feed_key = None  # the engine's, unless a relay with a pair of its own serves the feed
    if args.feed_server_key:
        feed_key = server_public_key(args.feed_server_key, "--feed-server-key")
    context = zmq.Context()
    client = MarketDataClient(
        market_data, snapshots, args.instrument, context=context, curve_keys=keys,
        feed_server_key=feed_key,
    )  # fmt: skip
    poller = StatusPoller(admin, context, args.timeout, keys)
    tape = Tape(args.trades)

    def frame(footer: str = "") -> RenderableType:
        return render(
            client.books, tape.trades, poller.report, error=poller.error, footer=footer, tz=tz
        )

    try:
        deadline = time.monotonic() + args.timeout
        while not client.synced:
            update = client.next_update(max(0.0, deadline - time.monotonic()))
            if update is None and client.refused:
                raise ValueError(
                    f"the engine at {snapshots} refused --key for market data: the key is not "
                    "listed, was revoked, or was refused for subscribing to topics the feed "
                    "does not have until the engine's keys are reloaded (its log says which)"
                )
            if update is None:
                raise ValueError(
                    f"no market data snapshot from {snapshots} within {args.timeout:g} s: is "
                    "the engine running there? (`cxe serve`; or give --data / the endpoints)"
                    + KEYS_HINT[keys is not None]
                )
            tape.take(update, client.books)
        for update in client.poll(0):
            tape.take(update, client.books)
        poller.fetch()
        if args.once:
            Console(color_system=None, highlight=False, soft_wrap=False).print(frame())
            if poller.error:
                print(f"cxe watch: {poller.error}", file=sys.stderr)
                return 1
            return 0
        console = Console(highlight=False)
        next_status = time.monotonic() + args.interval
        shown = frame()
        try:
            with Live(shown, console=console, auto_refresh=False, screen=True) as live:
                while True:
                    for update in client.poll(min(args.interval, 0.25)):
                        tape.take(update, client.books)
                    if time.monotonic() >= next_status:
                        poller.request()
                        next_status = time.monotonic() + args.interval
                    poller.collect()
                    shown = frame(footer(client, tz))
                    live.update(shown, refresh=True)
        except KeyboardInterrupt:
            console.print(shown)  # the full screen is gone: the last view stays in sight
            return 0
    except SnapshotRefused as exc:
        raise ValueError(f"the engine's snapshot service refused: {exc}") from None
    finally:
        poller.close()
        client.close()


def add_commands(commands: argparse._SubParsersAction) -> None:
    watch = commands.add_parser(
        "watch",
        help="live terminal view of a running engine: books, trades, phases, gateway counters",
        description="Watch a running engine: per instrument its phase, reference and band, "
        "the best five bid and ask levels (quantity and order count), the last trades and, in "
        "call phases, the indicative price, volume and imbalance; and per gateway the "
        "engine's counters (commands, rejects, undeliverable replies...), polled from the "
        "admin socket. Prices in yuan, quantities in tonnes. Ctrl-C (SIGINT) or SIGTERM leaves. "
        "An engine with CURVE keys answers an operator's --key with its --server-key.",
        epilog="example: cxe watch --data cxe-data --instrument CEA25 CCER; with CURVE: "
        "cxe watch --key keys/alice.key_secret --server-key keys/engine.key",
    )
    watch.add_argument(
        "--data",
        default=DEFAULT_DATA,
        metavar="DIR",
        help=f"the engine's data directory, to find its endpoints (default {DEFAULT_DATA})",
    )
    watch.add_argument(
        "--market-data",
        metavar="ENDPOINT",
        help="the market data PUB endpoint (with --snapshots and --admin, instead of --data)",
    )
    watch.add_argument("--snapshots", metavar="ENDPOINT", help="the market data snapshot endpoint")
    watch.add_argument("--admin", metavar="ENDPOINT", help="the admin endpoint (for Status)")
    watch.add_argument(
        "--instrument",
        nargs="+",
        metavar="CODE",
        help="show only these instruments (default: every listed instrument)",
    )
    watch.add_argument(
        "--once",
        action="store_true",
        help="print one plain frame after synchronising and exit (no live refresh)",
    )
    watch.add_argument(
        "--interval",
        type=positive_seconds,
        default=1.0,
        metavar="S",
        help="seconds between Status polls of the admin socket (default 1)",
    )
    watch.add_argument(
        "--trades",
        type=positive_int,
        default=5,
        metavar="N",
        help="last trades shown per instrument (default 5)",
    )
    watch.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        metavar="S",
        help="seconds to wait for the snapshot and for each Status answer (default 5)",
    )
    watch.add_argument(
        "--config",
        metavar="FILE",
        help="market TOML, for its time zone (default: the embedded market's, Asia/Shanghai)",
    )
    add_key_options(watch)
    watch.add_argument(
        "--feed-server-key",
        metavar="FILE",
        help="the public key of the relay --market-data names, if it has a pair of its own "
        "(cxe relay --server-key; default: the engine's)",
    )
    watch.set_defaults(run=cmd_watch)
