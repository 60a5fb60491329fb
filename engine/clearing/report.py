"""Statements and day summaries of a settlement: CSV (and Parquet with pyarrow), or JSON.

Invariants: rows come in a stable order (member, then instrument; instruments in market
order) and amounts are integers (fen, tonnes), so the same day gives byte-identical files.
The summary's prices (fen per tonne) are the exchange's end-of-day record: open, high and
low of the listed trades and the close; a record written before the exchange kept open,
high and low leaves those empty.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from engine.clearing.settlement import SettlementReport

STATEMENT_FIELDS = [
    "date",
    "member",
    "instrument",
    "bought",
    "sold",
    "net_qty",
    "buy_value",
    "sell_value",
    "fees",
    "net_cash",
]
SUMMARY_FIELDS = [
    "date",
    "instrument",
    "volume",
    "traded_value",
    "fees",
    "members",
    "open",
    "high",
    "low",
    "close",
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
                        "bought": int(n.bought[r, c]),
                        "sold": int(n.sold[r, c]),
                        "net_qty": int(n.net_qty[r, c]),
                        "buy_value": int(n.buy_value[r, c]),
                        "sell_value": int(n.sell_value[r, c]),
                        "fees": int(n.fees[r, c]),
                        "net_cash": int(n.net_cash[r, c]),
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
                "volume": int(n.bought[:, c].sum()),
                "traded_value": int(n.buy_value[:, c].sum()),
                "fees": int(n.fees[:, c].sum()),
                "members": int(((n.bought[:, c] + n.sold[:, c]) > 0).sum()),
                "open": record.open or None,  # 0: not recorded
                "high": record.high or None,
                "low": record.low or None,
                "close": record.close,
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
            "fees": report.netting.total_fees,
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
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            continue
        parquet = path.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        written.append(parquet)
    return written
