"""`cxe`: the command line. Every command has --help; errors say what to do next.

Commands grow with the project (serve, gateway, admin, replay, clear come with their issues).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import default_market, load_market
from engine.replay.formats import FORMATS

if TYPE_CHECKING:
    from engine.clearing.capture import TradeStore
    from engine.clearing.settlement import Ledger, SettlementReport
    from engine.config import MarketConfig


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def member_id(text: str) -> int:
    """argparse type: a member id, a whole number from 0 below 2**31."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"a member id is from 0 below 2**31, not {value}")
    return value


def trading_date(text: str) -> str:
    """argparse type: a calendar date written YYYY-MM-DD."""
    from engine.types import is_trading_date

    if not is_trading_date(text):
        raise argparse.ArgumentTypeError(f"not a calendar date YYYY-MM-DD: {text!r}")
    return text


def _market(path: str | None):
    return default_market() if path is None else load_market(path)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import render, run_demo

    market = _market(args.market)
    started = time.perf_counter()
    day = run_demo(market, seed=args.seed, steps=args.steps, out=args.out, date=args.date)
    print(render(day))
    print(f"state hash {day.exchange.state_hash()} (cxe replay of the command log prints it too)")
    if args.out:
        print(f"wrote {args.out}/commands.log and {args.out}/trades.log")
    print(f"simulated in {time.perf_counter() - started:.2f} s")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    from engine.clearing.capture import ConflictingDuplicate, TradeGap
    from engine.clearing.netting import ConservationError, NettingOverflow
    from engine.clearing.settlement import SettlementRefused

    try:
        return _clear(args)
    except (
        TradeGap,
        ConflictingDuplicate,
        SettlementRefused,
        ConservationError,
        NettingOverflow,
    ) as exc:
        print(f"cxe clear: {exc}", file=sys.stderr)
        return 3


def _clear(args: argparse.Namespace) -> int:
    from engine.clearing.capture import TradeStore, capture_file
    from engine.clearing.report import as_json
    from engine.clearing.settlement import Ledger

    market = _market(args.market)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # an unusable --out fails before anything settles
    store = TradeStore(args.store)
    captured = capture_file(store, args.trades)
    _note_torn_tail(Path(args.trades))
    ledger = Ledger(args.ledger)
    notes = [
        f"captured {captured.stored:,} new trades ({captured.duplicates:,} already held, "
        f"last trade id {captured.last_trade_id:,}) into {args.store}"
    ]
    if ledger.open_if_empty(market.members, market.last_trading_day):
        notes.append(f"{args.ledger} was empty: opening balances loaded from the market config")
    report = ledger.settle(args.date, store, market, gross=args.gross)
    if args.json:
        print(as_json(report))
    else:
        print("\n".join(notes))
        eff = report.netting.efficiency()
        print(
            f"{args.date}: {report.netting.trades:,} trades, {report.netting.traded_qty:,} t, "
            f"fees {report.netting.total_fees:,} fen; netting removes {eff['cash']:.1%} of "
            f"the gross cash legs and {eff['qty']:.1%} of the allowance legs"
        )
    if report.failures:
        print(
            "settlement failure, nothing was written:\n  " + "\n  ".join(report.failures),
            file=sys.stderr,
        )
        return 3
    if report.already_settled:
        print(
            f"{args.date} is already settled in {args.ledger}: the ledger is unchanged; "
            "rewriting its statements and opening file",
            file=sys.stderr,
        )
    elif not args.json:
        print(
            f"settled {args.date} ({report.mode}, {report.postings:,} postings) into {args.ledger}"
        )
    try:
        written = _write_clearing_outputs(report, store, ledger, market, out)
    except OSError as exc:
        print(
            f"cxe clear: {args.date} is settled in {args.ledger}, but writing its outputs into "
            f"{out} failed: {exc}. Fix that and run the same cxe clear again: for a settled "
            "day it rewrites the statements, summary and opening file without settling twice",
            file=sys.stderr,
        )
        return 2
    if not args.json:
        for path in written:
            print(f"wrote {path}")
        print(f"(opening balances for the next day: cxe ... --market {written[-1]})")
    return 0


def _write_clearing_outputs(
    report: SettlementReport, store: TradeStore, ledger: Ledger, market: MarketConfig, out: Path
) -> list[Path]:
    """Statements, summary and the opening-after file of a settled day (the last path)."""
    import msgspec

    from engine.clearing.report import write_atomically, write_files

    written = write_files(report, out)
    opening = out / f"opening-after-{report.date}.json"
    closes = {code: r.close for code, r in report.records.items()}
    first_trade_id = store.last_trade_id(through=report.date) + 1
    opening_market = ledger.opening_market(market, closes, first_trade_id, report.date)
    write_atomically(opening, msgspec.json.encode(opening_market))
    return [*written, opening]


def _existing_ledger(path: str) -> Ledger:
    """The ledger at `path`; OSError if there is none (it is not created empty)."""
    from engine.clearing.settlement import Ledger

    if not Path(path).is_file():
        raise OSError(
            f"no ledger at {path}: settle a day first (cxe clear), or name the ledger with --ledger"
        )
    return Ledger(path)


def cmd_surrender(args: argparse.Namespace) -> int:
    from engine.clearing.compliance import Surrender, SurrenderRefused, surrender

    allowances: dict[str, int] = {}
    for item in args.cea:
        code, _, qty = item.rpartition("=")
        code = code or args.vintage
        if not qty.isdigit() or not code:
            raise ValueError(
                f"--cea takes TONNES with --vintage, or VINTAGE=TONNES "
                f"(e.g. CEA25=9500), not {item!r}"
            )
        allowances[code] = allowances.get(code, 0) + int(qty)
    request = Surrender(args.member, args.period, args.obligation, allowances, args.ccer)
    ledger = _existing_ledger(args.ledger)
    try:
        done = surrender(ledger, request, _market(args.market), args.recorded)
    except SurrenderRefused as exc:
        print(f"cxe surrender: refused, nothing recorded: {exc}", file=sys.stderr)
        return 3
    print(
        f"member {done.member} surrendered {request.total:,} t for {done.period} "
        f"({sum(request.allowances.values()):,} t allowances, {request.ccer:,} t CCER); in all "
        f"{done.total:,} t of its {done.obligation:,} t obligation ({done.ccer:,} t CCER), "
        f"shortfall {done.shortfall:,} t"
    )
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    import json

    from engine.clearing.report import ledger_view, render_ledger

    view = ledger_view(_existing_ledger(args.ledger), args.member)
    print(json.dumps(view, indent=2) if args.json else render_ledger(view))
    return 0


# the options each source takes (anything else given is refused, not ignored)
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

    source = Path(args.source)
    if source.is_dir() and list_segments(source):
        kind = "log"  # a journal directory: its segments are one command log
    elif not source.is_file():
        what = "no such file"
        if source.is_dir():
            what = "a directory with no command log segments (commands-*.log): give one file"
        raise ValueError(f"{source}: {what}")
    else:
        kind = args.format or detect(source)
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


def _replay_lobster(source: Path, args: argparse.Namespace) -> int:
    from engine.replay.formats import is_zip
    from engine.replay.lobster import BadFile
    from engine.replay.runner import batch_replay, replay_lobster, text_progress

    out = Path(args.out or "replay-out")
    if is_zip(source) and args.orderbook:
        raise ValueError(f"--orderbook does not apply to {source}: the zip holds the order book")
    if args.log_depth and not args.plot:
        raise ValueError("--log-depth sets the depth plot's axis: give --plot too")
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
    import dataclasses

    import numpy as np

    from engine.replay.counterfactual import compare
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
    names = [f.name for f in dataclasses.fields(outcomes[0])]
    table = np.array(
        [dataclasses.astuple(o) for o in outcomes],
        dtype=[(n, {"scenario": "U32", "vwap": "f8"}.get(n, "i8")) for n in names],
    )
    units = {name: lobster_units(name) for name in names}
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
    import numpy as np

    from engine.replay.runner import write_table

    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for row in bad_rows:
        counts[row.reason] = counts.get(row.reason, 0) + 1
    table = np.array(
        [(r.line, r.instrument, r.reason, r.detail, r.text) for r in bad_rows],
        dtype=[("line", "i8")] + [(n, "O") for n in ("instrument", "reason", "detail", "text")],
    )
    path = write_table(table, out / "rejects.csv", parquet=False)
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
    out = Path(args.out or "replay-out")
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

    result = run_in_core(loaded, _market(market_path))
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
    result = replay_log(source, _market(args.market))
    by_reason = ", ".join(f"{name.lower()} {n:,}" for name, n in sorted(result.rejects.items()))
    print(
        f"{source.name}: {result.commands:,} commands replayed into the exchange core, "
        f"{result.trades:,} trades, {sum(result.rejects.values()):,} rejected"
        f"{f' ({by_reason})' if by_reason else ''}"
    )
    print(f"state hash {result.state_hash}")
    _note_torn_tail(last_file)
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
    if args.summary:
        print(json.dumps(summary(path, kind), indent=2))
    else:
        try:
            for record in dump(path, kind):
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        except BrokenPipeError:  # `cxe log dump ... | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs
            return 0
    _note_torn_tail(path)
    return 0


def _note_torn_tail(path: Path) -> None:
    """Say on stderr when a log ends in a torn record (read past it, as a crash leaves it)."""
    from engine.framing import torn_tail

    end, torn = torn_tail(path)
    if torn:
        print(
            f"note: {path} ends in an incomplete record ({torn:,} bytes after byte {end:,}): "
            "a write cut short by a crash; everything before it was read",
            file=sys.stderr,
        )


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

    clear = commands.add_parser(
        "clear",
        help="capture a trade log, net the day and settle it into the ledger (DVP)",
        description="Capture the exchange's trade log into the clearing store (gap-free, "
        "exactly once), check every trade record and the day against the end-of-day records, "
        "net per member and instrument, settle delivery versus payment into the SQLite ledger "
        "(once per date, days in order), and write statements, a day summary and the next "
        "day's opening balances. Run again for a settled day, it rewrites those files and "
        "leaves the ledger as it is.",
        epilog="example: cxe clear --date 2026-11-24 --trades day1/trades.log --out day1/clearing",
    )
    clear.add_argument("--date", type=trading_date, required=True, help="trading day, YYYY-MM-DD")
    clear.add_argument("--trades", required=True, metavar="LOG", help="trade log to capture")
    clear.add_argument("--store", default="clearing.db", help="trade store (default clearing.db)")
    clear.add_argument("--ledger", default="ledger.db", help="settled ledger (default ledger.db)")
    clear.add_argument("--market", metavar="FILE", help="market config (default: embedded)")
    clear.add_argument("--gross", action="store_true", help="settle trade by trade, not net")
    clear.add_argument("--out", default="clearing-out", help="where statements go")
    clear.add_argument("--json", action="store_true", help="print the report as JSON")
    clear.set_defaults(run=cmd_clear)

    give = commands.add_parser(
        "surrender",
        help="surrender allowances and CCER against a verified emissions obligation",
        description="Debit a member's settled allowances (CEA instruments) and CCER against "
        "its verified obligation for a compliance period, and record it. The obligation is "
        "recorded by the period's first surrender; every later one counts against the same "
        "figure, and the caps (CCER at most 5% of the obligation, no more than the obligation "
        "in all) apply to everything surrendered for the period.",
        epilog="example: cxe surrender --ledger ledger.db --member 5 --period 2025 "
        "--obligation 10000 --cea CEA25=9500 --ccer 500",
    )
    give.add_argument("--ledger", default="ledger.db", help="settled ledger (default ledger.db)")
    give.add_argument("--member", type=member_id, required=True)
    give.add_argument(
        "--period", required=True, help="compliance period: a year (2025) or a span (2021-2022)"
    )
    give.add_argument(
        "--obligation",
        type=int,
        default=0,
        help="verified emissions for the period, t (needed on its first surrender)",
    )
    give.add_argument(
        "--cea",
        action="append",
        default=[],
        metavar="[VINTAGE=]TONNES",
        help="allowances to surrender, e.g. --cea CEA25=9500 (repeatable), or --cea 9500 "
        "with --vintage",
    )
    give.add_argument("--vintage", help="the CEA vintage of a --cea given as plain tonnes")
    give.add_argument("--ccer", type=int, default=0, help="CCER tonnes (at most 5%%)")
    give.add_argument("--market", metavar="FILE", help="market config (default: embedded)")
    give.add_argument("--recorded", default="", help="a note kept with the record")
    give.set_defaults(run=cmd_surrender)

    show = commands.add_parser(
        "ledger",
        help="show the settled ledger: balances, settlements, obligations, surrenders",
        description="Print what the clearing ledger holds, without opening SQLite: every "
        "member's settled balances (cash in CNY, allowances and credits in tonnes; member "
        "'exchange' holds the fees), each settled day, each compliance obligation with what "
        "was surrendered against it, and each surrender. --json gives the same as integers "
        "(fen, tonnes).",
        epilog="example: cxe ledger --ledger ledger.db --member 5",
    )
    show.add_argument("--ledger", default="ledger.db", help="settled ledger (default ledger.db)")
    show.add_argument("--member", type=member_id, help="only this member's balances and surrenders")
    show.add_argument("--json", action="store_true", help="print it as JSON (fen and tonnes)")
    show.set_defaults(run=cmd_ledger)

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
        "printed. Options that do not apply to "
        "the source are refused.",
    )
    replay.add_argument(
        "source",
        help="a LOBSTER message file or zip, a command file (.csv or .parquet), an engine "
        "command log, or a journal directory",
    )
    replay.add_argument(
        "--format",
        choices=FORMATS,
        help="the source's format (default: told from its content)",
    )
    replay.add_argument(
        "--orderbook", help="LOBSTER: the matching order book file (default: beside it)"
    )
    replay.add_argument("--out", help="output directory (default replay-out)")
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
    )
    log_commands = log.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    dump = log_commands.add_parser(
        "dump",
        help="print a command log or trade log as JSON lines",
        description="Print every record of a command log or trade log as one JSON object per "
        "line (a command record: seq, ts_ns, type and the command's fields); with --summary, "
        "one JSON object: records by type, seq and time range, trades and volume per "
        "instrument.",
    )
    dump.add_argument("file", help="a commands.log or trades.log")
    dump.add_argument("--summary", action="store_true", help="counts instead of the records")
    dump.set_defaults(run=cmd_log_dump)
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
