"""Golden book scenarios: a readable text format of commands -> expected events and depth.

    # comment
    book tick=1 band=900..1100          (optional header)
    add id=1 owner=1 side=sell price=1000 qty=5 [type=market] [tif=ioc] [stp=cancel_both]
      rested id=1 side=sell price=1000 qty=5 owner=1     (the command's events, indented)
    cancel id=1 [owner=1]
    amend id=1 price=1001 qty=4 [owner=1]
    pick id=9 owner=2 side=buy target=1 qty=3
    call                                 (call phase: orders rest without matching)
    uncross reference=1000               (uncross at the equilibrium, back to continuous)
    depth                                (the whole book, best first; must match exactly)
      ask 1000 5 1                       (side price qty orders)

A command with no indented lines must produce no event; `depth` with no lines: empty book.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.book.auction import run_uncross
from engine.book.events import BookEvent, EventKind
from engine.protocol import RejectCode
from engine.types import CancelReason, OrderType, StpMode, TimeInForce

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden" / "book"
SIDES = {"buy": 0, "sell": 1}
SIDE_NAMES = {v: k for k, v in SIDES.items()}


def describe(event: BookEvent) -> str:
    """The canonical text of an event, as golden files spell it."""
    side = SIDE_NAMES[event.side]
    kind = EventKind(event.kind)
    if kind is EventKind.REJECTED:
        return f"rejected id={event.oid} code={RejectCode(event.code).name.lower()}"
    if kind is EventKind.RESTED:
        return (
            f"rested id={event.oid} side={side} price={event.price} qty={event.qty} "
            f"owner={event.owner}"
        )
    if kind is EventKind.FILL and event.code == 1:
        return (
            f"auction_fill buy={event.oid} sell={event.oid2} price={event.price} "
            f"qty={event.qty} buy_leaves={event.leaves} sell_leaves={event.leaves2} "
            f"buy_owner={event.owner} sell_owner={event.owner2}"
        )
    if kind is EventKind.FILL:
        return (
            f"fill taker={event.oid} maker={event.oid2} price={event.price} qty={event.qty} "
            f"taker_leaves={event.leaves} maker_leaves={event.leaves2} side={side} "
            f"taker_owner={event.owner} maker_owner={event.owner2}"
        )
    if kind is EventKind.CANCELLED:
        return (
            f"cancelled id={event.oid} side={side} price={event.price} qty={event.qty} "
            f"reason={CancelReason(event.code).name.lower()} owner={event.owner}"
        )
    priority = "kept" if event.code else "lost"
    return (
        f"amended id={event.oid} side={side} price={event.price} qty={event.qty} "
        f"priority={priority} owner={event.owner}"
    )


@dataclass
class Step:
    line_no: int
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    path: Path
    tick: int = 1
    band: tuple[int, int] | None = None
    steps: list[Step] = field(default_factory=list)


def parse(path: Path) -> Scenario:
    scenario = Scenario(path)
    for line_no, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].rstrip()
        if not text:
            continue
        if raw[0].isspace():
            if not scenario.steps:
                raise ValueError(f"{path.name}:{line_no}: indented line before any command")
            scenario.steps[-1].expected.append(" ".join(text.split()))
        elif text.startswith("book "):
            args = _args(text, line_no, path)
            scenario.tick = int(args.get("tick", 1))
            if "band" in args:
                low, high = args["band"].split("..")
                scenario.band = (int(low), int(high))
        else:
            scenario.steps.append(Step(line_no, text))
    return scenario


def _args(text: str, line_no: int, path: Path) -> dict[str, str]:
    try:
        return dict(word.split("=", 1) for word in text.split()[1:])
    except ValueError:
        raise ValueError(f"{path.name}:{line_no}: expected key=value words: {text}") from None


def _enum(enum, value: str) -> int:
    return int(enum[value.upper()])


def run_step(book, step: Step, path: Path) -> list[str]:
    """Apply one step; returns its actual lines (events, or depth lines)."""
    verb = step.text.split()[0]
    a = _args(step.text, step.line_no, path)
    if verb == "depth":
        bids, asks = book.depth(10_000)
        return [f"bid {p} {q} {n}" for p, q, n in bids] + [f"ask {p} {q} {n}" for p, q, n in asks]
    if verb == "call":
        book.set_collecting(True)
        return []
    if verb == "uncross":
        events, _ = run_uncross(book, int(a["reference"]))
        return [describe(e) for e in events]
    if verb == "add":
        book.add(
            int(a["id"]),
            int(a["owner"]),
            SIDES[a["side"]],
            int(a.get("price", 0)),
            int(a["qty"]),
            _enum(OrderType, a.get("type", "limit")),
            _enum(TimeInForce, a.get("tif", "day")),
            _enum(StpMode, a.get("stp", "cancel_incoming")),
        )
    elif verb == "cancel":
        book.cancel(int(a["id"]), int(a.get("owner", -1)))
    elif verb == "amend":
        book.amend(int(a["id"]), int(a["price"]), int(a["qty"]), int(a.get("owner", -1)))
    elif verb == "pick":
        book.pick(int(a["id"]), int(a["owner"]), SIDES[a["side"]], int(a["target"]), int(a["qty"]))
    else:
        raise ValueError(f"{path.name}:{step.line_no}: unknown command {verb!r}")
    return [describe(e) for e in book.events()]


def scenario_files() -> list[Path]:
    return sorted(GOLDEN_DIR.glob("*.book"))
