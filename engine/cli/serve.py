"""`cxe serve` (the engine service) and `cxe admin` (operator commands to a running engine).

`cxe serve` recovers its state from the data directory (snapshot + journal), warms the
compiled code, binds, prints where it listens and writes the bound endpoints to
DATA/endpoints.json, which `cxe admin`, `cxe watch` and tests read. `cxe admin` sends one
operator command (for every instrument when none is named) and prints the engine's answer, one
line per event (`describe`: enums by name, amounts in fen also in yuan); it exits 1 when the
engine refused anything, 2 when no engine answers where the data directory says.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from datetime import datetime
from pathlib import Path

from engine.cli.common import (
    add_key_options,
    market_of,
    member_id,
    nonnegative_int,
    positive_int,
    queue_length,
    trading_date,
)
from engine.logline import LogLines
from engine.types import format_price

DEFAULT_DATA = "cxe-data"
INSTRUMENT_ACTIONS = {
    "open-call": "OpenCall",
    "uncross": "Uncross",
    "halt": "Halt",
    "resume": "Resume",
    "close-call": "CloseCall",
    "close": "Close",
}
# fields holding an amount in fen (a price, or money): printed in CNY, with the fen the
# admin commands take beside it; and fields holding tonnes
FEN_FIELDS = frozenset(
    [
        "price",
        "reference",
        "band_low",
        "band_high",
        "open",
        "high",
        "low",
        "close",
        "buyer_fee",
        "seller_fee",
    ]
)
TONNE_FIELDS = frozenset(["qty", "volume", "leaves", "imbalance"])


def cl_ord_id(text: str) -> str:
    """argparse type: a client order id, 1 to 32 characters."""
    if not 1 <= len(text) <= 32:
        raise argparse.ArgumentTypeError(f"a ClOrdID has 1 to 32 characters, not {len(text)}")
    return text


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
    from engine.journal.recovery import SnapshotMismatch, SnapshotUnusable

    market = market_of(args.config)
    if not args.data:
        raise ValueError("--data: give a directory (an empty name would be the current one)")
    try:
        data = Path(args.data).resolve()
    except RuntimeError as exc:  # a symbolic link loop
        raise ValueError(f"--data {args.data}: {exc}") from None
    log = LogLines("cxe serve")  # the engine's log, from its first line (engine.logline)
    log(
        f"market: {market.name}; data directory {data} (journal, trades.log, snapshots, "
        "endpoints.json)"
    )
    if args.no_fsync:
        log("WARNING: --no-fsync: acknowledged commands can be lost in a machine crash")
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
        config_path=Path(args.config) if args.config else None,
        insecure=args.insecure,
        busy_poll=args.busy_poll,
        day_orders=args.day_orders,
        keep_snapshots=args.keep_snapshots,
    )
    kept = "every snapshot" if args.keep_snapshots == 0 else (
        f"the {args.keep_snapshots:,} newest snapshots"
    )  # fmt: skip
    log(f"{kept} kept (--keep-snapshots)")
    if args.busy_poll:
        log("busy poll: the service loop never sleeps and keeps one CPU busy (give it its own)")
    try:
        return serve(market, options, log)
    except (SnapshotUnusable, SnapshotMismatch) as exc:  # the message says what to do
        print(f"cxe serve: cannot recover from {data}: {exc}", file=sys.stderr)
        return 2


def engine_endpoints(data: str, alternative: str) -> dict[str, str]:
    """The endpoints a running engine wrote to DATA/endpoints.json; ValueError saying what to
    do (start the engine, or give `alternative`) when there is none or its process is gone."""
    from engine.gateway.endpointsfile import ENDPOINTS_FILE, read_endpoints

    path = Path(data) / ENDPOINTS_FILE
    advice = f"start `cxe serve --data {data}` or give {alternative}"
    found = read_endpoints(data)  # NotThisDirectory (a ValueError) for a copy's
    try:
        if found is None:
            raise KeyError(ENDPOINTS_FILE)
        endpoints = {name: found[name] for name in ("admin", "market_data", "snapshots")}
        if not all(isinstance(endpoint, str) for endpoint in endpoints.values()):
            raise TypeError("an endpoint that is not text")
    except (KeyError, TypeError):
        raise ValueError(f"no running engine found at {path}: {advice}") from None
    pid = found.get("pid")
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise ValueError(
                f"no running engine found at {path}: its process {pid} has stopped; {advice}"
            ) from None
        except PermissionError:
            pass  # running, as another user
    return endpoints


def admin_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint == "":  # a probe's empty --endpoint was taken as none given
        raise ValueError("--endpoint: give an endpoint, such as tcp://127.0.0.1:5556")
    if args.endpoint:
        return args.endpoint
    return engine_endpoints(args.data, "--endpoint")["admin"]


def today(timezone: str) -> str:
    """Today's date in the market's time zone (the day the engine's clock is in, unless it
    runs a rehearsal clock)."""
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(timezone)).strftime("%Y-%m-%d")


def operator_commands(
    args: argparse.Namespace,
    market,
    codes: list[str] | None = None,
    clock_day: str | None = None,
) -> list:
    """The commands of an admin action; `codes`: the engine's instruments (what an action on
    all instruments sends), else the market's; `clock_day`: the engine clock's day (what
    start-of-day opens when no date is given), else today here."""
    from engine import protocol
    from engine.gateway import wire

    action = args.action
    if action in INSTRUMENT_ACTIONS:
        kind = getattr(protocol, INSTRUMENT_ACTIONS[action])
        every = codes or [i.code for i in market.instruments]
        return [kind(code) for code in (args.instrument or every)]
    if action == "start-of-day":
        return [protocol.StartOfDay(args.date or clock_day or today(market.timezone))]
    if action == "end-of-day":
        return [protocol.EndOfDay()]
    if action == "set-reference":
        return [protocol.SetReference(args.instrument, args.price)]
    if action == "one-way-auction-open":
        return [
            protocol.OneWayAuctionOpen(
                args.instrument,
                args.seller,
                args.qty,
                floor_minus_10pct=args.floor_minus_10pct,
                uniform=not args.pay_as_bid,
            )
        ]
    if action == "one-way-auction-close":
        return [protocol.OneWayAuctionClose(args.instrument)]
    if action == "block-trade":
        return [
            protocol.BlockTrade(
                args.cl_ord_id, args.instrument, args.buyer, args.seller, args.price, args.qty
            )
        ]
    if action == "snapshot":
        return [wire.SnapshotNow()]
    if action == "reload-keys":
        return [wire.ReloadKeys()]
    return [wire.Status(with_state_hash=not args.no_state_hash)]


def _value(name: str, value: object) -> str:
    from engine.protocol import RejectCode

    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and name in FEN_FIELDS:
        return f"{format_price(value, grouped=True)} CNY ({value} fen)"
    if isinstance(value, int) and name in TONNE_FIELDS:
        return f"{value:,} t"
    if isinstance(value, int) and name == "code" and value in RejectCode._value2member_map_:
        return RejectCode(value).name
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(str(k), v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return repr(value)
    return str(value)


def describe(reply) -> str:
    """One line for an answer of the engine: its type, then name=value for every field (what
    a snapshot request did, in words)."""
    from engine.gateway import wire

    if isinstance(reply, wire.SnapshotRequested):
        return (
            f"snapshot requested at seq {reply.seq}: to be written to {reply.directory} "
            "(snapshot-<seq>.snap, at the seq the turn ends on); the engine's log says when it "
            "is, and `cxe admin status` counts it (snapshots_written)"
        )
    fields = " ".join(
        f"{name}={_value(name, getattr(reply, name))}" for name in reply.__struct_fields__
    )
    return f"{type(reply).__name__} {fields}".rstrip()


def describe_status(report) -> str:
    """A StatusReport in lines (one of 1,700 characters was hard to read): the state, then
    the counters of the service, market data and the trade stream, then one line a gateway."""

    def pairs(counters: dict[str, int]) -> str:
        return " ".join(f"{name}={value:,}" for name, value in counters.items())

    groups: dict[str, dict[str, int]] = {"service": {}, "market data": {}, "trade stream": {}}
    for name, value in report.counters.items():
        for group, prefix in (("market data", "market_data_"), ("trade stream", "trade_stream_")):
            if name.startswith(prefix):
                groups[group][name.removeprefix(prefix)] = value
                break
        else:
            groups["service"][name] = value
    lines = [
        f"StatusReport seq={report.seq:,} state_hash={report.state_hash or '(not asked)'} "
        f"date={report.date or '(no day open)'} clock_day={report.clock_day} "
        f"instruments={' '.join(report.instruments)}"
    ]
    lines += [f"  {group}: {pairs(counters)}" for group, counters in groups.items() if counters]
    lines += [f"  gateway {gateway}: {pairs(c)}" for gateway, c in report.gateways.items()]
    return "\n".join(lines)


def cmd_admin(args: argparse.Namespace) -> int:
    from engine.gateway import wire
    from engine.gateway.admin_client import WHERE, AdminClient, NotAdminAnswer
    from engine.gateway.security import client_keys

    endpoint = admin_endpoint(args)
    market = market_of(args.config)
    keys = client_keys(args.key, args.server_key)
    with AdminClient(endpoint, curve_keys=keys) as client:

        def ask(commands: list) -> list | None:
            try:
                return client.ask(*commands, timeout_s=args.timeout)
            except TimeoutError:
                print(f"cxe admin: no answer from {endpoint} within {args.timeout} s: is it the "
                      f"engine's admin endpoint ({WHERE})? A CURVE engine ignores a connection "
                      "without an operator's --key and its --server-key",
                      file=sys.stderr)  # fmt: skip
            except NotAdminAnswer as exc:
                print(f"cxe admin: {exc}", file=sys.stderr)
            return None

        codes = clock_day = None
        every = args.action in INSTRUMENT_ACTIONS and not args.instrument and args.config is None
        if every or (args.action == "start-of-day" and not args.date):
            # all instruments: the engine's, not the embedded market's (a probe's halt sent
            # four codes an engine on a market file did not list, each journaled as a reject);
            # the day: the engine clock's, not this machine's (a rehearsal's engine refused it)
            status = ask([wire.Status(with_state_hash=False)])
            if status is None:
                return 1
            if not (len(status) == 1 and isinstance(status[0], wire.StatusReport)):
                for reply in status:  # never the embedded market's instruments instead (a probe)
                    print(describe(reply))
                print(f"cxe admin: {endpoint} did not report the engine's instruments and "
                      f"day, so nothing was sent: is it the engine's admin endpoint "
                      f"({WHERE})?", file=sys.stderr)  # fmt: skip
                return 1
            codes, clock_day = status[0].instruments, status[0].clock_day
        commands = operator_commands(args, market, codes, clock_day)
        replies = ask(commands)
        if replies is None:
            return 1
        refused = False
        for reply in replies:
            described = describe_status if isinstance(reply, wire.StatusReport) else describe
            print(described(reply))
            refused |= type(reply).__name__ in ("Rejected", "SessionRejected")
        if not replies:  # say what was done (start-of-day's date came from a default), and
            sent = "; ".join(describe(command) for command in commands)  # where (a probe)
            after = ask([wire.Status(with_state_hash=False)])
            report = after[0] if after and isinstance(after[0], wire.StatusReport) else None
            where = f"; the engine's seq is now {report.seq:,}" if report else ""
            print(f"done: {sent} (the command caused no event{where})")
    return 1 if refused else 0


ADMIN_EXAMPLES = {
    "start-of-day": "start-of-day 2026-11-24",
    "open-call": "open-call CEA25 CCER",
    "uncross": "uncross",
    "halt": "halt CEA25",
    "resume": "resume CEA25",
    "close-call": "close-call",
    "close": "close",
    "set-reference": "set-reference CEA25 6200",
    "one-way-auction-open": "one-way-auction-open CEA25 5 100000 --pay-as-bid",
    "one-way-auction-close": "one-way-auction-close CEA25",
    "block-trade": "block-trade CEA25 3 5 6150 100000 --cl-ord-id blk-1",
    "end-of-day": "end-of-day",
    "snapshot": "snapshot",
    "status": "status --data cxe-data",
    "reload-keys": "reload-keys --key keys/alice.key_secret --server-key keys/engine.key",
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the engine service: order entry over ZeroMQ, journal, recovery",
        description="Run the exchange: recover from the data directory (latest snapshot, then "
        "the journal after it), warm the compiled code, then accept gateways' orders (ROUTER) "
        "and operator commands (admin). Every command is journaled and synced before anything "
        "it causes is sent. SIGINT or SIGTERM finishes the batch in hand and stops cleanly.",
        epilog="example: cxe serve --data cxe-data (then, from another terminal: cxe admin "
        "start-of-day 2026-11-24)",
    )
    serve.add_argument("--config", metavar="FILE", help="market TOML (default: embedded market)")
    serve.add_argument(
        "--data",
        default=DEFAULT_DATA,
        metavar="DIR",
        help=f"data directory, created if need be: journal, snapshots, trade log, "
        f"endpoints.json (default {DEFAULT_DATA})",
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
        "--keep-snapshots",
        type=nonnegative_int,
        default=7,
        metavar="N",
        help="snapshots kept in DATA/snapshots: the newest and the ones before it, to fall "
        "back to if it is damaged (1 leaves none: a damaged one is then recovered from the "
        "whole journal); each new snapshot removes the older ones (0 keeps every one; "
        "default 7)",
    )
    serve.add_argument(
        "--day-orders",
        type=positive_int,
        default=100_000,
        metavar="N",
        help="orders (and amends) a trading day is expected to carry: the tables keyed by "
        "ClOrdID are sized for them at start (29 MB for the default) and grow only past "
        "them, each doubling a pause of the engine (65 ms at 131,072 orders) "
        "(default 100000)",
    )
    serve.add_argument(
        "--sndhwm",
        type=queue_length,
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
        "--busy-poll",
        action="store_true",
        help="poll without sleeping: the lowest latency (no wake-up, warm caches) at the cost of "
        "one CPU kept busy even when the market is idle; for a machine with a core to spare "
        "(default: sleep in poll until a frame arrives)",
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
        description="Operator commands: start-of-day [DATE], open-call / uncross / halt / resume "
        "/ close-call / close [INSTRUMENT...] (all instruments when none is named), "
        "set-reference INSTRUMENT PRICE, one-way-auction-open INSTRUMENT SELLER QTY, "
        "one-way-auction-close INSTRUMENT, block-trade INSTRUMENT BUYER SELLER PRICE QTY "
        "--cl-ord-id ID, end-of-day, snapshot, status, reload-keys (against an engine with CURVE "
        "keys give --key and --server-key). Prices are in fen (6200 is 62.00 "
        "yuan), quantities in tonnes. Each event of the answer is printed on one line (the "
        "status in a few).",
        epilog="example: cxe admin status (cxe admin ACTION --help: each action's options)",
    )
    actions = admin.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start-of-day", help="begin a trading day")
    start.add_argument(
        "date",
        nargs="?",
        type=trading_date,
        help="the day, YYYY-MM-DD (default: the day the engine's clock is in, in the "
        "market's time zone: a rehearsal's --clock day)",
    )
    for action in INSTRUMENT_ACTIONS:
        sub = actions.add_parser(action, help=f"{action.replace('-', ' ')} instruments")
        sub.add_argument("instrument", nargs="*", help="instrument codes (default: all)")
    reference = actions.add_parser("set-reference", help="set an instrument's reference price")
    reference.add_argument("instrument", help="instrument code")
    reference.add_argument("price", type=positive_int, help="price in fen")
    one_way = actions.add_parser(
        "one-way-auction-open",
        help="open a one-way auction (单向竞价) of a CEA vintage for a seller",
        description="A seller offers QTY tonnes of a CEA vintage (at least the block minimum); "
        "its allowances are frozen now, members bid (AuctionBid) until one-way-auction-close.",
    )
    one_way.add_argument("instrument", help="instrument code, a CEA vintage (e.g. CEA25)")
    one_way.add_argument("seller", type=member_id, help="the selling member's id")
    one_way.add_argument("qty", type=positive_int, help="tonnes offered")
    one_way.add_argument(
        "--floor-minus-10pct",
        action="store_true",
        help="floor price 10%% below the reference (default: the reference)",
    )
    one_way.add_argument(
        "--pay-as-bid",
        action="store_true",
        help="each winning bid pays its own price (default: all pay the lowest winning bid)",
    )
    one_way_close = actions.add_parser(
        "one-way-auction-close",
        help="close an instrument's one-way auction and allocate the offer to the bids",
    )
    one_way_close.add_argument("instrument", help="instrument code")
    block = actions.add_parser(
        "block-trade",
        help="enter a negotiated block trade (大宗协议) between two members",
        description="Report a two-sided block trade: printed without touching the book, "
        "within the block price band and from the block minimum quantity.",
    )
    block.add_argument("instrument", help="instrument code")
    block.add_argument("buyer", type=member_id, help="the buying member's id")
    block.add_argument("seller", type=member_id, help="the selling member's id")
    block.add_argument("price", type=positive_int, help="price in fen per tonne")
    block.add_argument("qty", type=positive_int, help="tonnes")
    block.add_argument(
        "--cl-ord-id",
        required=True,
        type=cl_ord_id,
        metavar="ID",
        help="the trade's client order id (1-32 characters, new today for the buyer)",
    )
    actions.add_parser("end-of-day", help="end the trading day (day records, snapshot)")
    actions.add_parser("snapshot", help="write a snapshot of the state now")
    status = actions.add_parser("status", help="the engine's sequence, state hash and counters")
    status.add_argument(
        "--no-state-hash",
        action="store_true",
        help="leave the state hash out: computing it holds the engine's loop (about 0.3 s on "
        "a day of 400,000 orders)",
    )
    actions.add_parser(
        "reload-keys", help="reread the config's [security] keys; end revoked keys' sessions"
    )
    add_admin_options(admin, ADMIN_DEFAULTS)
    for sub in actions.choices.values():  # before the action or after it
        sub.epilog = f"example: cxe admin {ADMIN_EXAMPLES[sub.prog.split()[-1]]}"
        add_admin_options(sub, {})
    admin.set_defaults(run=cmd_admin)


ADMIN_DEFAULTS = {"data": DEFAULT_DATA, "endpoint": None, "config": None, "timeout": 10}


def add_admin_options(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """The connection options of `cxe admin`, on the admin parser (with their defaults) and
    on each action's (without: an option not given after the action leaves the one given
    before it, or the default, in place)."""

    def default(name: str):
        return defaults.get(name, argparse.SUPPRESS)

    parser.add_argument(
        "--data",
        default=default("data"),
        metavar="DIR",
        help=f"the engine's data directory, to find its endpoints (default {DEFAULT_DATA})",
    )
    parser.add_argument(
        "--endpoint", default=default("endpoint"), metavar="ENDPOINT",
        help="the admin endpoint, instead of the one DIR/endpoints.json names (cxe serve's "
        "default: tcp://127.0.0.1:5556)",
    )  # fmt: skip
    parser.add_argument(
        "--config", default=default("config"), metavar="FILE",
        help="market TOML: its instrument codes are what an action on all instruments sends "
        "(default: the engine's own list, asked for first)",
    )  # fmt: skip
    add_key_options(parser, None if defaults else argparse.SUPPRESS)
    parser.add_argument(
        "--timeout",
        type=positive_int,
        default=default("timeout"),
        metavar="S",
        help="seconds to wait for the answer (default 10)",
    )
