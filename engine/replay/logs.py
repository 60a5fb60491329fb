"""Engine logs for researchers and operators: a command log replayed into the exchange core
and checked against what the day printed, and either log dumped as JSON.

A command log reproduces its day only with the market it ran with (the same opening
balances, the same first trade id). The check that decides is the replay's trades and
day-end records against the trade log written beside the command log (`trades.log`, as
`cxe demo --out` and `cxe serve` write them); a refused StartOfDay is named as the likely
cause when they differ. Without a trade log, a StartOfDay refused while no day was open
is taken as the sign of another market. A StartOfDay refused while a day was open (an
operator's repeat, which the engine journaled and refused the same way) is no sign: a probe's
journal with one was called "NOT the recorded day" though it replayed exactly. Invariant:
`LogReplay.mismatch` is empty only when no check failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from engine.clearing.capture import read_trade_log
from engine.codec import command_of
from engine.config import MarketConfig
from engine.core import Exchange
from engine.journal import BatchRecord, LogRecord, read_log, replay_events
from engine.protocol import DayClosed, RejectCode, Rejected, StartOfDay, Trade


@dataclass
class LogReplay:
    commands: int = 0
    trades: int = 0
    rejects: Counter = field(default_factory=Counter)  # RejectCode name -> count
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # seq, reason, text
    checked_against: Path | None = None  # the trade log compared with, if any
    mismatch: str = ""  # why the replay is not the day the log recorded
    state_hash: str = ""


def replay_log(path: str | Path, market: MarketConfig) -> LogReplay:
    """Replay the command log into a fresh exchange of `market` and check it (see above)."""
    path = Path(path)
    exchange = Exchange(market)
    out = LogReplay()
    printed: list[Trade | DayClosed] = []
    refused_day = ""  # the first StartOfDay refused while no day was open, and why
    for record, events in replay_events(path, exchange):
        out.commands += record.count
        printed += [e for e in events if isinstance(e, Trade | DayClosed)]
        day = type(record) is LogRecord and isinstance(record.command, StartOfDay)
        for event in events:
            if isinstance(event, Rejected):
                reason = RejectCode(event.code).name
                out.rejects[reason] += 1
                out.rejected.append((event.seq, reason.lower(), event.text))
                if day and not exchange.date and not refused_day:
                    refused_day = (
                        f"the log's StartOfDay {record.command.date} was refused ({event.text})"
                    )
    out.trades = sum(isinstance(e, Trade) for e in printed)
    out.state_hash = exchange.state_hash()
    trade_log = path.with_name("trades.log")
    if trade_log.exists() and trade_log != path:
        out.checked_against = trade_log
        apart = _compare(printed, list(read_trade_log(trade_log)), trade_log)
        out.mismatch = f"{refused_day}; {apart}" if apart and refused_day else apart
    elif refused_day:
        out.mismatch = f"{refused_day}: --market is not the config this day ran with"
    return out


def _compare(replayed: list, recorded: list, trade_log: Path) -> str:
    """'' when the replay printed what the trade log holds, else where they part."""
    causes = (
        f"--market is not the config this day ran with (a later day needs the opening file "
        f"it ran with), or {trade_log.name} is not this journal's (copied from another data "
        f"directory?)"
    )
    for k, (mine, theirs) in enumerate(zip(replayed, recorded, strict=False)):
        if mine != theirs:
            return (
                f"record {k + 1} of {trade_log} differs from the replay's (replayed "
                f"{_brief(mine)}, recorded {_brief(theirs)}{_fields_apart(mine, theirs)}): "
                f"{causes}"
            )
    if len(replayed) != len(recorded):
        return (
            f"the replay printed {len(replayed):,} trades and day-end records, {trade_log} "
            f"holds {len(recorded):,}: {causes}"
        )
    return ""


def _fields_apart(mine: msgspec.Struct, theirs: msgspec.Struct) -> str:
    """'; differ in field: replayed / recorded, ...' (a probe's two records printed alike)."""
    if type(mine) is not type(theirs):
        return ""
    apart = [
        f"{name} {getattr(mine, name)!r} / {getattr(theirs, name)!r}"
        for name in mine.__struct_fields__
        if getattr(mine, name) != getattr(theirs, name)
    ]
    return f"; they differ in {', '.join(apart)}" if apart else ""


def _brief(record: Trade | DayClosed) -> str:
    if isinstance(record, Trade):
        return f"trade {record.trade_id} {record.instrument} {record.qty} at {record.price}"
    return f"day close of {record.instrument}"


def as_dict(message: msgspec.Struct) -> dict:
    """A protocol message as {"type": its class, field: value, ...} (JSON-ready)."""
    fields = {name: getattr(message, name) for name in message.__struct_fields__}
    return {"type": type(message).__name__, **msgspec.to_builtins(fields)}


def dump(path: str | Path, kind: str, codes: Sequence[str] = ()) -> Iterator[dict]:
    """Every record of a command log ("log") or trade log ("trades") as a dict; each command
    of a batch record as one, its instrument named from `codes` (the market's instrument
    codes in order; an index beyond them is "#index")."""
    if kind == "log":
        for record in read_log(path):
            if type(record) is BatchRecord:
                for r in record.records():
                    command = as_dict(command_of(r, codes))
                    yield {"seq": int(r["seq"]), "ts_ns": record.ts_ns, **command}
            else:
                yield {"seq": record.seq, "ts_ns": record.ts_ns, **as_dict(record.command)}
    else:
        for message in read_trade_log(path):
            yield as_dict(message)


def summary(path: str | Path, kind: str, codes: Sequence[str] = ()) -> dict:
    """Records by type, the seq and time range, and per instrument trades and volume."""
    types: Counter = Counter()
    volume: Counter = Counter()
    trades: Counter = Counter()
    ranges: dict[str, list[int]] = {}  # seq, ts_ns -> [first, last]
    for record in dump(path, kind, codes):
        types[record["type"]] += 1
        for key in ("seq", "ts_ns"):
            if key in record:
                ranges.setdefault(key, [record[key], record[key]])[1] = record[key]
        if record["type"] == "Trade":
            trades[record["instrument"]] += 1
            volume[record["instrument"]] += record["qty"]
    out: dict = {"file": str(path), "kind": "command log" if kind == "log" else "trade log"}
    out["records"] = sum(types.values())
    out["by_type"] = dict(sorted(types.items()))
    for key, (first, last) in ranges.items():
        out[f"first_{key}"], out[f"last_{key}"] = first, last
    if trades:
        out["trades_by_instrument"] = dict(sorted(trades.items()))
        out["volume_by_instrument"] = dict(sorted(volume.items()))
    return out
