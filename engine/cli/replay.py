"""`cxe replay` and `cxe log`: research replay and the engine's logs from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.replay.formats import FORMATS

if TYPE_CHECKING:
    pass
from engine.cli.common import (
    market_of,
    nonnegative_int,
    note_torn_tail,
    positive_int,
    trading_date,
)

REPLAY_OUT = "out/replay"  # ignored by git (.gitignore has /out/)
SOURCE_NAMES = {"lobster": "LOBSTER file", "commands": "command file", "log": "command log"}
REPLAY_OPTIONS = {
    "lobster": {
        "orderbook",
        "out",
        "interval",
        "plot",
        "counterfactual",
        "date",
        "log_depth",
    },
    "commands": {"out", "tick", "price_scale", "qty_scale", "strict", "market"},
    "log": {"market", "out", "strict"},
}
OPTION_NAMES = set().union(*REPLAY_OPTIONS.values())


def _flags(names) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in sorted(names))


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.journal.segments import list_segments
    from engine.replay.formats import detect

    if len(args.sources) > 1 or not _one_source(Path(args.sources[0])):
        return _replay_many(args)
    if args.workers is not None or args.scheduler:
        raise ValueError(
            "--workers and --scheduler apply to several sources (files, a directory or a "
            "pattern): one source replays in this process"
        )
    source = Path(args.sources[0])
    # a journal directory: its segments are one command log
    kind = "log" if source.is_dir() and list_segments(source) else args.format or detect(source)
    if kind == "trades":
        raise ValueError(f"{source} is a trade log: nothing to replay (cxe log dump reads it)")
    given = [name for name, value in vars(args).items() if name in OPTION_NAMES and value]
    if refused := [name for name in given if name not in REPLAY_OPTIONS[kind]]:
        flags = " and ".join("--" + name.replace("_", "-") for name in refused)
        verb = "does" if len(refused) == 1 else "do"
        raise ValueError(
            f"{flags} {verb} not apply to {source}, a {SOURCE_NAMES[kind]}: it takes "
            f"{_flags(REPLAY_OPTIONS[kind])}"
        )
    if kind == "log":
        return _replay_command_log(source, args)
    if kind == "commands":
        return _replay_command_file(source, args)
    return _replay_lobster(source, args)


def _one_source(path: Path) -> bool:
    """A file, or a journal directory (its segments are one command log)."""
    from engine.journal.segments import list_segments

    return path.is_file() or (path.is_dir() and bool(list_segments(path)))


MANY_REFUSED = {
    "orderbook": "each day's order book file is found beside it",
    "plot": "plots draw one day: replay a source alone to plot it",
    "date": "each day's date comes from its file name",
    "log_depth": "plots draw one day",
}


def _replay_many(args: argparse.Namespace) -> int:
    """Several sources (files, directories, patterns) replayed in parallel; one table per
    output kind with a source column."""
    from engine.replay.formats import detect
    from engine.replay.parallel import combine, expand, lobster_day, run_sources
    from engine.replay.runner import lobster_units, write_table

    sources = expand(args.sources)
    if not sources:
        raise ValueError(
            f"{' '.join(args.sources)}: no LOBSTER day or command file, and no command log "
            "segments (commands-*.log) of a journal"
        )
    kinds = {source: args.format or detect(source) for source in sources}
    if others := [f"{s} ({SOURCE_NAMES.get(k, k)})" for s, k in kinds.items() if k != "lobster"]:
        raise ValueError(
            "several sources replay together when they are LOBSTER days (zips or message "
            f"files); replay these one at a time: {', '.join(others[:5])}"
        )
    given = [name for name, value in vars(args).items() if name in OPTION_NAMES and value]
    if refused := [name for name in given if name not in REPLAY_OPTIONS["lobster"]]:
        raise ValueError(f"{_flags(refused)}: not for LOBSTER days")
    if refused := [name for name in given if name in MANY_REFUSED]:
        reasons = "; ".join(f"--{n.replace('_', '-')}: {MANY_REFUSED[n]}" for n in refused)
        raise ValueError(f"{_flags(refused)} not with several sources ({reasons})")
    from engine.replay.parallel import INSTALL, choose_workers

    workers, why = (args.workers, "") if args.scheduler else choose_workers(sources, args.workers)
    if args.scheduler and not _have_dask():
        raise ValueError(f"--scheduler needs Dask, which is not installed: {INSTALL}")
    if workers != 0 and not args.scheduler and not _have_dask():
        print(
            f"note: Dask is not installed, so the {len(sources)} sources run one after "
            f"another in this process; to run them in parallel: {INSTALL}",
            file=sys.stderr,
        )
        workers = 0
    where = (
        f"the cluster at {args.scheduler} (connecting: up to 30 s if nothing answers there)"
        if args.scheduler
        else "this process"
        if workers == 0
        else "a local Dask cluster"
    )
    print(f"replaying {len(sources)} LOBSTER days on {where}" + (f" ({why})" if why else ""))
    started = time.perf_counter()
    runs = run_sources(
        lobster_day,
        sources,
        (args.interval or 60, args.counterfactual),
        workers=workers,
        scheduler=args.scheduler,
    )
    for run in runs:
        if run.error:
            named = run.error if run.source in run.error else f"{run.source}: {run.error}"
            print(f"cxe replay: {named}", file=sys.stderr)
        else:
            print(run.summary)
    out = Path(args.out or REPLAY_OUT)
    out.mkdir(parents=True, exist_ok=True)
    for kind, table in combine(runs).items():
        units = {name: lobster_units(name) for name in table.dtype.names}
        units["source"] = "the source file, as named on the command line"
        print(f"wrote {write_table(table, out / f'{kind}.csv', units=units)}")
    failed = sum(1 for run in runs if run.error)
    unreplayed = f"; {failed} could not be (said above; bad rows in rejects.csv)" if failed else ""
    print(
        f"{len(runs) - failed} of {len(runs)} sources replayed in "
        f"{time.perf_counter() - started:.1f} s{unreplayed}"
    )
    return max(run.code for run in runs)


def _have_dask() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _replay_lobster(source: Path, args: argparse.Namespace) -> int:
    from engine.replay.formats import is_zip
    from engine.replay.lobster import BadFile
    from engine.replay.runner import batch_replay, replay_lobster, text_progress

    out = Path(args.out or REPLAY_OUT)
    if is_zip(source) and args.orderbook:
        raise ValueError(f"--orderbook does not apply to {source}: the zip holds the order book")
    if args.log_depth and not args.plot:
        raise ValueError("--log-depth sets the depth plot's axis: give --plot too")
    if args.plot:  # before the replay, not after it
        from engine.replay.plots import pyplot

        pyplot()
    started = time.perf_counter()
    try:
        result = replay_lobster(source, args.orderbook, progress=text_progress)
    except BadFile as exc:
        _report_rejects(exc.bad_rows, out)
        raise
    faithful = time.perf_counter() - started
    stats = result.stats
    print(
        f"{result.name}: {stats.messages:,} messages, {stats.rows_mismatched:,} of "
        f"{stats.rows_checked:,} book rows differ from the order book file; "
        f"{stats.executions_matched:,} of {stats.executions_known_queue:,} executions with a "
        f"known queue hit the named order ({stats.match_rate:.3%}); {faithful:.2f} s"
    )
    started = time.perf_counter()
    book, batch = batch_replay(result.commands, result.tick)
    print(
        f"batch replay of the {len(result.commands):,} book commands through the kernel: "
        f"{time.perf_counter() - started:.3f} s, {batch.fills:,} fills; final book "
        f"{'identical' if book.depth(1 << 30) == result.book.depth(1 << 30) else 'DIFFERENT'}"
    )
    for path in result.write(out, args.interval or 60, args.plot, args.date, args.log_depth):
        print(f"wrote {path}")
    if args.counterfactual:
        _counterfactuals(result, out, args.plot, args.date)
    return 0 if stats.rows_mismatched == 0 else 1


def _counterfactuals(result, out: Path, plot: bool, date: str | None) -> None:
    from engine.replay.counterfactual import compare, outcome_table
    from engine.replay.runner import lobster_units, write_table

    outcomes = compare(result.commands, result.tick)
    print(
        f"{'scenario':<24} {'fills':>7} {'matched':>10} {'VWAP':>12} {'rejects':>8} "
        f"{'best bid':>10} {'best ask':>10}"
    )
    for o in outcomes:
        print(
            f"{o.scenario:<24} {o.fills:>7,} {o.matched_volume:>10,} {o.vwap:>12,.1f} "
            f"{o.rejects:>8,} {o.best_bid:>10,} {o.best_ask:>10,}"
        )
    table = outcome_table(outcomes)
    units = {name: lobster_units(name) for name in table.dtype.names}
    print(f"wrote {write_table(table, out / 'counterfactuals.csv', units=units)}")
    if plot:
        from engine.replay.plots import counterfactual_figure, day_label, save

        figure = counterfactual_figure(outcomes, day_label(result.name, result.day.levels, date))
        for path in save({"counterfactuals.png": figure}, out):
            print(f"wrote {path}")


def _rows(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def _report_rejects(bad_rows: list, out: Path) -> None:
    """Count by reason on stderr, every row into out/rejects.csv (line, reason, text)."""
    from engine.replay.runner import rejects_table, write_table

    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for row in bad_rows:
        counts[row.reason] = counts.get(row.reason, 0) + 1
    path = write_table(rejects_table(bad_rows), out / "rejects.csv", parquet=False)
    if bad_rows:
        by_reason = ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts.items()))
        print(f"rejected {_rows(len(bad_rows))}: {by_reason}; every one in {path}", file=sys.stderr)
    else:
        print(f"no rows rejected (wrote an empty {path})")


def _replay_command_file(source: Path, args: argparse.Namespace) -> int:
    from engine.replay.flow import FILL_UNITS
    from engine.replay.formats import is_parquet
    from engine.replay.runner import write_table
    from engine.replay.sources import Scale, read_commands

    if args.market and args.tick:
        raise ValueError("--tick does not apply with --market: each instrument has its own tick")
    scale = Scale(args.tick or 1, args.price_scale or 1, args.qty_scale or 1)
    loaded = read_commands(source, scale, parquet=is_parquet(source))
    if args.market and "owner" in loaded.columns:
        raise ValueError(
            f"{source} has an owner column, which the exchange core does not take: there "
            "the member is the self-trade prevention owner (leave --market out to replay "
            "through the bare book with owners)"
        )
    out = Path(args.out or REPLAY_OUT)
    out.mkdir(parents=True, exist_ok=True)
    beyond = [row for row in loaded.bad_rows if row.reason == "beyond_limits"]
    if beyond:
        _report_rejects(loaded.bad_rows, out)
        raise ValueError(
            f"{len(beyond):,} rows hold values beyond the book's limits ({scale.limits()}), "
            f"so nothing was replayed (line {beyond[0].line}: {beyond[0].detail})"
        )
    if args.market:
        fills, rejects = _command_file_in_core(loaded, args.market)
    else:
        fills, rejects = _command_file_in_book(loaded)
    print(f"wrote {write_table(fills, out / 'fills.csv', units=FILL_UNITS)}")
    rejects = sorted(loaded.bad_rows + rejects, key=lambda row: row.line)
    _report_rejects(rejects, out)
    return 1 if args.strict and rejects else 0


def _command_file_in_book(loaded) -> tuple:
    import numpy as np

    from engine.replay.flow import FILL_COLUMNS, run_flow

    scale = loaded.scale
    print(
        f"{loaded.path.name}: {_rows(loaded.rows)} through the bare book (no price band, "
        f"no phases, no risk checks); tick {scale.tick}, price x{scale.price_scale}, "
        f"qty x{scale.qty_scale}; {scale.limits()}"
    )
    fills, rejects = [], []
    for code, flow in sorted(loaded.flows.items()):
        started = time.perf_counter()
        result = run_flow(code, flow, loaded)
        elapsed = time.perf_counter() - started
        fills.append(result.fills)
        rejects += result.rejects
        bid, ask = result.book.best_bid(), result.book.best_ask()
        print(
            f"{code}: {result.commands:,} commands in {elapsed:.3f} s, {len(result.fills):,} "
            f"fills, {int(result.fills['qty'].sum()):,} traded, {len(result.rejects):,} "
            f"rejected by the book; best bid {bid}, best ask {ask}"
        )
    return (np.concatenate(fills) if fills else np.zeros(0, dtype=FILL_COLUMNS)), rejects


def _command_file_in_core(loaded, market_path: str) -> tuple:
    from engine.replay.core_flow import run_in_core

    result = run_in_core(loaded, market_of(market_path))
    print(
        f"{loaded.path.name}: {_rows(loaded.rows)} through the exchange core of {market_path} "
        f"(validation, price band, phases, pre-trade risk), trading day {result.date}; "
        f"{result.commands:,} commands, {len(result.fills):,} trades, "
        f"{int(result.fills['qty'].sum()):,} traded, {len(result.rejects):,} rejected by "
        "the exchange"
    )
    print(f"state hash {result.exchange.state_hash()}")
    return result.fills, result.rejects


def _replay_command_log(source: Path, args: argparse.Namespace) -> int:
    from engine.journal.segments import list_segments
    from engine.replay.logs import replay_log

    last_file = list_segments(source)[-1].path if source.is_dir() else source
    result = replay_log(source, market_of(args.market))
    by_reason = ", ".join(f"{name.lower()} {n:,}" for name, n in sorted(result.rejects.items()))
    print(
        f"{source.name}: {result.commands:,} commands replayed into the exchange core, "
        f"{result.trades:,} trades, {sum(result.rejects.values()):,} rejected"
        f"{f' ({by_reason})' if by_reason else ''}"
    )
    print(f"state hash {result.state_hash}")
    note_torn_tail(last_file)
    if args.out:
        _report_log_rejects(result.rejected, Path(args.out))
    if result.mismatch:
        print(f"cxe replay: NOT the recorded day: {result.mismatch}", file=sys.stderr)
        return 3
    if result.checked_against is None:
        print(
            "note: no trades.log beside the log to check the replay against: compare the "
            "state hash with the one the day printed (cxe demo prints it)",
            file=sys.stderr,
        )
    else:
        print(f"trades and day-end records identical to {result.checked_against}")
    return 1 if args.strict and result.rejected else 0


def _report_log_rejects(rejected: list[tuple[int, str, str]], out: Path) -> None:
    import numpy as np

    from engine.replay.runner import write_table

    out.mkdir(parents=True, exist_ok=True)
    table = np.array(rejected, dtype=[("seq", "i8"), ("reason", "O"), ("text", "O")])
    print(f"wrote {write_table(table, out / 'rejects.csv', parquet=False)}")


def cmd_log_dump(args: argparse.Namespace) -> int:
    import json

    from engine.replay.formats import framed_kind
    from engine.replay.logs import dump, summary

    path = Path(args.file)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    with path.open("rb") as f:
        kind = framed_kind(f.read(1 << 16))
    if kind is None:
        raise ValueError(f"{path} is not an engine command log or trade log (framed records)")
    codes = [i.code for i in market_of(args.market).instruments]
    if args.summary:
        print(json.dumps(summary(path, kind, codes), indent=2))
    else:  # `cxe log dump ... | head`: a closed pipe ends it quietly (engine.cli.main)
        for record in dump(path, kind, codes):
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    note_torn_tail(path)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The replay and log commands and their options."""
    replay = commands.add_parser(
        "replay",
        help="replay historical order flow (LOBSTER, a command file or an engine command log)",
        description="Replay order flow. The source's format is told from its content (or "
        "--format): a LOBSTER message file or zip goes through the book with every row of its "
        "order book file checked, then again at kernel speed, and trades, top of book and "
        "per-interval analytics are written (plots with --plot); a command file (CSV or "
        "Parquet, docs/REPLAY.md) goes through the bare book, or with --market the exchange "
        "core, and its fills and rejects are written; an engine command log is replayed into "
        "the exchange core, checked against the trade log beside it, and its state hash "
        "printed. Several LOBSTER days (files, directories or patterns) replay in parallel on a "
        "local Dask cluster, or on an existing one with --scheduler, and each output is one "
        "table with a source column. Options that do not apply to the source are refused.",
        epilog="example: cxe replay AAPL_2012-06-21_34200000_57600000_message_10.csv --plot "
        f"(writes into {REPLAY_OUT}; --plot needs matplotlib: pip install -e '.[research]')",
    )
    replay.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a LOBSTER message file or zip, a command file (.csv or .parquet), an engine "
        "command log, or a journal directory; several LOBSTER days (files, directories of "
        "them, or patterns such as 'data/*.zip') replay in parallel, their outputs combined",
    )
    replay.add_argument(
        "--workers",
        type=nonnegative_int,
        metavar="N",
        help="several sources: local Dask worker processes (default: one per core, at most "
        "one per source, when the days hold 4 MB of messages or more in all and there are "
        "two cores or more, else one after another in this process, saying why; 0: one "
        "after another)",
    )
    replay.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="several sources: run them on the Dask cluster whose scheduler is at ADDRESS "
        "(e.g. tcp://10.0.0.5:8786); its workers must have cxe installed and see the "
        "files at the same paths",
    )
    replay.add_argument(
        "--format",
        choices=FORMATS,
        help="the source's format (default: told from its content)",
    )
    replay.add_argument(
        "--orderbook", help="LOBSTER: the matching order book file (default: beside it)"
    )
    replay.add_argument("--out", metavar="DIR", help=f"output directory (default {REPLAY_OUT})")
    replay.add_argument(
        "--interval", type=positive_int, help="LOBSTER: seconds per interval (default 60)"
    )
    replay.add_argument("--plot", action="store_true", help="LOBSTER: PNG plots (matplotlib)")
    replay.add_argument(
        "--date",
        type=trading_date,
        help="LOBSTER: the day's date for the plots' clock (default: from the file name)",
    )
    replay.add_argument(
        "--log-depth", action="store_true", help="LOBSTER: a log scale on the depth plot"
    )
    replay.add_argument(
        "--market",
        metavar="FILE",
        help="command log: the market it ran with; command file: replay it through this "
        "market's exchange core instead of the bare book",
    )
    replay.add_argument(
        "--counterfactual",
        action="store_true",
        help="LOBSTER: also run the flow under other rules (coarser tick, band, opening "
        "call, pick) and compare",
    )
    replay.add_argument(
        "--tick",
        type=positive_int,
        help="command file: the price increment in book units (default 1)",
    )
    replay.add_argument(
        "--price-scale",
        type=positive_int,
        help="command file: book units per file price unit, e.g. 100 for prices in dollars "
        "booked in cents (default 1: prices are whole book units)",
    )
    replay.add_argument(
        "--qty-scale",
        type=positive_int,
        help="command file: book units per file quantity unit, e.g. 100000000 for BTC "
        "booked in satoshi (default 1)",
    )
    replay.add_argument(
        "--strict", action="store_true", help="exit 1 when any row or command was rejected"
    )
    replay.set_defaults(run=cmd_replay)

    log = commands.add_parser(
        "log",
        help="read an engine command log or trade log",
        description="Read the engine's framed logs (commands.log, trades.log).",
        epilog="example: cxe log dump cxe-data/trades.log",
    )
    log_commands = log.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    dump = log_commands.add_parser(
        "dump",
        help="print a command log or trade log as JSON lines",
        description="Print every record of a command log or trade log as one JSON object per "
        "line (a command record: seq, ts_ns, type and the command's fields; a batch record: "
        "one line per order command in it); with --summary, "
        "one JSON object: records by type, seq and time range, trades and volume per "
        "instrument.",
        epilog="example: cxe log dump --summary cxe-data/trades.log",
    )
    dump.add_argument("file", help="a commands.log or trades.log")
    dump.add_argument("--summary", action="store_true", help="counts instead of the records")
    dump.add_argument(
        "--market",
        metavar="FILE",
        help="the market the log ran with, which names the instruments of batch records "
        "(they carry an index; default: the embedded market)",
    )
    dump.set_defaults(run=cmd_log_dump)
