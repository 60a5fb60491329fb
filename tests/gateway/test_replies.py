"""Private replies encoded from event rows (engine.gateway.replies) against the decoder: for
random flows through the batch path (trades, refusals worded and with texts, cancels,
amends, unknown members and instruments, call phases), every private event's bytes are
exactly what engine.protocol.encode writes for the event engine.core.rows.decode gives, with
the same stream numbers, the public and clearing rows decode to the same events, and the
accepted rows found give the order status table recovery builds from the rows."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings

from engine.core import Exchange
from engine.core.records import words_of
from engine.core.rows import decode, reject_wording
from engine.gateway import wire
from engine.gateway.replies import Pending, PrivateReplies, first_surrogate_key
from engine.gateway.status import OrderStatusTable
from engine.protocol import Audience, OpenCall, Rejected, StartOfDay, Uncross, encode
from tests.core.test_batch import CODES, INSTRUMENTS, as_records, batch_market, flows, start

KNOWN = [m.id for m in batch_market().members]
REPLIES = PrivateReplies(CODES, reject_wording(INSTRUMENTS))


def check_batch(exchange, records, known: list[int] = KNOWN) -> bool:
    """Apply one batch; compare the encoder with the decoder. Whether it was encoded (the
    members in `known` number from 0 without a position)."""
    positions = exchange.stream_positions()
    private = dict(positions["private"])
    rows = exchange.apply_batch(records)
    events = decode(rows, INSTRUMENTS, positions)
    mine = [e for e in events if type(e).audience is Audience.PRIVATE]
    encoded = REPLIES.encode(rows, private, known)
    if encoded is None:  # only for a member with no position and no account
        assert any(e.member not in known and e.member not in private for e in mine)
        return False
    assert encoded.count == len(mine)
    for k, event in enumerate(mine):
        lo, hi = encoded.offsets[k], encoded.offsets[k + 1]
        assert encoded.buf[lo:hi].tobytes() == encode(event), event
        assert encoded.members[k] == event.member
    for wanted in ([1], [2, 3], KNOWN, []):
        count, data = encoded.select(wanted)
        chosen = [encode(e) for e in mine if e.member in wanted]
        assert (count, data) == (len(chosen), b"".join(chosen))
        pending = Pending()
        pending.add_run(count, data)
        assert wire.unpack(pending.body()) == [e for e in mine if e.member in wanted]
    by_rows, by_scan, by_events = (OrderStatusTable(CODES) for _ in range(3))
    by_rows.record_rows(rows)
    by_scan.record_accepted(rows, encoded.accepted)
    by_events.record([e for e in events if type(e) is not Rejected])  # the batch keeps none
    assert by_scan.entries() == by_rows.entries() == by_events.entries()
    others = [e for e in events if type(e).audience is not Audience.PRIVATE]
    positions["private"] = {}
    public = decode(encoded.public_rows(rows), INSTRUMENTS, positions)
    assert [e for e in public if type(e).audience is not Audience.PRIVATE] == others
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_encoded_replies_are_the_decoded_events_encoded(steps):
    """Member 9 has no account (its orders are refused): numbered from 0 as the decoder does
    when the caller knows it, else the encoder leaves the batch to the decoder."""
    exchange = start(Exchange)
    for k, step in enumerate(steps):
        if step[0] == "operator":
            exchange.apply(step[1], step[2])
            continue
        records = as_records(step[1], step[2], exchange.seq + 1)
        assert check_batch(exchange, records, [*KNOWN, 9] if k % 2 else KNOWN) or k % 2 == 0


def open_exchange() -> Exchange:
    exchange = Exchange(batch_market(schedule=False))
    for command in (StartOfDay("2026-11-24"), OpenCall("CEA25"), Uncross("CEA25")):
        exchange.apply(command)
    return exchange


def test_a_run_with_every_private_event_kind_is_encoded():
    """Accepted, Filled both sides, Amended, Cancelled and a worded Rejected in one batch."""
    exchange = open_exchange()
    first = exchange.next_order_id
    rows = [
        (1, 1, 0, 0, 1, 0, 0, 10_000, 100, 0, "b1"),  # resting buy, order `first`
        (1, 2, 0, 1, 1, 0, 0, 10_000, 40, 0, "s1"),  # trades 40 against it
        (3, 1, 0, 0, 1, 0, 0, 10_000, 50, first, "a1"),  # amends it down
        (2, 1, 0, 0, 1, 0, 0, 0, 0, first, "c1"),  # cancels it
        (2, 3, 0, 0, 1, 0, 0, 0, 0, 999, "c2"),  # an unknown order: a worded refusal
    ]
    records = as_records(rows, [0] * len(rows), exchange.seq + 1)
    assert check_batch(exchange, records)


def test_a_clordid_holding_a_surrogate_is_found():
    records = as_records([(1, 1, 0, 0, 1, 0, 0, 10_000, 100, 0, "ok")] * 3, [0] * 3, 1)
    records["cl_ord_id"][2] = "ü\ud7ff".encode()  # the last code point below the surrogates
    assert first_surrogate_key(words_of(records, 0)) == -1
    records["cl_ord_id"][1] = ("x" * 29 + "\udc80").encode("utf-8", "surrogatepass")  # ends it
    assert first_surrogate_key(words_of(records, 0)) == 1
    records["cl_ord_id"][0] = "a\udc80".encode("utf-8", "surrogatepass")
    assert first_surrogate_key(words_of(records, 0)) == 0


def test_batches_of_the_bench_workload_are_encoded():
    """Long runs with many trades (grown buffers, many members' streams)."""
    exchange = open_exchange()
    rng = np.random.default_rng(3)
    for batch in range(5):
        n = 400
        rows = [
            (1, int(rng.integers(1, 5)), 0, int(rng.integers(0, 2)), 1, 0, 0,
             10_000 + 100 * int(rng.integers(-3, 4)), int(rng.integers(1, 30)), 0, f"w{batch}-{i}")
            for i in range(n)
        ]  # fmt: skip
        assert check_batch(exchange, as_records(rows, [0] * n, exchange.seq + 1))
