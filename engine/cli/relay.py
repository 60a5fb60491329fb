"""`cxe relay`: republish a running engine's market data feed to many subscribers
(engine.gateway.relay.FeedRelay), so the engine's loop pays for one subscriber however many
there are.

It finds the feed in the engine's data directory (DATA/endpoints.json) or takes
`--upstream`; prints where subscribers connect (and that snapshots are still the engine's);
a status line every `--report` seconds while the feed moves; a warning when nothing has come
from the engine for SILENCE_S seconds (the engine says something every second), and with
`--data`, when the engine there publishes on another endpoint (restarted on other ports), a
move to it; SIGINT or SIGTERM stops it cleanly (exit 0) with its totals. With `--config`
naming a [security] section it is CURVE on both sides, failing closed (its `--key` must be
one the config admits to market data), SIGHUP rereads the keys; without, plain and loopback
only unless `--insecure`, said loudly. Every line is flushed as it is printed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from engine.cli.common import market_of, positive_seconds, queue_length
from engine.cli.serve import DEFAULT_DATA, engine_endpoints
from engine.logline import LogLines

DEFAULT_BIND = "tcp://127.0.0.1:5560"


def report_seconds(text: str) -> float:
    """argparse type: seconds between status lines, at least one."""
    value = positive_seconds(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {text}")
    return value


SILENCE_S = 5.0  # the engine heartbeats every second


def cmd_relay(args: argparse.Namespace) -> int:
    from engine.gateway.readerlimit import connection_cap, raise_descriptor_limit
    from engine.gateway.relay import FeedRelay

    if args.upstream is not None and not args.upstream:
        raise ValueError("--upstream is empty: give the engine's market data endpoint")
    upstream, snapshots = upstream_of(args)
    security, client, server = relay_keys(args)
    stop, hangup = threading.Event(), threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: hangup.set())
    descriptors = raise_descriptor_limit()
    relay = FeedRelay(
        upstream, args.bind, hwm=args.hwm, security=security, client=client, server=server,
        log=say,
    ).start()  # fmt: skip
    try:
        say(f"the feed from {upstream}; subscribers connect to {relay.endpoint}")
        say(f"{descriptors:,} file descriptors; subscribers may hold {connection_cap():,} "
            "connections")  # fmt: skip
        say(f"snapshots are the engine's ({snapshots}); Ctrl-C or SIGTERM stops, SIGHUP "
            "rereads the keys")  # fmt: skip
        follow(relay, args, stop, hangup)
        if not relay.running:
            print(f"cxe relay: the relay's loop ended: {relay.failure}", file=sys.stderr)
            return 1
        totals = relay.statistics()
    finally:
        relay.stop()
    say(f"stopped; {figures(totals)}")
    return 0


def upstream_of(args: argparse.Namespace) -> tuple[str, str]:
    """The engine's market data endpoint, and what to say of its snapshots."""
    if args.upstream:
        return args.upstream, "the engine's snapshot endpoint"
    found = engine_endpoints(args.data, "--upstream")
    return found["market_data"], found["snapshots"]


def relay_keys(args: argparse.Namespace):
    """(security, the relay's client keys, its server key pair or None) with CURVE, three
    Nones without (said loudly; loopback only unless --insecure)."""
    from engine.gateway import security as curve

    security = market_of(args.config).security if args.config else None
    if security is None:
        if args.key or args.server_key:
            raise ValueError(
                "--key and --server-key are for CURVE: give --config a market with a "
                "[security] section (docs/SECURITY.md), or leave them out"
            )
        say("PLAIN LOOPBACK MODE: no authentication, no encryption: any local process may "
            "subscribe (give --config a market with a [security] section for CURVE)")  # fmt: skip
        exposed = curve.off_loopback([args.bind])
        if exposed and not args.insecure:
            raise ValueError(
                f"plain mode binds to loopback only, not {exposed}: give --config a market "
                "with a [security] section (docs/SECURITY.md), or --insecure to accept the risk"
            )
        return None, None, None
    if args.key is None:
        raise ValueError(
            "the config has a [security] section: give --key, the NAME.key_secret of a "
            "market data identity it lists (cxe keys NAME), for the relay to subscribe"
        )
    own = secret_key(args.key, "--key")
    identity = curve.key_table(security).get(own.public, "")
    if not identity.startswith(curve.DOMAINS["market_data"]):
        raise ValueError(
            f"--key {args.key}: the config lists no market data reader, operator or gateway "
            "with this key, so the engine would refuse it: list it under "
            "[security.market_data] or give a listed reader's key"
        )
    server = secret_key(args.server_key, "--server-key") if args.server_key else None
    return security, (own, curve.server_keys(security).public), server


def secret_key(path: str, option: str):
    """A key pair from a NAME.key_secret file, or ValueError naming the option and file."""
    from engine.gateway.security import read_key

    if not Path(path).is_file():
        raise ValueError(f"{option} {path}: no such file (make a pair with cxe keys NAME)")
    keys = read_key(path, f"{option} {path}")
    if keys.secret is None:
        raise ValueError(f"{option} {path} holds no secret key: give the NAME.key_secret file")
    return keys


def follow(relay, args: argparse.Namespace, stop: threading.Event, hangup: threading.Event):
    """Watch the relay until `stop` or its loop ends: a status line every --report seconds
    while the feed moves; a warning when nothing has come from the engine for SILENCE_S
    seconds, then a fresh connection every SILENCE_S (a key the engine refused and admitted
    again), and with --data a move to the engine's new endpoint when it has one; keys reread
    on SIGHUP."""
    reported = last = relay.statistics()
    heard, next_report, warned = time.monotonic(), time.monotonic() + args.report, False
    next_retry = 0.0
    while not stop.wait(1.0) and relay.running:
        now, figures_now = time.monotonic(), relay.statistics()
        if hangup.is_set():
            hangup.clear()
            reload_keys(relay, args)
        if figures_now.received != last.received:
            heard, last = now, figures_now
            if warned:
                say(f"the feed from {relay.upstream} is back")
                warned = False
        elif now - heard >= SILENCE_S and not warned:
            warned, next_retry = True, now
            say(f"WARNING: nothing from the engine at {relay.upstream} for {now - heard:.0f} s: "
                "is it running, and does it admit the relay's key?")  # fmt: skip
        moved = moved_engine(args.data, relay.upstream) if warned and not args.upstream else None
        if moved:
            feed, snapshots = moved
            say(f"the engine of {args.data} now publishes on {feed}: following it (its "
                f"snapshots are on {snapshots} now: subscribers must ask there)")  # fmt: skip
            relay.retarget(feed)
        elif warned and now >= next_retry:  # ZeroMQ never retries a connection it was refused
            next_retry = now + SILENCE_S
            relay.retarget(relay.upstream)
        if now >= next_report:
            next_report = now + args.report
            if figures_now != reported:
                say(figures(figures_now))
                reported = figures_now


def moved_engine(data: str, upstream: str) -> tuple[str, str] | None:
    """The market data and snapshot endpoints the data directory's running engine gives now,
    if it publishes elsewhere than `upstream`."""
    try:
        endpoints = engine_endpoints(data, "--upstream")
    except ValueError:
        return None
    feed = endpoints["market_data"]
    return (feed, endpoints["snapshots"]) if feed != upstream else None


def reload_keys(relay, args: argparse.Namespace) -> None:
    import zmq

    if relay.authenticator is None:
        say("SIGHUP: plain mode, no keys to reread")
        return
    try:
        revoked = relay.reload(market_of(args.config).security)
    except ValueError as exc:  # the keys as they were stay in force
        say(f"keys not reloaded: {exc}")
        return
    except zmq.ZMQError as exc:  # the loop has ended: the caller says so and stops
        say(f"keys reloaded, but {relay.endpoint} could not be bound again: {exc}")
        return
    say(f"keys reloaded: {len(relay.authenticator.table)} admitted, revoked {sorted(revoked)}")
    if revoked:
        say("every subscriber's connection ended, to be admitted again under the new keys")


_log = LogLines("cxe relay")  # its log never stops the relay (engine.logline)


def say(line: str) -> None:
    _log(f"relay: {line}")


def figures(statistics) -> str:
    refused = ""
    if statistics.resets:
        times = counted(statistics.resets, "time")
        refused = (
            f"; {counted(statistics.bad_subscriptions, 'subscription')} to topics the feed "
            f"does not have ended every subscriber's connection {times}"
        )
    if statistics.readers_cut:
        refused += (
            f"; {counted(statistics.readers_cut, 'subscriber connection')} ended for sending "
            f"more than a reader may"
        )
    if statistics.readers_waited:
        refused += (
            f"; {counted(statistics.readers_waited, 'subscriber connection')} waited to be admitted"
        )
    return (
        f"{counted(statistics.received, 'message')} from the engine "
        f"({counted(statistics.received_bytes, 'byte')}), {statistics.sent:,} published to "
        f"subscribers{refused}"
    )


def counted(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


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
        type=queue_length,
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
        "--server-key",
        metavar="FILE",
        help="with --config's [security]: a NAME.key_secret of the relay's own for its "
        "subscribers, who then trust its public key (default: the engine's key pair)",
    )
    relay.add_argument(
        "--report",
        type=report_seconds,
        default=60.0,
        metavar="S",
        help="seconds between status lines while the feed moves, at least 1 (default 60)",
    )
    relay.add_argument(
        "--insecure",
        action="store_true",
        help="without a [security] config, bind beyond loopback anyway (no authentication)",
    )
    relay.set_defaults(run=cmd_relay)
