"""The call-auction price over the compiled book's ladder, in one compiled call.

The same rules as `engine.book.auction.equilibrium`, the specification the reference book
uses: among the prices on tick from the best ask to the best bid, (1) maximum executable
volume min(B, S), where B is the bid quantity at the price or higher and S the ask quantity at
the price or lower; (2) minimum unmatched volume |B - S|; (3) market pressure: with a buy
surplus at every remaining candidate the highest, with a sell surplus at every one the lowest;
(4) otherwise the candidate nearest the reference, the higher of two equally near.

Data layout (engine.book.layout): `lad[idx, side * 4 + L_TOTAL]` is the quantity resting at
price `meta[M_BASE] + idx * meta[M_TICK]` on a side (0 buy, 1 sell); the occupancy bitmap
`bm` finds occupied levels (bitmap.find_ge); `meta[M_BEST_BID]` and `meta[M_BEST_ASK]` are
ladder indices (-1 when the side is empty), and the book crosses when the best bid's index is
at or above the best ask's.

B and S change only at levels, so the crossed range is walked as runs of ticks between them
(as `auction.crossed_runs` does over depth lists): O(levels in the crossed range) bitmap steps,
compiled, nothing allocated. The core recomputes the price after every call-phase command to
publish the indicative, so this is the call phase's hot path.
"""

from __future__ import annotations

from numba import njit

from engine.book.bitmap import find_ge
from engine.book.layout import L_TOTAL, M_BASE, M_BEST_ASK, M_BEST_BID, M_TICK

BID_TOTAL = L_TOTAL  # side 0's block of a ladder row
ASK_TOTAL = 4 + L_TOTAL  # side 1's block


@njit(cache=True, _nrt=False)
def _run_end(bm, meta, first, high):
    """The last index of the run starting at `first`: S grows at the next ask level above it,
    B falls just after the next bid level at or above it; never beyond `high`."""
    end = high
    ask = find_ge(bm, meta, 1, first + 1)
    if 0 <= ask <= end:
        end = ask - 1
    bid = find_ge(bm, meta, 0, first)
    if 0 <= bid < end:
        end = bid
    return end


@njit(cache=True, _nrt=False)
def _nearest(first_price, last_price, reference, tick):
    """The price on tick in [first_price, last_price] nearest `reference`, the higher of two
    equally near."""
    if reference <= first_price:
        return first_price
    if reference >= last_price:
        return last_price
    below = first_price + (reference - first_price) // tick * tick
    if below == reference or reference - below < below + tick - reference:
        return below
    return below + tick


@njit(cache=True, _nrt=False)
def call_price(lad, bm, meta, reference):
    """(price, volume, buy_qty, sell_qty) of the uncross; price -1 when the book does not
    cross."""
    low = meta[M_BEST_ASK]
    high = meta[M_BEST_BID]
    if low < 0 or high < 0 or high < low:
        return -1, 0, 0, 0
    base, tick = meta[M_BASE], meta[M_TICK]
    bids_in_range = 0  # no bid lies above the best bid: this is B at the lowest candidate
    level = find_ge(bm, meta, 0, low)
    while 0 <= level <= high:
        bids_in_range += lad[level, BID_TOTAL]
        level = find_ge(bm, meta, 0, level + 1)
    # pass 1: the largest volume, then the least unmatched volume at it
    best_volume, least = -1, 0
    first, buy, sell = low, bids_in_range, 0
    while first <= high:
        sell += lad[first, ASK_TOTAL]  # no ask lies below the best ask
        end = _run_end(bm, meta, first, high)
        volume, unmatched = min(buy, sell), abs(buy - sell)
        if volume > best_volume or (volume == best_volume and unmatched < least):
            best_volume, least = volume, unmatched
        buy -= lad[end, BID_TOTAL]  # only the run's last tick can hold a bid level
        first = end + 1
    # pass 2: the runs left, lowest first: market pressure, or nearest the reference
    all_buy_surplus, all_sell_surplus = True, True
    lowest = highest = nearest = -1
    lowest_qty = highest_qty = nearest_qty = (0, 0)
    first, buy, sell = low, bids_in_range, 0
    while first <= high:
        sell += lad[first, ASK_TOTAL]
        end = _run_end(bm, meta, first, high)
        if min(buy, sell) == best_volume and abs(buy - sell) == least:
            first_price, last_price = base + first * tick, base + end * tick
            all_buy_surplus &= buy > sell
            all_sell_surplus &= buy < sell
            if lowest < 0:
                lowest, lowest_qty = first_price, (buy, sell)
            highest, highest_qty = last_price, (buy, sell)
            price = _nearest(first_price, last_price, reference, tick)
            # ascending runs: at an equal distance the later, higher price wins
            if nearest < 0 or abs(price - reference) <= abs(nearest - reference):
                nearest, nearest_qty = price, (buy, sell)
        buy -= lad[end, BID_TOTAL]
        first = end + 1
    if all_buy_surplus:
        return highest, best_volume, highest_qty[0], highest_qty[1]
    if all_sell_surplus:
        return lowest, best_volume, lowest_qty[0], lowest_qty[1]
    return nearest, best_volume, nearest_qty[0], nearest_qty[1]
