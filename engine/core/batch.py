"""Batch apply: a run of order-command records in, encoded event rows out, in one compiled call.

`BatchPath.apply(records)` validates, risk-checks and matches NewOrder, CancelOrder and
AmendOrder records (engine.codec.COMMAND_DTYPE) across every instrument in `run`, one
compiled loop over the records that calls the production pipeline's own compiled handlers
(engine.core.pipeline: the same checks, ClOrdID table, freezes, settlement and levels as the
per-command path) and writes each command's events as EVENT_DTYPE rows into the exchange-owned
buffer `out`. No Python object is made per command; per batch, a few per instrument.

Layout: the books' arrays go in as tuples indexed by the instrument (pools, ladders, bitmaps,
id hashes, metas, event buffers, market params), beside the accounts, the ClOrdID table and
`sc`, the run's scalars (SC_*): what Python keeps as attributes (next order and trade ids,
the sequence and time, the trading day) is loaded into `sc` before the call and stored back
after it. The tuples are rebuilt only when an array was replaced (growth, a command applied
per command).

Invariants:
- The events and the state after a batch are those of applying its commands one by one with
  `Exchange.apply` (property-tested with random batch boundaries, against the reference
  exchange too), so results never depend on where a batch starts or ends.
- The compiled run stops, before changing anything for the record it stops at, when: a
  record's timestamp reaches the calendar's next entry; its market is in a call (its
  indicative is computed in Python); it cancels or amends while off-book orders exist; an
  array must grow (NEED_*, the ClOrdID table's included); `out` might not hold its rows. The
  record is then applied by the per-command path (`Exchange.apply_stamped`, whose events are encoded
  by engine.codec.encode_events) or the arrays grow, and the run resumes after it.
- A batch's records are checked before anything changes (engine.core.records): their
  sequence numbers follow the exchange's, their kinds are order commands, their ClOrdIDs are
  UTF-8 (ValueError otherwise: such a record is no message, as a frame the decoder refuses).
- Trades count in their market's day figures and digest in the order they happened: the
  compiled run's trades are encoded as msgpack (byte for byte what msgspec writes for the
  Trade event, engine.core.rows.trade_bytes) and folded in before any per-command command runs.
- The stream positions move past the compiled run's rows in the same flush (rows.tally), so
  a per-command command after it numbers its events from the right place.
- The run prefetches the ClOrdID table row of the record PREFETCH_AHEAD ahead: a cache hint
  that changes no value, only when the probe's memory arrives.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.book.entry import entry_point
from engine.book.eventrows import K_AMENDED, K_CANCELLED, K_FILL
from engine.book.idhash import ht_find
from engine.book.layout import (
    E_CODE,
    E_KIND,
    E_LEAVES,
    E_LEAVES2,
    E_OID,
    E_OID2,
    E_OWNER,
    E_OWNER2,
    E_PRICE,
    E_QTY,
    E_SIDE,
    M_NEV,
    P_PRICE,
    P_QTY,
)
from engine.book.matching import DAY, LIMIT, MARKET, STP_INCOMING, order_fields_valid
from engine.codec import (
    A_MEMBER,
    A_ORDER_ID,
    A_PRICE,
    A_QTY,
    D_ORDERS,
    D_PRICE,
    D_QTY,
    EVENT_WORDS,
    KEY_WORD,
    M_MEMBER,
    M_ORDER_ID,
    M_PRICE,
    M_QTY,
    R_DETAIL_A,
    R_DETAIL_B,
    R_MEMBER,
    REC_AMEND,
    REC_CANCEL,
    REC_NEW_ORDER,
    ROW_ACCEPTED,
    ROW_AMENDED,
    ROW_CANCELLED,
    ROW_DEPTH,
    ROW_REJECTED,
    ROW_TRADE,
    T_BUY_LEAVES,
    T_BUY_OID,
    T_DATE,
    T_MEMBERS,
    T_PRICE,
    T_QTY,
    T_SELL_LEAVES,
    T_SELL_OID,
    T_TRADE_ID,
    T_TS,
    W_FLAGS,
    W_IDS,
    W_KEY,
    W_ORDER_ID,
    W_PRICE,
    W_QTY,
    W_SEQ,
    W_TS,
    X_LEAVES,
    X_MEMBER,
    X_ORDER_ID,
    command_of,
    date_number,
    encode_events,
)
from engine.core.clordid import NEED_CLORDIDS, clid_home
from engine.core.market import MK_BAND_HI, MK_BAND_LO, MK_PHASE, Market
from engine.core.pipeline import (
    K_LEVEL,
    R_INSUFFICIENT_ALLOWANCES,
    R_INSUFFICIENT_FUNDS,
    R_INVALID_FIELD,
    R_NOT_OWNER,
    R_PRICE_OUTSIDE_BAND,
    R_UNKNOWN_ORDER,
    REJECT_BASE,
    _amend,
    _cancel,
    _new_order,
    find_row,
    freeze_for,
)
from engine.core.records import key_length, words_of
from engine.core.rows import packed, tally, trade_bytes, trade_head
from engine.protocol import RejectCode
from engine.types import Phase

# the run's scalars
SC_NEXT_OID, SC_NEXT_TRADE, SC_DATE, SC_DUE_NS, SC_OFFBOOK, SC_ROWS = range(6)
SC_SEQ, SC_TS, SC_INSTRUMENT, SC_NEED = 6, 7, 8, 9
SC_LEN = 10
# how a run ends (besides the book's NEED_* and NEED_CLORDIDS, for instrument SC_INSTRUMENT)
DONE = 0
PER_COMMAND = -100  # apply the record the run stopped at with Exchange.apply
NEED_OUT = -101  # `out` must hold SC_NEED more rows
NEVER = 2**63 - 1
ROWS_PER_RECORD = 4  # rows `out` is sized for up front (it grows when a run needs more)
PREFETCH_AHEAD = 3  # records ahead whose ClOrdID table row is fetched into the cache
# the prefetch intrinsic's name: mangled by its pointer type, opaque from LLVM 15 on
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"

_CALL, _CLOSING_CALL = int(Phase.CALL), int(Phase.CLOSING_CALL)
_R = {code.name: int(code) for code in RejectCode}
R_UNKNOWN_MEMBER, R_UNKNOWN_INSTRUMENT = _R["UNKNOWN_MEMBER"], _R["UNKNOWN_INSTRUMENT"]


# -- the compiled run ------------------------------------------------------------------------------


@intrinsic
def _prefetch_row(typingctx, table, row):
    """Ask the CPU to bring table[row, 0] into the cache (a hint: no effect on any value)."""

    def codegen(context, builder, signature, args):
        table_type = signature.args[0]
        array = context.make_array(table_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer2(
            context, builder, array.data, cgutils.unpack_tuple(builder, array.shape),
            cgutils.unpack_tuple(builder, array.strides), table_type.layout,
            [args[1], context.get_constant(types.intp, 0)], wraparound=False, boundscheck=False,
        )  # fmt: skip
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            _PREFETCH,
        )  # fmt: skip
        # read, high temporal locality, data cache
        builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(table, row), codegen


@njit(cache=True, _nrt=False)
def _prefetch_key(words, i, ck, cm):
    """Prefetch the ClOrdID table row where record i's key is probed, if there is a record i:
    the table is large and probed at random, so a probe would otherwise wait for memory."""
    if i < words.shape[0]:
        member = ((words[i, W_IDS] & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
        home = clid_home(
            cm, member, key_length(words, i), words[i, W_KEY], words[i, W_KEY + 1],
            words[i, W_KEY + 2], words[i, W_KEY + 3],
        )  # fmt: skip
        _prefetch_row(ck, home)


@njit(cache=True, _nrt=False)
def _header(kind, flag, code, instrument):
    return kind | ((flag & 0xFF) << 8) | (code << 16) | (instrument << 32)


@njit(cache=True, _nrt=False)
def _open_row(out, sc, kind, flag, code, instrument, seq):
    n = sc[SC_ROWS]
    sc[SC_ROWS] = n + 1
    for w in range(2, EVENT_WORDS):
        out[n, w] = 0
    out[n, 0] = _header(kind, flag, code, instrument)
    out[n, 1] = seq
    return n


@njit(cache=True, _nrt=False)
def _copy_key(out, n, words, i):
    for w in range(4):
        out[n, KEY_WORD + w] = words[i, W_KEY + w]


@njit(cache=True, _nrt=False)
def _reject(out, sc, words, i, instrument, member, code, a, b):
    n = _open_row(out, sc, ROW_REJECTED, 0, code, instrument, words[i, W_SEQ])
    out[n, R_MEMBER] = member
    out[n, R_DETAIL_A] = a
    out[n, R_DETAIL_B] = b
    _copy_key(out, n, words, i)


@njit(cache=True, _nrt=False)
def _invalid_field(side, otype, tif, stp):
    """(field index in ORDER_FIELDS, value) of the first enum field out of its enum."""
    if not order_fields_valid(side, LIMIT, DAY, STP_INCOMING):
        return 0, side
    if not order_fields_valid(0, otype, DAY, STP_INCOMING):
        return 1, otype
    if not order_fields_valid(0, LIMIT, tif, STP_INCOMING):
        return 2, tif
    return 3, stp


@njit(cache=True, _nrt=False)
def _details(code, kind, mk, pool, ht, meta, side, otype, tif, stp, price, qty, oid):
    """(detail_a, detail_b) of a pipeline refusal: what its text is worded from."""
    if code == R_INVALID_FIELD:
        return _invalid_field(side, otype, tif, stp)
    if code in (R_UNKNOWN_ORDER, R_NOT_OWNER):
        return oid, 0
    if code == R_PRICE_OUTSIDE_BAND:
        return mk[MK_BAND_LO], mk[MK_BAND_HI]
    if code in (R_INSUFFICIENT_FUNDS, R_INSUFFICIENT_ALLOWANCES):
        if kind == REC_AMEND:  # the order is as it was: a refusal changes nothing
            slot = ht_find(ht, meta, oid)
            old_price, old_qty = pool[slot, P_PRICE], pool[slot, P_QTY]
            if code == R_INSUFFICIENT_ALLOWANCES:
                return qty - old_qty, 1
            return freeze_for(mk, price, qty) - freeze_for(mk, old_price, old_qty), 1
        if side != 0:
            return qty, 0
        limit = mk[MK_BAND_HI] if otype == MARKET else price
        return freeze_for(mk, limit, qty), 0
    return 0, 0


@njit(cache=True, _nrt=False)
def _rows(out, sc, ev, rows, instrument, seq):
    """The pipeline's output rows as event rows (as EventWriter.pipeline_rows words them)."""
    for r in range(rows):
        kind = ev[r, E_KIND]
        if kind == K_LEVEL:
            n = _open_row(out, sc, ROW_DEPTH, ev[r, E_SIDE], 0, instrument, seq)
            out[n, D_PRICE] = ev[r, E_PRICE]
            out[n, D_QTY] = ev[r, E_QTY]
            out[n, D_ORDERS] = ev[r, E_LEAVES]
        elif kind == K_FILL:  # buy order first, E_SIDE the taker's
            n = _open_row(out, sc, ROW_TRADE, ev[r, E_SIDE], 0, instrument, seq)
            out[n, T_TRADE_ID] = sc[SC_NEXT_TRADE]
            sc[SC_NEXT_TRADE] += 1
            out[n, T_PRICE] = ev[r, E_PRICE]
            out[n, T_QTY] = ev[r, E_QTY]
            out[n, T_MEMBERS] = (ev[r, E_OWNER] & 0xFFFFFFFF) | (ev[r, E_OWNER2] << 32)
            out[n, T_BUY_OID] = ev[r, E_OID]
            out[n, T_SELL_OID] = ev[r, E_OID2]
            out[n, T_BUY_LEAVES] = ev[r, E_LEAVES]
            out[n, T_SELL_LEAVES] = ev[r, E_LEAVES2]
            out[n, T_TS] = sc[SC_TS]
            out[n, T_DATE] = sc[SC_DATE]
        elif kind == K_CANCELLED:
            n = _open_row(out, sc, ROW_CANCELLED, 0, ev[r, E_CODE], instrument, seq)
            out[n, X_MEMBER] = ev[r, E_OWNER]
            out[n, X_ORDER_ID] = ev[r, E_OID]
            out[n, X_LEAVES] = ev[r, E_QTY]
        elif kind == K_AMENDED:
            kept = 1 if ev[r, E_CODE] == 1 else 0
            n = _open_row(out, sc, ROW_AMENDED, kept, 0, instrument, seq)
            out[n, M_MEMBER] = ev[r, E_OWNER]
            out[n, M_ORDER_ID] = ev[r, E_OID]
            out[n, M_PRICE] = ev[r, E_PRICE]
            out[n, M_QTY] = ev[r, E_QTY]


@njit(cache=True, _nrt=False)
def run(words, start, pools, lads, bms, hts, metas, evs, mks, acct, ids, ck, cm, out, sc):
    """Apply records words[start:] until one needs Python; returns (status, record index)."""
    for i in range(start, min(start + PREFETCH_AHEAD, words.shape[0])):
        _prefetch_key(words, i, ck, cm)
    for i in range(start, words.shape[0]):
        _prefetch_key(words, i + PREFETCH_AHEAD, ck, cm)
        seq, ts = words[i, W_SEQ], words[i, W_TS]
        if ts >= sc[SC_DUE_NS]:
            return PER_COMMAND, i
        flags = words[i, W_FLAGS]
        kind, side = flags & 0xFF, (flags >> 8) & 0xFF
        otype, tif, stp = (flags >> 16) & 0xFF, (flags >> 24) & 0xFF, (flags >> 32) & 0xFF
        member = ((words[i, W_IDS] & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
        instrument = words[i, W_IDS] >> 32
        price, qty, oid = words[i, W_PRICE], words[i, W_QTY], words[i, W_ORDER_ID]
        if out.shape[0] - sc[SC_ROWS] < 1:
            sc[SC_NEED] = 1
            return NEED_OUT, i
        if find_row(ids, member) < 0:
            _reject(out, sc, words, i, 0, member, R_UNKNOWN_MEMBER, member, 0)
            sc[SC_SEQ], sc[SC_TS] = seq, ts
            continue
        if not 0 <= instrument < len(pools):
            _reject(out, sc, words, i, 0, member, R_UNKNOWN_INSTRUMENT, instrument, 0)
            sc[SC_SEQ], sc[SC_TS] = seq, ts
            continue
        mk = mks[instrument]
        phase = mk[MK_PHASE]
        if phase in (_CALL, _CLOSING_CALL) or (kind != REC_NEW_ORDER and sc[SC_OFFBOOK]):
            return PER_COMMAND, i
        ev = evs[instrument]
        if out.shape[0] - sc[SC_ROWS] < ev.shape[0] + 1:
            sc[SC_NEED] = ev.shape[0] + 1
            return NEED_OUT, i
        pool, lad, bm, ht, meta = (
            pools[instrument], lads[instrument], bms[instrument], hts[instrument],
            metas[instrument],
        )  # fmt: skip
        n = key_length(words, i)
        k0, k1, k2, k3 = (
            words[i, W_KEY], words[i, W_KEY + 1], words[i, W_KEY + 2], words[i, W_KEY + 3]
        )  # fmt: skip
        sc[SC_TS] = ts
        if kind == REC_NEW_ORDER:
            new_oid = sc[SC_NEXT_OID]
            rows = _new_order(
                pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, new_oid, member, side,
                price, qty, otype, tif, stp, n, k0, k1, k2, k3,
            )  # fmt: skip
        elif kind == REC_CANCEL:
            rows = _cancel(
                pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, n, k0, k1, k2,
                k3,
            )  # fmt: skip
        else:
            rows = _amend(
                pool, lad, bm, ht, meta, ev, acct, ids, mk, ck, cm, oid, member, price, qty, n,
                k0, k1, k2, k3,
            )  # fmt: skip
        if REJECT_BASE <= rows < 0:  # grow (or the book refused what the core validated)
            sc[SC_INSTRUMENT] = instrument
            return rows, i
        sc[SC_SEQ] = seq
        if rows < REJECT_BASE:
            code = REJECT_BASE - rows
            a, b = _details(code, kind, mk, pool, ht, meta, side, otype, tif, stp, price, qty, oid)
            _reject(out, sc, words, i, instrument, member, code, a, b)
            continue
        if kind == REC_NEW_ORDER:
            sc[SC_NEXT_OID] += 1
            r = _open_row(out, sc, ROW_ACCEPTED, side, 0, instrument, seq)
            out[r, A_MEMBER] = member
            out[r, A_ORDER_ID] = sc[SC_NEXT_OID] - 1
            out[r, A_PRICE] = 0 if otype == MARKET else price
            out[r, A_QTY] = qty
            _copy_key(out, r, words, i)
        _rows(out, sc, ev, rows, instrument, seq)
        meta[M_NEV] = 0
    return DONE, words.shape[0]


def apply_one_by_one(exchange, records: np.ndarray) -> bytes:
    """What a batch means: each record's command through `exchange.apply`, its events
    encoded as rows (the reference exchange's batch, and the oracle of the compiled one)."""
    words_of(records, exchange.state.seq)
    codes = list(exchange.state.markets)
    return b"".join(
        encode_events(
            exchange.apply_stamped(int(r["seq"]), int(r["ts_ns"]), command_of(r, codes)), codes
        )
        for r in records
    )


class BatchPath:
    """The exchange's batch entry: records in, event bytes out (see the module docstring)."""

    def __init__(self, exchange) -> None:
        if sys.byteorder != "little":
            raise RuntimeError("the batch layouts are little-endian: this host is not")
        self.exchange = exchange
        self.state = exchange.state
        self.markets: list[Market] = list(self.state.markets.values())
        self.codes = [m.code for m in self.markets]
        self.out = np.zeros((4096, EVENT_WORDS), dtype=np.int64)
        self.sc = np.zeros(SC_LEN, dtype=np.int64)
        self.trade_buf = np.zeros(1 << 16, dtype=np.uint8)
        self._strs = {
            "head": trade_head(),
            "venue": packed("continuous"),
        }
        self._code_strs = [packed(code) for code in self.codes]
        self._date = ("", packed(""))  # the open day's encoding, kept while the day lasts
        self._trades = np.zeros(len(self.markets), dtype=np.int64)  # per instrument, a flush's
        self._counts = np.zeros(0, dtype=np.int64)  # tally's scratch, one per accounts row
        self._runners: dict[bool, object] = {}  # `run` compiled for these argument types

    def _runner(self, words: np.ndarray, arrays: tuple):
        """`run`'s compiled wrapper for these arguments' types, taken once (they never change:
        growth replaces an array by one of the same type), so no call types its arguments."""
        writeable = bool(words.flags.writeable)  # records from a read-only frame are typed apart
        runner = self._runners.get(writeable)
        if runner is None:
            runner = entry_point(run, (words,), 1, (*arrays, self.out, self.sc))
            self._runners[writeable] = runner
        return runner

    def _arrays(self) -> tuple:
        books = [m.book.state for m in self.markets]
        accounts, clids = self.state.accounts, self.state.cl_ord_ids
        return (
            tuple(b.pool for b in books), tuple(b.lad for b in books),
            tuple(b.bm for b in books), tuple(b.ht for b in books),
            tuple(b.meta for b in books), tuple(b.ev for b in books),
            tuple(m.params for m in self.markets), accounts.acct, accounts.ids, clids.table,
            clids.meta,
        )  # fmt: skip

    def _load(self) -> None:
        state, sc = self.state, self.sc
        sc[SC_NEXT_OID], sc[SC_NEXT_TRADE] = state.next_order_id, state.next_trade_id
        sc[SC_DATE], sc[SC_OFFBOOK] = date_number(state.date), len(state.orders)
        sc[SC_SEQ], sc[SC_TS] = state.seq, state.ts_ns
        due = NEVER
        if state.schedule and state.date:
            due = self.exchange.sessions._calendar_due()
        sc[SC_DUE_NS] = due

    def _store(self) -> None:
        state, sc = self.state, self.sc
        state.next_order_id, state.next_trade_id = int(sc[SC_NEXT_OID]), int(sc[SC_NEXT_TRADE])
        state.seq, state.ts_ns = int(sc[SC_SEQ]), int(sc[SC_TS])

    def apply(self, records: np.ndarray) -> bytes:
        """Apply a run of records; the bytes of their events' rows."""
        words = words_of(records, self.state.seq)
        self.state.cl_ord_ids.reserve(len(words))
        if self.out.shape[0] < ROWS_PER_RECORD * len(words):
            self._grow_out(ROWS_PER_RECORD * len(words))
        self.sc[SC_ROWS] = 0
        self._load()
        arrays = self._arrays()
        start, flushed = 0, 0
        while start < len(words):
            status, index = self._runner(words, arrays)(words, start, *arrays, self.out, self.sc)
            start = int(index)
            if status == DONE:
                break
            if status == NEED_OUT:
                self._grow_out(int(self.sc[SC_NEED]))
            elif status == PER_COMMAND:
                flushed = self._flush(flushed)
                self._store()
                self._per_command(records[start])
                self._load()
                flushed = int(self.sc[SC_ROWS])
                start += 1
            elif status == REJECT_BASE:
                raise AssertionError(f"the book refused what the core validated: record {start}")
            else:
                self._grow(int(status), int(self.sc[SC_INSTRUMENT]))
            arrays = self._arrays()
        self._flush(flushed)
        self._store()
        return self.out[: int(self.sc[SC_ROWS])].tobytes()

    def _grow(self, status: int, instrument: int) -> None:
        if status == NEED_CLORDIDS:
            self.state.cl_ord_ids.grow()
        else:
            self.markets[instrument].book.grow(status)

    def _grow_out(self, rows: int) -> None:
        used = int(self.sc[SC_ROWS])
        size = max(2 * self.out.shape[0], used + rows)
        grown = np.zeros((size, EVENT_WORDS), dtype=np.int64)
        grown[:used] = self.out[:used]
        self.out = grown

    def _per_command(self, record: np.void) -> None:
        """One record through Exchange.apply; its events encoded after the run's rows."""
        command = command_of(record, self.codes)
        events = self.exchange.apply_stamped(int(record["seq"]), int(record["ts_ns"]), command)
        rows = np.frombuffer(encode_events(events, self.codes), dtype=np.int64)
        rows = rows.reshape(-1, EVENT_WORDS)
        used = int(self.sc[SC_ROWS])
        if used + len(rows) > self.out.shape[0]:
            self._grow_out(len(rows))
        self.out[used : used + len(rows)] = rows
        self.sc[SC_ROWS] = used + len(rows)

    def _flush(self, lo: int) -> int:
        """Count the streams past out[lo:rows] (written by the compiled run) and fold their
        trades into their markets' day figures and digests; returns where the next flush
        starts. Only the markets that traded are visited: a run's fixed cost does not grow
        with the market's instrument count."""
        hi = int(self.sc[SC_ROWS])
        if hi == lo:
            return hi
        clearing_seq = self.state.clearing_seq  # the run's trades are numbered from here
        traded = self._count_streams(lo, hi)
        if not traded:
            return hi
        date = self._packed_date()
        for index in traded:
            market = self.markets[index]
            market.fold()
            figures = np.array([0, 0, 0, market.open, market.high, market.low], dtype=np.int64)
            while True:
                size = trade_bytes(
                    self.out, lo, hi, index, self._strs["head"], date, self._code_strs[index],
                    self._strs["venue"], self.trade_buf, figures, market.instrument.fee_ppm,
                    clearing_seq,
                )  # fmt: skip
                if size >= 0:
                    break
                self.trade_buf = np.zeros(2 * -size, dtype=np.uint8)
            market.add_trades(bytes(self.trade_buf[:size]), *figures.tolist())
        return hi

    def _packed_date(self) -> np.ndarray:
        date = self.state.date
        if self._date[0] != date:
            self._date = (date, packed(date))
        return self._date[1]

    def _count_streams(self, lo: int, hi: int) -> list[int]:
        """Move the stream positions past the compiled run's rows out[lo:hi] (the rows carry
        no numbers, a decoder counts them as EventWriter would have: rows.tally); the indices
        of the instruments that traded."""
        state, ids = self.state, self.state.accounts.ids
        if self._counts.shape[0] != ids.shape[0]:  # the accounts grew
            self._counts = np.zeros(ids.shape[0], dtype=np.int64)
        touched = np.empty((2 * (hi - lo), 2), dtype=np.int64)
        strangers = np.empty(2 * (hi - lo), dtype=np.int64)
        trades = self._trades
        trades[:] = 0
        public, clearing, k, n = tally(
            self.out, lo, hi, ids, self._counts, touched, strangers, trades
        )
        state.public_seq += public
        state.clearing_seq += clearing
        seqs = state.private_seq
        for member, count in touched[:k].tolist():
            seqs[member] = seqs.get(member, 0) + count
        for member in strangers[:n].tolist():
            seqs[member] = seqs.get(member, 0) + 1
        return np.flatnonzero(trades).tolist() if clearing else []
