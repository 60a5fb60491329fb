"""`cxe`: the command line. Every command has --help; errors say what to do next.

Commands grow with the project (serve, gateway, admin, replay, clear come with their issues).
"""

from __future__ import annotations

import argparse
import sys
import time

from engine.config import default_market, load_market


def _market(path: str | None):
    return default_market() if path is None else load_market(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import render, run_demo

    market = _market(args.market)
    started = time.perf_counter()
    day = run_demo(market, seed=args.seed, steps=args.steps)
    print(render(day))
    print(f"simulated in {time.perf_counter() - started:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxe",
        description="Exchange for China's carbon markets: CEA allowances and CCER credits.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="simulate a full trading day of the embedded market and print its figures",
        description="Run a seeded, simulated trading day of every instrument through the "
        "exchange core (validation and pre-trade risk on): opening calls, continuous trading "
        "by market makers, brokers and compliance entities, a halt with a re-opening call, a "
        "one-way auction, a block trade, closing calls and the close. Prints each phase's "
        "figures and the end-of-day records.",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--steps",
        type=int,
        default=3_000,
        help="continuous-trading steps per instrument (default 3000)",
    )
    demo.add_argument("--market", metavar="TOML", help="market config file (default: embedded)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:
        print(f"cxe {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
