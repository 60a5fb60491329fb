"""The order-entry wire between broker gateways (DEALER) and the engine service (ROUTER).

Every ZeroMQ message is two frames: a one-byte kind, then a body (docs/PROTOCOL.md is the
reference for gateway developers; tests/gateway/test_protocol_doc.py holds it to this module
and to engine.protocol).

- `MESSAGES` (b"M"): the body is a msgpack array of messages, each a protocol command
  (engine.protocol: NewOrder, CancelOrder, AmendOrder, PickOrder, MassCancel, AuctionBid) or
  a session message below; engine to gateway, an array of events and session messages.
- `RECORDS` (b"R"): the body is order-entry records, `engine.codec.COMMAND_DTYPE` (88 bytes
  each, `seq` and `ts_ns` left zero: the engine stamps them), read with `np.frombuffer`.
- `RESEND` (b"P"): as MESSAGES, for commands that may have been sent before (a reconnect):
  a NewOrder whose member and ClOrdID the engine has seen today is answered with its
  `OrderStatus` and never makes a second order; anything else is taken as new.

Invariants:
- Decoding never raises past this module's functions except `FrameRefused` (whole frame) and
  `MalformedMessage` (one message): what they say names the fault, and the service answers
  the sender with it.
- Session messages have tags 200-229, disjoint from commands (1-99) and events (101-199);
  operator messages (tags 210-219) are taken on the admin endpoint only.
"""

from __future__ import annotations

import struct

import msgspec
import numpy as np

from engine.codec import COMMAND_DTYPE
from engine.protocol import (
    Command,
    Event,
    MalformedMessage,
    RejectCode,
    decode_command,
    encode,
)

MESSAGES, RECORDS, RESEND = b"M", b"R", b"P"
KINDS = (MESSAGES, RECORDS, RESEND)
MAX_FRAME_BYTES = 4 << 20  # a body larger than this is refused unread
MAX_MESSAGES_PER_FRAME = 8192
assert COMMAND_DTYPE.fields["member"][0] == np.dtype("<i4")
_MEMBER = struct.Struct("<i")  # a record's member field (int32 at MEMBER_OFFSET)
MEMBER_OFFSET = COMMAND_DTYPE.fields["member"][1]


class _Session(msgspec.Struct, frozen=True, array_like=True, tag_field="t", gc=False):
    pass


class Logon(_Session, tag=200):
    """First message of a connection: who the gateway is. `cancel_on_disconnect` None takes
    the market config's setting for the gateway; `heartbeat_ms` is how often each side sends
    something (a Heartbeat when it has nothing else to send): the engine ends a session it
    has not heard from for three intervals, and a gateway may take an engine it has not
    heard from for three intervals as gone."""

    gateway: str
    cancel_on_disconnect: bool | None = None
    heartbeat_ms: int = 1000


class LogonAccepted(_Session, tag=201):
    """The engine's answer: the members this gateway may act for, and the last number of
    each one's private stream (events after it follow on this connection)."""

    gateway: str
    members: list[int]
    heartbeat_ms: int
    cancel_on_disconnect: bool
    private_seq: dict[int, int]
    undelivered: int  # frames kept for this gateway while it was away, sent right after
    instruments: list[str]  # the market's codes, in order: a record's `instrument` indexes it
    date: str  # the open trading day, "" between days


class Heartbeat(_Session, tag=202):
    pass


class Logout(_Session, tag=203):
    pass


class SessionRejected(_Session, tag=204):
    """A frame or session message refused before it reached the core (nothing was sequenced):
    `code` is an engine.protocol.RejectCode."""

    code: int
    text: str


class OrderStatus(_Session, tag=205):
    """Answer to a resent NewOrder the engine has seen today: the order as it stands. `state`
    is "live" (resting, `leaves` remaining), "done" (filled or cancelled: `leaves` 0) or
    "rejected" (`text` says why)."""

    member: int
    cl_ord_id: str
    state: str
    order_id: int = 0
    instrument: str = ""
    leaves: int = 0
    text: str = ""


class SnapshotNow(_Session, tag=210):
    """Operator: write a snapshot of the state now (after the commands before it)."""


class Status(_Session, tag=211):
    """Operator: ask for the service's counters. `with_state_hash` false leaves the report's
    state hash empty: computing it takes the loop time that grows with the day's orders
    (about 0.3 s at 600,000 ClOrdIDs on a two-core test machine), so a monitor that polls
    does not ask for it."""

    with_state_hash: bool = True


class StatusReport(_Session, tag=212):
    seq: int
    state_hash: str
    counters: dict[str, int]
    gateways: dict[str, dict[str, int]]
    date: str = ""  # the open trading day ("" when none is open)
    instruments: list[str] = []  # the market's codes (what `cxe admin` means by all of them)
    clock_day: str = ""  # the engine clock's day in the market's time zone (YYYY-MM-DD)


class ReloadKeys(_Session, tag=213):
    """Operator: reread the config's [security] keys; revoked keys' sessions are ended."""


class KeysReloaded(_Session, tag=214):
    revoked: list[str]


class SnapshotRequested(_Session, tag=215):
    """The answer to SnapshotNow: taken when the engine had applied up to `seq`; the snapshot
    is written into `directory` after the turn (at the seq the turn ends on, `seq` or later)."""

    seq: int
    directory: str


SessionMessage = Logon | Heartbeat | Logout | SnapshotNow | Status | ReloadKeys
OPERATOR_MESSAGES = (SnapshotNow, Status, ReloadKeys)
_inbound = msgspec.msgpack.Decoder(list[msgspec.Raw])
_session = msgspec.msgpack.Decoder(SessionMessage)
Reply = (
    Event
    | LogonAccepted
    | Heartbeat
    | SessionRejected
    | OrderStatus
    | StatusReport
    | KeysReloaded
    | SnapshotRequested
)
_outbound = msgspec.msgpack.Decoder(list[Reply])
_encoder = msgspec.msgpack.Encoder()
SESSION_TAGS = range(200, 230)


class FrameRefused(ValueError):
    """A whole frame that cannot be taken (kind, size, body, permission): nothing in it was.
    `code` is the RejectCode the SessionRejected answer carries."""

    def __init__(self, text: str, code: int = RejectCode.MALFORMED) -> None:
        super().__init__(text)
        self.code = int(code)


def split_messages(body: bytes) -> list[msgspec.Raw]:
    """The messages of a MESSAGES or RESEND body, each still encoded."""
    if len(body) > MAX_FRAME_BYTES:
        raise FrameRefused(f"frame of {len(body):,} bytes: the limit is {MAX_FRAME_BYTES:,}")
    try:
        messages = _inbound.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameRefused(f"the body is not a msgpack array of messages: {exc}") from None
    if len(messages) > MAX_MESSAGES_PER_FRAME:
        raise FrameRefused(
            f"{len(messages):,} messages in one frame: the limit is {MAX_MESSAGES_PER_FRAME:,}"
        )
    return messages


def message_tag(raw: bytes) -> int | None:
    """The tag of an encoded message (the first element of its array), or None."""
    if not raw:
        return None
    head = raw[0]
    if 0x90 <= head <= 0x9F:
        start = 1
    elif head == 0xDC:
        start = 3
    elif head == 0xDD:
        start = 5
    else:
        return None
    if len(raw) <= start:
        return None
    tag = raw[start]
    if tag <= 0x7F:
        return tag
    if tag == 0xCC and len(raw) > start + 1:
        return raw[start + 1]
    return None


def decode_message(raw: bytes) -> Command | _Session:
    """One message of a frame; MalformedMessage names the type and field at fault."""
    tag = message_tag(raw)
    if tag is not None and tag in SESSION_TAGS:
        try:
            return _session.decode(raw)
        except msgspec.ValidationError as exc:
            raise MalformedMessage(f"session message: {exc}") from None
        except msgspec.DecodeError as exc:
            raise MalformedMessage(f"not a msgpack message: {exc}") from None
    return decode_command(bytes(raw))


def records_count(body: bytes) -> int:
    """How many COMMAND_DTYPE records a RECORDS body holds (FrameRefused unless a whole
    number, at least one, within the size limit)."""
    size = COMMAND_DTYPE.itemsize
    if len(body) > MAX_FRAME_BYTES:
        raise FrameRefused(f"frame of {len(body):,} bytes: the limit is {MAX_FRAME_BYTES:,}")
    if not body or len(body) % size:
        raise FrameRefused(
            f"a records frame of {len(body)} bytes: it must be a whole number (at least one) "
            f"of {size}-byte engine.codec.COMMAND_DTYPE records"
        )
    return len(body) // size


def record_members(body: bytes, n: int) -> list[int]:
    """The `member` of each of the n records of a RECORDS body, read in place."""
    size, unpack = COMMAND_DTYPE.itemsize, _MEMBER.unpack_from
    return [unpack(body, k * size + MEMBER_OFFSET)[0] for k in range(n)]


def records_of(body: bytes) -> np.ndarray:
    """A RECORDS body as a writable array of COMMAND_DTYPE records (a copy: the engine
    stamps it)."""
    records_count(body)
    return np.frombuffer(body, COMMAND_DTYPE).copy()


def array_header(n: int) -> bytes:
    """msgpack's header of an array of n items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def pack(encoded: list[bytes | memoryview]) -> bytes:
    """A msgpack array of items already encoded (a MESSAGES body, a trade stream message):
    its header, then the items as they are."""
    return array_header(len(encoded)) + b"".join(encoded)


def unpack(body: bytes) -> list:
    """The events and session messages of an engine-to-gateway MESSAGES body."""
    return _outbound.decode(body)


def encode_message(message: msgspec.Struct) -> bytes:
    return encode(message) if not isinstance(message, _Session) else _encoder.encode(message)


def messages_frame(messages: list) -> list[bytes]:
    """The two frames of a MESSAGES message carrying `messages`."""
    return [MESSAGES, pack([encode_message(m) for m in messages])]
