"""Golden core scenarios (tests/golden/core/*.core): commands -> expected events, one file per
rule family, on both exchanges, which must also agree byte for byte and hash for hash.

When an event gains a field, every file spelling it goes stale: review and rewrite them with
`python -m tests.support.golden_core --update` (tests.support.golden_core describes the
format).
"""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from engine import protocol
from engine.protocol import RejectCode
from engine.types import OrderType, Phase, TimeInForce
from tests.support.golden_core import (
    COMMANDS,
    describe,
    parse,
    render,
    run,
    run_both,
    scenario_files,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "core"

# Codes the core never answers a command line with: MALFORMED is for an object that is not a
# command at all (the wire decoder's, or `apply` given something else), UNAUTHORISED is the
# gateway's, and order ids are the core's own to assign (INVALID_ORDER_ID, DUPLICATE_ORDER_ID
# are the book's answers to a caller that assigns them badly).
NOT_FROM_A_COMMAND = {
    RejectCode.MALFORMED,
    RejectCode.UNAUTHORISED,
    RejectCode.INVALID_ORDER_ID,
    RejectCode.DUPLICATE_ORDER_ID,
}


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_golden_scenario(make_exchange, path):
    scenario = parse(path)
    outcome = run(scenario, make_exchange)
    for step, actual in zip(scenario.steps, outcome.lines, strict=True):
        assert actual == step.expected, (
            f"{path.name}:{step.line_no}: {step.text}\n"
            "if the change is intended: python -m tests.support.golden_core --update"
        )


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.stem)
def test_both_exchanges_give_the_same_bytes_and_state(path):
    """run_both asserts the lines, encoded events and state hashes are equal step by step."""
    scenario = parse(path)
    assert run_both(scenario) == [step.expected for step in scenario.steps]


def _spelled(words: str) -> set[str]:
    return {
        line
        for path in scenario_files()
        for step in parse(path).steps
        for line in [step.text, *step.expected]
        if words in line
    }


def test_every_reject_code_the_core_gives_has_a_scenario():
    seen = " ".join(_spelled("Rejected "))
    missing = [
        code.name
        for code in RejectCode
        if code not in NOT_FROM_A_COMMAND and f"code={code.name.lower()} " not in seen
    ]
    assert not missing


def test_every_command_order_type_and_phase_has_a_scenario():
    lines = [line for path in scenario_files() for line in path.read_text().splitlines()]
    heads = {line.split()[0] for line in lines if line and not line[0].isspace()}
    assert set(COMMANDS) <= heads
    text = "\n".join(lines)
    assert all(f"phase={phase.name.lower()} " in text for phase in Phase)
    assert all(f"tif={tif.name.lower()}" in text for tif in TimeInForce if tif != TimeInForce.DAY)
    assert f"order_type={OrderType.MARKET.name.lower()}" in text
    for auction in ("call", "closing_call", "one_way"):
        assert f"AuctionResult instrument=CEA25 auction={auction} " in text


def test_an_event_line_names_every_field_but_seq():
    """The spelling is generic: a field added to an event appears in its line."""
    for cls in typing.get_args(protocol.Event):
        fields = [name for name in cls.__struct_fields__ if name != "seq"]
        sample = cls(*[_sample(cls, name) for name in cls.__struct_fields__])
        words = describe(sample).split(" ")
        assert words[0] == cls.__name__
        assert [w.split("=", 1)[0] for w in words[1:]] == fields


def _sample(cls, name: str):
    kind = typing.get_type_hints(cls)[name]
    return {int: 1, str: "x", bool: True}.get(kind, 0)


def test_a_stale_file_fails_and_update_rewrites_it_showing_the_diff(tmp_path):
    """Without --update the tool prints the diff and exits 1, leaving the file; with it the
    file is rewritten to what the exchanges give, comments and commands untouched."""
    original = GOLDEN / "order_ioc.core"
    stale = tmp_path / original.name
    good = original.read_text()
    stale.write_text(good.replace("reason=unfilled_remainder", "reason=user", 1))
    scenario = parse(stale)
    assert render(scenario, run_both(scenario)) == good
    checked = _tool(stale)
    assert checked.returncode == 1 and stale.read_text() != good
    assert "-  Cancelled member=1 instrument=CEA25 order_id=3 leaves=15 reason=user" in (
        checked.stdout
    )
    assert (
        "+  Cancelled member=1 instrument=CEA25 order_id=3 leaves=15 reason=unfilled_remainder"
        in (checked.stdout)
    )
    updated = _tool(stale, "--update")
    assert updated.returncode == 0 and stale.read_text() == good
    assert _tool(stale).returncode == 0 and _tool(stale).stdout == ""


def _tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.golden_core", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_golden_files_are_all_checked():
    files = scenario_files()
    assert len(files) >= 15
    for path in files:
        steps = parse(path).steps
        assert any(step.expected for step in steps), f"{path.name} expects nothing"
