"""Random command streams covering every command kind, valid and invalid, for both books.

`random_commands` returns an (n, 10) int64 array in the batch layout (engine.book.layout C_*),
drawn with a seeded numpy generator; `engine.book.book.apply_row` sends a row to either book.
Prices are mostly passive (a deep book) with marketable, off-tick, out-of-band and far-away
prices mixed in; ids are mostly fresh, sometimes live (duplicates), sometimes invalid. Prices
centre on 100 ticks, and the streams are run with a band of 90..110 ticks: both edges and one
tick beyond each (`BAND_PRICES`) are sent, as adds and amends of both sides, so a band check
that moves by one tick makes the books disagree.
"""

from __future__ import annotations

import numpy as np

from engine.book.layout import CMD_ADD, CMD_AMEND, CMD_CANCEL, CMD_PICK, COMMAND_ROWS

BAND_PRICES = (89, 90, 110, 111)  # ticks: one beyond the low edge, both edges, one beyond the high


def random_commands(n: int, seed: int, tick: int = 1, far: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, COMMAND_ROWS), dtype=np.int64)
    next_id = 1
    issued: list[int] = []
    for i in range(n):
        side = int(rng.integers(0, 2))
        sign = -1 if side == 0 else 1
        price = (100 + sign * int(rng.integers(-2, 10))) * tick
        r = rng.random()
        if r < 0.03:
            price = int(rng.choice([0, -tick, tick + 1, 2**23 * tick]))
        elif r < 0.07:
            price = int(rng.choice(BAND_PRICES)) * tick
        elif far and r < 0.10:
            price = int(rng.integers(1, 50_000)) * tick
        qty = int(rng.integers(1, 30)) if rng.random() > 0.03 else int(rng.choice([0, -1, 2**41]))
        owner = int(rng.integers(0, 4))
        kind = rng.random()
        old = int(rng.choice(issued)) if issued else 1
        if kind < 0.55 or not issued:
            oid = old if rng.random() < 0.02 else next_id
            otype = 2 if rng.random() < 0.12 else 1
            tif = int(rng.choice([0, 0, 0, 1, 2]))
            stp = int(rng.integers(0, 3))
            out[i] = (CMD_ADD, oid, owner, side, price, qty, otype, tif, stp, 0)
        elif kind < 0.80:
            who = -1 if rng.random() < 0.7 else owner
            out[i] = (CMD_CANCEL, old, who, 0, 0, 0, 0, 0, 0, 0)
        elif kind < 0.92:
            who = -1 if rng.random() < 0.8 else owner
            out[i] = (CMD_AMEND, old, who, 0, price, qty, 0, 0, 0, 0)
        else:
            out[i] = (CMD_PICK, next_id, owner, side, 0, min(abs(qty), 8) or 1, 0, 0, 0, old)
        issued.append(next_id)
        next_id += 1
    return out
