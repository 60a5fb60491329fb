"""Golden core scenarios: a readable text format of commands -> expected events, for the
exchange core (tests/golden/core/*.core), run on the production and the reference exchange.

    # comment                              (a line starting with '#')
    instrument code=CEA25 reference_price=10000 tick=5   (optional; any Instrument field)
    member id=1 cash=1006000 CEA25=100     (optional; opening cash in fen, holdings by code)
    NewOrder cl_ord_id=c1 member=1 side=buy price=10000 qty=100 tif=ioc
      Accepted cl_ord_id=c1 member=1 instrument=CEA25 order_id=1 side=buy price=10000 qty=100
      DepthUpdate instrument=CEA25 side=buy price=10000 qty=100 orders=1
    accounts [member=1,2]                  (balances of these members, or all and the fees)
      account member=1 cash=0 cash_frozen=1006000 CEA25.available=0 CEA25.frozen=0 ...
    orders                                 (every live order, book and off-book, by id)
      order order_id=1 member=1 cl_ord_id="" code=CEA25 side=0 limit=10000 ...

Without `instrument` lines the market is `tests.support.exchange.small_market()`'s
instrument; without `member` lines, its four members. A command is a class of
`engine.protocol` by name with its fields as key=value; `instrument` may be left out when the
market lists one. Enum fields take the member's name in lower case (an integer sends a raw
value, in or out of the enum); booleans are true/false; a string with spaces, quotes, '=' or
'#' is written as a JSON string.

Events are spelled generically from their msgspec fields, every field but `seq`, in
declaration order (`describe`), so adding a field changes every line of that event and the
files are rewritten, for review as a diff, by
    python -m tests.support.golden_core --update [FILE ...]
Without --update that command prints the diff and exits 1 when a file is out of date; the
tests (tests/core/test_golden_core.py) fail on any difference. `seq` is checked instead: every
event of a command carries that command's sequence number.

Invariants the runner checks on every step: the indented lines under a command are exactly
its events, in order (none: it produced no event); a command answered by a lone `Rejected`
leaves `state_hash()` unchanged; the rewrite refuses to run while the two exchanges differ.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
import typing
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import msgspec

from engine import protocol
from engine.config import MarketConfig, Member
from engine.core import Exchange, ReferenceExchange
from engine.instruments import Instrument
from tests.support.exchange import small_market

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "core"
EXCHANGES = {"compiled": Exchange, "reference": ReferenceExchange}
COMMANDS = {cls.__name__: cls for cls in typing.get_args(protocol.Command)}
DIRECTIVES = ("accounts", "orders")
_WORD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
_BARE = re.compile(r'[^\s"=#]+')


# -- spelling values and events ---------------------------------------------------------------


def _base(annotation):
    """The runtime type behind an annotation (Annotated unwrapped)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def spell(value, kind=None) -> str:
    """A value as golden files write it; `kind` is the declared type (an IntEnum field may
    hold a plain int at run time)."""
    if isinstance(kind, type) and issubclass(kind, IntEnum):
        try:
            return kind(value).name.lower()
        except ValueError:
            return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, IntEnum):
        return value.name.lower()
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return str(value)


def describe(event: protocol.Event) -> str:
    """The canonical line of an event: its class, then every field but `seq` as key=value."""
    words = [type(event).__name__]
    for f in msgspec.structs.fields(event):
        if f.name != "seq":
            words.append(f"{f.name}={spell(getattr(event, f.name), _base(f.type))}")
    return " ".join(words)


def _parse_value(kind, text: str):
    if text.startswith('"'):
        return json.loads(text)
    if isinstance(kind, type) and issubclass(kind, IntEnum):
        return int(text) if re.fullmatch(r"-?\d+", text) else kind[text.upper()]
    if kind is bool:
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, not {text!r}")
        return text == "true"
    if kind is int:
        return int(text)
    return text


# -- scenarios --------------------------------------------------------------------------------


@dataclass
class Step:
    line_no: int
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    path: Path
    lines: list[str]  # the file as read, for the rewrite
    config: MarketConfig
    steps: list[Step]


def _without_comment(text: str) -> str:
    """`text` up to a '#' outside a quoted string."""
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return text[:i]
    return text


def _words(text: str, where: str) -> tuple[str, dict[str, str]]:
    head, _, rest = _without_comment(text).strip().partition(" ")
    words = _WORD.findall(rest)
    if _WORD.sub("", rest).strip():
        raise ValueError(f"{where}: expected key=value words after {head!r}: {text.strip()}")
    return head, dict(words)


def parse(path: Path) -> Scenario:
    lines = path.read_text().splitlines()
    instruments: list[dict] = []
    members: list[dict] = []
    steps: list[Step] = []
    for line_no, raw in enumerate(lines, 1):
        where = f"{path.name}:{line_no}"
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace():
            if not steps:
                raise ValueError(f"{where}: an expected line before any command")
            steps[-1].expected.append(raw.strip())
            continue
        head, args = _words(raw, where)
        if head == "instrument":
            instruments.append({"name": args.get("code", ""), "product": "CEA"} | args)
        elif head == "member":
            members.append(args)
        elif head in COMMANDS or head in DIRECTIVES:
            steps.append(Step(line_no, raw.strip()))
        else:
            raise ValueError(f"{where}: unknown command {head!r}; known: {sorted(COMMANDS)}")
    return Scenario(path, lines, _config(instruments, members, path.name), steps)


def _config(instruments: list[dict], members: list[dict], name: str) -> MarketConfig:
    default = small_market()
    listed = [msgspec.convert(i, Instrument, strict=False) for i in instruments]
    listed = listed or default.instruments
    codes = {i.code for i in listed}
    accounts = default.members
    if members:
        accounts = [
            Member(
                id=int(m["id"]),
                name=f"M{m['id']}",
                cash=int(m.get("cash", 0)),
                holdings={code: int(qty) for code, qty in m.items() if code in codes},
            )
            for m in members
        ]
    return MarketConfig(name=name, instruments=listed, members=accounts)


def command(step: Step, config: MarketConfig, where: str) -> protocol.Command:
    """The protocol command a step's line spells."""
    head, args = _words(step.text, where)
    cls = COMMANDS[head]
    kinds = {f.name: _base(f.type) for f in msgspec.structs.fields(cls)}
    if "instrument" in kinds and "instrument" not in args and len(config.instruments) == 1:
        args["instrument"] = config.instruments[0].code
    unknown = set(args) - set(kinds)
    if unknown:
        raise ValueError(f"{where}: {head} has no field {sorted(unknown)}; fields: {list(kinds)}")
    try:
        return cls(**{name: _parse_value(kinds[name], text) for name, text in args.items()})
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {step.text}: {exc!r}") from None


# -- running ----------------------------------------------------------------------------------


def _accounts(exchange: Exchange, args: dict[str, str]) -> list[str]:
    wanted = args.get("member")
    ids = [int(m) for m in wanted.split(",")] if wanted else sorted(exchange.accounts.row_of)
    codes = list(exchange.markets)
    lines = []
    for member in ids:
        account = exchange.accounts.get(member)
        words = [f"account member={member} cash={account.cash} cash_frozen={account.cash_frozen}"]
        for code in codes:
            held = dataclasses.asdict(account.holding(code))
            words += [f"{code}.{name}={qty}" for name, qty in held.items()]
        lines.append(" ".join(words))
    if not wanted:
        lines.append(f"fees collected={exchange.accounts.fees}")
    return lines


def _orders(exchange: Exchange) -> list[str]:
    lines = []
    for order in exchange.live_orders().values():
        words = [f"{f.name}={spell(getattr(order, f.name))}" for f in dataclasses.fields(order)]
        lines.append(" ".join(["order", *words]))
    return lines


@dataclass
class Outcome:
    """What one exchange gave for a scenario: per step, its lines and (for commands) the
    encoded events and the state hash after it."""

    lines: list[list[str]]
    encoded: list[bytes]
    hashes: list[str]


def run(scenario: Scenario, make_exchange) -> Outcome:
    """Apply the scenario's steps to a fresh exchange; checks each step's invariants."""
    exchange = make_exchange(scenario.config)
    outcome = Outcome([], [], [])
    for step in scenario.steps:
        where = f"{scenario.path.name}:{step.line_no}"
        head, args = _words(step.text, where)
        if head == "accounts":
            outcome.lines.append(_accounts(exchange, args))
            continue
        if head == "orders":
            outcome.lines.append(_orders(exchange))
            continue
        before = exchange.state_hash()
        events = exchange.apply(command(step, scenario.config, where))
        after = exchange.state_hash()
        assert all(e.seq == exchange.seq for e in events), f"{where}: seq is not the command's"
        if len(events) == 1 and isinstance(events[0], protocol.Rejected):
            assert after == before, f"{where}: a reject changed the state"
        outcome.lines.append([describe(e) for e in events])
        outcome.encoded.append(exchange.encoded(events))
        outcome.hashes.append(after)
    return outcome


def run_both(scenario: Scenario) -> list[list[str]]:
    """Each step's lines, after requiring both exchanges to give the same lines, bytes and
    state hashes."""
    compiled, reference = (run(scenario, make) for make in EXCHANGES.values())
    for step, got, want in zip(scenario.steps, compiled.lines, reference.lines, strict=True):
        assert got == want, f"{scenario.path.name}:{step.line_no}: the exchanges differ"
    assert compiled.encoded == reference.encoded, f"{scenario.path.name}: encoded events differ"
    assert compiled.hashes == reference.hashes, f"{scenario.path.name}: state hashes differ"
    return reference.lines


def render(scenario: Scenario, actual: list[list[str]]) -> str:
    """The file with each step's expected lines replaced by `actual`; every other line
    (comments, header, commands, blank lines) kept as it is."""
    by_line = {step.line_no: lines for step, lines in zip(scenario.steps, actual, strict=True)}
    out: list[str] = []
    for line_no, raw in enumerate(scenario.lines, 1):
        if raw.strip() and raw[0].isspace() and not raw.lstrip().startswith("#"):
            continue  # an expected line: regenerated below its step
        out.append(raw)
        out += [f"  {line}" for line in by_line.get(line_no, [])]
    return "\n".join(out) + "\n"


def scenario_files() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.core"))


def main(argv: list[str]) -> int:
    """Check (default) or rewrite (--update) golden files; prints a unified diff per file."""
    update = "--update" in argv
    paths = [Path(a) for a in argv if a != "--update"] or scenario_files()
    stale = 0
    for path in paths:
        scenario = parse(path)
        new = render(scenario, run_both(scenario))
        old = path.read_text()
        if new == old:
            continue
        stale += 1
        sys.stdout.writelines(
            difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True), str(path), str(path)
            )
        )
        if update:
            path.write_text(new)
    if stale and not update:
        print(f"{stale} golden file(s) out of date: review the diff, then run with --update")
    return 1 if stale and not update else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
