"""Command files: the documented schema loads and replays through the bare book; every bad
row is reported with its line and reason; scales, limits and the schema's order kinds."""

from __future__ import annotations

import numpy as np
import pytest

from engine.book.layout import MAX_PRICE, MAX_QTY
from engine.replay.flow import run_flow
from engine.replay.sources import Scale, read_commands

WHOLE_UNITS = Scale()
HEADER = "time_ns,instrument,member,action,side,price,qty,order_id,tif\n"
GOOD = (
    HEADER + "1,CEA25,3,add,buy,6200,100,1,day\n"
    "2,CEA25,4,add,sell,6190,60,2,\n"
    "3,CEA25,3,amend,,6201,30,1,\n"
    "4,CCER,5,add,sell,8200,10,3,\n"
    "5,CCER,6,add,buy,8200,4,4,ioc\n"
    "6,CEA25,3,cancel,,,,1,\n"
)


def load(tmp_path, text: str, scale: Scale = WHOLE_UNITS, name: str = "flow.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_commands(path, scale)


def run(tmp_path, text: str, scale: Scale = WHOLE_UNITS):
    loaded = load(tmp_path, text, scale)
    assert loaded.bad_rows == []
    return {code: run_flow(code, flow, loaded) for code, flow in loaded.flows.items()}


def test_a_command_file_loads_per_instrument_and_replays(tmp_path):
    loaded = load(tmp_path, GOOD)
    assert sorted(loaded.flows) == ["CCER", "CEA25"]
    assert loaded.flows["CEA25"].times.tolist() == [1, 2, 3, 6]
    assert loaded.flows["CEA25"].lines.tolist() == [2, 3, 4, 7]
    results = {code: run_flow(code, flow, loaded) for code, flow in loaded.flows.items()}
    cea = results["CEA25"]
    assert cea.fills[["price", "qty"]].tolist() == [(6200, 60)]
    assert cea.rejects == [] and cea.book.depth(5) == ([], [])
    assert results["CCER"].book.depth(5) == ([], [(8200, 6, 1)])


def test_fills_carry_the_time_line_and_members_of_the_command_behind_them(tmp_path):
    fills = run(tmp_path, GOOD)["CEA25"].fills
    assert fills.tolist() == [("CEA25", 2, 3, 2, 1, 6200, 60, 1, 4, 3)]
    assert fills.dtype.names[:3] == ("instrument", "time_ns", "line")


@pytest.mark.parametrize(
    ("row", "reason", "detail"),
    [
        ("1,CEA25,3,add,buy,62.5,100,1,", "not_whole", "give --price-scale"),
        ("1,CEA25,3,buy,buy,6200,100,1,", "bad_action", "action must be one of add, cancel"),
        ("1,CEA25,3,add,long,6200,100,1,", "bad_side", "side must be one of buy, sell"),
        ("1,CEA25,3,add,buy,6200,100,1,gtc", "bad_tif", "tif must be one of day, ioc, fok"),
        ("0,CEA25,3,add,buy,6200,100,1,", "time_goes_back", "time_ns goes back (0 after 1)"),
        ("1,CEA25,3,cancel,,,,99999999999999999999,", "out_of_range", "order_id must fit"),
        ("1,CEA25,3,add,buy,6200,,1,", "missing_field", "qty is required"),
        ("1,CEA25,3,add,buy,6200,100", "wrong_column_count", "7 fields, the header has 9"),
        # str.isdigit and int() take these; a number is ASCII digits
        ("1,CEA25,3,add,buy,\uff16\uff12\uff10\uff10,100,1,", "not_a_number", "price must be"),
        ("1,CEA25,3,add,buy,6200,1_000,1,", "not_a_number", "qty must be a number"),
        ("1_0,CEA25,3,add,buy,6200,100,1,", "not_a_number", "time_ns must be a whole"),
        ("1,CEA25,3,reduce,,,0,9,", "bad_qty", "reduce takes a positive qty"),
        ("1,CEA25,3,add,buy,6200,100,1,,", "wrong_column_count", "10 fields"),
    ],
)
def test_a_bad_row_is_reported_with_its_line_reason_and_text(tmp_path, row, reason, detail):
    loaded = load(tmp_path, HEADER + "1,CEA25,3,add,buy,6200,1,9,\n" + row + "\n")
    assert len(loaded.bad_rows) == 1
    bad = loaded.bad_rows[0]
    assert (bad.line, bad.reason, bad.text) == (3, reason, row)
    assert detail in bad.detail
    assert loaded.flows["CEA25"].lines.tolist() == [2]  # the good row still loads


def test_every_bad_row_is_reported_not_only_the_first(tmp_path):
    """Reading once stopped at the first bad row."""
    loaded = load(
        tmp_path,
        HEADER + "1,A,3,add,buy,x,1,1,\n2,A,3,add,buy,6200,1,2,\n3,A,3,add,sell,6200,y,3,\n"
        "\n4,A,3,explode,,,,4,\n",
    )
    assert [(b.line, b.reason) for b in loaded.bad_rows] == [
        (2, "not_a_number"),
        (4, "not_a_number"),
        (6, "bad_action"),  # the blank line 5 is skipped, line numbers stay the file's
    ]
    assert loaded.rows == 4


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    """A UTF-8 BOM (as Excel writes CSV) once gave "missing columns ['time_ns']"."""
    path = tmp_path / "flow.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert read_commands(path).flows["CEA25"].times.tolist() == [1, 2, 3, 6]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the command file is empty"),
        (b"\n\n", "the command file is empty"),
        (HEADER.encode(), "has a header but no rows"),
        (b"time_ns,instrument,action\n1,A,add\n", r"missing columns \['order_id'\]"),
        (HEADER.replace("qty", "qyt").encode(), r"unknown columns \['qyt'\]"),
        (b"\xff\xfe" + HEADER.encode("utf-16-le"), "not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_a_command_file_is_refused_saying_why(tmp_path, content, message):
    """Empty and header-only files once replayed nothing and said nothing."""
    path = tmp_path / "flow.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_commands(path)


def test_prices_and_quantities_scale_exactly_to_book_units(tmp_path):
    """A crypto feed: dollars to the cent, quantities to the satoshi, on a one-cent tick, with
    a $1 bid and a $4 M ask far from a $78,000 market (the issue's case: once refused beyond
    2^22 ticks, $41,943.04)."""
    text = HEADER + (
        "1,BTC,1,add,sell,78000.12,0.5,1,\n"
        "2,BTC,2,add,buy,78000.12,0.00000001,2,\n"
        "3,BTC,3,add,buy,1.00,1.5,3,\n"
        "4,BTC,4,add,sell,4000000.00,2,4,\n"
    )
    result = run(tmp_path, text, Scale(tick=1, price_scale=100, qty_scale=100_000_000))["BTC"]
    assert result.fills[["price", "qty"]].tolist() == [(7_800_012, 1)]
    assert result.book.depth(5) == (
        [(100, 150_000_000, 1)],
        [(7_800_012, 49_999_999, 1), (400_000_000, 200_000_000, 1)],
    )


@pytest.mark.parametrize(
    ("scale", "row", "reason", "detail"),
    [
        (Scale(price_scale=100), "1,A,1,add,buy,62.001,1,1,", "not_whole", "times --price-scale"),
        (Scale(qty_scale=100), "1,A,1,add,buy,62,0.001,1,", "not_whole", "times --qty-scale 100"),
        (Scale(), f"1,A,1,add,buy,{MAX_PRICE + 1},1,1,", "beyond_limits", "a coarser unit"),
        (Scale(tick=10), f"1,A,1,add,buy,{MAX_PRICE // 10 * 10 + 10},1,1,", "beyond_limits", ""),
        (Scale(), f"1,A,1,add,buy,1,{MAX_QTY + 1},1,", "beyond_limits", "quantities up to"),
        (Scale(), f"1,A,1,amend,,{MAX_PRICE + 1},1,1,", "beyond_limits", f"{MAX_PRICE:,}"),
    ],
)
def test_values_finer_than_the_scale_or_beyond_the_limits_are_named(
    tmp_path, scale, row, reason, detail
):
    """A price beyond the book's range was once only a silent PRICE_OUT_OF_RANGE reject."""
    bad = load(tmp_path, HEADER + row + "\n", scale).bad_rows
    assert [(b.line, b.reason) for b in bad] == [(2, reason)]
    assert detail in bad[0].detail


def test_the_limits_themselves_are_accepted(tmp_path):
    top = MAX_PRICE // 10 * 10
    text = HEADER + f"1,A,1,add,sell,{top},{MAX_QTY},1,\n2,A,2,add,buy,10,1,2,\n"
    book = run(tmp_path, text, Scale(tick=10))["A"].book
    assert book.depth(1) == ([(10, 1, 1)], [(top, MAX_QTY, 1)])


def test_a_market_order_trades_through_levels_and_never_rests(tmp_path):
    text = (
        "time_ns,instrument,member,action,type,side,price,qty,order_id\n"
        "1,A,1,add,limit,sell,100,5,1\n"
        "2,A,1,add,,sell,101,5,2\n"
        "3,A,2,add,market,buy,,8,3\n"
        "4,A,2,add,market,buy,,8,4\n"
    )
    result = run(tmp_path, text)["A"]
    fills = result.fills[["price", "qty", "line"]].tolist()
    assert fills == [(100, 5, 4), (101, 3, 4), (101, 2, 5)]
    assert result.book.depth(5) == ([], [])
    bad = load(tmp_path, text.replace(",,8,4", ",99,8,4")).bad_rows
    assert [(b.line, b.reason) for b in bad] == [(5, "price_on_market")]


def test_reduce_takes_quantity_off_and_keeps_the_orders_place(tmp_path):
    """A fill report applied as an absolute amend once needed the remaining qty; reduce
    takes the reported qty off and the order keeps its place ahead of later orders."""
    text = HEADER + (
        "1,A,1,add,sell,100,10,1,\n"
        "2,A,2,add,sell,100,10,2,\n"
        "3,A,1,reduce,,,4,1,\n"  # 6 left, still first in line
        "4,A,3,add,buy,100,6,3,\n"
        "5,A,2,reduce,,,99,2,\n"  # more than is left: the order is gone
        "6,A,2,reduce,,,1,2,\n"  # and a reduce of an unknown order is the book's reject
    )
    result = run(tmp_path, text)["A"]
    assert result.fills[["maker_order", "qty"]].tolist() == [(1, 6)]
    assert result.book.depth(5) == ([], [])
    assert [(r.line, r.reason) for r in result.rejects] == [(7, "unknown_order")]


@pytest.mark.parametrize(
    ("tif", "fills", "resting_bids"),
    [("day", [(100, 5)], [(100, 3, 1)]), ("ioc", [(100, 5)], []), ("fok", [], [])],
)
def test_ioc_and_fok_leave_nothing_resting(tmp_path, tif, fills, resting_bids):
    text = HEADER + f"1,A,1,add,sell,100,5,1,\n2,A,2,add,buy,100,8,2,{tif}\n"
    result = run(tmp_path, text)["A"]
    assert result.fills[["price", "qty"]].tolist() == fills
    assert result.book.depth(5)[0] == resting_bids


def test_self_trade_prevention_follows_the_owner_column_not_the_member(tmp_path):
    """One member for every row once gave 0 fills: the member was silently the STP owner."""
    rows = "1,A,7,add,sell,100,5,1,\n2,A,7,add,buy,100,5,2,\n"
    assert len(run(tmp_path, HEADER + rows)["A"].fills) == 1  # no owner column: no STP
    with_owner = (
        "time_ns,instrument,member,owner,action,side,price,qty,order_id,tif\n"
        "1,A,7,1,add,sell,100,10,1,\n2,A,7,1,add,buy,100,5,2,\n3,A,7,2,add,buy,100,5,3,\n"
        "4,A,7,2,cancel,,,,1,\n"  # owner 2 may not cancel owner 1's order
    )
    result = run(tmp_path, with_owner)["A"]
    assert result.fills[["taker_order", "maker_order"]].tolist() == [(3, 1)]
    assert [(r.line, r.reason) for r in result.rejects] == [(5, "not_owner")]
    assert result.book.depth(5) == ([], [(100, 5, 1)])


def test_a_parquet_command_file_loads_like_the_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_path = tmp_path / "flow.csv"
    csv_path.write_text(GOOD)
    lines = [line.split(",") for line in GOOD.strip().splitlines()]
    columns = {name: [row[i] or None for row in lines[1:]] for i, name in enumerate(lines[0])}
    pq.write_table(pa.table(columns), tmp_path / "flow.parquet")
    from_csv = read_commands(csv_path)
    from_parquet = read_commands(tmp_path / "flow.parquet", parquet=True)
    assert sorted(from_csv.flows) == sorted(from_parquet.flows)
    for code, flow in from_csv.flows.items():
        assert (flow.commands == from_parquet.flows[code].commands).all()
        assert (flow.lines == from_parquet.flows[code].lines).all()


def test_the_traced_run_is_the_kernels_batch_run_with_each_event_tied_to_its_command():
    """engine.replay.flow runs the kernel's own command function with a count after each
    command: the events must be exactly those of Book.apply_batch, and each event belongs to
    the command it names (the taker of a fill, the order of a reject or a rest)."""
    from bench.workload import mixed_workload
    from engine.book import Book, EventKind
    from engine.book.layout import C_OID, E_KIND, E_OID
    from engine.replay.flow import apply_traced

    cmds = mixed_workload(20_000, seed=3)
    expected = Book(tick=1).apply_batch(cmds, record="all").events
    events, origin = apply_traced(Book(tick=1), cmds)
    assert (events == expected).all()
    assert (np.diff(origin) >= 0).all() and origin[-1] == len(cmds) - 1
    named = np.isin(events[:, E_KIND], [EventKind.FILL, EventKind.REJECTED, EventKind.RESTED])
    assert (events[named, E_OID] == cmds[origin[named], C_OID]).all()
    kinds = events[:, E_KIND]
    assert (kinds == EventKind.FILL).sum() > 1000 and (kinds == EventKind.REJECTED).sum() > 0


def same(a, b) -> bool:
    return (
        sorted(a.flows) == sorted(b.flows)
        and all(
            (getattr(a.flows[c], f) == getattr(b.flows[c], f)).all()
            for c in a.flows
            for f in ("times", "lines", "members", "commands")
        )
        and (a.bad_rows, a.texts, a.rows, a.columns) == (b.bad_rows, b.texts, b.rows, b.columns)
    )


CLEAN = [
    GOOD,
    "\ufeff" + GOOD.replace("\n", "\r\n"),
    "time_ns,instrument,member,owner,action,type,side,price,qty,order_id,tif\n"
    "1,A,7,1,add,limit,buy,100,10,1,\n2,B,7,1,add,,sell,101,5,2,FOK\n"
    "3,A,8,2,add,MARKET,sell,,4,3,ioc\n4,A,7,1,reduce,,,,3,1,\n5,B,8,2,amend,,,102,2,2,\n"
    "5,A, 9 ,3,cancel,,,,,1,\n",
    "order_id,action,time_ns,instrument,side,qty,price\n1,add,1,X,buy,5,100\n2,add,2,Y,sell,5,9\n",
]


@pytest.mark.parametrize("text", CLEAN)
def test_the_column_reader_answers_as_the_row_reader_on_clean_files(tmp_path, text):
    pytest.importorskip("pyarrow")
    from engine.replay.fastcsv import read_clean

    path = tmp_path / "flow.csv"
    path.write_bytes(text.encode())
    assert read_clean(path, text.encode(), WHOLE_UNITS) is not None
    assert same(read_commands(path), read_commands(path, row_by_row=True))


def test_the_column_reader_agrees_on_a_day_of_the_mixed_workload(tmp_path):
    pytest.importorskip("pyarrow")
    from bench.workload import mixed_workload
    from engine.replay.fastcsv import read_clean

    words = {1: "add", 2: "cancel", 3: "amend"}
    rows = [
        f"{i},{'AB'[i % 2]},{r[2]},{words[r[0]]},{'buy' if r[3] == 0 else 'sell'},"
        f"{r[4] if r[0] != 2 else ''},{r[5] if r[0] != 2 else ''},{r[1]},"
        f"{['day', 'ioc', 'fok'][r[7]] if r[0] == 1 else ''}"
        for i, r in enumerate(mixed_workload(5_000, seed=4).tolist())
    ]
    path = tmp_path / "flow.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    assert read_clean(path, path.read_bytes(), WHOLE_UNITS) is not None
    assert same(read_commands(path), read_commands(path, row_by_row=True))


@pytest.mark.parametrize(
    "row",
    [
        "1,CEA25,3,add,buy,+6200,1,2,",  # the row reader takes +6200, pyarrow does not
        "1,CEA25,3,add,buy,62.00,1,2,",
        "1,CEA25,3,add,buy,6200,1,2,gtc",
        "0,CEA25,3,add,buy,6200,1,2,",
        '1,"CEA25",3,add,buy,6200,1,2,',
        "1,CEA25,3,reduce,,,0,2,",
        f"1,CEA25,3,add,buy,{MAX_PRICE + 1},1,2,",
        "1,CEA25,3,cancel,,abc,,2,",  # ignored on a cancel by the row reader
        "\n1,CEA25,3,cancel,,,,9,",  # a blank line: pyarrow would skip it, shifting lines
        "   \n1,CEA25,3,cancel,,,,9,",
        "1,CEA25,3,cancel,,,,9,\x0c",  # a line break to Python, not to pyarrow
        "1,CEA25,3,cancel,,,,0x9,",  # hexadecimal to pyarrow, not a number to the reference
        "1,CEA25,3,add,buy,0X10,1,2,",
        "1,CE\u2028A25,3,cancel,,,,9,",
        "1,CEA25,3,add,buy,6200,1,2,day\n",  # a blank line at the end
    ],
)
def test_anything_unusual_goes_to_the_row_reader(tmp_path, row):
    pytest.importorskip("pyarrow")
    from engine.replay.fastcsv import read_clean

    text = HEADER + "1,CEA25,3,add,buy,6200,1,9,\n" + row + "\n"
    path = tmp_path / "flow.csv"
    path.write_text(text)
    assert read_clean(path, path.read_bytes(), WHOLE_UNITS) is None
    assert same(read_commands(path), read_commands(path, row_by_row=True))
