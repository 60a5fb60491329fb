"""Seeded order-flow generator for benchmarks and tests (deterministic on every machine).

The mix follows a continuous market: about 60% passive limit orders a few ticks from the
touch, 30% cancels of live passive orders, 10% marketable orders (half IOC, half day orders
whose remainder rests) that partially fill across levels. With `amend` > 0 that share of the
commands amends a live passive order (new passive price on its side, new quantity) instead of
adding one; `amend=0` gives exactly the stream it gave before amends existed. The mid price
walks a tick at a time inside the band. Output: an (n, 10) int64 command array in
`engine.book.layout` C_* order. Cancels and amends name orders the generator still thinks
live; one that has traded away since is rejected UNKNOWN_ORDER, as on a real feed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.book.layout import CMD_ADD, CMD_AMEND, CMD_CANCEL, COMMAND_ROWS

DEFAULT_MID = 6000  # 60.00 CNY per tonne
DEFAULT_BAND = (5400, 6600)  # +-10%
MEMBERS = 50


@njit(cache=True)
def _passive_offset():
    return 1 + int(np.random.exponential(4.0))


@njit(cache=True)
def _passive_qty():
    return 1 + int(np.random.exponential(30.0))


@njit(cache=True)
def _generate(n, seed, mid, low, high, members, amend, out):
    np.random.seed(seed)
    live = np.empty(n, dtype=np.int64)
    live_side = np.empty(n, dtype=np.int64)
    n_live = 0
    next_id = 1
    for i in range(n):
        r = np.random.random()
        if r < 0.30 and n_live > 0:
            j = np.random.randint(0, n_live)
            out[i, 0] = CMD_CANCEL
            out[i, 1] = live[j]
            out[i, 2] = -1
            live[j] = live[n_live - 1]
            live_side[j] = live_side[n_live - 1]
            n_live -= 1
            continue
        if r < 0.30 + amend and n_live > 0:
            j = np.random.randint(0, n_live)
            sign = -1 if live_side[j] == 0 else 1
            out[i, 0] = CMD_AMEND
            out[i, 1] = live[j]
            out[i, 2] = -1
            out[i, 4] = min(max(mid + sign * _passive_offset(), low), high)
            out[i, 5] = _passive_qty()
            continue
        side = np.random.randint(0, 2)
        sign = -1 if side == 0 else 1
        out[i, 0] = CMD_ADD
        out[i, 1] = next_id
        out[i, 2] = np.random.randint(0, members)
        out[i, 3] = side
        out[i, 6] = 1  # limit
        if r < 0.90:
            offset = _passive_offset()
            out[i, 5] = _passive_qty()
            live[n_live] = next_id
            live_side[n_live] = side
            n_live += 1
        else:
            offset = -(1 + int(np.random.exponential(2.0)))
            out[i, 5] = 1 + int(np.random.exponential(120.0))
            if np.random.random() < 0.5:
                out[i, 7] = 1  # IOC
            else:
                live[n_live] = next_id
                live_side[n_live] = side
                n_live += 1
        out[i, 4] = min(max(mid + sign * offset, low), high)
        next_id += 1
        if np.random.random() < 0.02:
            step = 1 if np.random.random() < 0.5 else -1
            mid = min(max(mid + step, low + 20), high - 20)


def mixed_workload(
    n: int,
    seed: int = 1,
    mid: int = DEFAULT_MID,
    band: tuple[int, int] = DEFAULT_BAND,
    members: int = MEMBERS,
    amend: float = 0.0,
) -> np.ndarray:
    """n commands of the realistic mix; the same arguments always give the same array."""
    if not 0.0 <= amend <= 0.6:
        raise ValueError(f"amend is a share of the passive orders' 60%, got {amend}")
    out = np.zeros((n, COMMAND_ROWS), dtype=np.int64)
    _generate(n, seed, mid, band[0], band[1], members, amend, out)
    return out
