"""`cxe`: the command line. Every command has --help; errors say what to do next.

Commands grow with the project: clearing's in engine.cli.clearing, replay's and the logs' in
engine.cli.replay, the engine service's (serve, admin) in engine.cli.serve, the live view
(watch) in engine.cli.watch, the feed's fan-out (relay) in engine.cli.relay, key pairs (keys)
in engine.cli.keys, shared argument types in engine.cli.common.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time

from engine.cli import clearing, keys, relay, replay, serve, watch
from engine.cli.common import market_of, positive_int, trading_date

LIVE_STEPS = 1_000  # continuous steps of `cxe demo` with the real processes (engine.demo_live)


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.in_process:
        return cmd_demo_live(args)
    from engine.demo import render, run_demo

    market = market_of(args.market)
    started = time.perf_counter()
    steps = args.steps or 3_000
    day = run_demo(market, seed=args.seed, steps=steps, out=args.out, date=args.date)
    print(render(day))
    print(f"state hash {day.exchange.state_hash()} (cxe replay of the command log prints it too)")
    if args.out:
        print(f"wrote {args.out}/commands.log and {args.out}/trades.log")
    print(f"simulated in {time.perf_counter() - started:.2f} s")
    return 0


def cmd_demo_live(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.demo_live import DEFAULT_OUT, passed, run_live
    from engine.demo_report import Progress, render_live

    market = market_of(args.market)
    out = Path(args.out or DEFAULT_OUT)
    progress = Progress(sys.stdout.isatty())
    try:
        steps = args.steps or LIVE_STEPS
        day = run_live(market, args.seed, steps, out, args.date, args.market, progress)
    except (RuntimeError, TimeoutError) as exc:
        progress.close()
        print(f"cxe demo: {exc} (the processes' logs are in {out / 'logs'})", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        progress.close()
        print(f"cxe demo: interrupted; its processes were stopped, files are in {out}")
        return 130
    finally:
        progress.close()
    summary = render_live(day)
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    print(f"summary:      {out / 'summary.txt'}")
    print(f"the day took {time.monotonic() - day.started:.0f} s")
    return 0 if passed(day) else 1


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
        help="run a full trading day of the embedded market with the real processes",
        description="Run a complete, seeded trading day with the real system on loopback: "
        "the engine service (cxe serve), a broker gateway process per gateway of the market "
        "sending its members' orders (market makers, brokers, compliance entities) over "
        "ZeroMQ, a market data subscriber keeping a local book, clearing capturing the trade "
        "stream live (cxe capture), and the operator over the admin socket: opening calls, "
        "continuous trading, a halt with a re-opening call, a one-way auction, a block trade, "
        "closing calls and the close. Midway it kills the engine with SIGKILL and restarts it "
        "from its journal; the gateways resend what was unanswered. Then clearing settles the "
        "day (cxe clear) and the demo checks that nothing acknowledged was lost and that a "
        "replay of the journal gives the engine's state hash. The first run compiles the "
        "kernel (1-2 minutes, once). Exit status 1 if a check failed. With --in-process the "
        "day runs through the exchange core in this process instead (no sockets, faster, "
        "deterministic output).",
        epilog="example: cxe demo --steps 200 --out out/demo1 (and for the day in this "
        "process, writing commands.log and trades.log: cxe demo --in-process --steps 5000 "
        "--out out/day1)",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--steps",
        type=positive_int,
        help="continuous-trading steps per instrument: fewer make a shorter day (default "
        f"{LIVE_STEPS} with the real processes, 3000 with --in-process)",
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
        help="where the day's files go: the engine's journal, the logs, the trade store, ledger "
        "and statements, plots and summary.txt (default out/demo, replaced by each run; "
        "with --in-process: only when given, its commands.log and trades.log)",
    )
    demo.add_argument(
        "--in-process",
        action="store_true",
        help="run the day through the exchange core in this process (no engine service, no "
        "sockets, no crash); prints the same figures for the same seed every time",
    )
    demo.set_defaults(run=cmd_demo)

    serve.add_commands(commands)
    watch.add_commands(commands)
    relay.add_commands(commands)
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
        if exc.errno == errno.EADDRINUSE:  # serve's, relay's binding
            return (
                f"{exc} (ZeroMQ): another process holds that port: stop it, or give the "
                "option another port (tcp://127.0.0.1:* takes any free one)"
            )
        return (
            f"{exc} (ZeroMQ): an endpoint is written transport://host:port, such as "
            "tcp://127.0.0.1:5556 (or ipc:///path)"
        )
    if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename is not None:
        return (
            f"{exc.filename}: a file is where a directory belongs: move it away, or give "
            f"another path"
        )
    if isinstance(exc, IsADirectoryError) and exc.filename is not None:
        return f"{exc.filename}: a directory is where a file belongs: move it away"
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
