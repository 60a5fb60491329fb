"""Replay analytics against hand computation on sequences small enough to check on paper.

Each figure here once survived a wrong implementation: an inverted `resting_side`, an
order-flow-imbalance boundary moved from >= to >, and a coarser tick rounding the aggressive
way (bids up, asks down) all left the suite green.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.book import Book
from engine.book.layout import CMD_ADD, CMD_AMEND, COMMAND_ROWS
from engine.replay.counterfactual import coarser_tick
from engine.replay.lobster import LobsterDay, ReplayStats
from engine.replay.runner import NS, ReplayResult

# per message: time (s), type, order id, size, price, direction; then the best bid, its
# size, the best ask, its size after it
MESSAGES = [
    (0, 1, 1, 5, 100, 1, 100, 5, 102, 7),
    (1, 1, 2, 3, 100, 1, 100, 8, 102, 7),  # bid size 5 -> 8 at an unchanged price
    (2, 4, 9, 3, 102, -1, 101, 2, 102, 4),  # a resting sell executed; bid up, ask size down
    (61, 5, 0, 2, 101, 1, 101, 2, 103, 6),  # hidden execution against a buy; ask up
]


def day_result() -> ReplayResult:
    table = np.array(MESSAGES, dtype=np.int64)
    n = len(table)
    depth = np.zeros((n, 2, 5, 2), dtype=np.int64)
    depth[:, 0, 0] = table[:, 6:8]
    depth[:, 1, 0] = table[:, 8:10]
    day = LobsterDay(
        table[:, 0] * NS,
        table[:, 1],
        table[:, 2],
        table[:, 3],
        table[:, 4],
        table[:, 5],
        np.zeros((n, 4), dtype=np.int64),
        1,
    )
    commands = np.zeros((0, COMMAND_ROWS), dtype=np.int64)
    return ReplayResult("hand", day, ReplayStats(), commands, depth, 1, Book(tick=1))


def test_trades_are_the_executions_with_the_side_of_the_resting_order():
    """LOBSTER's direction of an execution is the side of the resting order hit: -1 a sell
    (resting_side 1), 1 a buy (resting_side 0)."""
    trades = day_result().trades()
    assert trades.tolist() == [
        (2 * NS, 102, 3, 1, False, 2),
        (61 * NS, 101, 2, 0, True, 3),
    ]
    assert trades.dtype.names == ("time_ns", "price", "qty", "resting_side", "hidden", "message")


def test_order_flow_imbalance_per_interval_by_hand():
    """Cont, Kukanov and Stoikov: e = 1{b>=b'} q_b - 1{b<=b'} q_b' - 1{a<=a'} q_a
    + 1{a>=a'} q_a' (primes: the row before). Message 1: 8 - 5 - 7 + 7 = 3; message 2
    (bid up, ask unchanged): 2 - 0 - 4 + 7 = 5; message 3 (bid unchanged, ask up):
    2 - 2 - 0 + 4 = 4. Each boundary is hit with equal prices, so a > for a >= shows."""
    intervals = day_result().intervals(seconds=60)
    assert intervals["ofi"].tolist() == [3 + 5, 4]


def test_mid_spread_sizes_volume_and_vwap_per_interval_by_hand():
    intervals = day_result().intervals(seconds=60)
    assert intervals["start_ns"].tolist() == [0, 60 * NS]
    assert intervals["mid"].tolist() == [101.5, 102.0]  # the last two-sided row's
    assert intervals["spread"].tolist() == pytest.approx([5 / 3, 2.0])  # (2 + 2 + 1) / 3
    assert intervals["bid_size"].tolist() == pytest.approx([5.0, 2.0])  # (5 + 8 + 2) / 3
    assert intervals["ask_size"].tolist() == pytest.approx([6.0, 6.0])  # (7 + 7 + 4) / 3
    assert intervals["volume_all"].tolist() == [3, 2]  # the hidden execution counts
    assert intervals["volume_hidden"].tolist() == [0, 2]
    assert intervals["vwap_all"].tolist() == [102.0, 101.0]


def test_a_coarser_tick_moves_prices_passively_bids_down_asks_up():
    """A participant re-quoting on a coarser tick does not cross: a bid at 6203 goes to
    6200 (not 6205), an ask at 6207 to 6210, and an ask amended to 6206 to 6210 too."""
    cmds = np.array(
        [
            (CMD_ADD, 1, 1, 0, 6203, 5, 1, 0, 0, 0),
            (CMD_ADD, 2, 2, 1, 6207, 5, 1, 0, 0, 0),
            (CMD_AMEND, 2, 2, 0, 6206, 4, 0, 0, 0, 0),  # an amend row carries no side
        ],
        dtype=np.int64,
    )
    outcome = coarser_tick(cmds, 1, 5)
    assert (outcome.best_bid, outcome.best_ask, outcome.fills) == (6200, 6210, 0)


def test_every_output_column_is_documented_with_its_unit():
    """Each column of every table replay writes is named in docs/REPLAY.md (top.csv's per
    level columns as `bidk` and so on), and each numeric LOBSTER column has a unit for the
    Parquet schema metadata."""
    import re
    from pathlib import Path

    from engine.replay.counterfactual import compare, outcome_table
    from engine.replay.flow import FILL_COLUMNS, FILL_UNITS
    from engine.replay.runner import lobster_units, rejects_table

    docs = Path(__file__).resolve().parents[2] / "docs" / "REPLAY.md"
    documented = set(re.findall(r"`([a-z_]+)`", docs.read_text()))
    cmds = np.array([(CMD_ADD, 1, 1, 0, 6200, 5, 1, 0, 0, 0)], dtype=np.int64)
    lobster = {**day_result().tables(60), "counterfactuals": outcome_table(compare(cmds, 1))}
    for kind, table in lobster.items():
        for name in table.dtype.names:
            assert re.sub(r"\d$", "k", name) in documented, (kind, name)
            if table.dtype[name].kind in "if" and name != "scenario":
                assert lobster_units(name), (kind, name)
    fills = [name for name, _ in FILL_COLUMNS]
    assert set(fills) <= documented and set(FILL_UNITS) <= set(fills)
    assert set(rejects_table([]).dtype.names) <= documented
    assert {"seq", "reason", "text"} <= documented  # a command log's rejects.csv
