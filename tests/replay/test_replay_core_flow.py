"""Command files through the full exchange core: the market's validation, band, phases and
risk checks apply, members are the senders and the self-trade prevention owners."""

from __future__ import annotations

import pytest

from engine.config import default_market
from engine.replay.core_flow import run_in_core
from engine.replay.flow import run_flow
from engine.replay.sources import read_commands

HEADER = "time_ns,instrument,member,action,side,price,qty,order_id,tif\n"


def core(tmp_path, rows: str):
    path = tmp_path / "flow.csv"
    path.write_text(HEADER + rows)
    loaded = read_commands(path)
    assert loaded.bad_rows == []
    return loaded, run_in_core(loaded, default_market())


def test_the_cores_price_band_applies_where_the_bare_book_has_none(tmp_path):
    rows = "1,CEA25,1,add,sell,9000,5,1,\n2,CEA25,2,add,buy,9000,5,2,\n"
    loaded, result = core(tmp_path, rows)  # CEA25's band is +-10% around 62.00
    assert len(result.fills) == 0
    assert [(r.line, r.reason) for r in result.rejects] == [
        (2, "price_outside_band"),
        (3, "price_outside_band"),
    ]
    assert "band 5580-6820 fen" in result.rejects[0].detail
    bare = run_flow("CEA25", loaded.flows["CEA25"], loaded)
    assert bare.fills[["price", "qty"]].tolist() == [(9000, 5)]


def test_reduce_keeps_the_orders_place_in_the_core_too(tmp_path):
    rows = (
        "1,CEA25,1,add,sell,6200,10,1,\n"
        "2,CEA25,2,add,sell,6200,10,2,\n"
        "3,CEA25,1,reduce,,,4,1,\n"
        "4,CEA25,3,add,buy,6200,8,3,\n"
        "5,CEA25,2,reduce,,,1,99,\n"
    )
    _, result = core(tmp_path, rows)
    fills = result.fills[["time_ns", "line", "taker_order", "maker_order", "qty"]].tolist()
    assert fills == [(4, 5, 3, 1, 6), (4, 5, 3, 2, 2)]
    assert [(r.line, r.reason) for r in result.rejects] == [(6, "unknown_order")]
    assert result.fills[["taker_member", "maker_member"]].tolist() == [(3, 1), (3, 2)]


def test_the_member_is_the_self_trade_owner_and_must_be_known(tmp_path):
    rows = (
        "1,CEA25,1,add,sell,6200,5,1,\n"
        "2,CEA25,1,add,buy,6200,5,2,\n"  # its own order: prevented, no trade
        "3,CEA25,77,add,buy,6200,5,3,\n"  # not a member of the market
        "4,CEA25,2,add,buy,6200,5,4,\n"  # another member: the sell still rests
    )
    _, result = core(tmp_path, rows)
    assert [(r.line, r.reason) for r in result.rejects] == [(4, "unknown_member")]
    assert result.fills[["line", "taker_member", "maker_member"]].tolist() == [(5, 2, 1)]


def test_an_instrument_the_market_does_not_list_is_refused(tmp_path):
    path = tmp_path / "flow.csv"
    path.write_text(HEADER + "1,BTCUSD,1,add,sell,6200,5,1,\n")
    with pytest.raises(ValueError, match=r"instruments \['BTCUSD'\] are not in the market"):
        run_in_core(read_commands(path), default_market())
