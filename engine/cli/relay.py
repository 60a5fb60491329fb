"""`cxe relay`: republish a running engine's market data feed to many subscribers
(engine.gateway.relay.FeedRelay), so the engine's loop pays for one subscriber however many
there are.

It finds the feed in the engine's data directory (DATA/endpoints.json) or takes
`--upstream`; prints where subscribers connect (and that snapshots are still the engine's);
a status line every `--report` seconds while the feed moves; SIGINT or SIGTERM stops it
cleanly (exit 0) with its totals. With `--config` naming a [security] section it is CURVE on
both sides, failing closed; without, plain and loopback only unless `--insecure`, said loudly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from engine.cli.common import market_of, positive_int, positive_seconds
from engine.cli.serve import DEFAULT_DATA, engine_endpoints

DEFAULT_BIND = "tcp://127.0.0.1:5560"


def cmd_relay(args: argparse.Namespace) -> int:
    from engine.gateway import security as curve
    from engine.gateway.relay import FeedRelay

    if args.upstream:
        upstream, snapshots = args.upstream, "the engine's snapshot endpoint"
    else:
        found = engine_endpoints(args.data, "--upstream")
        upstream, snapshots = found["market_data"], found["snapshots"]
    market_security = market_of(args.config).security if args.config else None
    client = None
    if market_security is not None:
        if args.key is None:
            raise ValueError(
                "the config has a [security] section: give --key, the NAME.key_secret of a "
                "market data identity it lists (cxe keys NAME), for the relay to subscribe"
            )
        curve.check(market_security)
        client = (
            curve.read_key(args.key, "--key"),
            curve.server_keys(market_security).public,
        )
    else:
        print(
            "PLAIN LOOPBACK MODE: no authentication, no encryption: any local process may "
            "subscribe (give --config a market with a [security] section for CURVE)"
        )
        exposed = curve.off_loopback([args.bind])
        if exposed and not args.insecure:
            raise ValueError(
                f"plain mode binds to loopback only, not {exposed}: give --config a market "
                "with a [security] section (docs/SECURITY.md), or --insecure to accept the risk"
            )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    relay = FeedRelay(
        upstream, args.bind, hwm=args.hwm, security=market_security, client=client
    ).start()
    try:
        print(f"relay: the feed from {upstream}; subscribers connect to {relay.endpoint}")
        print(f"relay: snapshots are the engine's ({snapshots}); Ctrl-C or SIGTERM stops")
        reported = relay.statistics()
        while not stop.wait(args.report) and relay.running:
            now = relay.statistics()
            if now != reported:
                print(f"relay: {_figures(now)}", flush=True)
                reported = now
        if not relay.running:
            print(f"cxe relay: the relay's proxy ended: {relay.failure}", file=sys.stderr)
            return 1
        totals = relay.statistics()
    finally:
        relay.stop()
    print(f"relay: stopped; {_figures(totals)}")
    return 0


def _figures(statistics) -> str:
    return (
        f"{statistics.received:,} messages from the engine ({statistics.received_bytes:,} "
        f"bytes), {statistics.sent:,} published to subscribers"
    )


def add_commands(commands: argparse._SubParsersAction) -> None:
    relay = commands.add_parser(
        "relay",
        help="republish a running engine's market data to many subscribers (a fan-out tier)",
        description="Subscribe once to a running engine's market data feed and republish every "
        "message unchanged on a PUB socket of its own: the engine's service loop then pays "
        "for one subscriber, not for each. Subscribers connect to the relay for the feed and "
        "to the engine for snapshots (cxe watch --market-data RELAY --snapshots ENGINE ...); "
        "their gap checks work through it. SIGINT or SIGTERM stops it.",
        epilog="example: cxe relay --data cxe-data --bind tcp://127.0.0.1:5560",
    )
    relay.add_argument(
        "--data",
        default=DEFAULT_DATA,
        metavar="DIR",
        help=f"the engine's data directory, to find its feed (default {DEFAULT_DATA})",
    )
    relay.add_argument(
        "--upstream", metavar="ENDPOINT", help="the engine's market data endpoint (not --data)"
    )
    relay.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="ENDPOINT",
        help=f"where subscribers connect (default {DEFAULT_BIND}; port * picks a free one)",
    )
    relay.add_argument(
        "--hwm",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="messages queued per subscriber before the relay drops for it, and from the engine "
        "(default 10000; a subscriber that loses some resyncs from the engine's snapshots)",
    )
    relay.add_argument(
        "--config",
        metavar="FILE",
        help="the engine's market TOML: with a [security] section, CURVE on both sides",
    )
    relay.add_argument(
        "--key",
        metavar="FILE",
        help="with --config's [security]: the relay's NAME.key_secret, a market data identity",
    )
    relay.add_argument(
        "--report",
        type=positive_seconds,
        default=60.0,
        metavar="S",
        help="seconds between status lines while the feed moves (default 60)",
    )
    relay.add_argument(
        "--insecure",
        action="store_true",
        help="without a [security] config, bind beyond loopback anyway (no authentication)",
    )
    relay.set_defaults(run=cmd_relay)
