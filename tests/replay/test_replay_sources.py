"""Command files (CSV): the documented schema loads, replays, and bad rows are named."""

from __future__ import annotations

import pytest

from engine.book import Book
from engine.replay.sources import read_commands

GOOD = """time_ns,instrument,member,action,side,price,qty,order_id,tif
1,CEA25,3,add,buy,6200,100,1,day
2,CEA25,4,add,sell,6190,60,2,
3,CEA25,3,amend,,6201,30,1,
4,CCER,5,add,sell,8200,10,3,
5,CCER,6,add,buy,8200,4,4,ioc
6,CEA25,3,cancel,,,,1,
"""


def test_a_command_file_loads_per_instrument_and_replays(tmp_path):
    path = tmp_path / "flow.csv"
    path.write_text(GOOD)
    loaded = read_commands(path)
    assert sorted(loaded) == ["CCER", "CEA25"]
    times, cmds = loaded["CEA25"]
    assert times.tolist() == [1, 2, 3, 6]
    book = Book(tick=1)
    result = book.apply_batch(cmds)
    assert (result.fills, result.traded_qty, result.rejects) == (1, 60, 0)
    assert book.depth(5) == ([], [])
    ccer = Book(tick=1)
    assert ccer.apply_batch(loaded["CCER"][1]).traded_qty == 4
    assert ccer.depth(5) == ([], [(8200, 6, 1)])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,CEA25,3,add,buy,62.00,100,1,", r"flow\.csv:3: price must be an integer"),
        ("1,CEA25,3,buy,buy,6200,100,1,", r"flow\.csv:3: action must be add, cancel or amend"),
        ("1,CEA25,3,add,long,6200,100,1,", r"flow\.csv:3: side must be buy or sell"),
        ("1,CEA25,3,add,buy,6200,100,1,gtc", r"flow\.csv:3: tif must be day, ioc or fok"),
        ("0,CEA25,3,add,buy,6200,100,1,", r"flow\.csv:3: time goes back"),
        (  # once an OverflowError from numpy after the whole file was read
            "1,CEA25,3,cancel,,,,99999999999999999999,",
            r"flow\.csv:3: order_id must fit in 64 bits",
        ),
        ("1,CEA25,3,add,buy,6200,-9223372036854775809,1,", r"flow\.csv:3: qty must fit in 64"),
    ],
)
def test_a_bad_row_is_named_with_its_line(tmp_path, row, message):
    path = tmp_path / "flow.csv"
    path.write_text(
        "time_ns,instrument,member,action,side,price,qty,order_id,tif\n"
        "1,CEA25,3,add,buy,6200,1,9,\n" + row + "\n"
    )
    with pytest.raises(ValueError, match=message):
        read_commands(path)


def test_a_parquet_command_file_loads_like_the_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_path = tmp_path / "flow.csv"
    csv_path.write_text(GOOD)
    lines = [line.split(",") for line in GOOD.strip().splitlines()]
    columns = {name: [row[i] or None for row in lines[1:]] for i, name in enumerate(lines[0])}
    pq.write_table(pa.table(columns), tmp_path / "flow.parquet")
    from_csv = read_commands(csv_path)
    from_parquet = read_commands(tmp_path / "flow.parquet")
    assert sorted(from_csv) == sorted(from_parquet)
    for code in from_csv:
        assert (from_csv[code][1] == from_parquet[code][1]).all()
