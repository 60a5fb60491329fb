"""The order status table (engine.gateway.status): a key's first outcome is what a resend
gets, whichever path (per command or batch) recorded it; the compiled table keeps every
entry's order id and instrument through growth; `dump` and `load` round trip every entry."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from engine.codec import EVENT_WORDS, ROW_ACCEPTED, records_of
from engine.config import default_market
from engine.core import Exchange
from engine.core.rows import decode
from engine.gateway.status import OrderStatusTable
from engine.protocol import Accepted, NewOrder, OpenCall, RejectCode, Rejected, StartOfDay, Uncross

MARKET = default_market()
CODES = [i.code for i in MARKET.instruments]
CODE = CODES[0]
MEMBER = MARKET.members[0].id
LONG_KEY = "L" * 40  # beyond the compiled table's 32 bytes: only a command built in process


def opened() -> Exchange:
    exchange = Exchange(MARKET)
    exchange.apply(StartOfDay(MARKET.next_trading_day(MARKET.last_trading_day or "2026-01-01")))
    exchange.apply(OpenCall(CODE))
    exchange.apply(Uncross(CODE))
    return exchange


def order(exchange: Exchange, key: str, side: int = 0, ticks: int = 0, member: int = MEMBER):
    instrument = MARKET.instruments[0]
    price = exchange.markets[CODE].reference + ticks * instrument.tick
    return NewOrder(key, member, CODE, side, price, instrument.min_qty)


def batch(exchange: Exchange, table: OrderStatusTable, orders: list[NewOrder]) -> list:
    """Apply `orders` as one batch, record its accepted rows; its decoded events."""
    positions = exchange.stream_positions()
    rows = exchange.apply_batch(records_of(orders, CODES, exchange.seq + 1, [0] * len(orders)))
    kinds = np.frombuffer(rows, dtype=np.int64).reshape(-1, EVENT_WORDS)[:, 0] & 0xFF
    events = decode(rows, MARKET.instruments, positions)
    chosen = np.flatnonzero(kinds == ROW_ACCEPTED)  # no refusal with a text among them
    assert len(chosen) == len([e for e in events if type(e) is Accepted])
    table.record_accepted(rows, chosen)
    return events


def test_a_refusal_recorded_first_stays_when_the_batch_later_accepts_the_key():
    exchange, table = opened(), OrderStatusTable(CODES)
    refused = exchange.apply(order(exchange, "k1", ticks=10_000))  # far outside the band
    assert [type(e) for e in refused] == [Rejected]
    table.record(refused)
    events = batch(exchange, table, [order(exchange, "k1")])
    assert any(type(e) is Accepted for e in events)  # a refused key may be used again
    assert table.lookup(MEMBER, "k1") == refused[0].text
    assert table.status(exchange, order(exchange, "k1")).state == "rejected"
    again = OrderStatusTable(CODES)
    again.load(table.dump())
    assert again.lookup(MEMBER, "k1") == refused[0].text


def test_an_accepted_key_keeps_its_order_when_its_reuse_is_refused():
    exchange, table = opened(), OrderStatusTable(CODES)
    accepted = [e for e in batch(exchange, table, [order(exchange, "k2")]) if type(e) is Accepted]
    reused = exchange.apply(order(exchange, "k2"))
    assert reused[0].code == RejectCode.DUPLICATE_CLORDID
    table.record(reused)
    assert table.lookup(MEMBER, "k2") == (accepted[0].order_id, CODE)
    status = table.status(exchange, order(exchange, "k2"))
    assert (status.state, status.order_id, status.instrument) == (
        "live",
        accepted[0].order_id,
        CODE,
    )
    assert status.leaves == MARKET.instruments[0].min_qty


def test_every_entry_keeps_its_order_and_instrument_through_growth():
    """3,000 keys in batches of 100: the compiled table grows from 1,024 entries twice over."""
    exchange, by_rows, by_events = opened(), OrderStatusTable(CODES), OrderStatusTable(CODES)
    for start in range(0, 3000, 100):
        orders = [
            order(exchange, f"g{i}", side=i % 2, ticks=i % 7) for i in range(start, start + 100)
        ]
        by_events.record(batch(exchange, by_rows, orders))
    assert len(by_rows.entries()) == 3000
    assert by_rows.entries() == by_events.entries()
    assert by_rows.lookup(MEMBER, "g2999") == by_events.lookup(MEMBER, "g2999")
    assert by_rows.lookup(MEMBER, "g3000") is None
    assert by_rows.lookup(MEMBER + 1, "g1") is None


def filled_table() -> OrderStatusTable:
    """Entries of every kind: long, refused, non-ASCII (per command) and batch-accepted."""
    exchange, table = opened(), OrderStatusTable(CODES)
    table.record(exchange.apply(order(exchange, LONG_KEY)))
    table.record(exchange.apply(order(exchange, "bad", ticks=10_000)))
    table.record(exchange.apply(order(exchange, "\u78b3")))  # UTF-8 beyond ASCII
    batch(exchange, table, [order(exchange, "b1"), order(exchange, "b2", side=1, ticks=5)])
    assert {key for _, key in table.entries()} == {LONG_KEY, "bad", "\u78b3", "b1", "b2"}
    return table


def test_dump_and_load_round_trip_every_entry():
    table = filled_table()
    loaded = OrderStatusTable(CODES)
    loaded.load(table.dump())
    assert loaded.entries() == table.entries()
    assert loaded.lookup(MEMBER, "b1") == table.lookup(MEMBER, "b1")
    loaded.clear()
    assert loaded.entries() == {} and loaded.lookup(MEMBER, "b1") is None


def test_a_table_in_the_form_versions_before_wrote_loads():
    """Before the compiled table was dumped as rows, every entry went as Python objects:
    ([((member, ClOrdID), order id or text)], [(order id, instrument)])."""
    entries = filled_table().entries()
    orders = [(key, v if isinstance(v, str) else v[0]) for key, v in entries.items()]
    instruments = [v for v in entries.values() if not isinstance(v, str)]
    loaded = OrderStatusTable(CODES)
    loaded.load(msgspec.msgpack.encode((orders, instruments)))
    assert loaded.entries() == entries


def test_a_table_of_format_2_loads():
    """Written by engines before 2026-12-03, without a CRC: read as it is."""
    table = filled_table()
    _, _, _, body = msgspec.msgpack.decode(table.dump())
    codes, rows, orders, instruments = msgspec.msgpack.decode(body)
    loaded = OrderStatusTable(CODES)
    loaded.load(msgspec.msgpack.encode(("cxe-order-status", 2, codes, rows, orders, instruments)))
    assert loaded.entries() == table.entries()


def test_every_bit_flipped_in_a_table_is_refused():
    """A probe flipped one bit of a snapshot's table (an order id 298 became 299): the engine
    started without a word and answered a live order's resend 'done', with the other id."""
    table = filled_table()
    data = table.dump()
    loaded = OrderStatusTable(CODES)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ValueError, match="not an order status table"):
            loaded.load(bytes(flipped))
        assert loaded.entries() == {}
    loaded.load(data)
    assert loaded.entries() == table.entries()


def test_an_operator_commands_refusal_is_not_kept_and_a_table_that_kept_one_loads():
    """Found by a helper's probe: an operator's refused command (member -1, no ClOrdID) was
    kept, and the loader refuses members below zero, so the next snapshot's table could not
    be read and every restart failed until it was moved away."""
    exchange, table = opened(), OrderStatusTable(CODES)
    refused = exchange.apply(Uncross(CODE))  # continuous trading: nothing to uncross
    assert [(type(e), e.member) for e in refused] == [(Rejected, -1)]
    table.record(refused)
    assert table.entries() == {}
    kept = filled_table()
    orders = [(key, v if isinstance(v, str) else v[0]) for key, v in kept.entries().items()]
    instruments = [v for v in kept.entries().values() if not isinstance(v, str)]
    as_written = [*orders, ((-1, ""), "not accepted in the current phase: not in a call")]
    loaded = OrderStatusTable(CODES)
    loaded.load(msgspec.msgpack.encode((as_written, instruments)))
    assert loaded.entries() == kept.entries()


def test_a_loaded_table_names_each_orders_instrument_by_its_code():
    """The rows carry an index into the codes the dump was written under: a table loaded under
    the codes in another order (or without one of them) still names the right instrument."""
    table = filled_table()
    order_id, code = table.lookup(MEMBER, "b1")
    reordered = OrderStatusTable([*CODES[1:], CODES[0]])
    reordered.load(table.dump())
    assert reordered.lookup(MEMBER, "b1") == (order_id, code)
    without = OrderStatusTable(CODES[1:])
    without.load(table.dump())
    assert without.lookup(MEMBER, "b1") == (order_id, "")


STRAY_BYTE_ROW = np.array([[1, 1, 0x6261, 0, 0, 0, 7, 0]]).tobytes()  # key "a", then a "b"


@pytest.mark.parametrize(
    "data",
    [
        b"junk",
        msgspec.msgpack.encode(["cxe-order-status", 4, CODES, b"", [], []]),
        msgspec.msgpack.encode(["cxe-order-status", 2, CODES, b"\x00" * 63, [], []]),
        msgspec.msgpack.encode(["cxe-order-status", 2, CODES, b"", []]),
        msgspec.msgpack.encode(["cxe-order-status", 2, CODES, b"\x00" * 128, [], []]),  # repeats
        msgspec.msgpack.encode(([1, 2], [])),
        b"\x91" * 100_000,  # nested arrays: a RecursionError in an untyped decode
        msgspec.msgpack.encode(([((1, 7), 5)], [])),  # a ClOrdID that is no text
        msgspec.msgpack.encode(["cxe-order-status", 2, CODES, b"", [(("m", "a"), 5)], []]),
        msgspec.msgpack.encode(([((-1, "a"), 5)], [])),  # a member below zero with an order
        msgspec.msgpack.encode(([((-2, ""), "text")], [])),  # below an operator's -1
        msgspec.msgpack.encode(([((1, "a"), 2**64 - 1)], [])),  # an order id past int64
        msgspec.msgpack.encode(([((1.5, "a"), 5)], [])),
        msgspec.msgpack.encode(["cxe-order-status", 2, CODES, STRAY_BYTE_ROW, [], []]),
    ],
    ids=[
        "junk",
        "format",
        "torn rows",
        "short",
        "repeated key",
        "entry",
        "nested",
        "clordid int",
        "member text",
        "member negative",
        "member below -1",
        "order id uint64",
        "member float",
        "bytes past the key",
    ],
)
def test_bytes_that_are_no_status_table_are_refused_and_leave_it_empty(data):
    table = filled_table()
    with pytest.raises(ValueError, match="not an order status table"):
        table.load(data)
    assert table.entries() == {}
