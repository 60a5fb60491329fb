"""Hostile values: every command kind with field values at and beyond their limits (zero,
negative, int64 extremes and beyond, off tick, unknown names, empty strings) and of the wrong
kind (floats, strings, None, lists), as an in-process caller could build them without the wire
decoder's checks. The core must answer each with events (never raise) that survive the wire's
encoding and decoding, a reject must change nothing, and the compiled and reference books must
give the same events. Something that is not a command at all is refused too."""

from __future__ import annotations

import random
import typing

import msgspec
import pytest

from engine.core import Exchange, ReferenceExchange
from engine.protocol import (
    AmendOrder,
    BlockTrade,
    CancelOrder,
    Command,
    MalformedMessage,
    NewOrder,
    OneWayAuctionOpen,
    OpenCall,
    RejectCode,
    Rejected,
    StartOfDay,
    Uncross,
    decode_command,
    decode_event,
    encode,
)
from engine.types import Side
from tests.support.exchange import small_market

INTEGERS = [0, 1, 2, 3, 5, -1, 10_000, 9_000, 11_000, 10_001, 99_999, 100_000]
INTEGERS += [2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]
INTEGERS += [2**63, 2**64 - 1, -(2**63) - 1, 2**100]  # beyond int64: the wire allows uint64
TEXTS = ["CEA25", "", "X", "c1"]
WRONG_KINDS = [1.0, 1.5, 10_000.0, "1", None, ["CEA25"], b"CEA25"]  # what a decoder refuses


def hostile_command(rng: random.Random, n: int):
    kind = rng.choice(typing.get_args(Command))
    values = {}
    for field in msgspec.structs.fields(kind):
        if rng.random() < 0.03:
            values[field.name] = rng.choice(WRONG_KINDS)
        elif field.name == "date":
            values[field.name] = rng.choice(["2026-11-25", "", "2026-13-45"])
        elif field.type is bool:
            values[field.name] = rng.random() < 0.5
        elif "str" in str(field.type) or "ClOrdId" in str(field.type):
            values[field.name] = rng.choice([*TEXTS, f"c{n}"])
        else:
            values[field.name] = rng.choice(INTEGERS)
    return kind(**values)


def test_hostile_values_are_answered_never_raised_and_rejects_change_nothing():
    rng = random.Random(11)
    exchanges = [Exchange(small_market()), ReferenceExchange(small_market())]
    for x in exchanges:
        for command in (StartOfDay("2026-11-24"), OpenCall("CEA25"), Uncross("CEA25")):
            x.apply(command)
    rejected = 0
    for n in range(3000):
        command = hostile_command(rng, n)
        before = exchanges[0].state_hash()
        events = [x.apply(command) for x in exchanges]
        assert events[0] == events[1], command
        for event in events[0]:  # whatever the command held, its answer goes over the wire
            assert decode_event(encode(event)) == event, (command, event)
        if len(events[0]) == 1 and isinstance(events[0][0], Rejected):
            rejected += 1
            assert exchanges[0].state_hash() == before, command
    assert exchanges[0].state_hash() == exchanges[1].state_hash()
    assert rejected > 1000


def test_something_that_is_not_a_command_is_refused_as_malformed():
    x = Exchange(small_market())
    (event,) = x.apply("NewOrder")
    assert isinstance(event, Rejected) and event.code == RejectCode.MALFORMED


def test_values_beyond_int64_are_refused_on_both_books_and_by_the_wire_decoder():
    """The compiled book holds int64. An in-process command with a larger value once escaped
    `apply` as an OverflowError from the compiled path; it is refused INVALID_FIELD, naming
    the field, before anything else is checked, by both exchanges (the protocol's integers
    are int64). The wire decoder bounds every integer, so such a frame is malformed."""
    huge = 2**64 - 1
    commands = [
        NewOrder("p", 1, "CEA25", Side.BUY, huge, 100),
        NewOrder("q", 1, "CEA25", Side.BUY, 10_000, huge),
        CancelOrder("c", 1, "CEA25", huge),
        AmendOrder("a", 1, "CEA25", huge, 10_000, 100),
    ]
    fields = ["price", "qty", "order_id", "order_id"]
    for exchange in (Exchange, ReferenceExchange):
        x = exchange(small_market())
        for command in (StartOfDay("2026-11-24"), OpenCall("CEA25"), Uncross("CEA25")):
            x.apply(command)
        for command, field in zip(commands, fields, strict=True):
            before = x.state_hash()
            (event,) = x.apply(command)
            assert isinstance(event, Rejected), (exchange, event)
            assert event.code == RejectCode.INVALID_FIELD, (exchange, event)
            assert event.text.endswith(f"{field} must fit in int64: {huge}"), event.text
            assert x.state_hash() == before
    for command in commands:
        with pytest.raises(MalformedMessage):
            decode_command(encode(command))


def test_the_wire_refuses_a_trading_day_with_anything_after_it():
    """The date pattern ended in `$`, which matches before a final newline: StartOfDay
    ("2026-11-25\n") decoded, and a journal would have named a segment file after it."""
    for date in ("2026-11-25\n", "2026-11-25 ", " 2026-11-25", "2026-11-25T00"):
        with pytest.raises(MalformedMessage, match="matching regex"):
            decode_command(encode(StartOfDay(date)))
    assert decode_command(encode(StartOfDay("2026-11-25"))) == StartOfDay("2026-11-25")


def test_a_refused_block_trade_or_auction_offer_answers_the_member_who_sent_it(make_exchange):
    """They name no `member`: a refusal went to member -1 (nobody's stream). A block trade's
    ClOrdID is its buyer's, and a one-way auction's offer is its seller's."""
    x = make_exchange(small_market())
    x.apply(StartOfDay("2026-11-24"))
    (block,) = x.apply(BlockTrade("k1", "CEA25", 3, 4, 10_000, 100_000))
    (offer,) = x.apply(OneWayAuctionOpen("CEA25", 2, 1))
    assert (block.code, block.member, block.cl_ord_id) == (RejectCode.MARKET_CLOSED, 3, "k1")
    assert (offer.code, offer.member) == (RejectCode.QTY_BELOW_MIN, 2)
    assert isinstance(block, Rejected) and isinstance(offer, Rejected)
