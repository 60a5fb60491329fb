"""python -m bench [--quick] [--json] [--only NAME ...]: run the benchmarks, print results.

With --json every result is one JSON object per line:
{"bench": NAME, "value": X, "unit": ..., "reference": Y, "ratio": X/Y, ...}
where `reference` is the reference implementation measured in the same run. Timings are
never asserted; the final state of every run is (a wrong answer raises).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from bench.book import book_benchmarks, memory_benchmark
from bench.capture_live import capture_benchmark
from bench.clearing import netting_benchmark
from bench.e2e import e2e_latency, e2e_throughput
from bench.exchange import (
    batch_benchmark,
    call_phase_benchmark,
    exchange_benchmark,
    rejects_benchmark,
    uncross_benchmark,
)
from bench.md_fanout import fanout_benchmark
from bench.recovery import recovery_benchmark
from bench.replay import lobster_benchmark, parallel_benchmark, synthetic_benchmark
from bench.wide import wide_benchmark


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


NAMES = (
    "kernel_batch",
    "book_apply",
    "reference_book",
    "book_memory",
    "exchange_apply",
    "exchange_batch",
    "exchange_rejects",
    "uncross",
    "call_phase",
    "netting",
    "md_fanout",
    "capture_live",
    "replay_lobster",
    "replay_parallel",
    "replay_synthetic",
    "recovery",
    "e2e_throughput",
    "e2e_latency",
    "replay_wide",
)


def run(names: set[str] | None, quick: bool):
    def wanted(*group: str) -> bool:
        return names is None or bool(names & set(group))

    if wanted("kernel_batch", "book_apply", "reference_book"):
        yield from book_benchmarks(messages=1_000_000, rounds=3 if quick else 7)
    if wanted("book_memory"):
        yield memory_benchmark(orders=1_000_000, reference_orders=100_000 if quick else 1_000_000)
    if wanted("exchange_apply"):
        yield exchange_benchmark(messages=200_000 if quick else 1_000_000)
    if wanted("exchange_batch"):
        yield batch_benchmark(messages=200_000 if quick else 1_000_000)
    if wanted("exchange_rejects"):
        yield rejects_benchmark(orders=100_000 if quick else 400_000)
    if wanted("uncross"):
        yield uncross_benchmark(orders=100_000)
    if wanted("call_phase"):
        yield call_phase_benchmark(orders=20_000)
    if wanted("netting"):
        yield netting_benchmark(trades=10_000_000)
    if wanted("md_fanout"):
        yield fanout_benchmark(orders=100_000 if quick else 400_000)
    if wanted("capture_live"):
        yield capture_benchmark(trades=20_000 if quick else 100_000)
    if wanted("replay_lobster"):
        result = lobster_benchmark()
        if result is not None:
            yield result
    if wanted("replay_parallel") and (result := parallel_benchmark()) is not None:
        yield result
    if wanted("replay_synthetic"):
        yield synthetic_benchmark(messages=2_000_000 if quick else 10_000_000)
    if wanted("recovery"):
        yield recovery_benchmark(commands=1_000_000, rounds=3 if quick else 5)
    if wanted("e2e_throughput"):
        yield e2e_throughput(orders=40_000 if quick else 400_000)
    if wanted("e2e_latency"):
        yield e2e_latency(seconds=0.75 if quick else 5.0, warmup=0.25 if quick else 1.0)
    if wanted("replay_wide"):
        yield wide_benchmark(messages=500_000 if quick else 2_000_000, rounds=3 if quick else 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (same workloads)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=NAMES,
        help=f"run only these benchmarks: {', '.join(NAMES)}",
    )
    args = parser.parse_args(argv)
    host = machine()
    if not args.json:
        print(f"machine: {host}")
    for result in run(set(args.only) if args.only else None, args.quick):
        reference = result["reference"]
        result["ratio"] = result["value"] / reference if reference else None
        result["machine"] = host
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            versus = (
                f"reference {reference:>14,.1f}  ratio {result['ratio']:.2f}"
                if reference
                else "(no reference implementation)"
            )
            value = f"{result['bench']:<16} {result['value']:>14,.1f} {result['unit']:<12}"
            print(f"{value} {versus}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
