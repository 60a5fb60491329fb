"""Exchange snapshots: the whole production exchange as bytes, and back.

`dump(exchange)` writes msgpack (msgspec): a leading [kind, format version] and then the
state, numpy arrays as little-endian int64 bytes. `restore(config, data)` builds a fresh
`Exchange(config)` and loads the state into it in place (the compiled order path stays bound
to the same arrays). `snapshot_exchange` and `recover_exchange` join them to the journal's
snapshot files and recovery (engine.journal.recovery).

Invariants (tests/core/test_snapshot.py):
- the restored exchange has the dumped one's `seq`, `state_hash()`, `stream_positions()`,
  date and next ids, and every further stamped command gives both byte-identical events and
  equal state hashes, across days: nothing that decides future behaviour is left out. What
  is not dumped derives from the config (zone, schedule, instruments, members' ids, each
  market's parameters and band) or is a cache rebuilt on use (the calendar's next due time,
  the batch path's buffers);
- books are dumped as their resting orders in time priority with every field a book keeps
  (engine.book.book.BookImage), never as the kernel's arrays, so a change of the book's
  array layout does not change the format;
- a snapshot is read only under the market it was taken under (its fingerprint is in it:
  the config without its keys, which may change between runs) and
  by this format version; anything else, or bytes that are no snapshot, raises
  SnapshotRefused saying what is wrong, and no exchange is returned.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import msgspec
import numpy as np

from engine.book.auction import AuctionBid
from engine.book.book import RESTING_COLUMNS, BookImage
from engine.config import MarketConfig
from engine.core.clordid import TABLE_COLUMNS
from engine.core.exchange import Exchange
from engine.core.market import Market, OneWayAuction
from engine.core.state import LiveOrder
from engine.digest import DayDigest
from engine.journal.recovery import Recovered, recover, save_snapshot
from engine.types import Phase, Side

KIND = "cxe-exchange"
FORMAT = 1
_INT64 = "<i8"


class SnapshotRefused(ValueError):
    """Bytes that are not a snapshot this engine can restore under this config."""


class OffBookImage(msgspec.Struct, array_like=True, frozen=True):
    order_id: int
    member: int
    cl_ord_id: str
    code: str
    side: int
    limit: int
    leaves: int
    frozen: int
    venue: str


class OneWayImage(msgspec.Struct, array_like=True, frozen=True):
    auction_id: int
    seller: int
    qty: int
    floor: int
    cap: int
    uniform: bool
    bids: list[tuple[int, int, int, int, int]]  # AuctionBid fields, in arrival order


class BookSnapshot(msgspec.Struct, array_like=True, frozen=True):
    resting: bytes  # BookImage.resting as int64 rows
    next_entry: int
    fills: int
    traded_qty: int
    rejects: int
    collecting: bool
    band: tuple[int, int]


class MarketImage(msgspec.Struct, array_like=True, frozen=True):
    code: str
    phase: int
    operator_halt: bool
    reference: int
    published_indicative: tuple[int, int, int]
    trades: int
    volume: int
    listed_volume: int
    listed_value: int
    open_high_low: tuple[int, int, int]  # of the listed trades so far (0: none)
    digest: bytes  # DayDigest.state()
    one_way: OneWayImage | None
    book: BookSnapshot


class ExchangeImage(msgspec.Struct, array_like=True, frozen=True):
    config_name: str
    config_fingerprint: str
    seq: int
    ts_ns: int
    date: str
    last_date: str
    next_order_id: int
    next_trade_id: int
    calendar_done: int
    public_seq: int
    clearing_seq: int
    private_seq: dict[int, int]
    accounts: bytes  # Accounts.acct as int64
    cl_ord_ids: bytes  # ClOrdIds.rows() as int64
    long_cl_ord_ids: list[tuple[int, bytes]]
    orders: list[OffBookImage]
    markets: list[MarketImage]


_head_decoder = msgspec.msgpack.Decoder(tuple[str, int, msgspec.Raw])
_image_decoder = msgspec.msgpack.Decoder(ExchangeImage)


def fingerprint(config: MarketConfig) -> str:
    """SHA-256 of the config's encoding without its keys: a snapshot restores only under the
    same market. The [security] section is left out: keys decide who may connect, not what
    the market does, and a key revoked in the config (or the file moved, its key paths with
    it) made every snapshot unusable at the next start."""
    return _sha256(msgspec.structs.replace(config, security=None))


def fingerprint_with_keys(config: MarketConfig) -> str:
    """The fingerprint snapshots written before 2026-12-02 carry: the keys' section in it."""
    return _sha256(config)


def _sha256(config: MarketConfig) -> str:
    return hashlib.sha256(msgspec.msgpack.encode(config)).hexdigest()


def _int64_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=_INT64).tobytes()


def _int64_rows(data: bytes, columns: int, what: str) -> np.ndarray:
    if len(data) % (8 * columns):
        raise SnapshotRefused(f"{what}: {len(data)} bytes are not rows of {columns} int64s")
    return np.frombuffer(data, dtype=_INT64).reshape(-1, columns).astype(np.int64)


# -- dump ------------------------------------------------------------------------------------------


def _market_image(market: Market) -> MarketImage:
    market.fold()
    assert not market.touched, "a snapshot is taken between commands"
    auction = market.one_way
    one_way = None
    if auction is not None:
        bids = [(b.order_id, b.member, b.price, b.qty, b.entry) for b in auction.bids]
        one_way = OneWayImage(
            auction.auction_id, auction.seller, auction.qty, auction.floor, auction.cap,
            auction.uniform, bids,
        )  # fmt: skip
    book = market.book.image()
    return MarketImage(
        market.code,
        int(market.phase),
        market.operator_halt,
        market.reference,
        tuple(market.published_indicative),
        market.trades,
        market.volume,
        market.listed_volume,
        market.listed_value,
        (market.open, market.high, market.low),
        market.digest.state(),
        one_way,
        BookSnapshot(
            _int64_bytes(book.resting),
            book.next_entry,
            book.fills,
            book.traded_qty,
            book.rejects,
            book.collecting,
            book.band,
        ),
    )


def dump(exchange: Exchange) -> bytes:
    """The exchange's whole state, between commands, as snapshot bytes."""
    state = exchange.state
    image = ExchangeImage(
        config_name=state.config.name,
        config_fingerprint=fingerprint(state.config),
        seq=state.seq,
        ts_ns=state.ts_ns,
        date=state.date,
        last_date=state.last_date,
        next_order_id=state.next_order_id,
        next_trade_id=state.next_trade_id,
        calendar_done=state.calendar_done,
        public_seq=state.public_seq,
        clearing_seq=state.clearing_seq,
        private_seq=dict(state.private_seq),
        accounts=_int64_bytes(state.accounts.acct),
        cl_ord_ids=_int64_bytes(state.cl_ord_ids.rows()),
        long_cl_ord_ids=sorted(state.cl_ord_ids.long),
        orders=[
            OffBookImage(
                o.order_id,
                o.member,
                o.cl_ord_id,
                o.code,
                int(o.side),
                o.limit,
                o.leaves,
                o.frozen,
                o.venue,
            )
            for o in state.orders.values()
        ],
        markets=[_market_image(state.markets[code]) for code in sorted(state.markets)],
    )
    return msgspec.msgpack.encode((KIND, FORMAT, msgspec.Raw(msgspec.msgpack.encode(image))))


# -- restore ---------------------------------------------------------------------------------------


def _decode(data: bytes) -> ExchangeImage:
    try:
        kind, version, body = _head_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SnapshotRefused(f"not an exchange snapshot ({exc})") from None
    if kind != KIND:
        raise SnapshotRefused(f"not an exchange snapshot: it says it is {kind!r}")
    if version != FORMAT:
        raise SnapshotRefused(
            f"exchange snapshot format {version}: this engine reads format {FORMAT} only "
            "(restore with the engine version that wrote it, or recover from the journal)"
        )
    try:
        return _image_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise SnapshotRefused(f"a damaged exchange snapshot ({exc})") from None


def _restore_market(market: Market, image: MarketImage) -> None:
    market.set_reference(image.reference)
    market.set_phase(Phase(image.phase))
    market.operator_halt = image.operator_halt
    market.published_indicative = image.published_indicative
    market.trades, market.volume = image.trades, image.volume
    market.listed_volume, market.listed_value = image.listed_volume, image.listed_value
    market.open, market.high, market.low = image.open_high_low
    market.digest = DayDigest.resume(image.digest)
    if image.one_way is not None:
        a = image.one_way
        bids = [AuctionBid(*bid) for bid in a.bids]
        market.one_way = OneWayAuction(
            a.auction_id, a.seller, a.qty, a.floor, a.cap, a.uniform, bids
        )
    book = image.book
    market.book.restore(
        BookImage(
            _int64_rows(book.resting, RESTING_COLUMNS, f"{market.code}'s book"),
            book.next_entry,
            book.fills,
            book.traded_qty,
            book.rejects,
            book.collecting,
            book.band,
        )
    )


def restore(config: MarketConfig, data: bytes) -> Exchange:
    """A new Exchange in the state `data` (made by `dump` under `config`) describes."""
    image = _decode(data)
    if image.config_fingerprint not in (fingerprint(config), fingerprint_with_keys(config)):
        raise SnapshotRefused(
            f"this snapshot was taken under market config {image.config_name!r} "
            f"(fingerprint {image.config_fingerprint[:12]}), not under the config given, "
            f"{config.name!r} ({fingerprint(config)[:12]}): restore it with the config it "
            "was taken under (a new config, such as the next day's opening file, begins in a "
            "data directory of its own: --data)"
        )
    exchange = Exchange(config)
    state = exchange.state
    try:
        state.seq, state.ts_ns = image.seq, image.ts_ns
        state.date, state.last_date = image.date, image.last_date
        state.next_order_id, state.next_trade_id = image.next_order_id, image.next_trade_id
        state.calendar_done = image.calendar_done
        state.public_seq, state.clearing_seq = image.public_seq, image.clearing_seq
        state.private_seq = dict(image.private_seq)
        acct = state.accounts.acct
        state.accounts.load(_int64_rows(image.accounts, acct.shape[1], "accounts"))
        state.cl_ord_ids.restore(
            _int64_rows(image.cl_ord_ids, TABLE_COLUMNS, "ClOrdIDs"), image.long_cl_ord_ids
        )
        for o in image.orders:
            state.orders[o.order_id] = LiveOrder(
                o.order_id,
                o.member,
                o.cl_ord_id,
                o.code,
                Side(o.side),
                o.limit,
                o.leaves,
                o.frozen,
                o.venue,
            )
        if sorted(m.code for m in image.markets) != sorted(state.markets):
            raise ValueError("its markets are not the config's")
        for market_image in image.markets:
            _restore_market(state.markets[market_image.code], market_image)
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotRefused(f"an inconsistent exchange snapshot: {exc}") from None
    return exchange


# -- snapshot files and recovery -------------------------------------------------------------------


def snapshot_exchange(exchange: Exchange, directory: str | Path, history: str = "") -> Path:
    """Write the exchange's snapshot file (at its seq, with its state hash; of the journal
    whose history id is `history`) into `directory`."""
    return save_snapshot(directory, exchange, dump, exchange.state.ts_ns, history)


def recover_exchange(
    config: MarketConfig, journal: str | Path, snapshots: str | Path
) -> Recovered[Exchange]:
    """The exchange at the journal's last whole record: the latest snapshot in `snapshots`
    restored (a fresh exchange if there is none), then the journal's records after it."""
    return recover(journal, snapshots, partial(Exchange, config), partial(restore, config))
