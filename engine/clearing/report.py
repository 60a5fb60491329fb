"""Statements and day summaries of a settlement: CSV (and Parquet with pyarrow), or JSON;
and the ledger's contents (balances, settlements, obligations, surrenders) for people.

Invariants: rows come in a stable order (member, then instrument; instruments in market
order) and amounts are integers, so the same day gives byte-identical files: every column of
money or price says `_fen` (0.01 CNY; prices per tonne), every quantity `_t` (tonnes), the one
convention for machine-readable outputs (people read CNY with two decimals). The summary's
prices are the exchange's end-of-day record: open, high and
low of the listed trades and the close; a record written before the exchange kept open,
high and low leaves those empty. Each file is written beside its place and renamed over it, so
a reader (or a failure) never sees half a file. The ledger view reads the ledger only; amounts
stay integers in JSON and show as CNY with two decimals (and tonnes) in the table.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from engine.clearing.compliance import standing
from engine.clearing.settlement import CASH, EXCHANGE, Ledger, SettlementReport
from engine.types import format_price

STATEMENT_FIELDS = [
    "date",
    "member",
    "instrument",
    "bought_t",
    "sold_t",
    "net_t",
    "buy_value_fen",
    "sell_value_fen",
    "fees_fen",
    "net_cash_fen",
]
SUMMARY_FIELDS = [
    "date",
    "instrument",
    "volume_t",
    "traded_value_fen",
    "fees_fen",
    "members",
    "open_fen",
    "high_fen",
    "low_fen",
    "close_fen",
]


def statement_rows(report: SettlementReport) -> list[dict]:
    n = report.netting
    rows = []
    for r, member in enumerate(n.members.tolist()):
        for c, code in enumerate(n.codes):
            if n.bought[r, c] or n.sold[r, c]:
                rows.append(
                    {
                        "date": report.date,
                        "member": member,
                        "instrument": code,
                        "bought_t": int(n.bought[r, c]),
                        "sold_t": int(n.sold[r, c]),
                        "net_t": int(n.net_qty[r, c]),
                        "buy_value_fen": int(n.buy_value[r, c]),
                        "sell_value_fen": int(n.sell_value[r, c]),
                        "fees_fen": int(n.fees[r, c]),
                        "net_cash_fen": int(n.net_cash[r, c]),
                    }
                )
    return rows


def summary_rows(report: SettlementReport) -> list[dict]:
    n = report.netting
    rows = []
    for c, code in enumerate(n.codes):
        record = report.records[code]
        rows.append(
            {
                "date": report.date,
                "instrument": code,
                "volume_t": int(n.bought[:, c].sum()),
                "traded_value_fen": int(n.buy_value[:, c].sum()),
                "fees_fen": int(n.fees[:, c].sum()),
                "members": int(((n.bought[:, c] + n.sold[:, c]) > 0).sum()),
                "open_fen": record.open or None,  # 0: not recorded
                "high_fen": record.high or None,
                "low_fen": record.low or None,
                "close_fen": record.close,
            }
        )
    return rows


def as_json(report: SettlementReport) -> str:
    return json.dumps(
        {
            "date": report.date,
            "mode": report.mode,
            "already_settled": report.already_settled,
            "failures": report.failures,
            "postings": report.postings,
            "trades": report.netting.trades,
            "fees_fen": report.netting.total_fees,
            "efficiency": report.netting.efficiency(),
            "statements": statement_rows(report),
            "summary": summary_rows(report),
        },
        indent=2,
    )


def write_files(report: SettlementReport, out: str | Path) -> list[Path]:
    """statements-DATE.csv (every member), statements-DATE/member-N.csv (one statement per
    member) and summary-DATE.csv, plus .parquet copies when pyarrow is installed."""
    out = Path(out)
    per_member = out / f"statements-{report.date}"
    per_member.mkdir(parents=True, exist_ok=True)
    statements = statement_rows(report)
    tables = [
        (out / f"statements-{report.date}.csv", STATEMENT_FIELDS, statements),
        (out / f"summary-{report.date}.csv", SUMMARY_FIELDS, summary_rows(report)),
    ]
    for member in sorted({row["member"] for row in statements}):
        mine = [row for row in statements if row["member"] == member]
        tables.append((per_member / f"member-{member}.csv", STATEMENT_FIELDS, mine))
    written = []
    for path, fields, rows in tables:
        partial = _partial(path)
        with partial.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, path)
        written.append(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            continue
        parquet = path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(rows), _partial(parquet))
        os.replace(_partial(parquet), parquet)
        written.append(parquet)
    return written


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


# -- the ledger, for people ---------------------------------------------------------------------


def ledger_view(ledger: Ledger, member: int | None = None) -> dict:
    """Everything the ledger holds (of one member, if given), as plain integers."""
    where, args = ("WHERE member = ?", (member,)) if member is not None else ("", ())
    db = ledger.db
    balances = [
        {"member": m, "asset": a, "amount": v}
        for m, a, v in db.execute(
            f"SELECT member, asset, amount FROM balances {where} "
            "ORDER BY member, asset != 'CASH', asset",
            args,
        )
    ]
    settlement_fields = ("date", "mode", "trades", "traded_qty", "traded_value", "fees")
    settlements = [
        dict(zip((*settlement_fields, "postings"), row, strict=True))
        for row in db.execute(
            f"SELECT {', '.join(settlement_fields)}, postings FROM settlements ORDER BY date"
        )
    ]
    obligations = []
    for m, period in db.execute(
        f"SELECT member, period FROM obligations {where} ORDER BY member, period", args
    ).fetchall():
        now = standing(ledger, m, period)
        if now is not None:
            obligations.append(
                {
                    "member": m,
                    "period": period,
                    "obligation": now.obligation,
                    "allowances": now.allowances,
                    "ccer": now.ccer,
                    "shortfall": now.shortfall,
                }
            )
    surrender_fields = ("id", "member", "period", "asset", "qty", "recorded", "after_date")
    surrenders = [
        dict(zip(surrender_fields, row, strict=True))
        for row in db.execute(
            f"SELECT {', '.join(surrender_fields)} FROM surrenders {where} ORDER BY id", args
        )
    ]
    return {
        "ledger": str(ledger.path),
        "opening_day": ledger.opening_day(),
        "last_settled": ledger.last_settled(),
        "balances": balances,
        "settlements": settlements,
        "obligations": obligations,
        "surrenders": surrenders,
    }


def render_ledger(view: dict) -> str:
    """The ledger view as text tables: cash in CNY, allowances and credits in tonnes."""
    lines = [
        f"ledger {view['ledger']}: opening balances after {view['opening_day'] or '(not given)'}"
        f", last settled day {view['last_settled'] or '(none)'}",
        "",
        "balances",
        _table(
            ("member", "asset", "amount"),
            [
                (
                    "exchange" if b["member"] == EXCHANGE else b["member"],
                    b["asset"],
                    f"{format_price(b['amount'], grouped=True)} CNY"
                    if b["asset"] == CASH
                    else f"{b['amount']:,} t",
                )
                for b in view["balances"]
            ],
        ),
        "",
        "settlements",
        _table(
            ("date", "mode", "trades", "traded t", "value CNY", "fees CNY", "postings"),
            [
                (
                    s["date"],
                    s["mode"],
                    f"{s['trades']:,}",
                    f"{s['traded_qty']:,}",
                    format_price(s["traded_value"], grouped=True),
                    format_price(s["fees"], grouped=True),
                    f"{s['postings']:,}",
                )
                for s in view["settlements"]
            ],
        ),
        "",
        "compliance obligations (tonnes)",
        _table(
            ("member", "period", "obligation", "allowances", "CCER", "shortfall"),
            [
                (
                    o["member"],
                    o["period"],
                    f"{o['obligation']:,}",
                    f"{o['allowances']:,}",
                    f"{o['ccer']:,}",
                    f"{o['shortfall']:,}",
                )
                for o in view["obligations"]
            ],
        ),
        "",
        "surrenders",
        _table(
            ("id", "member", "period", "asset", "tonnes", "after day", "note"),
            [
                (
                    s["id"],
                    s["member"],
                    s["period"] or "-",
                    s["asset"],
                    f"{s['qty']:,}",
                    s["after_date"] or "-",
                    s["recorded"],
                )
                for s in view["surrenders"]
            ],
        ),
    ]
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """Columns padded to their widest cell; numbers (and their header) right-aligned."""
    if not rows:
        return "  (none)"
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        all(
            isinstance(row[i], int) or str(row[i])[:1].isdigit() or str(row[i])[:1] == "-"
            for row in rows
        )
        for i in range(len(header))
    ]
    return "\n".join(
        "  "
        + "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in cells
    )
