"""Exchange snapshots (engine.core.snapshot): a restored exchange is the one dumped.

- every part of the core's state comes back: the restored state tree equals the dumped one
  attribute by attribute (books by their content, the ClOrdID store by its keys, the day
  digest by its running state), so a field added to the state and left out of the snapshot
  fails here as soon as it differs from its starting value;
- continuing: an exchange restored from a snapshot and the uninterrupted one give
  byte-identical events and equal state hashes and stream positions for every further
  command, per command and in batches, with snapshots at random points of random flows (mid-
  day with resting orders, in call phases, with a one-way auction open, between days) and
  after every command of a scripted two-day run that uses every feature;
- refusals: bytes that are no snapshot, another format version, a damaged or inconsistent
  one, or a snapshot taken under another config raise SnapshotRefused saying so.
"""

from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.book import Book
from engine.config import MARKET_HOURS, MarketConfig, Security
from engine.core import Exchange
from engine.core.clordid import ClOrdIds
from engine.core.snapshot import (
    FORMAT,
    KIND,
    ExchangeImage,
    SnapshotRefused,
    dump,
    fingerprint_with_keys,
    restore,
)
from engine.core.state import CoreState
from engine.digest import PIECE, DayDigest
from engine.protocol import (
    AmendOrder,
    AuctionBid,
    BlockTrade,
    CancelOrder,
    Close,
    CloseCall,
    DayClosed,
    EndOfDay,
    Halt,
    NewOrder,
    OneWayAuctionClose,
    OneWayAuctionOpen,
    OpenCall,
    PickOrder,
    Resume,
    SetReference,
    StartOfDay,
    Trade,
    Uncross,
    encode_trades,
)
from engine.types import Side, StpMode
from tests.core.test_batch import as_records, flows, start
from tests.core.test_core_property import START, draw_command
from tests.support.exchange import small_market

CODE = "CEA25"


def attributes(obj: object) -> dict[str, object]:
    if hasattr(obj, "__dict__"):
        return vars(obj)
    names = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())]
    return {name: getattr(obj, name) for name in names}


def assert_same_tree(a: object, b: object, path: str = "state") -> None:
    """`a` and `b` hold the same state, attribute by attribute, down to plain values."""
    assert type(a) is type(b), path
    if isinstance(a, Book):
        image_a, image_b = a.image(), b.image()
        assert np.array_equal(image_a.resting, image_b.resting), f"{path}: resting orders"
        assert image_a[1:] == image_b[1:], f"{path}: counters, phase flag or band"
    elif isinstance(a, ClOrdIds):
        assert a.snapshot() == b.snapshot(), path
    elif isinstance(a, DayDigest):
        assert a.state() == b.state(), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            assert_same_tree(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, int | str | float | bool | type(None) | ZoneInfo | msgspec.Struct):
        assert a == b, path
    else:
        fields_a, fields_b = attributes(a), attributes(b)
        assert fields_a.keys() == fields_b.keys(), path
        for name in fields_a:
            assert_same_tree(fields_a[name], fields_b[name], f"{path}.{name}")


def restored(exchange: Exchange) -> Exchange:
    """A snapshot of `exchange` restored, checked against it."""
    twin = restore(exchange.config, dump(exchange))
    assert twin.seq == exchange.seq
    assert twin.state_hash() == exchange.state_hash()
    assert twin.stream_positions() == exchange.stream_positions()
    assert (twin.date, twin.next_order_id, twin.next_trade_id) == (
        exchange.date,
        exchange.next_order_id,
        exchange.next_trade_id,
    )
    assert_same_tree(exchange.state, twin.state)
    return twin


def same_answers(original: Exchange, twin: Exchange, command, ts_ns: int = 0) -> list:
    events = original.apply(command, ts_ns)
    assert Exchange.encoded(events) == Exchange.encoded(twin.apply(command, ts_ns)), command
    assert twin.state_hash() == original.state_hash(), command
    assert twin.stream_positions() == original.stream_positions(), command
    return events


def test_every_core_state_field_is_covered_by_the_tree_comparison():
    """The tree comparison above walks every CoreState field (a slotted dataclass)."""
    state = Exchange(small_market()).state
    names = {f.name for f in dataclasses.fields(CoreState)}
    assert set(attributes(state)) == names


# -- a scripted run, snapshot after every command ----------------------------------------------


def scripted_run() -> list:
    """Two days using every command and state the core keeps: call phases, resting orders of
    every STP mode, ClOrdIDs longer than the compiled table holds and not ASCII,
    a one-way auction with bids, block trades, halts, a reference change, more trades than
    one digest piece, and the days' ends and beginnings."""
    buy, sell = Side.BUY, Side.SELL
    script: list = [
        StartOfDay("2026-11-24"),
        OpenCall(CODE),
        NewOrder("o1", 1, CODE, buy, 10_000, 40),
        NewOrder("o2", 2, CODE, sell, 9_900, 25),
        NewOrder("o3", 3, CODE, buy, 10_000, 10, stp=StpMode.CANCEL_RESTING),
        Uncross(CODE),
        NewOrder("a-client-order-id-longer-than-32-bytes", 1, CODE, buy, 9_800, 30),
        NewOrder("ü-1", 2, CODE, sell, 10_200, 30, stp=StpMode.CANCEL_BOTH),
        NewOrder("o5", 1, CODE, sell, 10_300, 20, stp=StpMode.CANCEL_RESTING),
        AmendOrder("o6", 1, CODE, 4, 9_800, 20),  # a reduction keeps priority
        AmendOrder("o7", 1, CODE, 6, 10_200, 20),  # re-enters against its own order's STP
        PickOrder("o8", 3, CODE, sell, 4, 5),
        OneWayAuctionOpen(CODE, 2, 100_000, True, False),
        AuctionBid("b1", 1, CODE, 10_000, 30_000),
        AuctionBid("b2", 3, CODE, 10_100, 80_000),
        CancelOrder("b3", 1, CODE, 11),
        AuctionBid("b4", 4, CODE, 9_500, 20_000),
        OneWayAuctionClose(CODE),
        BlockTrade("k1", CODE, 1, 2, 10_000, 100_000),
        Halt(CODE),
        Resume(CODE),
        Uncross(CODE),
    ]
    script += [NewOrder(f"s{i}", 2 + i % 2, CODE, sell, 10_000 + 10 * i, 150) for i in range(3)]
    # one trade each, for more than a digest piece of trade encodings in the day
    script += [NewOrder(f"t{i}", 1 + i % 2 * 3, CODE, buy, 10_100, 1) for i in range(400)]
    script += [
        NewOrder("r1", 3, CODE, buy, 9_900, 7),
        CloseCall(CODE),
        NewOrder("r2", 4, CODE, sell, 9_900, 3),
        Close(CODE),
        SetReference(CODE, 10_100),
        EndOfDay(),
        StartOfDay("2026-11-25"),
        NewOrder("o1", 1, CODE, buy, 10_000, 5),  # a ClOrdID of yesterday is fresh again
        OpenCall(CODE),
        NewOrder("o1", 1, CODE, buy, 10_000, 5),
        NewOrder("o2", 2, CODE, sell, 10_000, 8),
        Uncross(CODE),
        Close(CODE),
        EndOfDay(),
    ]
    return script


def test_a_snapshot_after_every_command_continues_as_the_uninterrupted_exchange():
    original = Exchange(small_market())
    twin = restored(original)
    kinds = set()
    days, day_trades = [], [0]
    for command in scripted_run():
        events = same_answers(original, twin, command)
        kinds |= {type(e).__name__ for e in events}
        days += [e for e in events if isinstance(e, DayClosed)]
        day_trades[-1] += len(encode_trades([e for e in events if isinstance(e, Trade)]))
        if days and len(day_trades) == len(days):
            day_trades.append(0)
        twin = restored(twin)  # the twin runs every command from a fresh restore
    # the script reached what it is there for
    assert {"Trade", "AuctionResult", "Amended", "Indicative", "Cancelled"} <= kinds
    assert [d.trades > 0 for d in days] == [True, True]
    assert day_trades[0] > PIECE  # the first day's digest chained a piece


@pytest.mark.parametrize("stp", list(StpMode))
def test_a_resting_orders_stp_mode_decides_its_amend_after_a_restore(stp):
    """The state hash does not cover an order's STP mode, but an amend that re-enters the
    order runs it: the snapshot must carry it."""
    original = Exchange(small_market())
    for command in START:
        original.apply(command)
    original.apply(NewOrder("s", 1, CODE, Side.SELL, 10_100, 10))
    (accepted, *_) = original.apply(NewOrder("b", 1, CODE, Side.BUY, 9_900, 10, stp=stp))
    twin = restored(original)
    events = same_answers(original, twin, AmendOrder("a", 1, CODE, accepted.order_id, 10_100, 10))
    cancelled = sorted(e.order_id for e in events if type(e).__name__ == "Cancelled")
    assert (
        cancelled
        == {
            StpMode.CANCEL_INCOMING: [accepted.order_id],
            StpMode.CANCEL_RESTING: [accepted.order_id - 1],
            StpMode.CANCEL_BOTH: [accepted.order_id - 1, accepted.order_id],
        }[stp]
    )


# -- random flows --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_operator_flows_continue_from_snapshots_at_random_points(data):
    config = small_market()
    original = Exchange(config)
    for command in START:
        original.apply(command)
    twin = restored(original)
    for n in range(1, data.draw(st.integers(10, 120))):
        command = draw_command(data, original, n)
        same_answers(original, twin, command)
        if data.draw(st.integers(0, 3)) == 0:
            twin = restored(original)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_day_run_by_the_calendar_continues_from_snapshots(data):
    """With a schedule, the restored exchange fires the calendar's remaining entries when
    the uninterrupted one does (the entries fired are state, the next due time a cache)."""
    base = small_market()
    config = MarketConfig(
        name="t", instruments=base.instruments, members=base.members, schedule=MARKET_HOURS
    )
    original = Exchange(config)
    ts = (1_795_478_400 + 3_600) * 1_000_000_000  # 2026-11-24 09:00 in Asia/Shanghai
    original.apply(StartOfDay("2026-11-24"), ts)
    twin = restored(original)
    for n in range(1, data.draw(st.integers(20, 120))):
        ts += data.draw(st.integers(0, 8 * 60)) * 1_000_000_000
        same_answers(original, twin, draw_command(data, original, n), ts)
        if data.draw(st.integers(0, 3)) == 0:
            twin = restored(original)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_batches_continue_from_snapshots_between_them(steps):
    original = start(Exchange)
    twin = restored(original)
    for step in steps:
        if step[0] == "operator":
            same_answers(original, twin, step[1], step[2])
        else:
            records = as_records(step[1], step[2], original.seq + 1)
            assert twin.apply_batch(records.copy()) == original.apply_batch(records)
            assert twin.state_hash() == original.state_hash()
            assert twin.stream_positions() == original.stream_positions()
        twin = restored(original)


# -- refusals ------------------------------------------------------------------------------------


def busy_exchange() -> Exchange:
    exchange = Exchange(small_market())
    for command in START:
        exchange.apply(command)
    exchange.apply(NewOrder("a", 1, CODE, Side.BUY, 9_900, 10))
    return exchange


def test_bytes_that_are_no_snapshot_are_refused():
    for data in (b"", b"\x93\x01", b"not msgpack at all", msgspec.msgpack.encode([1, 2, 3])):
        with pytest.raises(SnapshotRefused, match="not an exchange snapshot"):
            restore(small_market(), data)


def test_another_format_version_is_refused_saying_which_it_reads():
    data = dump(busy_exchange())
    kind, _, body = msgspec.msgpack.decode(data, type=tuple[str, int, msgspec.Raw])
    assert kind == KIND
    future = msgspec.msgpack.encode((kind, FORMAT + 1, body))
    with pytest.raises(SnapshotRefused, match=f"format {FORMAT + 1}: .* reads format {FORMAT}"):
        restore(small_market(), future)


def test_a_truncated_or_damaged_snapshot_is_refused():
    data = dump(busy_exchange())
    with pytest.raises(SnapshotRefused, match=r"not an exchange snapshot .*truncated"):
        restore(small_market(), data[: len(data) // 2])
    body = msgspec.Raw(msgspec.msgpack.encode(["a", 1, 2]))
    with pytest.raises(SnapshotRefused, match="a damaged exchange snapshot"):
        restore(small_market(), msgspec.msgpack.encode((KIND, FORMAT, body)))


def test_a_snapshot_whose_book_cannot_be_a_book_is_refused():
    """An order at a price no book can hold (damage the framing would not see: a snapshot
    built in process) is refused, not restored as a different book."""
    exchange = busy_exchange()
    kind, version, body = msgspec.msgpack.decode(dump(exchange), type=tuple[str, int, msgspec.Raw])
    image = msgspec.msgpack.decode(body)
    resting = np.frombuffer(image[-1][0][-1][0], dtype="<i8").copy()
    resting[2] = -5  # the first order's price
    image[-1][0][-1][0] = resting.tobytes()
    bad = msgspec.msgpack.encode((kind, version, msgspec.Raw(msgspec.msgpack.encode(image))))
    with pytest.raises(SnapshotRefused, match="inconsistent exchange snapshot: 1 order"):
        restore(small_market(), bad)


def test_a_snapshot_of_another_config_is_refused():
    data = dump(busy_exchange())
    other = small_market(reference_price=12_000)
    with pytest.raises(SnapshotRefused, match=r"taken under market config .* not under the"):
        restore(other, data)


def with_keys(config: MarketConfig, **keys) -> MarketConfig:
    security = Security(server_key="/keys/engine.key_secret", operators={"ops": "/keys/o.key"})
    return msgspec.structs.replace(config, security=msgspec.structs.replace(security, **keys))


def test_a_snapshot_restores_under_the_same_market_with_other_keys():
    """Found while binding the journal to its config: the fingerprint held the [security]
    section, so revoking a key in the config (or moving the file, its key paths with it) made
    every snapshot unusable at the next start."""
    keyed = with_keys(small_market(), market_data={"md": "/keys/md.key"})
    exchange = Exchange(keyed)
    for command in START:
        exchange.apply(command)
    revoked = with_keys(small_market())
    for config in (revoked, small_market(), with_keys(small_market(), server_key="/moved/e")):
        assert restore(config, dump(exchange)).state_hash() == exchange.state_hash()


def test_a_snapshot_whose_fingerprint_held_the_keys_still_restores():
    """Snapshots written before the keys left the fingerprint carry it with them."""
    keyed = with_keys(small_market())
    exchange = Exchange(keyed)
    for command in START:
        exchange.apply(command)
    kind, version, body = msgspec.msgpack.decode(dump(exchange), type=tuple[str, int, msgspec.Raw])
    image = msgspec.msgpack.decode(body, type=ExchangeImage)
    old = msgspec.structs.replace(image, config_fingerprint=fingerprint_with_keys(keyed))
    data = msgspec.msgpack.encode((kind, version, msgspec.Raw(msgspec.msgpack.encode(old))))
    assert restore(keyed, data).state_hash() == exchange.state_hash()
    with pytest.raises(SnapshotRefused, match="not under the config given"):
        restore(with_keys(small_market(reference_price=12_000)), data)
