"""Executing a call auction at one price over the compiled book.

Data layout: the book's arrays (`engine.book.layout`); the best levels are rows of the window
or the far store, with their prices in meta; the price comes from the call price
search (callprice.py, or `auction.equilibrium` on the reference book).

Invariants: the best bid and the best ask trade, oldest first on both sides, while the bid is
at or above the price and the ask at or below it; every fill prints at the auction price with
code 1; no member trades with itself (the later of its two orders is cancelled STP_INCOMING);
the command returns NEED_EVENTS before changing anything unless the buffer has room for an
event per resting order. At the equilibrium price the rest no longer crosses unless
self-trade prevention removed orders (`auction.run_uncross` then uncrosses it at its own price).
"""

from __future__ import annotations

from numba import njit

from engine.book.eventrows import C_STP_INCOMING, K_CANCELLED, K_FILL, MIN_FREE_EVENTS, emit
from engine.book.layout import (
    EV_NONE,
    L_HEAD,
    L_TOTAL,
    M_BEST_ASK,
    M_BEST_ASK_PX,
    M_BEST_BID,
    M_BEST_BID_PX,
    M_COUNT_ASK,
    M_COUNT_BID,
    M_EV_MODE,
    M_FILL_QTY,
    M_FILLS,
    M_NEED,
    M_NEV,
    NEED_EVENTS,
    P_FLAGS,
    P_ID,
    P_OWNER,
    P_PRICE,
    P_QTY,
    P_SEQ,
)
from engine.book.levels import release, unlink


@njit(cache=True, _nrt=False)
def uncross(pool, lad, bm, ht, meta, ev, price):
    """Execute a call auction at one price: the best bid and the best ask trade (price-time
    priority on both sides) while the bid is at or above `price` and the ask at or below it.
    Fills carry code 1 (auction), the buy order as `oid`, the sell order as `oid2`. When the
    two orders at the head belong to one member, the one entered later is cancelled
    (STP_INCOMING): no trade between a member's own orders, in an auction either."""
    if meta[M_EV_MODE] != EV_NONE:
        need = meta[M_COUNT_BID] + meta[M_COUNT_ASK] + MIN_FREE_EVENTS
        if ev.shape[0] - meta[M_NEV] < need:
            meta[M_NEED] = meta[M_NEV] + need
            return NEED_EVENTS
    while meta[M_BEST_BID] >= 0 and meta[M_BEST_ASK] >= 0:
        b = meta[M_BEST_BID]
        a = meta[M_BEST_ASK]
        if meta[M_BEST_BID_PX] < price or meta[M_BEST_ASK_PX] > price:
            break
        buy = lad[b, L_HEAD]
        sell = lad[a, 4 + L_HEAD]
        if pool[buy, P_OWNER] == pool[sell, P_OWNER]:
            later = buy if pool[buy, P_SEQ] > pool[sell, P_SEQ] else sell
            emit(
                ev,
                meta,
                K_CANCELLED,
                pool[later, P_ID],
                0,
                pool[later, P_PRICE],
                pool[later, P_QTY],
                0,
                0,
                C_STP_INCOMING,
                pool[later, P_FLAGS] & 1,
                pool[later, P_OWNER],
                0,
            )
            unlink(pool, lad, bm, meta, later)
            release(pool, ht, meta, later)
            continue
        done = min(pool[buy, P_QTY], pool[sell, P_QTY])
        pool[buy, P_QTY] -= done
        pool[sell, P_QTY] -= done
        lad[b, L_TOTAL] -= done
        lad[a, 4 + L_TOTAL] -= done
        meta[M_FILLS] += 1
        meta[M_FILL_QTY] += done
        emit(
            ev,
            meta,
            K_FILL,
            pool[buy, P_ID],
            pool[sell, P_ID],
            price,
            done,
            pool[buy, P_QTY],
            pool[sell, P_QTY],
            1,
            0,
            pool[buy, P_OWNER],
            pool[sell, P_OWNER],
        )
        if pool[buy, P_QTY] == 0:
            unlink(pool, lad, bm, meta, buy)
            release(pool, ht, meta, buy)
        if pool[sell, P_QTY] == 0:
            unlink(pool, lad, bm, meta, sell)
            release(pool, ht, meta, sell)
    return 0
