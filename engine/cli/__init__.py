"""`cxe`: the command line. Every command has --help; errors say what to do next.

Commands grow with the project: clearing's in engine.cli.clearing, replay's and the logs' in
engine.cli.replay, the engine service's (serve, admin) in engine.cli.serve, the live view
(watch) in engine.cli.watch, key pairs (keys) in engine.cli.keys, shared argument types in
engine.cli.common.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from engine.cli import clearing, keys, replay, serve, watch
from engine.cli.common import market_of, positive_int, trading_date


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import render, run_demo

    market = market_of(args.market)
    started = time.perf_counter()
    day = run_demo(market, seed=args.seed, steps=args.steps, out=args.out, date=args.date)
    print(render(day))
    print(f"state hash {day.exchange.state_hash()} (cxe replay of the command log prints it too)")
    if args.out:
        print(f"wrote {args.out}/commands.log and {args.out}/trades.log")
    print(f"simulated in {time.perf_counter() - started:.2f} s")
    return 0


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("cxe")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxe",
        description="Exchange for China's carbon markets: CEA allowances and CCER credits.",
    )
    parser.add_argument("--version", action="version", version=f"cxe {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="simulate a full trading day of the embedded market and print its figures",
        description="Run a seeded, simulated trading day of every instrument through the "
        "exchange core (validation and pre-trade risk on): opening calls, continuous trading "
        "by market makers, brokers and compliance entities, a halt with a re-opening call, a "
        "one-way auction, a block trade, closing calls and the close. Prints each phase's "
        "figures and the end-of-day records.",
        epilog="example: cxe demo --steps 500 --seed 3 --out out/demo",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--steps",
        type=positive_int,
        default=3_000,
        help="continuous-trading steps per instrument (default 3000)",
    )
    demo.add_argument(
        "--market",
        metavar="FILE",
        help="market config, TOML or clearing's JSON (default: the embedded market)",
    )
    demo.add_argument(
        "--date",
        type=trading_date,
        help="trading day, a weekday that is not one of the market's holidays (default "
        "2026-11-24, or the trading day after the day a clearing opening file follows)",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        help="also write the day's command log (commands.log) and trade log (trades.log) into DIR",
    )
    demo.set_defaults(run=cmd_demo)

    serve.add_commands(commands)
    watch.add_commands(commands)
    clearing.add_commands(commands)
    replay.add_commands(commands)
    keys.add_commands(commands)
    return parser


# optional packages (pyproject's extras) a command may need, and how to get them
EXTRAS = {
    "matplotlib": "research",
    "pyarrow": "research",
    "dask": "parallel",
    "distributed": "parallel",
}


def failure(exc: BaseException) -> str:
    """What went wrong, for a person, with what to do where the error does not say it."""
    import zmq

    if isinstance(exc, ModuleNotFoundError):
        package = (exc.name or "").partition(".")[0]
        extra = EXTRAS.get(package)
        how = (
            f"pip install 'cxe[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
            if extra
            else f"pip install {package}"
        )
        return f"this needs the package {package!r}, which is not installed: {how}"
    if isinstance(exc, zmq.ZMQError):
        return (
            f"{exc} (ZeroMQ): give an endpoint such as tcp://127.0.0.1:5555, on a port that "
            "is free to bind or has an engine to connect to"
        )
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    import zmq

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `cxe ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs say
        return 0
    except (ValueError, OSError, ModuleNotFoundError, zmq.ZMQError) as exc:
        print(f"cxe {args.command}: {failure(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
