"""The command log: replay reproduces events and state hash; torn tails and corruption."""

from __future__ import annotations

import random

import pytest

from engine.core import Exchange
from engine.journal import CommandLog, CorruptLog, RecordingExchange, read_log, replay
from engine.protocol import (
    AmendOrder,
    CancelOrder,
    Close,
    EndOfDay,
    NewOrder,
    OpenCall,
    StartOfDay,
    Uncross,
    encode,
)
from engine.types import Side
from tests.exchange import small_market


def session_commands(seed: int, n: int) -> list:
    rng = random.Random(seed)
    cmds = [StartOfDay("2026-11-24"), OpenCall("CEA25")]
    for i in range(n):
        if i == n // 4:
            cmds.append(Uncross("CEA25"))
        r = rng.random()
        member = rng.randint(1, 4)
        if r < 0.7:
            side = rng.choice([Side.BUY, Side.SELL])
            price = 10_000 + rng.randint(-5, 5) * 10
            cmds.append(NewOrder(f"o{i}", member, "CEA25", side, price, rng.randint(1, 50)))
        elif r < 0.85:
            cmds.append(CancelOrder(f"x{i}", member, "CEA25", rng.randint(1, i + 1)))
        else:
            cmds.append(
                AmendOrder(
                    f"a{i}",
                    member,
                    "CEA25",
                    rng.randint(1, i + 1),
                    10_000 + rng.randint(-5, 5) * 10,
                    rng.randint(1, 50),
                )
            )
    return [*cmds, Close("CEA25"), EndOfDay()]


def test_replaying_the_log_reproduces_every_event_and_the_state_hash(tmp_path):
    path = tmp_path / "day.log"
    original = Exchange(small_market())
    with CommandLog(path) as log:
        recorder = RecordingExchange(original, log)
        events = [
            recorder.apply(c, ts_ns=1_000 * i) for i, c in enumerate(session_commands(3, 800))
        ]
    fresh = Exchange(small_market())
    replayed = [out for _, out in replay(path, fresh)]
    assert b"".join(encode(e) for out in replayed for e in out) == b"".join(
        encode(e) for out in events for e in out
    )
    assert fresh.state_hash() == original.state_hash()
    assert sum(1 for out in events for e in out if type(e).__name__ == "Trade") > 50


def test_a_torn_final_record_is_ignored_and_a_corrupt_one_is_reported(tmp_path):
    path = tmp_path / "day.log"
    with CommandLog(path) as log:
        recorder = RecordingExchange(Exchange(small_market()), log)
        for command in session_commands(5, 50):
            recorder.apply(command)
    whole = path.read_bytes()
    records = list(read_log(path))
    path.write_bytes(whole[:-3])
    assert len(list(read_log(path))) == len(records) - 1
    corrupt = bytearray(whole)
    corrupt[20] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(CorruptLog, match="checksum mismatch"):
        list(read_log(path))


def test_replay_refuses_a_log_with_a_gap(tmp_path):
    path = tmp_path / "gap.log"
    with CommandLog(path) as log:
        log.append(1, 0, StartOfDay("2026-11-24"))
        log.append(3, 0, OpenCall("CEA25"))
    with pytest.raises(CorruptLog, match="expected seq 2"):
        list(replay(path, Exchange(small_market())))
