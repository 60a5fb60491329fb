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
    print(
        f"market: {market.name}; data directory {data} (journal, trades.log, snapshots, "
        "endpoints.json)"
    )
    if args.no_fsync:
        print("WARNING: --no-fsync: acknowledged commands can be lost in a machine crash")
    options = Options(
        data_dir=data,
        orders=args.orders,
        admin=args.admin,
        market_data=args.market_data,
        snapshots=args.snapshots,
        trades=args.trades,
        fsync=not args.no_fsync,
        batch_limit=args.batch,
        sndhwm=args.sndhwm,
        clock_start_ns=args.clock,
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


def operator_commands(args: argparse.Namespace, codes: list[str]) -> list:
    from engine import protocol
    from engine.gateway import wire

    action = args.action
    if action in INSTRUMENT_ACTIONS:
        kind = getattr(protocol, INSTRUMENT_ACTIONS[action])
        return [kind(code) for code in (args.instrument or codes)]
    if action == "start-of-day":
        return [protocol.StartOfDay(args.date)]
    if action == "end-of-day":
        return [protocol.EndOfDay()]
    if action == "set-reference":
        return [protocol.SetReference(args.instrument, args.price)]
    if action == "snapshot":
        return [wire.SnapshotNow()]
    return [wire.Status()]


def cmd_admin(args: argparse.Namespace) -> int:
    import zmq

    from engine.gateway import wire

    endpoint = admin_endpoint(args)
    codes = [i.code for i in market_of(args.config).instruments]
    commands = operator_commands(args, codes)
    context = zmq.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    socket.send_multipart(wire.messages_frame(commands))
    if not socket.poll(args.timeout * 1000, zmq.POLLIN):
        print(f"cxe admin: no answer from {endpoint} within {args.timeout} s")
        return 1
    refused = False
    for reply in wire.unpack(socket.recv_multipart()[1]):
        print(reply)
        refused |= type(reply).__name__ in ("Rejected", "SessionRejected")
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
        "--trades",
        default="tcp://127.0.0.1:5559",
        metavar="ENDPOINT",
        help="trade stream endpoint: clearing's events from a stream number, for cxe capture "
        "(default tcp://127.0.0.1:5559; docs/TRADESTREAM.md)",
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
    serve.set_defaults(run=cmd_serve)

    admin = commands.add_parser(
        "admin",
        help="send an operator command to a running engine and print its answer",
        description="Operator commands: start-of-day DATE, open-call / uncross / halt / resume "
        "/ close-call / close [INSTRUMENT...] (all instruments when none is named), "
        "set-reference INSTRUMENT PRICE, end-of-day, snapshot, status.",
    )
    actions = admin.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start-of-day", help="begin a trading day")
    start.add_argument("date", type=trading_date, help="the day, YYYY-MM-DD")
    for action in INSTRUMENT_ACTIONS:
        sub = actions.add_parser(action, help=f"{action.replace('-', ' ')} instruments")
        sub.add_argument("instrument", nargs="*", help="instrument codes (default: all)")
    reference = actions.add_parser("set-reference", help="set an instrument's reference price")
    reference.add_argument("instrument", help="instrument code")
    reference.add_argument("price", type=positive_int, help="price in fen")
    actions.add_parser("end-of-day", help="end the trading day (day records, snapshot)")
    actions.add_parser("snapshot", help="write a snapshot of the state now")
    actions.add_parser("status", help="the engine's sequence, state hash and counters")
    for sub in actions.choices.values():
        sub.add_argument(
            "--data",
            default=DEFAULT_DATA,
            metavar="DIR",
            help="the engine's data directory, to find its endpoints",
        )
        sub.add_argument("--endpoint", metavar="ENDPOINT", help="the admin endpoint instead")
        sub.add_argument("--config", metavar="FILE", help="market TOML (for instrument codes)")
        sub.add_argument(
            "--timeout",
            type=positive_int,
            default=10,
            metavar="S",
            help="seconds to wait for the answer (default 10)",
        )
    admin.set_defaults(run=cmd_admin)
