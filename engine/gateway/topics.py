"""The market data feed's topics and heartbeat: what the engine's publisher
(engine.gateway.marketdata), a relay (engine.gateway.relay) and the clients share, in a module
light enough for a relay to import without the engine's compiled code.

Invariants: a topic is an instrument's code and a full stop (`topic_of`: b"CEA25."; codes are
[A-Z0-9_]+, so a subscription to b"CEA2." never matches CEA25), MARKET_TOPIC for public
events that name no instrument, HEARTBEAT_TOPIC for heartbeats; MARKET_WIDE is the prefix of
both. A heartbeat's payload (`Heartbeat`) names every topic of the feed (`topic_name`) with
its position.
"""

from __future__ import annotations

import re

import msgspec

TOPIC_END = b"."
MARKET_TOPIC = b"*."  # public events that name no instrument
HEARTBEAT_TOPIC = b"*HB"
MARKET_WIDE = b"*"  # the prefix of both: what a subscriber to some instruments adds
TOPIC_NAME = re.compile(r"[A-Z0-9_]{1,16}\.|\*\.")  # a topic's name: a code's (as
# engine.instruments.Instrument.code allows) or the market's


def topic_of(code: str) -> bytes:
    """The topic of an instrument's events: its code and a full stop."""
    return code.encode() + TOPIC_END


def topic_name(topic: bytes) -> str:
    """A topic as the snapshot's end marker and heartbeats name it (text)."""
    return topic.decode()


class Heartbeat(msgspec.Struct, frozen=True):
    """Where every topic of the feed is (by name: "CEA25.", "*."), sent on HEARTBEAT_TOPIC."""

    topics: dict[str, int]
