"""A source's format is told from its content, whatever its name."""

from __future__ import annotations

import zipfile

import pytest

from engine.config import default_market
from engine.demo import run_demo
from engine.replay.formats import detect

COMMANDS = "time_ns,instrument,action,order_id,side,price,qty\n1,A,add,1,buy,100,5\n"
MESSAGE = "34200.017459617,5,0,1,2238200,-1\n34200.189608,1,11885113,21,2238100,1\n"


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    out = tmp_path_factory.mktemp("logs")
    run_demo(default_market(), seed=1, steps=5, out=str(out))
    return out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (COMMANDS.encode(), "commands"),
        (b"\xef\xbb\xbf" + COMMANDS.replace("\n", "\r\n").encode(), "commands"),
        (b"\n\n" + COMMANDS.upper().encode(), "commands"),
        (MESSAGE.encode(), "lobster"),
        (b"\xef\xbb\xbf" + MESSAGE.encode(), "lobster"),
        (b"PAR1 and the rest of a Parquet file", "commands"),
    ],
)
def test_text_and_parquet_are_told_by_their_content(tmp_path, content, expected):
    for name in ("x.log.bak", "AAPL_2012-06-21_message_1.csv", "flow.parquet", "data"):
        path = tmp_path / name
        path.write_bytes(content)
        assert detect(path) == expected, name


def test_zips_and_engine_logs_are_told_by_their_content(tmp_path, logs):
    archive = tmp_path / "day.csv"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("X_message_1.csv", MESSAGE)
    assert detect(archive) == "lobster"
    assert detect(logs / "commands.log") == "log"
    assert detect(logs / "trades.log") == "trades"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n \n", "is empty"),
        (b"hello,world\n", "found a first line 'hello,world'"),
        (b"5859400,200,5853300,18\n", "found a first line"),  # an order book file
        (b"\x00\xff\xfe\x81" * 50, "found binary data"),
        ("34200.1,1,5,１００,5853300,1\n".encode(), "found a first line"),
    ],
)
def test_content_that_fits_no_format_is_refused_asking_for_format(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        detect(path)
    if content.strip():
        with pytest.raises(ValueError, match="give --format lobster, commands or log"):
            detect(path)
