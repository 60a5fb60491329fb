"""`cxe clear`, `cxe capture`, `cxe surrender` and `cxe ledger`: clearing from the command
line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.clearing.capture import TradeStore
    from engine.clearing.settlement import Ledger, SettlementReport
    from engine.config import MarketConfig
from engine.cli.common import (
    add_key_options,
    market_of,
    member_id,
    note_torn_tail,
    trading_date,
)
from engine.logline import LogLines
from engine.types import format_price

SILENT_CONNECTIONS = 3  # connections nothing answered before `cxe capture` says so

# Everything clearing writes goes under one directory (ignored by git: .gitignore has /out/):
# the trade store, the ledger, and per day statements-DATE*, summary-DATE and opening-after-DATE
CLEARING_OUT = "out/clearing"
STORE, LEDGER = "clearing.db", "ledger.db"  # file names in it


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

    market = market_of(args.market)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # an unusable --out fails before anything settles
    args.store = args.store or str(out / STORE)
    args.ledger = args.ledger or str(out / LEDGER)
    store = TradeStore(args.store)
    if args.trades is None:
        notes = [f"settling from {args.store} as captured (cxe capture): no trade log read"]
    else:
        captured = capture_file(store, args.trades)
        note_torn_tail(Path(args.trades))
        notes = [
            f"captured {captured.stored:,} new trades ({captured.duplicates:,} already held, "
            f"last trade id {captured.last_trade_id:,}) into {args.store}"
        ]
    ledger = Ledger(args.ledger)
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
            f"fees {format_price(report.netting.total_fees, grouped=True)} CNY; netting "
            f"removes {eff['cash']:.1%} of the gross cash legs and {eff['qty']:.1%} of the "
            "allowance legs"
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


def cmd_capture(args: argparse.Namespace) -> int:
    import signal
    import time

    from engine.clearing.capture import ConflictingDuplicate, OtherHistory, TradeGap, TradeStore
    from engine.clearing.live import LiveCapture, StreamRefused, endpoint_of
    from engine.gateway.security import client_keys

    if args.data is not None and not Path(args.data).is_dir():
        raise ValueError(f"no engine data directory at {args.data}: give cxe serve's --data")
    Path(args.store).parent.mkdir(parents=True, exist_ok=True)
    keys = client_keys(args.key, args.server_key)
    store = TradeStore(args.store)
    resolve = (lambda: args.endpoint) if args.endpoint else (lambda: endpoint_of(args.data))
    live = LiveCapture(store, resolve, curve_keys=keys)
    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    progress = live.progress
    source = args.endpoint or f"the engine of {args.data}"
    log = LogLines("cxe capture")  # its log never stops the capture (engine.logline)
    log(f"capturing from {source} into {args.store}, from stream number {progress.position + 1}")
    shown = (progress.position, progress.reconnects)
    last_line = time.monotonic()
    hinted = False  # that nothing answers at the endpoint
    try:
        while not stopping:
            live.step()
            now = time.monotonic()
            if (progress.position, progress.reconnects) != shown and now - last_line >= 1:
                log(_shown(progress, live.endpoint))
                shown, last_line = (progress.position, progress.reconnects), now
            if not hinted and progress.reconnects >= SILENT_CONNECTIONS:
                hinted = not live.ever_answered
                if hinted:
                    log(
                        f"nothing answers at {live.endpoint} after {progress.reconnects} "
                        f"connections: is it an engine's trade stream (endpoints.json "
                        f'"trades", cxe serve --trades)? Still trying'
                    )
            if args.until_day_closed and progress.day_closed and live.level:
                log("the day is closed and every event of it is stored")
                break
    except (StreamRefused, OtherHistory, TradeGap, ConflictingDuplicate) as exc:
        print(f"cxe capture: {exc}; the store holds everything before it", file=sys.stderr)
        return 3
    finally:
        live.close()
        store.close()
    log(_shown(progress, live.endpoint))
    return 0


def _shown(progress, endpoint: str | None) -> str:
    return (
        f"stream number {progress.position:,} of {progress.held:,}: {progress.trades:,} trades "
        f"stored by this run ({progress.duplicates:,} held already), {progress.day_records:,} "
        f"day records, last trade id {progress.last_trade_id:,}; following {endpoint} "
        f"({progress.reconnects:,} reconnects)"
    )


def _write_clearing_outputs(
    report: SettlementReport, store: TradeStore, ledger: Ledger, market: MarketConfig, out: Path
) -> list[Path]:
    """Statements, summary and the opening-after file of a settled day (the last path)."""
    import msgspec

    from engine.clearing.report import write_files
    from engine.durable import write_atomically

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
        done = surrender(ledger, request, market_of(args.market), args.recorded)
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

    ledger = _existing_ledger(args.ledger)
    view = ledger_view(ledger, args.member)
    if args.member is not None and not view["balances"]:  # empty sections said nothing
        members = [row[0] for row in ledger.db.execute("SELECT DISTINCT member FROM balances")]
        print(
            f"cxe ledger: member {args.member} has no account in {args.ledger}; its members: "
            f"{sorted(members)}",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(view, indent=2) if args.json else render_ledger(view))
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The clear, surrender and ledger commands and their options."""
    clear = commands.add_parser(
        "clear",
        help="capture a trade log, net the day and settle it into the ledger (DVP)",
        description="Capture the exchange's trade log into the clearing store (gap-free, "
        "exactly once), check every trade record and the day against the end-of-day records, "
        "net per member and instrument, settle delivery versus payment into the SQLite ledger "
        "(once per date, days in order), and write statements, a day summary and the next "
        "day's opening balances. Run again for a settled day, it rewrites those files and "
        "leaves the ledger as it is.",
        epilog="example: cxe clear --date 2026-11-24 --trades out/day1/trades.log "
        "(into out/clearing)",
    )
    clear.add_argument("--date", type=trading_date, required=True, help="trading day, YYYY-MM-DD")
    clear.add_argument(
        "--trades",
        metavar="LOG",
        help="trade log to capture first (leave it out to settle what cxe capture stored)",
    )
    clear.add_argument(
        "--out",
        metavar="DIR",
        default=CLEARING_OUT,
        help=f"where the store, the ledger, statements and opening files go; one directory "
        f"serves every day (default {CLEARING_OUT})",
    )
    clear.add_argument("--store", metavar="FILE", help=f"trade store (default OUT/{STORE})")
    clear.add_argument("--ledger", metavar="FILE", help=f"settled ledger (default OUT/{LEDGER})")
    clear.add_argument("--market", metavar="FILE", help="market config (default: embedded)")
    clear.add_argument("--gross", action="store_true", help="settle trade by trade, not net")
    clear.add_argument("--json", action="store_true", help="print the report as JSON")
    clear.set_defaults(run=cmd_clear)

    capture = commands.add_parser(
        "capture",
        help="capture a live engine's trades into the clearing store as they happen",
        description="Follow a running engine's trade stream (cxe serve --trades) into the "
        "clearing store: every trade and end-of-day record, exactly once, each message in "
        "one transaction with the stream position, so a restart after any stop (kill -9 "
        "included) resumes after the last one stored. When the engine restarts it reconnects "
        "by itself (with --data it reads the new endpoint from endpoints.json). SIGINT or "
        "SIGTERM stops it cleanly; `cxe clear` without --trades settles from the store.",
        epilog=f"example: cxe capture --data cxe-data --until-day-closed (then: cxe clear "
        f"--date 2026-11-24, which settles from {CLEARING_OUT}/{STORE})",
    )
    where = capture.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", metavar="ENDPOINT", help="the engine's trade stream endpoint")
    where.add_argument("--data", metavar="DIR", help="the engine's data directory (endpoints.json)")
    capture.add_argument(
        "--store",
        metavar="FILE",
        default=f"{CLEARING_OUT}/{STORE}",
        help=f"trade store (default {CLEARING_OUT}/{STORE}, where cxe clear looks)",
    )
    capture.add_argument(
        "--until-day-closed",
        action="store_true",
        help="stop once the day's end-of-day records are stored and nothing follows them",
    )
    add_key_options(capture)
    capture.set_defaults(run=cmd_capture)

    give = commands.add_parser(
        "surrender",
        help="surrender allowances and CCER against a verified emissions obligation",
        description="Debit a member's settled allowances (CEA instruments) and CCER against "
        "its verified obligation for a compliance period, and record it. The obligation is "
        "recorded by the period's first surrender; every later one counts against the same "
        "figure, and the caps (CCER at most 5% of the obligation, no more than the obligation "
        "in all) apply to everything surrendered for the period.",
        epilog="example: cxe surrender --member 5 --period 2025 "
        "--obligation 10000 --cea CEA25=9500 --ccer 500",
    )
    give.add_argument(
        "--ledger",
        metavar="FILE",
        default=f"{CLEARING_OUT}/{LEDGER}",
        help=f"settled ledger (default {CLEARING_OUT}/{LEDGER}, where cxe clear writes it)",
    )
    give.add_argument("--member", type=member_id, required=True, help="the member surrendering")
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
        epilog="example: cxe ledger --member 5",
    )
    show.add_argument(
        "--ledger",
        metavar="FILE",
        default=f"{CLEARING_OUT}/{LEDGER}",
        help=f"settled ledger (default {CLEARING_OUT}/{LEDGER}, where cxe clear writes it)",
    )
    show.add_argument("--member", type=member_id, help="only this member's balances and surrenders")
    show.add_argument(
        "--json",
        action="store_true",
        help="print it as JSON (fen and tonnes; the exchange's fee account is member -1)",
    )
    show.set_defaults(run=cmd_ledger)
