"""`cxe`: the command line. Every command has --help; errors say what to do next.

Commands grow with the project (serve, gateway, admin, replay, clear come with their issues).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import default_market, load_market

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


def cmd_replay(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if not source.exists():
        raise ValueError(f"no such file: {source}")
    if source.suffix == ".log" or source.is_dir():
        return _replay_command_log(source, args)
    if "_message_" not in source.name:
        return _replay_command_file(source, args)
    from engine.replay.runner import batch_replay, replay_lobster, text_progress

    started = time.perf_counter()
    result = replay_lobster(source, args.orderbook, progress=text_progress)
    faithful = time.perf_counter() - started
    stats = result.stats
    print(
        f"{source.name}: {stats.messages:,} messages, {stats.rows_mismatched:,} of "
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
    for path in result.write(args.out, args.interval, args.plot):
        print(f"wrote {path}")
    if args.counterfactual:
        _counterfactuals(result, Path(args.out))
    return 0 if stats.rows_mismatched == 0 else 1


def _counterfactuals(result, out: Path) -> None:
    import dataclasses

    import numpy as np

    from engine.replay.counterfactual import compare
    from engine.replay.runner import write_table

    outcomes = compare(result.commands, result.tick)
    print(
        f"{'scenario':<24} {'fills':>7} {'volume':>10} {'VWAP':>12} {'rejects':>8} "
        f"{'best bid':>10} {'best ask':>10}"
    )
    for o in outcomes:
        print(
            f"{o.scenario:<24} {o.fills:>7,} {o.volume:>10,} {o.vwap:>12,.1f} "
            f"{o.rejects:>8,} {o.best_bid:>10,} {o.best_ask:>10,}"
        )
    names = [f.name for f in dataclasses.fields(outcomes[0])]
    table = np.array(
        [dataclasses.astuple(o) for o in outcomes],
        dtype=[(n, {"scenario": "U32", "vwap": "f8"}.get(n, "i8")) for n in names],
    )
    print(f"wrote {write_table(table, out / 'counterfactuals.csv')}")


def _replay_command_file(source: Path, args: argparse.Namespace) -> int:
    import numpy as np

    from engine.book import Book
    from engine.replay.runner import write_table
    from engine.replay.sources import read_commands

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fills = []
    for code, (_, cmds) in sorted(read_commands(source).items()):
        book = Book(tick=1)
        started = time.perf_counter()
        result = book.apply_batch(cmds, record="all")
        elapsed = time.perf_counter() - started
        ev = result.events
        taken = ev[ev[:, 0] == 3]
        fills += [(code, *row) for row in taken[:, [1, 2, 3, 4, 9, 10]].tolist()]
        bid, ask = book.best_bid(), book.best_ask()
        print(
            f"{code}: {len(cmds):,} commands in {elapsed:.3f} s, {result.fills:,} fills, "
            f"{result.traded_qty:,} traded, {result.rejects:,} rejected; best bid {bid}, "
            f"best ask {ask}"
        )
    table = np.array(
        fills,
        dtype=[
            ("instrument", "U16"),
            ("taker", "i8"),
            ("maker", "i8"),
            ("price", "i8"),
            ("qty", "i8"),
            ("taker_member", "i8"),
            ("maker_member", "i8"),
        ],
    )
    print(f"wrote {write_table(table, out / 'fills.csv')}")
    return 0


def _replay_command_log(source: Path, args: argparse.Namespace) -> int:
    from engine.core import Exchange
    from engine.journal import replay
    from engine.journal.segments import list_segments
    from engine.protocol import Rejected, StartOfDay, Trade

    last_file = source
    if source.is_dir():
        segments = list_segments(source)
        if not segments:
            raise ValueError(f"no command log segments (commands-*.log) in {source}")
        last_file = segments[-1].path
    exchange = Exchange(_market(args.market))
    trades = commands = rejected = 0
    for record, events in replay(source, exchange):
        commands += 1
        trades += sum(1 for e in events if isinstance(e, Trade))
        refusals = [e for e in events if isinstance(e, Rejected)]
        rejected += len(refusals)
        if refusals and isinstance(record.command, StartOfDay):
            print(
                f"note: the log's StartOfDay {record.command.date} was refused "
                f"({refusals[0].text}): is --market the config this log's day ran with?",
                file=sys.stderr,
            )
    print(
        f"{source.name}: {commands:,} commands replayed, {trades:,} trades, {rejected:,} "
        f"rejected, state hash {exchange.state_hash()}"
    )
    _note_torn_tail(last_file)
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
        help="replay historical order flow (LOBSTER files or an engine command log)",
        description="Replay a LOBSTER message file through the book, checking every row of "
        "its order book file, then again at kernel speed; write trades, top of book and "
        "per-interval analytics (CSV) and, with --plot, PNG plots. An engine command log "
        "(.log) or journal directory is replayed into the exchange core and its state hash "
        "printed.",
    )
    replay.add_argument(
        "source",
        help="LOBSTER *_message_*.csv, a command file (.csv or "
        ".parquet, schema in docs/REPLAY.md), an engine commands.log or a journal directory",
    )
    replay.add_argument("--orderbook", help="the matching *_orderbook_*.csv (default: beside)")
    replay.add_argument("--out", default="replay-out", help="output directory")
    replay.add_argument(
        "--interval", type=positive_int, default=60, help="seconds per interval (default 60)"
    )
    replay.add_argument("--plot", action="store_true", help="write PNG plots (matplotlib)")
    replay.add_argument("--market", metavar="FILE", help="market config for a command log")
    replay.add_argument(
        "--counterfactual",
        action="store_true",
        help="also run the flow under other rules (coarser tick, band, opening "
        "call, pick) and compare",
    )
    replay.set_defaults(run=cmd_replay)
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
