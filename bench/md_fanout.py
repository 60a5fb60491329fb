"""md_fanout: the market data feed of a real `cxe serve` under order-entry load.

For each run of RUNS (a subscriber count, and whether they take the feed from a relay),
back to back in one run and in that order (no subscribers first and again last, to see the
machine's drift): a fresh engine (bench.e2e's engine_run: `cxe serve` with fsync on, CEA21
open), for a relayed run a `cxe relay` of its feed (engine.gateway.relay: the engine then has
one subscriber, the relay the many), `n` subscriber processes (bench.md_subscriber: a
MarketDataClient over every instrument, each in its own process, snapshots from the engine)
synced from a snapshot, then GATEWAYS gateway processes send the seeded stream of
e2e_throughput (bench.e2e: frames of records, replies read and decoded). Measured per run:
order entry in orders/s (first send of any gateway to last answer of any), the engine's CPU
per order while the gateways run (process, and its main thread: the service loop, which
publishes; ZeroMQ's I/O threads do the fan-out) and the share of the run its main thread was
on a CPU (`main_thread_busy`), each subscriber's updates/s (public events
applied, first to last), all subscribers' updates/s together, and the resyncs they made
(each one a gap seen) and snapshots asked again.

The subscribers and the relay run at niceness NICE (at 19 under SCHED_IDLE too:
`in_background`): they stand for other machines, the relay for a fan-out tier's. And the
engine's service loop (its main thread) runs on a CPU of its own (`pin`, the default when
the machine has two CPUs or more): an exchange gives its matching loop a core. On a machine
of few cores fifty busy Python processes at the engine's priority take the CPU from it and
from the gateways (the scheduler gives each runnable process its share), which measures the
machine, not the feed. With `pin`, CPU 0 holds the loop alone; the engine's ZeroMQ I/O
threads (which write every message to each subscriber's connection: the feed's cost in the
engine), the gateways, the relay, the subscribers and this process share the other CPUs.
`python -m bench.md_fanout ORDERS NICE [pin]` runs it at another niceness (0: the same
priority as the engine) and pinned or not (other programs on the machine still share CPU 0).

Invariants (else WrongResult): every order is answered once, the engine's seq counts them
and its journal replays to the state hash it reported (bench.e2e.check_engine); every
subscriber ends at the replayed exchange's public stream position with local books equal to
the replayed exchange's depth for every instrument. Timings are never asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from bench.book import WrongResult
from bench.e2e import MARKET, cpu_seconds, day_of, engine_run, run_gateways, throughput_of
from engine.core import Exchange
from engine.gateway.marketdata_client import MarketDataClient, Synced
from engine.types import Side

SUBSCRIBER = [sys.executable, "-m", "bench.md_subscriber"]
RELAY = [sys.executable, "-m", "engine.cli", "relay", "--bind", "tcp://127.0.0.1:*"]
RUNS = ((0, False), (1, False), (10, False), (50, False), (50, True), (0, False))
GATEWAYS = 2  # as e2e_throughput
NICE = 19  # the subscribers' niceness (see the module docstring)
START_TIMEOUT_S = 120.0


def in_background(nice: int) -> None:
    """A subscriber's priority: niceness `nice`; at the lowest (19), Linux's SCHED_IDLE too,
    so it runs only on CPU time no other process of the machine wants, as a subscriber on
    another machine takes none of this one's (it still reads every event, later)."""
    os.nice(nice)
    if nice >= 19 and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def depth_of(exchange: Exchange) -> dict[str, list]:
    """Every instrument's depth levels [price, qty, orders], bids then asks, best first, as
    the subscriber prints its local books."""
    out = {}
    for code, market in exchange.markets.items():
        counts = market.book.order_counts()
        out[code] = [
            [list(level) for level in market.book.side_depth(side, counts[side])]
            for side in (Side.BUY, Side.SELL)
        ]
    return out


def stream_position(endpoints: dict[str, str]) -> int:
    """The public stream position a fresh snapshot is as of (the engine answers one only when
    it has published every public event it has emitted)."""
    client = MarketDataClient(endpoints["market_data"], endpoints["snapshots"])
    try:
        update = client.next_update(START_TIMEOUT_S)
        if not isinstance(update, Synced):
            raise WrongResult(f"md_fanout: no snapshot from the engine ({update!r})")
        return update.seq
    finally:
        client.close()


def start_relay(upstream: str, nice: int) -> tuple[subprocess.Popen, str]:
    """`cxe relay` of the engine's feed at niceness `nice`, and where it says subscribers
    connect."""
    relay = subprocess.Popen(
        [*RELAY, "--upstream", upstream, "--report", "3600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=partial(in_background, nice),
    )
    for line in relay.stdout:
        if "subscribers connect to " in line:
            return relay, line.rsplit(" ", 1)[1].strip()
    relay.wait()
    raise WrongResult(f"md_fanout: cxe relay did not start: {relay.stderr.read()}")


def drive_with_subscribers(
    count: int, orders: int, nice: int, pin: bool, seen: dict, relayed: bool = False
):
    """A drive for engine_run: with `pin`, give the engine's main thread (the service loop)
    CPU 0 and its other threads the others (this process and so its children keep the others
    too); with `relayed`, start a relay of the engine's feed at niceness `nice`; start
    `count` subscribers at niceness `nice` (on the relay's feed, if any) and wait until each
    holds its snapshot, run the gateways (the engine's CPU time meanwhile into `seen`:
    "cpu_s", "main_thread_cpu_s"), then let every subscriber reach the engine's final
    position and collect what each prints into seen["subscribers"]."""

    def drive(endpoints: dict) -> list[dict]:
        pid = endpoints["pid"]
        if pin:
            others = os.sched_getaffinity(0)  # fanout_benchmark left CPU 0 out
            for thread in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(thread), {0} if int(thread) == pid else others)
        relay, feed = None, [endpoints["market_data"], endpoints["snapshots"]]
        if relayed:
            relay, feed[0] = start_relay(endpoints["market_data"], nice)
            seen["relay"] = relay
        processes = [
            subprocess.Popen(
                [*SUBSCRIBER, *feed],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=partial(in_background, nice),
            )
            for _ in range(count)
        ]
        try:
            for process in processes:  # each says "ready" once it holds its snapshot
                if process.stdout.readline().strip() != "ready":
                    raise WrongResult(f"md_fanout: a subscriber failed: {process.stderr.read()}")
            cpu, main = cpu_seconds(pid), cpu_seconds(pid, pid)
            results = run_gateways(endpoints["orders"], orders, GATEWAYS)
            seen["cpu_s"] = cpu_seconds(pid) - cpu
            seen["main_thread_cpu_s"] = cpu_seconds(pid, pid) - main
            position = stream_position(endpoints)
            for process in processes:
                out, err = process.communicate(f"{position}\n", timeout=600)
                if process.returncode:
                    raise WrongResult(f"md_fanout: a subscriber failed: {err}")
                seen["subscribers"].append(json.loads(out))
            return results
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if relay is not None:
                relay.terminate()
                relay.wait(30)

    return drive


def fanout_run(
    root: Path,
    name: str,
    orders: int,
    count: int,
    nice: int = NICE,
    pin: bool = False,
    relayed: bool = False,
) -> dict:
    """One fresh engine loaded by the gateways with `count` subscribers, behind a relay if
    `relayed` (module docstring)."""
    seen: dict = {"subscribers": []}
    replayed = Exchange(MARKET)
    drive = drive_with_subscribers(count, orders, nice, pin, seen, relayed)
    results, engine = engine_run(root, name, True, drive, replayed, *day_of(orders))
    subscribers = seen["subscribers"]
    position, depth = replayed.state.public_seq, depth_of(replayed)
    for result in subscribers:
        if result["seq"] != position or result["depth"] != depth:
            raise WrongResult(
                f"md_fanout: a subscriber ended at {result['seq']} of {position} "
                "without the engine's books"
            )
    entry = throughput_of(results, engine)
    each = [r["events"] / max(r["last"] - r["first"], 1e-9) for r in subscribers]
    window = max((r["last"] for r in subscribers), default=0.0) - min(
        (r["first"] for r in subscribers), default=0.0
    )
    return {
        "subscribers": count,
        "relayed": relayed,
        "orders_per_s": entry["orders_per_s"],
        "seconds": entry["seconds"],
        "cpu_us_per_order": round(seen["cpu_s"] * 1e6 / orders, 2),
        "main_thread_cpu_us_per_order": round(seen["main_thread_cpu_s"] * 1e6 / orders, 2),
        "main_thread_busy": round(seen["main_thread_cpu_s"] / entry["seconds"], 3),
        "public_events": position,
        "updates_per_s_each": {
            "min": round(min(each)),
            "median": round(statistics.median(each)),
            "max": round(max(each)),
        }
        if each
        else None,
        "updates_per_s_all": round(sum(r["events"] for r in subscribers) / window)
        if window > 0
        else 0,
        "messages_each": round(statistics.median(r["messages"] for r in subscribers))
        if subscribers
        else 0,
        "resyncs": sum(r["resyncs"] for r in subscribers),
        "snapshot_retries": sum(r["snapshot_retries"] for r in subscribers),
        "engine_seq": engine["seq"],
    }


def run_name(run: dict) -> str:
    """A run as the ratios name it: "50", or "50 relayed"."""
    return f"{run['subscribers']}{' relayed' if run['relayed'] else ''}"


def fanout_benchmark(
    orders: int,
    runs: tuple[tuple[int, bool], ...] = RUNS,
    nice: int = NICE,
    pin: bool | None = None,
) -> dict:
    """md_fanout (module docstring): `value` is the largest count's subscribers' updates/s
    together (direct); `entry_ratio` each run's order entry rate (and engine CPU per order)
    over the runs without subscribers (their mean). No reference implementation:
    `reference` is None."""
    cpus = os.sched_getaffinity(0)
    if pin is None:
        pin = len(cpus) >= 2 and 0 in cpus
    if pin:  # the engine's loop takes CPU 0, this process and its children the others
        os.sched_setaffinity(0, cpus - {0})
    try:
        with tempfile.TemporaryDirectory(prefix="cxe-md-") as temporary:
            root = Path(temporary)
            results = [
                fanout_run(root, f"run{k}-{n}", orders, n, nice, pin, relayed)
                for k, (n, relayed) in enumerate(runs)
            ]
    finally:
        os.sched_setaffinity(0, cpus)
    bare = [r for r in results if not r["subscribers"]]
    base_rate = statistics.mean(r["orders_per_s"] for r in bare)
    base_cpu = statistics.mean(r["main_thread_cpu_us_per_order"] for r in bare)
    top = max(results, key=lambda r: (r["subscribers"], not r["relayed"]))
    return {
        "bench": "md_fanout",
        "value": top["updates_per_s_all"],
        "unit": f"updates/s to {top['subscribers']} subscribers",
        "reference": None,
        "entry_ratio": {
            run_name(r): round(r["orders_per_s"] / base_rate, 3)
            for r in results
            if r["subscribers"]
        },
        "main_thread_cpu_ratio": {
            run_name(r): round(r["main_thread_cpu_us_per_order"] / base_cpu, 3)
            for r in results
            if r["subscribers"]
        },
        "runs": results,
        "orders": orders,
        "gateways": GATEWAYS,
        "subscriber_nice": nice,
        "engine_pinned": pin,
        "target": "order entry with subscribers >= 0.9 of without",
    }


if __name__ == "__main__":
    orders, nice, *pin = sys.argv[1:4]
    print(json.dumps(fanout_benchmark(int(orders), nice=int(nice), pin=pin == ["pin"])))
