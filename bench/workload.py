"""Seeded order-flow generator for benchmarks and tests (deterministic on every machine).

The mix follows a continuous market: about 60% passive limit orders a few ticks from the
touch, 30% cancels of live passive orders, 10% marketable orders (half IOC, half day orders
whose remainder rests) that partially fill across levels. The mid price walks a tick at a time
inside the band. Output: an (n, 10) int64 command array in `engine.book.layout` C_* order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.book.layout import CMD_ADD, CMD_CANCEL, COMMAND_ROWS

DEFAULT_MID = 6000  # 60.00 CNY per tonne
DEFAULT_BAND = (5400, 6600)  # +-10%
MEMBERS = 50


@njit(cache=True)
def _generate(n, seed, mid, low, high, members, out):
    np.random.seed(seed)
    live = np.empty(n, dtype=np.int64)
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
            n_live -= 1
            continue
        side = np.random.randint(0, 2)
        sign = -1 if side == 0 else 1
        out[i, 0] = CMD_ADD
        out[i, 1] = next_id
        out[i, 2] = np.random.randint(0, members)
        out[i, 3] = side
        out[i, 6] = 1  # limit
        if r < 0.90:
            offset = 1 + int(np.random.exponential(4.0))
            out[i, 5] = 1 + int(np.random.exponential(30.0))
            live[n_live] = next_id
            n_live += 1
        else:
            offset = -(1 + int(np.random.exponential(2.0)))
            out[i, 5] = 1 + int(np.random.exponential(120.0))
            if np.random.random() < 0.5:
                out[i, 7] = 1  # IOC
            else:
                live[n_live] = next_id
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
) -> np.ndarray:
    """n commands of the realistic mix; the same (n, seed, ...) always gives the same array."""
    out = np.zeros((n, COMMAND_ROWS), dtype=np.int64)
    _generate(n, seed, mid, band[0], band[1], members, out)
    return out
