"""Domain types, instruments, market config and wire messages."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from engine.config import MarketConfig, default_market, load_market
from engine.demo import render, run_demo
from engine.instruments import Instrument
from engine.protocol import (
    REJECT_TEXT,
    CancelOrder,
    MalformedMessage,
    NewOrder,
    RejectCode,
    Rejected,
    decode_command,
    decode_event,
    encode,
)
from engine.types import Side, TimeInForce, as_ints, format_price, parse_price

ROOT = Path(__file__).resolve().parents[2]


def test_prices_convert_exactly_between_text_and_fen():
    assert parse_price("58.31") == 5831
    assert parse_price(" 100 ") == 10000
    assert format_price(5831) == "58.31"
    assert format_price(-5) == "-0.05"
    assert format_price(123456789, grouped=True) == "1,234,567.89"
    for bad in ("58.315", "abc", ""):
        with pytest.raises(ValueError):
            parse_price(bad)


def test_as_ints_refuses_floats_and_bools():
    assert as_ints("a b", (Side.SELL, 3)) == (1, 3)
    with pytest.raises(TypeError, match=r"qty must be an integer, got 1\.5"):
        as_ints("qty", (1.5,))
    with pytest.raises(TypeError, match="side"):
        as_ints("side", (True,))


def test_embedded_market_lists_cea_vintages_and_ccer_with_market_rules():
    market = default_market()
    codes = [i.code for i in market.instruments]
    assert codes == ["CEA21", "CEA22", "CEA23", "CEA24", "CEA25", "CCER"]
    for inst in market.instruments:
        assert inst.tick == 1 and inst.unit == 1
        assert inst.max_qty == 99_999 and inst.block_min_qty == 100_000
        assert inst.band_ppm == 100_000 and inst.fee_ppm == 6_000
        assert not inst.same_day_resale
    assert market.sessions == [("09:30", "11:30"), ("13:00", "15:00")]
    assert market.timezone == "Asia/Shanghai"


def test_band_rounds_inward_to_the_tick():
    inst = Instrument(code="X", name="x", product="CEA", reference_price=6155, tick=1)
    assert inst.band() == (5540, 6770)  # 5539.5 up, 6770.5 down
    coarse = Instrument(code="Y", name="y", product="CEA", reference_price=6150, tick=5)
    assert coarse.band() == (5535, 6765)
    assert coarse.band(band_ppm=300_000) == (4305, 7995)


def test_fee_is_six_per_mille_rounded_down_per_trade_and_frozen_rounded_up():
    inst = default_market().instrument("CCER")
    assert inst.fee(1_000_000) == 6_000 == inst.fee_ceiling(1_000_000)
    assert inst.fee(1_250) == 7  # 7.5 fen: the trade pays 7
    assert inst.fee_ceiling(1_250) == 8  # risk freezes 8
    assert inst.fee(166) == 0 and inst.fee_ceiling(166) == 1


def test_instrument_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="not on the 5 fen tick"):
        Instrument(code="X", name="x", product="CEA", reference_price=6151, tick=5)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(
            {"code": "X", "name": "x", "product": "EUA", "reference_price": 1}, Instrument
        )


def test_market_loads_from_toml_and_reports_bad_files(tmp_path):
    good = tmp_path / "m.toml"
    good.write_text(
        'name = "Test"\n[[instruments]]\ncode = "CEA25"\nname = "a"\nproduct = "CEA"\n'
        'reference_price = 6200\n[[members]]\nid = 1\nname = "A"\ncash = 100\n'
    )
    market = load_market(good)
    assert market.instrument("CEA25").band() == (5580, 6820)
    assert market.members[0].cash == 100
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "Test"\n[[instruments]]\ncode = "CEA25"\n')
    with pytest.raises(ValueError, match=r"bad\.toml"):
        load_market(bad)
    for unreadable in (tmp_path / "gone.toml", tmp_path):  # every caller takes ValueError
        with pytest.raises(ValueError, match=r"cannot read it: (No such file|Is a directory)"):
            load_market(unreadable)
    with pytest.raises(KeyError, match=r"CEA99"):
        market.instrument("CEA99")


def test_commands_round_trip_as_compact_tagged_arrays():
    order = NewOrder("c1", 7, "CEA25", Side.BUY, 6200, 100, tif=TimeInForce.IOC)
    frame = encode(order)
    assert msgspec.msgpack.decode(frame)[0] == 1  # the tag leads the array
    assert decode_command(frame) == order
    cancel = CancelOrder("c2", 7, "CEA25", 42)
    assert decode_command(encode(cancel)) == cancel
    rejected = Rejected(1, "c1", 7, RejectCode.PRICE_OFF_TICK, RejectCode.PRICE_OFF_TICK.text)
    assert decode_event(encode(rejected)) == rejected


def test_malformed_frames_raise_errors_that_name_the_field():
    with pytest.raises(MalformedMessage, match="not a msgpack message"):
        decode_command(b"\xc1not msgpack")
    bad_qty = msgspec.msgpack.encode([1, "c1", 7, "CEA25", 0, 6200, -5])
    with pytest.raises(MalformedMessage, match=r"^NewOrder\.qty: Expected `int` >= 0$"):
        decode_command(bad_qty)
    bad_side = msgspec.msgpack.encode([1, "c1", 7, "CEA25", 2, 6200, 5])
    with pytest.raises(MalformedMessage, match=r"^NewOrder\.side: Invalid enum value 2$"):
        decode_command(bad_side)
    float_price = msgspec.msgpack.encode([1, "c1", 7, "CEA25", 0, 62.5, 5])
    with pytest.raises(MalformedMessage, match=r"NewOrder\.price: Expected `int`, got `float`"):
        decode_command(float_price)
    unknown = msgspec.msgpack.encode([99, "c1"])
    with pytest.raises(MalformedMessage, match="99"):
        decode_command(unknown)


def test_every_reject_code_has_text_and_sits_in_its_range():
    assert set(REJECT_TEXT) == set(RejectCode)
    groups = {1: "message", 2: "session", 3: "price/qty", 4: "order", 5: "risk", 6: "stp"}
    for code in RejectCode:
        assert code // 100 in groups
        assert code.text and code.text[0].islower()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("schedule", [("25:99", "halt")], "schedule entry"),
        ("schedule", [("9:30", "uncross")], "schedule entry"),
        ("schedule", [("09:30", "lunch")], "schedule entry"),
        ("sessions", [("13:00", "11:30")], "session"),
        ("sessions", [("09:30", "24:00")], "session"),
        ("block_hours", ("15:00", "13:00"), "block_hours"),
        ("last_trading_day", "2026-02-30", "last_trading_day"),
        ("holidays", ["2026-10-01", "1 October"], "holidays"),
        ("trading_weekdays", [0, 1], "trading_weekdays"),
        ("trading_weekdays", [1, 1], "trading_weekdays"),
        ("trading_weekdays", [], "trading_weekdays"),
    ],
)
def test_a_market_with_a_bad_clock_is_refused_when_built(field, value, message):
    """A schedule time such as '25:99' once passed the check and then made every command
    after StartOfDay raise out of Exchange.apply; an unknown time zone raised a
    ZoneInfoNotFoundError traceback from `cxe demo --market`."""
    market = {"name": "x", "instruments": [msgspec.to_builtins(default_market().instruments[0])]}
    market[field] = value
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(market, MarketConfig)


def _market_with(members=(), **instrument) -> dict:
    spec = msgspec.to_builtins(default_market().instruments[0]) | instrument
    return {"name": "x", "instruments": [spec], "members": list(members)}


@pytest.mark.parametrize(
    ("market", "message"),
    [
        (_market_with([{"id": 1, "name": "a", "cash": 2**63}]), r"<= 4611686018427387904"),
        (
            _market_with([{"id": m, "name": "a", "cash": 2**61 + 1} for m in (1, 2)]),
            "cash adds up to more than",
        ),
        (_market_with([{"id": 1, "name": "a", "holdings": {"CEA21": 2**41}}]), r"<= 1099511627776"),
        (_market_with(reference_price=6 * 10**18), "the highest price a book holds"),
        (_market_with(reference_price=3_000_000, max_qty=2**41), "is worth less than"),
        (_market_with(fee_ppm=1_000_001), r"<= 1000000"),  # a fee above the trade's value
    ],
)
def test_a_market_whose_amounts_could_overflow_int64_is_refused_when_built(market, message):
    """Cash of 10**20 fen once reached the accounts' int64 arrays as an OverflowError
    traceback, and a reference price beyond the book's range failed with the book's own
    band message; cash just inside int64 would have overflowed on the first sale."""
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(market, MarketConfig)


def test_the_demo_day_says_which_members_it_needs():
    market = msgspec.convert(
        _market_with([{"id": 1, "name": "a", "kind": "broker", "cash": 100}]), MarketConfig
    )
    with pytest.raises(ValueError, match="at least one market_maker, one broker and two"):
        run_demo(market, steps=10)


def test_a_demo_day_of_a_market_without_cea_skips_the_one_way_auction():
    """One-way auctions are for CEA vintages; the demo once opened one on whatever it listed
    first, which the core now refuses."""
    kinds = ["market_maker", "broker", "compliance_entity", "compliance_entity"]
    members = [
        {"id": i, "name": f"m{i}", "kind": kind, "cash": 10**11, "holdings": {"CCER": 10**6}}
        for i, kind in enumerate(kinds, start=1)
    ]
    spec = {"code": "CCER", "name": "CCER", "product": "CCER", "reference_price": 8200}
    market = msgspec.convert({"name": "x", "instruments": [spec], "members": members}, MarketConfig)
    text = render(run_demo(market, steps=200))
    assert "none, the market lists no CEA vintage" in text
    assert "rejected commands: none" in text


def test_a_demo_day_after_a_friday_is_the_monday_and_never_the_day_itself():
    market = msgspec.structs.replace(default_market(), last_trading_day="2026-11-27")
    assert run_demo(market, steps=10).date == "2026-11-30"
    with pytest.raises(ValueError, match="after 2026-11-27"):
        run_demo(market, steps=10, date="2026-11-27")


def test_a_demo_day_skips_the_holidays_and_refuses_a_closed_day():
    """After 30 September 2026 the market is shut for National Day until Thursday 8 October."""
    market = msgspec.structs.replace(default_market(), last_trading_day="2026-09-30")
    assert run_demo(market, steps=10).date == "2026-10-08"
    with pytest.raises(
        ValueError,
        match="2026-10-05 is not a trading day of this market: it is a holiday; the next one "
        "is 2026-10-08",
    ):
        run_demo(market, steps=10, date="2026-10-05")


def test_the_example_market_file_loads_and_runs_a_clean_demo_day():
    """docs/market.example.toml shows every field an operator can set; it must stay valid."""
    market = load_market(Path(__file__).resolve().parents[2] / "docs" / "market.example.toml")
    assert [i.code for i in market.instruments] == ["CEA25", "CCER"]
    assert market.holidays == default_market().holidays  # left out: the default list
    assert "rejected commands: none" in render(run_demo(market, steps=100))


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ("cash =", "cahs =", "unknown field `cahs` - at `$.members[0]`"),
        ("band_ppm = 100_000 ", "band_ppm = 1_500_000 ", "band_ppm"),
        ("block_band_ppm = 300_000", "block_band_ppm = 1_000_001", "block_band_ppm"),
        ("one_way_band_ppm = 100_000", "one_way_band_ppm = 2_000_000", "one_way_band_ppm"),
    ],
)
def test_a_market_file_with_a_typo_or_a_band_past_100_percent_is_refused(tmp_path, old, new, said):
    text = (ROOT / "docs" / "market.example.toml").read_text()
    assert old in text
    path = tmp_path / "market.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=re.escape(said)):
        load_market(path)
    load_market(ROOT / "docs" / "market.example.toml")  # the example itself loads
