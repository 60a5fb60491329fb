"""LOBSTER replay on real NASDAQ data: the book equals the order book file on every row.

Uses the 999-message AAPL fixture in shared/data/lobster (skipped if the samples are absent).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine.replay.lobster import LobsterReplay, load_day

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"
MESSAGES = DATA / "AAPL_2012-06-21_first999_message_10.csv"
BOOK = DATA / "AAPL_2012-06-21_first999_orderbook_10.csv"

pytestmark = pytest.mark.skipif(not MESSAGES.exists(), reason="LOBSTER samples not present")


def test_sample_files_are_the_published_ones():
    sums = dict(line.split()[::-1] for line in (DATA / "SHA256SUMS").read_text().splitlines())
    for path in (MESSAGES, BOOK):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[path.name]


def test_every_row_of_the_aapl_fixture_is_reproduced_and_executions_hit_the_named_order():
    day = load_day(MESSAGES, BOOK)
    stats = LobsterReplay(day.levels).run(day)
    assert stats.messages == stats.rows_checked == 999
    assert stats.rows_mismatched == 0, stats.first_mismatches
    assert stats.executions == 98
    assert stats.executions_known_queue >= 90
    assert stats.executions_matched == stats.executions_known_queue
    assert stats.crossing_submits == 0
