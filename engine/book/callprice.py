"""The call-auction price over the compiled book's ladder, in one compiled call.

The same rules as `engine.book.auction.equilibrium`, the specification the reference book
uses: among the prices on tick from the best ask to the best bid, (1) maximum executable
volume min(B, S), where B is the bid quantity at the price or higher and S the ask quantity at
the price or lower; (2) minimum unmatched volume |B - S|; (3) market pressure: with a buy
surplus at every remaining candidate the highest, with a sell surplus at every one the lowest;
(4) otherwise the candidate nearest the reference, the higher of two equally near.

Data layout (engine.book.layout): levels are rows of the window or the far store, found in
price order by window.py (`level_ceil`, `row_of`); `lad[row, side * 4 + L_TOTAL]` is the
quantity resting there on a side (0 buy, 1 sell); `meta[M_BEST_BID_PX]` and
`meta[M_BEST_ASK_PX]` are the best prices (when the rows `meta[M_BEST_BID]`,
`meta[M_BEST_ASK]` are >= 0), and the book crosses when the best bid is at or above the best
ask.

B and S change only at levels, so the crossed range is walked as runs of ticks between them
(as `auction.crossed_runs` does over depth lists): O(levels in the crossed range) level steps,
compiled, nothing allocated. The core recomputes the price after every call-phase command to
publish the indicative, so this is the call phase's hot path.
"""

from __future__ import annotations

from numba import njit

from engine.book.layout import L_TOTAL, M_BEST_ASK, M_BEST_ASK_PX, M_BEST_BID, M_BEST_BID_PX, M_TICK
from engine.book.window import level_ceil, level_price, row_of


@njit(cache=True, _nrt=False)
def _total_at(lad, meta, side, price):
    """Quantity resting at `price` on `side` (0 when no level)."""
    row = row_of(lad, meta, side, price)
    return 0 if row < 0 else lad[row, side * 4 + L_TOTAL]


@njit(cache=True, _nrt=False)
def _run_end(lad, bm, meta, first, high):
    """The last price of the run starting at `first`: S grows at the next ask level above it,
    B falls just after the next bid level at or above it; never beyond `high`."""
    tick = meta[M_TICK]
    end = high
    ask = level_ceil(lad, bm, meta, 1, first + tick)
    if ask >= 0:
        price = level_price(lad, meta, 1, ask)
        if price <= end:
            end = price - tick
    bid = level_ceil(lad, bm, meta, 0, first)
    if bid >= 0:
        price = level_price(lad, meta, 0, bid)
        if price < end:
            end = price
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
    if meta[M_BEST_ASK] < 0 or meta[M_BEST_BID] < 0:
        return -1, 0, 0, 0
    low = meta[M_BEST_ASK_PX]
    high = meta[M_BEST_BID_PX]
    if high < low:
        return -1, 0, 0, 0
    tick = meta[M_TICK]
    bids_in_range = 0  # no bid lies above the best bid: this is B at the lowest candidate
    level = level_ceil(lad, bm, meta, 0, low)
    while level >= 0:
        price = level_price(lad, meta, 0, level)
        if price > high:
            break
        bids_in_range += lad[level, L_TOTAL]
        level = level_ceil(lad, bm, meta, 0, price + tick)
    # pass 1: the largest volume, then the least unmatched volume at it
    best_volume, least = -1, 0
    first, buy, sell = low, bids_in_range, 0
    while first <= high:
        sell += _total_at(lad, meta, 1, first)  # no ask lies below the best ask
        end = _run_end(lad, bm, meta, first, high)
        volume, unmatched = min(buy, sell), abs(buy - sell)
        if volume > best_volume or (volume == best_volume and unmatched < least):
            best_volume, least = volume, unmatched
        buy -= _total_at(lad, meta, 0, end)  # only the run's last tick can hold a bid level
        first = end + tick
    # pass 2: the runs left, lowest first: market pressure, or nearest the reference
    all_buy_surplus, all_sell_surplus = True, True
    lowest = highest = nearest = -1
    lowest_qty = highest_qty = nearest_qty = (0, 0)
    first, buy, sell = low, bids_in_range, 0
    while first <= high:
        sell += _total_at(lad, meta, 1, first)
        end = _run_end(lad, bm, meta, first, high)
        if min(buy, sell) == best_volume and abs(buy - sell) == least:
            all_buy_surplus &= buy > sell
            all_sell_surplus &= buy < sell
            if lowest < 0:
                lowest, lowest_qty = first, (buy, sell)
            highest, highest_qty = end, (buy, sell)
            price = _nearest(first, end, reference, tick)
            # ascending runs: at an equal distance the later, higher price wins
            if nearest < 0 or abs(price - reference) <= abs(nearest - reference):
                nearest, nearest_qty = price, (buy, sell)
        buy -= _total_at(lad, meta, 0, end)
        first = end + tick
    if all_buy_surplus:
        return highest, best_volume, highest_qty[0], highest_qty[1]
    if all_sell_surplus:
        return lowest, best_volume, lowest_qty[0], lowest_qty[1]
    return nearest, best_volume, nearest_qty[0], nearest_qty[1]
