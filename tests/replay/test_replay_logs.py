"""A command log replayed and checked against the trade log written beside it."""

from __future__ import annotations

import json

import msgspec
import pytest

from engine.clearing.capture import TradeLogWriter, read_trade_log
from engine.config import default_market
from engine.demo import run_demo
from engine.protocol import Trade
from engine.replay.logs import dump, replay_log, summary


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    out = tmp_path_factory.mktemp("day")
    return out, run_demo(default_market(), seed=4, steps=60, out=str(out))


def test_the_right_market_reproduces_the_day_and_its_state_hash(day):
    out, demo = day
    result = replay_log(out / "commands.log", default_market())
    assert result.mismatch == "" and result.checked_against == out / "trades.log"
    assert result.state_hash == demo.exchange.state_hash()
    assert result.trades == sum(r["type"] == "Trade" for r in dump(out / "trades.log", "trades"))


def test_other_opening_balances_are_caught_by_the_trade_log(day):
    """With the wrong balances the replay once exited 0 with another state hash."""
    out, demo = day
    market = default_market()
    poorer = [msgspec.structs.replace(m, cash=m.cash // 10**6) for m in market.members]
    result = replay_log(out / "commands.log", msgspec.structs.replace(market, members=poorer))
    assert result.state_hash != demo.exchange.state_hash()
    assert "differs from the replay's" in result.mismatch
    assert "--market is not the config this day ran with" in result.mismatch


def test_a_trade_log_of_another_day_names_the_fields_apart_and_both_causes(day, tmp_path):
    """Found by a probe: another directory's trades.log beside the journal was blamed on
    --market alone, and the two records it showed printed alike."""
    out, _ = day
    (tmp_path / "commands.log").write_bytes((out / "commands.log").read_bytes())
    records = list(read_trade_log(out / "trades.log"))
    first = records[0]
    assert isinstance(first, Trade)
    other = msgspec.structs.replace(first, buy_order_id=first.buy_order_id + 1000)
    with TradeLogWriter(tmp_path / "trades.log") as writer:
        writer.record([other, *records[1:]])
    result = replay_log(tmp_path / "commands.log", default_market())
    assert "record 1 of" in result.mismatch
    assert f"they differ in buy_order_id {first.buy_order_id!r} / " in result.mismatch
    assert "or trades.log is not this journal's" in result.mismatch


def test_dump_gives_every_record_as_json_ready_dicts(day):
    out, _ = day
    records = list(dump(out / "commands.log", "log"))
    assert json.loads(json.dumps(records)) == records
    assert records[0] == {
        "seq": 1,
        "ts_ns": records[0]["ts_ns"],
        "type": "StartOfDay",
        "date": "2026-11-24",
    }
    totals = summary(out / "commands.log", "log")
    assert totals["records"] == len(records) == totals["last_seq"]
    assert sum(totals["by_type"].values()) == len(records)
