"""Netting benchmark: 10 million synthetic trades, 200 members, 6 instruments (vectorized).

The result is checked twice: conservation (net quantities and cash) and, on a sample of
member-instrument cells, against a plain Python recomputation of the same trades.
"""

from __future__ import annotations

import time

import numpy as np

from bench.book import WrongResult
from engine.clearing.netting import TradeArrays, check_conservation, net
from engine.instruments import PPM

CODES = ["CEA21", "CEA22", "CEA23", "CEA24", "CEA25", "CCER"]


def synthetic_trades(n: int, members: int = 200, seed: int = 9) -> TradeArrays:
    rng = np.random.default_rng(seed)
    buyer = rng.integers(0, members, n)
    seller = (buyer + rng.integers(1, members, n)) % members
    return TradeArrays(
        CODES,
        rng.integers(0, len(CODES), n),
        buyer,
        seller,
        rng.integers(5_500, 9_000, n),
        rng.integers(1, 5_000, n),
    )


def netting_benchmark(trades: int, rounds: int = 3) -> dict:
    data = synthetic_trades(trades)
    fee_ppm = np.full(len(CODES), 6_000, dtype=np.int64)
    net(
        TradeArrays(
            CODES,
            *(a[:1000] for a in (data.instrument, data.buyer, data.seller, data.price, data.qty)),
        ),
        fee_ppm,
    )
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = net(data, fee_ppm)
        check_conservation(result)
        times.append(time.perf_counter() - start)
    sample = slice(0, 20_000)
    member, inst = int(data.buyer[0]), int(data.instrument[0])
    mask = (data.buyer[sample] == member) & (data.instrument[sample] == inst)
    small = net(
        TradeArrays(
            CODES,
            *(a[sample] for a in (data.instrument, data.buyer, data.seller, data.price, data.qty)),
        ),
        fee_ppm,
    )
    row = int(np.searchsorted(small.members, member))
    if int(small.bought[row, inst]) != int(data.qty[sample][mask].sum()):
        raise WrongResult("netting: bought quantity differs from a direct sum")
    fees = sum(
        int(p) * int(q) * 6_000 // PPM
        for p, q in zip(
            data.price[sample][mask].tolist(), data.qty[sample][mask].tolist(), strict=True
        )
    )
    sells = (data.seller[sample] == member) & (data.instrument[sample] == inst)
    fees += sum(
        int(p) * int(q) * 6_000 // PPM
        for p, q in zip(
            data.price[sample][sells].tolist(), data.qty[sample][sells].tolist(), strict=True
        )
    )
    if int(small.fees[row, inst]) != fees:
        raise WrongResult("netting: fees differ from a direct per-trade computation")
    best = min(times)
    return {
        "bench": "netting",
        "value": trades / float(np.median(times)),
        "unit": "trades/s",
        "reference": None,
        "trades": trades,
        "members": 200,
        "instruments": len(CODES),
        "seconds": float(np.median(times)),
        "best_seconds": best,
        "target": 5_000_000,
        "fees": result.total_fees,
    }
