"""Batch apply (engine.core.batch) and its layouts (engine.codec), against the per-command path.

- Property: random order flow over two instruments and a market calendar, with operator
  commands between runs, cut at random batch boundaries, gives the same decoded events and
  the same state hash as applying every command one by one, and as the reference exchange.
- The layouts: records carry commands and come back the same; every event row decodes to
  the event it encodes; the compiled msgpack of a trade is msgspec's, byte for byte.
- The ClOrdID store: duplicates per member and day, long keys, growth, a new day.
- A batch that does not follow the exchange's sequence, holds a kind that is not an order
  command or a timestamp apply_stamped refuses, is refused before anything changes.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.codec import (
    COMMAND_DTYPE,
    REC_AMEND,
    REC_CANCEL,
    REC_NEW_ORDER,
    command_of,
    encode_events,
    records_of,
)
from engine.config import MARKET_HOURS, MarketConfig, Member
from engine.core import Exchange, ReferenceExchange
from engine.core.clordid import MIN_CAPACITY, ClOrdIds
from engine.core.exchange import StampRefused
from engine.core.packing import put_int
from engine.core.records import first_bad_key
from engine.core.rows import decode
from engine.instruments import Instrument
from engine.protocol import (
    Accepted,
    AmendOrder,
    AuctionBid,
    CancelOrder,
    CloseCall,
    Halt,
    NewOrder,
    OneWayAuctionOpen,
    OpenCall,
    RejectCode,
    Resume,
    StartOfDay,
    Uncross,
)
from engine.types import OrderType, Phase, Side, TimeInForce

DAY = "2026-11-24"
ZONE = ZoneInfo("Asia/Shanghai")


def local_ns(hh_mm: str) -> int:
    when = datetime.strptime(f"{DAY} {hh_mm}", "%Y-%m-%d %H:%M").replace(tzinfo=ZONE)
    return int(when.timestamp()) * 10**9


def batch_market(schedule: bool = True) -> MarketConfig:
    instruments = [
        Instrument(code="CEA25", name="CEA 2025", product="CEA", reference_price=10_000),
        Instrument(
            code="CCER",
            name="CCER",
            product="CCER",
            reference_price=3_000,
            tick=2,
            unit=10,
            min_qty=10,
            max_qty=99_990,
        ),
    ]
    members = [
        Member(id=i, name=f"M{i}", cash=10**10, holdings={"CEA25": 200_000, "CCER": 10_000})
        for i in (1, 2, 3)
    ]
    members.append(Member(id=4, name="poor", cash=2_000_000, holdings={"CEA25": 50}))
    return MarketConfig(
        name="batch",
        instruments=instruments,
        members=members,
        schedule=MARKET_HOURS if schedule else [],
    )


CODES = ["CEA25", "CCER"]
INSTRUMENTS = batch_market().instruments
REFERENCE = {0: 10_000, 1: 3_000}
CL_ORD_IDS = st.sampled_from(["a", "b", "c", "ü-1", "x" * 32]) | st.integers(0, 10**6).map(str)


@st.composite
def order_record(draw, known_orders: int) -> tuple:
    """(kind, member, instrument, side, order_type, tif, stp, price, qty, order_id, ClOrdID)."""
    kind = draw(st.sampled_from([REC_NEW_ORDER] * 6 + [REC_CANCEL] * 3 + [REC_AMEND] * 2))
    member = draw(st.sampled_from([1, 1, 2, 2, 3, 3, 4, 9]))
    instrument = draw(st.sampled_from([0, 0, 0, 1, 1, 7]))
    reference = REFERENCE.get(instrument, 10_000)
    step = reference // 100
    price = reference + step * draw(st.integers(-11, 11)) + draw(st.sampled_from([0] * 9 + [1]))
    qty = draw(st.integers(1, 300) | st.sampled_from([0, 15, 100_000]))
    side = draw(st.sampled_from([0, 1] * 10 + [5]))
    order_type = draw(st.sampled_from([1] * 8 + [2, 0]))
    tif = draw(st.sampled_from([0] * 6 + [1, 2]))
    stp = draw(st.sampled_from([0, 0, 1, 2]))
    order_id = draw(st.integers(-1, known_orders + 2))
    cl_ord_id = draw(CL_ORD_IDS)
    return (kind, member, instrument, side, order_type, tif, stp, price, qty, order_id, cl_ord_id)


OPERATOR = st.sampled_from(
    [
        Halt("CEA25"),
        Resume("CEA25"),
        OpenCall("CCER"),
        Uncross("CCER"),
        CloseCall("CEA25"),
        OneWayAuctionOpen("CEA25", 1, 100_000),
        AuctionBid("bid", 2, "CEA25", 10_000, 10),
    ]
)


@st.composite
def flows(draw) -> list:
    """Steps: ("records", array) or ("operator", command, ts); timestamps only go forward
    through the day's calendar."""
    steps: list = []
    ts = local_ns("09:20")
    pending: list[tuple] = []
    stamps: list[int] = []
    for _ in range(draw(st.integers(1, 120))):
        ts += draw(st.sampled_from([0, 10**9, 60 * 10**9, 1800 * 10**9]))
        if draw(st.integers(0, 19)) == 0:
            if pending:
                steps.append(("records", pending, stamps))
                pending, stamps = [], []
            steps.append(("operator", draw(OPERATOR), ts))
            continue
        pending.append(draw(order_record(len(pending) + 10)))
        stamps.append(ts)
        if draw(st.integers(0, 9)) == 0:  # a batch boundary
            steps.append(("records", pending, stamps))
            pending, stamps = [], []
    if pending:
        steps.append(("records", pending, stamps))
    return steps


def as_records(rows: list[tuple], stamps: list[int], first_seq: int) -> np.ndarray:
    records = np.zeros(len(rows), dtype=COMMAND_DTYPE)
    for i, row in enumerate(rows):
        kind, member, instrument, side, otype, tif, stp, price, qty, order_id, cl_ord_id = row
        r = records[i]
        r["seq"], r["ts_ns"], r["kind"] = first_seq + i, stamps[i], kind
        r["member"], r["instrument"] = member, instrument
        r["side"], r["order_type"], r["tif"], r["stp"] = side, otype, tif, stp
        r["price"], r["qty"], r["order_id"] = price, qty, order_id
        r["cl_ord_id"] = cl_ord_id.encode()
    return records


def start(exchange_class: type[Exchange]) -> Exchange:
    exchange = exchange_class(batch_market())
    exchange.apply(StartOfDay(DAY), local_ns("09:10"))
    return exchange


def applied(exchange: Exchange, records: np.ndarray) -> list:
    """A batch's events as decoded by a consumer that knew the stream positions before it."""
    positions = exchange.stream_positions()
    return decode(exchange.apply_batch(records), INSTRUMENTS, positions)


def run_flow(exchange: Exchange, steps: list, batched: bool) -> list:
    """Apply the steps; batches through apply_batch when `batched`, else record by record
    through Exchange.apply. Returns every event, decoded from bytes for batches."""
    events: list = []
    for step in steps:
        if step[0] == "operator":
            events += exchange.apply(step[1], step[2])
            continue
        records = as_records(step[1], step[2], exchange.seq + 1)
        if batched:
            events += applied(exchange, records)
        else:
            for record in records:
                events += exchange.apply(command_of(record, CODES), int(record["ts_ns"]))
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_batches_give_the_events_and_state_of_one_by_one(steps):
    batched = start(Exchange)
    one_by_one = start(Exchange)
    reference = start(ReferenceExchange)
    events = run_flow(batched, steps, batched=True)
    assert events == run_flow(one_by_one, steps, batched=False)
    assert events == run_flow(reference, steps, batched=True)  # one by one, plain handlers
    assert batched.state_hash() == one_by_one.state_hash() == reference.state_hash()
    assert batched.seq == one_by_one.seq == reference.seq
    # the batch numbers no event itself: its stream positions must still move as one by one
    assert batched.stream_positions() == one_by_one.stream_positions()


def test_a_long_continuous_run_in_one_batch_matches_one_by_one():
    """Thousands of orders trading across both books in one compiled call (the arrays and
    the ClOrdID table grow during it), the calendar left out."""
    rng = np.random.default_rng(7)
    n = 6000
    rows = []
    for i in range(n):
        instrument = int(rng.integers(0, 2))
        step = REFERENCE[instrument] // 100
        kind = REC_NEW_ORDER if rng.random() < 0.7 else REC_CANCEL
        price = REFERENCE[instrument] + step * int(rng.integers(-3, 4))
        qty = int(rng.integers(1, 30)) * 10
        rows.append(
            (kind, int(rng.integers(1, 4)), instrument, int(rng.integers(0, 2)), 1,
             int(rng.choice([0, 0, 1])), 0, price, qty, int(rng.integers(1, i + 2)), f"o{i}")
        )  # fmt: skip
    exchanges = []
    for cls in (Exchange, Exchange):
        x = cls(batch_market(schedule=False))
        for command in (StartOfDay(DAY), OpenCall("CEA25"), Uncross("CEA25"), OpenCall("CCER")):
            x.apply(command)
        x.apply(Uncross("CCER"))
        exchanges.append(x)
    batched, single = exchanges
    records = as_records(rows, [0] * n, batched.seq + 1)
    events = applied(batched, records)
    expected = []
    for record in records:
        expected += single.apply(command_of(record, CODES))
    assert events == expected
    assert batched.state_hash() == single.state_hash()
    assert batched.stream_positions() == single.stream_positions()
    assert sum(type(e).__name__ == "Trade" for e in events) > 100


def test_members_with_gapped_ids_trade_and_are_refused_as_one_by_one_and_the_reference():
    """Member ids with gaps (and unknown members in the gaps and beyond): the accounts row
    lookup (pipeline.find_row) finds each member, and no stranger, in the compiled run, the
    per-command pipeline and the stream tally; the reference exchange agrees."""
    config = batch_market(schedule=False)
    members = [
        Member(id=m, name=f"M{m}", cash=10**10, holdings={"CEA25": 200_000, "CCER": 10_000})
        for m in (2, 5, 9, 1000)
    ]
    config = MarketConfig(name="gaps", instruments=config.instruments, members=members)
    rng = np.random.default_rng(11)
    rows = []
    for i in range(1500):
        kind = REC_NEW_ORDER if rng.random() < 0.75 else REC_CANCEL
        member = int(rng.choice([2, 5, 9, 1000, 2, 5, 9, 1000, 3, 6, 1001, -1]))
        price = REFERENCE[0] + 100 * int(rng.integers(-3, 4))
        rows.append(
            (kind, member, 0, int(rng.integers(0, 2)), 1, 0, 0, price, int(rng.integers(1, 30)),
             int(rng.integers(1, i + 2)), f"g{i}")
        )  # fmt: skip
    exchanges = []
    for cls in (Exchange, Exchange, ReferenceExchange):
        x = cls(config)
        for command in (StartOfDay(DAY), OpenCall("CEA25"), Uncross("CEA25")):
            x.apply(command)
        exchanges.append(x)
    batched, single, reference = exchanges
    records = as_records(rows, [0] * len(rows), batched.seq + 1)
    events = applied(batched, records)
    expected, oracle = [], []
    for record in records:
        expected += single.apply(command_of(record, CODES))
        oracle += reference.apply(command_of(record, CODES))
    assert events == expected == oracle
    assert batched.state_hash() == single.state_hash() == reference.state_hash()
    assert batched.stream_positions() == single.stream_positions()
    assert batched.stream_positions() == reference.stream_positions()
    names = [type(e).__name__ for e in events]
    assert names.count("Trade") > 50 and names.count("Rejected") > 100


# -- layouts ---------------------------------------------------------------------------------------


def test_records_carry_commands_and_come_back_the_same():
    commands = [
        NewOrder("n1", 3, "CCER", Side.SELL, 3_002, 20, OrderType.LIMIT, TimeInForce.IOC, 2),
        CancelOrder("ü" * 16, 1, "CEA25", 77),
        AmendOrder("x" * 32, 2, "CEA25", 5, 10_100, 40),
    ]
    records = records_of(commands, CODES, 11, [5, 6, 7])
    assert records["seq"].tolist() == [11, 12, 13]
    assert [command_of(r, CODES) for r in records] == commands


@pytest.mark.parametrize("cl_ord_id", ["x" * 33, "ü" * 17, "a\0"])
def test_a_clordid_a_record_cannot_carry_is_refused(cl_ord_id):
    with pytest.raises(ValueError, match="does not fit a record"):
        records_of([CancelOrder(cl_ord_id, 1, "CEA25", 1)], CODES, 1, [0])


def test_every_event_row_decodes_to_its_event():
    x = start(Exchange)
    x.apply(OpenCall("CCER"))
    positions = x.stream_positions()
    events = []
    for command in (
        NewOrder("a", 1, "CCER", Side.BUY, 3_000, 20),
        NewOrder("b", 2, "CCER", Side.SELL, 2_990, 30),
        Uncross("CCER"),
        NewOrder("c", 4, "CEA25", Side.BUY, 10_000, 10**6),
        AmendOrder("d", 2, "CCER", 2, 3_010, 20),
        CancelOrder("e", 2, "CCER", 2),
    ):
        events += x.apply(command, local_ns("09:20"))
    kinds = {type(e).__name__ for e in events}
    assert {"PhaseChanged", "Indicative", "AuctionResult", "Trade", "Rejected"} <= kinds
    assert {"Amended", "Cancelled", "DepthUpdate", "Accepted", "Filled"} <= kinds
    assert decode(encode_events(events, CODES), INSTRUMENTS, positions) == events


@given(st.integers(-(2**63), 2**63 - 1))
def test_the_compiled_msgpack_int_is_msgspecs(value):
    buf = np.zeros(9, dtype=np.uint8)
    end = put_int(buf, 0, value)
    assert buf[:end].tobytes() == msgspec.msgpack.encode(value)


# -- the ClOrdID store -----------------------------------------------------------------------------


def test_the_clordid_store_tells_members_and_keys_apart_and_grows():
    store = ClOrdIds()
    keys = [f"k{i}" for i in range(MIN_CAPACITY)] + ["", "ü" * 40, "x" * 32, "x" * 33]
    for key in keys:
        assert not store.used(1, key)
        store.add(1, key)
        assert store.used(1, key)
        assert not store.used(2, key)
    assert store.table.shape[0] > MIN_CAPACITY  # grew past its load limit
    assert len(store) == len(keys)
    assert store.snapshot() == sorted((1, k.encode()) for k in keys)
    store.clear()
    assert len(store) == 0 and not store.used(1, "k1") and not store.used(1, "ü" * 40)
    store.reserve(5000)
    table = store.table
    assert table.shape[0] >= 10_000
    for i in range(5000):
        store.add(2, str(i))
    assert store.table is table and len(store) == 5000  # no resize after the reservation


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 300), st.integers(-(2**63), 2**63 - 1)),
            st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\x00", b"a\x00", b"a"])),
        ),
        max_size=60,
    )
)
def test_the_clordid_stores_canonical_bytes_are_msgspecs_encoding_of_its_snapshot(keys):
    """The state hash's form of the store, built in compiled code, against msgspec over the
    sorted Python tuples: members of every msgpack int size, keys of 0 to 40 bytes (long ones
    spliced in), keys that differ only in trailing NULs or length."""
    store = ClOrdIds()
    for member, key in keys:
        store.add_key(member, key)
    assert store.canonical() == msgspec.msgpack.encode(store.snapshot())


@pytest.mark.parametrize("count", [15, 16, 2**16 - 1, 2**16])
def test_the_canonical_bytes_count_their_keys_in_each_array_header_size(count):
    store = ClOrdIds()
    for i in range(count - 1):
        store.add_key(i % 7, i.to_bytes(3, "little"))
    store.add_key(1, b"k" * 33)  # a long key
    assert store.canonical() == msgspec.msgpack.encode(store.snapshot())


def test_a_clordid_used_by_the_batch_is_refused_one_by_one_and_back():
    x = start(Exchange)
    x.apply(OpenCall("CEA25"), local_ns("09:20"))
    x.apply(Uncross("CEA25"), local_ns("09:31"))
    ts = local_ns("09:40")
    order = NewOrder("same", 1, "CEA25", Side.BUY, 9_900, 5)
    answer = applied(x, records_of([order], CODES, x.seq + 1, [ts]))
    assert type(answer[0]) is Accepted
    again = x.apply(order, ts)
    assert again[0].code == RejectCode.DUPLICATE_CLORDID and again[0].text.endswith(": same")
    x.apply(NewOrder("first", 2, "CEA25", Side.SELL, 10_100, 5), ts)
    cancel = CancelOrder("first", 2, "CEA25", 1)
    answer = applied(x, records_of([cancel], CODES, x.seq + 1, [ts]))
    assert answer[0].code == RejectCode.DUPLICATE_CLORDID and answer[0].text.endswith(": first")


def test_a_batch_out_of_sequence_or_of_other_kinds_is_refused_and_changes_nothing():
    x = start(Exchange)
    before, seq = x.state_hash(), x.seq
    order = NewOrder("a", 1, "CEA25", Side.BUY, 9_900, 5)
    records = records_of([order, order], CODES, x.seq + 2, [0, 0])
    with pytest.raises(ValueError, match="does not follow"):
        x.apply_batch(records)
    records = records_of([order, order], CODES, x.seq + 1, [0, 0])
    records["kind"][1] = 4
    with pytest.raises(ValueError, match="kind 4 is not"):
        x.apply_batch(records)
    records = records_of([order, order], CODES, x.seq + 1, [0, 0])
    records["cl_ord_id"][1] = b"ok\xff"
    with pytest.raises(ValueError, match="record 1: ClOrdID b'ok\\\\xff' is not UTF-8"):
        x.apply_batch(records)
    assert x.state_hash() == before and x.seq == seq


def test_a_batch_record_stamped_before_1970_is_refused_as_apply_stamped_refuses_it():
    x = start(Exchange)
    before, seq, ts = x.state_hash(), x.seq, x.state.ts_ns
    order = NewOrder("a", 1, "CEA25", Side.BUY, 9_900, 5)
    with pytest.raises(StampRefused):
        x.apply_stamped(x.seq + 1, -1, order)
    records = records_of([order, order], CODES, x.seq + 1, [0, -1])
    with pytest.raises(ValueError, match="record 1: timestamp -1 is not int64 nanoseconds"):
        x.apply_batch(records)
    assert x.state_hash() == before and x.seq == seq and x.state.ts_ns == ts


TEXT = st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass"))
EDGES = st.sampled_from(
    [b"\xc0\x80", b"\xc1\xbf", b"\xc2\x80", b"\xdf\xbf", b"\xe0\x80\x80", b"\xe0\xa0\x80",
     b"\xed\xa0\x80", b"\xef\xbf\xbf", b"\xf0\x8f\xbf\xbf", b"\xf0\x90\x80\x80",
     b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\x80", b"\xe2\x82",
     b"\xe2\x82\x41", b"\xf0\x9f\x98"]
)  # fmt: skip
KEYS = st.builds(lambda a, b, c: a + b + c, TEXT, EDGES, TEXT) | st.binary(max_size=32)


@given(KEYS.filter(lambda b: 0 < len(b) <= 32 and not b.endswith(b"\0")))
def test_a_record_key_is_utf8_exactly_when_python_decodes_it(key):
    records = np.zeros(1, dtype=COMMAND_DTYPE)
    records["cl_ord_id"] = key
    words = records.view(np.int64).reshape(1, -1)
    try:
        key.decode("utf-8", "surrogatepass")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert (first_bad_key(words) == -1) == valid


def test_cancels_and_amends_of_off_book_orders_in_a_batch_go_one_by_one():
    """A one-way auction's bid lives off the book: a batch hands its cancel (and an amend,
    refused) to the per-command path, which knows it."""
    runs = []
    for batched in (True, False):
        x = start(Exchange)
        x.apply(OneWayAuctionOpen("CEA25", 1, 100_000), local_ns("09:31"))  # continuous
        bid = x.apply(AuctionBid("bid", 2, "CEA25", 10_000, 10), local_ns("09:31"))
        order_id = bid[0].order_id
        rows = [
            (REC_AMEND, 2, 0, 0, 0, 0, 0, 10_100, 10, order_id, "amend"),
            (REC_CANCEL, 2, 0, 0, 0, 0, 0, 0, 0, order_id, "cancel"),
        ]
        steps = [("records", rows, [local_ns("09:32")] * 2)]
        runs.append((run_flow(x, steps, batched), x.state_hash()))
    (events, state), expected = runs
    assert (events, state) == expected
    assert [type(e).__name__ for e in events] == ["Rejected", "Cancelled"]
    assert events[0].code == RejectCode.UNSUPPORTED_IN_PHASE
    assert x.markets["CEA25"].phase == Phase.CONTINUOUS  # so the batch's own run saw them


def test_records_read_from_a_frame_apply_as_records_built_in_process():
    """A gateway reads records from a frame with np.frombuffer: a read-only array."""
    orders = [NewOrder(f"o{i}", 1 + i % 3, "CEA25", Side(i % 2), 10_000, 10) for i in range(6)]
    answers = []
    for frame in (True, False):
        x = start(Exchange)
        x.apply(OpenCall("CEA25"), local_ns("09:20"))
        x.apply(Uncross("CEA25"), local_ns("09:31"))
        records = records_of(orders, CODES, x.seq + 1, [local_ns("09:40")] * len(orders))
        if frame:
            records = np.frombuffer(records.tobytes(), dtype=COMMAND_DTYPE)
            assert not records.flags.writeable
        answers.append((applied(x, records), x.state_hash()))
    assert answers[0] == answers[1]
    assert sum(type(e).__name__ == "Trade" for e in answers[0][0]) == 3


def test_records_with_hostile_fields_get_the_answers_of_one_by_one():
    """Records a gateway could hand over with any field out of range (sides, types, time in
    force and STP modes beyond their enums, members and instruments nobody has, zero,
    negative and huge prices and quantities, unknown order ids, a reused ClOrdID): every
    batch gives the per-command path's answers, and the exchanges end alike."""
    rng = np.random.default_rng(5)
    batched, single = start(Exchange), start(Exchange)
    for exchange in (batched, single):
        exchange.apply(OpenCall("CEA25"), local_ns("09:20"))
        exchange.apply(Uncross("CEA25"), local_ns("09:31"))
    ts = local_ns("09:40")
    for b in range(60):
        n = int(rng.integers(1, 40))
        records = np.zeros(n, COMMAND_DTYPE)
        records["seq"] = np.arange(batched.seq + 1, batched.seq + 1 + n)
        records["ts_ns"] = ts
        records["kind"] = rng.integers(1, 4, n)
        records["side"] = rng.choice([0, 1, 1, 0, 2, 255], n)
        records["order_type"] = rng.choice([0, 1, 0, 7], n)
        records["tif"] = rng.choice([0, 1, 2, 9], n)
        records["stp"] = rng.choice([0, 1, 2, 3, 200], n)
        records["member"] = rng.choice([1, 2, 3, 4, 0, -5, 2**31 - 1], n)
        records["instrument"] = rng.choice([0, 0, 1, -1, 5], n)
        prices = [10_000, 9_000, 11_000, 8_999, 11_001, 0, -1, 2**62, 10_001, 3_000]
        records["price"] = rng.choice(prices, n)
        records["qty"] = rng.choice([1, 10, 100, 0, -3, 99_999, 100_000, 2**40], n)
        records["order_id"] = rng.integers(-2, 60, n)
        records["cl_ord_id"] = [
            f"h{b}-{i}".encode() if rng.random() < 0.9 else b"again" for i in range(n)
        ]
        events = applied(batched, records)
        expected = []
        for record in records:
            command = command_of(record, CODES)
            expected += single.apply_stamped(int(record["seq"]), ts, command)
        assert events == expected, b
    assert batched.state_hash() == single.state_hash()
    assert batched.stream_positions() == single.stream_positions()


def test_a_worded_refusals_text_rows_are_never_read_as_events():
    """Found by a probe: the per-gateway count of refusals read a worded refusal's text rows
    as event rows, and a text byte equal to a refusal's kind where a row's kind would be
    made a second refusal of a made-up sequence number (a ValueError stopped the engine)."""
    from engine.codec import (
        EVENT_BYTES,
        EVENT_DTYPE,
        ROW_REJECTED,
        ROW_REJECTED_TEXT,
        encode_events,
        text_rows,
    )
    from engine.protocol import Accepted, RejectCode, Rejected

    text = " " + "x" * (EVENT_BYTES - 1) + chr(ROW_REJECTED) + "y" * 50  # kinds at row starts
    events = [
        Rejected(7, "r1", 1, RejectCode.INVALID_FIELD, text),
        Accepted(8, "a1", 1, "CEA25", 5, 0, 6200, 100),
    ]
    rows = np.frombuffer(encode_events(events, ["CEA25"]), EVENT_DTYPE)
    assert len(rows) == 4  # the refusal, two text rows, the acceptance
    kinds = rows["kind"]
    assert kinds[1] == ROW_REJECTED_TEXT and kinds[2] == ROW_REJECTED  # the text's bytes
    assert text_rows(rows).tolist() == [False, True, True, False]
    refused = np.isin(kinds, [ROW_REJECTED, ROW_REJECTED_TEXT]) & ~text_rows(rows)
    assert rows["seq"][refused].tolist() == [7]
