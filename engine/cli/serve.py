"""`cxe serve` (the engine service) and `cxe admin` (operator commands to a running engine).

`cxe serve` recovers its state from the data directory (snapshot + journal), warms the
compiled code, binds, prints where it listens and writes the bound endpoints to
DATA/endpoints.json, which `cxe admin` and tests read. `cxe admin` sends one operator command
(for every instrument when none is named) and prints the engine's answer, one line each.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from engine.cli.common import market_of, positive_int, trading_date

DEFAULT_DATA = "cxe-data"
INSTRUMENT_ACTIONS = {
    "open-call": "OpenCall",
    "uncross": "Uncross",
    "halt": "Halt",
    "resume": "Resume",
    "close-call": "CloseCall",
    "close": "Close",
}


def clock_start(text: str) -> int:
    """argparse type: an ISO 8601 instant with its UTC offset, as int64 ns since the epoch."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-11-24T09:10+08:00)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the UTC offset: {text!r} (e.g. +08:00)")
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.gateway.service import Options, serve

    market = market_of(args.config)
    data = Path(args.data).resolve()
    print(f"market: {market.name}; data directory {data} (journal, snapshots, endpoints.json)")
    if args.no_fsync:
        print("WARNING: --no-fsync: acknowledged commands can be lost in a machine crash")
    options = Options(
        data_dir=data,
        orders=args.orders,
        admin=args.admin,
        market_data=args.market_data,
        snapshots=args.snapshots,
        fsync=not args.no_fsync,
        batch_limit=args.batch,
        sndhwm=args.sndhwm,
        clock_start_ns=args.clock,
        config_path=Path(args.config) if args.config else None,
        insecure=args.insecure,
    )
    return serve(market, options)


def admin_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return args.endpoint
    path = Path(args.data) / "endpoints.json"
    try:
        return json.loads(path.read_text())["admin"]
    except (OSError, ValueError, KeyError):
        raise ValueError(
            f"no running engine found at {path}: start `cxe serve --data {args.data}` or "
            "give --endpoint"
        ) from None


def today(timezone: str) -> str:
    """Today's date in the market's time zone (the day the engine's clock is in, unless it
    runs a rehearsal clock)."""
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(timezone)).strftime("%Y-%m-%d")


def operator_commands(args: argparse.Namespace, market) -> list:
    from engine import protocol
    from engine.gateway import wire

    action = args.action
    if action in INSTRUMENT_ACTIONS:
        kind = getattr(protocol, INSTRUMENT_ACTIONS[action])
        return [kind(code) for code in (args.instrument or [i.code for i in market.instruments])]
    if action == "start-of-day":
        return [protocol.StartOfDay(args.date or today(market.timezone))]
    if action == "end-of-day":
        return [protocol.EndOfDay()]
    if action == "set-reference":
        return [protocol.SetReference(args.instrument, args.price)]
    if action == "snapshot":
        return [wire.SnapshotNow()]
    if action == "reload-keys":
        return [wire.ReloadKeys()]
    return [wire.Status()]


def cmd_admin(args: argparse.Namespace) -> int:
    import zmq

    from engine.gateway import wire
    from engine.gateway.security import client_keys, secure_client

    endpoint = admin_endpoint(args)
    commands = operator_commands(args, market_of(args.config))
    keys = client_keys(args.key, args.server_key)
    context = zmq.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        secure_client(socket, *keys)
    socket.connect(endpoint)
    socket.send_multipart(wire.messages_frame(commands))
    if not socket.poll(args.timeout * 1000, zmq.POLLIN):
        print(f"cxe admin: no answer from {endpoint} within {args.timeout} s (a CURVE engine "
              "ignores a connection without an operator's --key and its --server-key)")  # fmt: skip
        return 1
    refused = False
    replies = wire.unpack(socket.recv_multipart()[1])
    for reply in replies:
        print(reply)
        refused |= type(reply).__name__ in ("Rejected", "SessionRejected")
    if not replies:
        print("done (the command caused no event)")
    socket.close()
    return 1 if refused else 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the engine service: order entry over ZeroMQ, journal, recovery",
        description="Run the exchange: recover from the data directory (latest snapshot, then "
        "the journal after it), warm the compiled code, then accept gateways' orders (ROUTER) "
        "and operator commands (admin). Every command is journaled and synced before anything "
        "it causes is sent. SIGINT or SIGTERM finishes the batch in hand and stops cleanly.",
    )
    serve.add_argument("--config", metavar="FILE", help="market TOML (default: embedded market)")
    serve.add_argument(
        "--data",
        default=DEFAULT_DATA,
        metavar="DIR",
        help=f"data directory, created if need be (default ./{DEFAULT_DATA})",
    )
    serve.add_argument(
        "--orders",
        default="tcp://127.0.0.1:5555",
        metavar="ENDPOINT",
        help="order entry endpoint (default tcp://127.0.0.1:5555; port * picks a free one)",
    )
    serve.add_argument(
        "--admin",
        default="tcp://127.0.0.1:5556",
        metavar="ENDPOINT",
        help="operator endpoint (default tcp://127.0.0.1:5556)",
    )
    serve.add_argument(
        "--market-data",
        default="tcp://127.0.0.1:5557",
        metavar="ENDPOINT",
        help="market data PUB endpoint (default tcp://127.0.0.1:5557; docs/MARKETDATA.md)",
    )
    serve.add_argument(
        "--snapshots",
        default="tcp://127.0.0.1:5558",
        metavar="ENDPOINT",
        help="market data snapshot endpoint (default tcp://127.0.0.1:5558)",
    )
    serve.add_argument(
        "--no-fsync",
        action="store_true",
        help="do not fsync the journal (testing only: a power loss loses what was acknowledged)",
    )
    serve.add_argument(
        "--batch",
        type=positive_int,
        default=1024,
        metavar="N",
        help="commands (messages and records) read per turn, across gateways (default 1024)",
    )
    serve.add_argument(
        "--sndhwm",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="frames queued per gateway connection before the engine keeps them itself for "
        "the gateway (default 10000)",
    )
    serve.add_argument(
        "--clock",
        type=clock_start,
        metavar="ISO_TIME",
        help="run the service's clock from this instant (e.g. "
        "2026-11-24T09:10+08:00) instead of now: a rehearsal of a given day",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="without a [security] config, bind beyond loopback anyway (no authentication)",
    )
    serve.set_defaults(run=cmd_serve)

    admin = commands.add_parser(
        "admin",
        help="send an operator command to a running engine and print its answer",
        description="Operator commands: start-of-day DATE, open-call / uncross / halt / resume "
        "/ close-call / close [INSTRUMENT...] (all instruments when none is named), "
        "set-reference INSTRUMENT PRICE, end-of-day, snapshot, status, reload-keys. Against "
        "an engine with CURVE keys give --key and --server-key.",
    )
    actions = admin.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start-of-day", help="begin a trading day")
    start.add_argument(
        "date",
        nargs="?",
        type=trading_date,
        help="the day, YYYY-MM-DD (default: today in the market's time zone)",
    )
    for action in INSTRUMENT_ACTIONS:
        sub = actions.add_parser(action, help=f"{action.replace('-', ' ')} instruments")
        sub.add_argument("instrument", nargs="*", help="instrument codes (default: all)")
    reference = actions.add_parser("set-reference", help="set an instrument's reference price")
    reference.add_argument("instrument", help="instrument code")
    reference.add_argument("price", type=positive_int, help="price in fen")
    actions.add_parser("end-of-day", help="end the trading day (day records, snapshot)")
    actions.add_parser("snapshot", help="write a snapshot of the state now")
    actions.add_parser("status", help="the engine's sequence, state hash and counters")
    actions.add_parser(
        "reload-keys", help="reread the config's [security] keys; end revoked keys' sessions"
    )
    for sub in actions.choices.values():
        sub.add_argument(
            "--data",
            default=DEFAULT_DATA,
            metavar="DIR",
            help="the engine's data directory, to find its endpoints",
        )
        sub.add_argument("--endpoint", metavar="ENDPOINT", help="the admin endpoint instead")
        sub.add_argument("--config", metavar="FILE", help="market TOML (for instrument codes)")
        sub.add_argument("--key", metavar="FILE", help="your operator NAME.key_secret (CURVE)")
        sub.add_argument("--server-key", metavar="FILE", help="the engine's public key file")
        sub.add_argument(
            "--timeout",
            type=positive_int,
            default=10,
            metavar="S",
            help="seconds to wait for the answer (default 10)",
        )
    admin.set_defaults(run=cmd_admin)
