"""End-to-end benchmarks of the engine service: a real `cxe serve` process, real gateway processes.

e2e_throughput: GATEWAYS separate gateway processes (`python -m bench.e2e gateway ...`) log on
to a fresh `cxe serve` on loopback TCP and send their share of one seeded stream (the mixed
workload of bench.workload, CEA21, members of each gateway: they trade with each other) as
frames of FRAME orders, at most WINDOW frames unanswered per gateway, reading and decoding
every reply as a gateway does (an order id learnt from an Accepted is what its later cancel
names; a cancel of an order not yet acknowledged names order 0 and is refused). Orders/s are
counted from the first send of any gateway to the last answer of any: RECORDS frames with
fsync on and off, and MESSAGES frames (msgpack NewOrder/CancelOrder) with fsync on.
e2e_latency: one gateway sends single-order frames on a fixed schedule (RATE orders/s); the
latency of an order is the receive time of its answer minus its intended send time (no
coordinated omission: a late send counts against the engine's figure), after a warm-up:
one-record RECORDS frames with fsync off and on, one-message MESSAGES frames with fsync off;
the raw fdatasync latency of the same disk (100 bytes + os.fdatasync) is measured in the same
run. Each run also reports the engine process's CPU time per order, the figure that does not
depend on what else shares the machine. Each engine is sized for the day it runs
(`--day-orders`, the orders of the run), as an operator sizes it for the busiest day.
`python -m bench.e2e profile ORDERS GATEWAYS on|off [gateway options]` runs the service in
this process under cProfile (the engine code is not touched) and prints the time per order of
each part of a turn.

Invariants (else WrongResult): every command sent is answered exactly once (Accepted or
Rejected, a requested Cancelled), the engine's seq equals the commands sent plus the opening
commands (StartOfDay, OpenCall, Uncross), and a fresh replay of its journal reaches the state
hash the running engine reported. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zmq

from bench.book import WrongResult
from bench.recovery import workload_records
from bench.workload import DEFAULT_MID, mixed_workload
from engine.book.layout import C_OID
from engine.codec import REC_CANCEL, command_of
from engine.config import default_market
from engine.core import Exchange
from engine.gateway import wire
from engine.gateway.client import GatewayClient
from engine.journal.segments import catch_up
from engine.protocol import Accepted, Cancelled, CancelOrder, Rejected
from engine.types import CancelReason

if TYPE_CHECKING:
    from tests.support.engine import EngineProcess

MARKET = default_market()
CODE = MARKET.instruments[0].code  # CEA21
CODES = [i.code for i in MARKET.instruments]
GATEWAY_IDS = [g.id for g in MARKET.gateways]
OPENING = 3  # StartOfDay, OpenCall, Uncross
FRAME = 256  # orders per frame
WINDOW = 8  # frames in flight per gateway
RATE = 20_000  # orders/s offered in the latency benchmark
SEED = 7
ANSWER_TIMEOUT_S = 30.0


# -- the workload (the same in every process) -------------------------------------------------


def gateway_share(n: int, index: int, gateways: int, seed: int = SEED):
    """Gateway `index`'s commands of one seeded stream of `n`, split by member (workload member
    m is gateway m % gateways's member (m // gateways) % 2), on CEA21 around its reference
    price: (records with cancels naming the generator's order number, each record's generator
    order number, the index of each record in the stream)."""
    records = workload_records(n, seed)
    generator_oid = mixed_workload(n, seed=seed)[:, C_OID]
    mine = np.flatnonzero(records["member"] % gateways == index)
    records, generator_oid = records[mine], generator_oid[mine]
    members = np.asarray(MARKET.gateways[index].members)
    records["member"] = members[(records["member"] // gateways) % 2]
    adds = records["kind"] != REC_CANCEL
    records["price"][adds] += MARKET.instruments[0].reference_price - DEFAULT_MID
    return records, generator_oid, mine


class Flow:
    """A gateway's side of the stream: the frames to send (cancels name the engine's order id
    learnt from the Accepted of the order) and the answers read back."""

    def __init__(self, n: int, index: int, gateways: int, messages: bool) -> None:
        self.records, self.generator_oid, self.stream_index = gateway_share(n, index, gateways)
        self.position = {int(i): k for k, i in enumerate(self.stream_index)}
        self.cancels = self.records["kind"] == REC_CANCEL
        self.order_ids = np.zeros(int(self.generator_oid.max()) + 1, dtype=np.int64)
        self.messages = messages
        self.commands = [command_of(r, CODES) for r in self.records] if messages else None
        self.answered = self.fills = 0
        self.rejects: dict[str, int] = {}
        self.unmapped_cancels = 0

    def __len__(self) -> int:
        return len(self.records)

    def frame(self, start: int, stop: int) -> list[bytes]:
        """The two frames carrying commands start..stop-1."""
        cancels = np.flatnonzero(self.cancels[start:stop]) + start
        targets = self.order_ids[self.generator_oid[cancels]]
        self.unmapped_cancels += int(np.count_nonzero(targets == 0))
        if not self.messages:
            records = self.records[start:stop].copy()
            records["order_id"][cancels - start] = targets
            return [wire.RECORDS, records.tobytes()]
        commands = self.commands[start:stop]
        for k, target in zip((cancels - start).tolist(), targets.tolist(), strict=True):
            c = commands[k]
            commands[k] = CancelOrder(c.cl_ord_id, c.member, c.instrument, target)
        return wire.messages_frame(commands)

    def take(self, body: bytes, answered_at: list[int] | None = None, now: int = 0) -> None:
        """Count the answers in a reply body; learn order ids; note answer times by position."""
        answered = 0
        for reply in wire.unpack(body):
            kind = type(reply)
            if kind is Accepted:
                k = self.position[int(reply.cl_ord_id[1:])]
                self.order_ids[self.generator_oid[k]] = reply.order_id
            elif kind is Rejected:
                name = reply.code.name
                self.rejects[name] = self.rejects.get(name, 0) + 1
                k = self.position[int(reply.cl_ord_id[1:])]
            elif kind is Cancelled:
                if reply.reason != CancelReason.USER:
                    continue
                k = self.cancel_of[reply.order_id] if answered_at is not None else 0
            elif kind is wire.SessionRejected:
                raise WrongResult(f"e2e: the engine refused a frame: {reply.text}")
            else:
                self.fills += 1
                continue
            answered += 1
            if answered_at is not None:
                answered_at[k] = now
        self.answered += answered


# -- gateway processes ----------------------------------------------------------------------------


def recv_body(socket: zmq.Socket, timeout_s: float) -> bytes:
    if not socket.poll(int(timeout_s * 1000), zmq.POLLIN):
        raise WrongResult(f"e2e: no answer from the engine within {timeout_s} s")
    frames = socket.recv_multipart()
    return frames[1]


def throughput_gateway(flow: Flow, client: GatewayClient, frame: int, window: int) -> dict:
    socket = client.socket
    total, sent, limit = len(flow), 0, frame * window
    started = time.monotonic_ns()
    cpu = time.process_time()
    while flow.answered < total:
        while sent < total and sent - flow.answered < limit:
            stop = min(sent + frame, total)
            socket.send_multipart(flow.frame(sent, stop), copy=False)
            sent = stop
        flow.take(recv_body(socket, ANSWER_TIMEOUT_S))
        while socket.poll(0, zmq.POLLIN):
            flow.take(socket.recv_multipart()[1])
    return {
        "sent": sent,
        "answered": flow.answered,
        "first_send_ns": started,
        "last_answer_ns": time.monotonic_ns(),
        "cpu_s": time.process_time() - cpu,
        "fills": flow.fills,
        "rejects": flow.rejects,
        "unmapped_cancels": flow.unmapped_cancels,
    }


def fine_timers() -> None:
    """Sleep to the microsecond: the default 50 us timer slack would delay every send."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: coarser sleeps
        ctypes.CDLL(None).prctl(29, 1000)  # PR_SET_TIMERSLACK, ns


def latency_gateway(flow: Flow, client: GatewayClient, rate: int, warmup_s: float) -> dict:
    """Open loop: command k is due at start + k / rate whatever came back; its latency is the
    time its answer was read minus that due time."""
    fine_timers()
    socket, total = client.socket, len(flow)
    fd = socket.getsockopt(zmq.FD)
    interval = 1_000_000_000 // rate
    answered_at = [0] * total
    flow.cancel_of = {}
    sent_late = np.zeros(total, dtype=np.int64)
    start = time.monotonic_ns() + 10_000_000
    due = start + interval * np.arange(total, dtype=np.int64)
    due_list = due.tolist()
    k = 0
    while flow.answered < total:
        now = time.monotonic_ns()
        while k < total and due_list[k] <= now:
            frames = flow.frame(k, k + 1)
            if flow.cancels[k]:
                flow.cancel_of[int(flow.order_ids[flow.generator_oid[k]])] = k
            socket.send_multipart(frames, copy=False)
            now = time.monotonic_ns()
            sent_late[k] = now - due_list[k]
            k += 1
        while socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            body = socket.recv_multipart()[1]
            flow.take(body, answered_at, time.monotonic_ns())
        if flow.answered == total:
            break
        if k < total:
            wait = (due_list[k] - time.monotonic_ns()) / 1e9
            if wait > 0:
                select.select([fd], [], [], wait)
        elif not select.select([fd], [], [], ANSWER_TIMEOUT_S)[0] and not (
            socket.getsockopt(zmq.EVENTS) & zmq.POLLIN
        ):
            missing = [i for i, t in enumerate(answered_at) if not t][:5]
            raise WrongResult(
                f"e2e: {total - flow.answered} answers missing after the last send, e.g. "
                f"{[(i, flow.records[i]) for i in missing]}"
            )
    measured = due >= start + int(warmup_s * 1e9)
    latency = (np.asarray(answered_at, dtype=np.int64) - due)[measured] / 1000
    return {
        "sent": total,
        "answered": flow.answered,
        "measured": int(measured.sum()),
        **percentiles(latency),
        "late_send_p99_us": float(np.percentile(sent_late[measured], 99) / 1000),
        "offered_rate": rate,
        "rejects": flow.rejects,
    }


def percentiles(us: np.ndarray) -> dict:
    return {
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
        "p999_us": round(float(np.percentile(us, 99.9)), 1),
        "max_us": round(float(us.max()), 1),
    }


def gateway_main(argv: list[str]) -> int:
    """One gateway process: log on, say "ready", wait for a line on stdin, run, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e gateway")
    parser.add_argument("endpoint")
    parser.add_argument("index", type=int)
    parser.add_argument("gateways", type=int)
    parser.add_argument("orders", type=int)
    parser.add_argument("--messages", action="store_true")
    parser.add_argument("--frame", type=int, default=FRAME)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--rate", type=int, default=0, help="open loop at this rate (latency)")
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    flow = Flow(args.orders, args.index, args.gateways, args.messages)
    gateway = GATEWAY_IDS[args.index]
    client = GatewayClient(args.endpoint, gateway, cancel_on_disconnect=False, heartbeat_ms=60_000)
    print("ready", flush=True)
    sys.stdin.readline()
    if args.rate:
        result = latency_gateway(flow, client, args.rate, args.warmup)
    else:
        result = throughput_gateway(flow, client, args.frame, args.window)
    client.close()
    print(json.dumps({"gateway": gateway, **result}), flush=True)
    return 0


# -- the benchmark driver -----------------------------------------------------------------------


def run_gateways(endpoint: str, orders: int, gateways: int, *options: str) -> list[dict]:
    """Start the gateway processes, let them all go at once, collect what they print."""
    command = [sys.executable, "-m", "bench.e2e", "gateway", endpoint]
    processes = [
        subprocess.Popen(
            [*command, str(i), str(gateways), str(orders), *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(gateways)
    ]
    try:
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise WrongResult("e2e: a gateway process did not log on")
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, _ = process.communicate(timeout=600)
            if process.returncode:
                raise WrongResult(f"e2e: a gateway process exited {process.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def check_engine(engine: EngineProcess, sent: int, replayed: Exchange | None = None) -> dict:
    """The engine sequenced exactly what was sent (and the opening); stopped, its journal
    replays (into `replayed`, a fresh exchange if None) to the state hash it reported."""
    status = engine.status()
    if status.seq != sent + OPENING:
        raise WrongResult(f"e2e: engine seq {status.seq}, expected {sent + OPENING}")
    if engine.stop() != 0:
        raise WrongResult("e2e: cxe serve did not stop cleanly")
    replayed = Exchange(MARKET) if replayed is None else replayed
    catch_up(engine.data / "journal", replayed)
    if replayed.seq != status.seq or replayed.state_hash() != status.state_hash:
        raise WrongResult("e2e: a replay of the journal differs from the engine's state")
    return {"seq": status.seq, "state_hash": status.state_hash[:16], **status.counters}


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU time of a process so far, or of one of its threads (Linux /proc)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_run(
    root: Path, name: str, fsync: bool, drive, replayed: Exchange | None = None, *extra: str
) -> tuple[list[dict], dict]:
    """A fresh engine with an open CEA21 market, driven by `drive(endpoints)` (the engine's
    endpoints.json), then checked (its journal replayed into `replayed`: check_engine); the
    CPU time of the engine process and of its main thread, the service loop's (ZeroMQ's I/O
    threads are the rest), while driven (the machine may be shared: CPU per order is the
    figure that does not depend on what else runs)."""
    from tests.support.engine import EngineProcess  # the tests' way of running cxe serve

    engine = EngineProcess(root / name, *extra, fsync=fsync)
    with engine:
        engine.open_market(CODE)
        pid = engine.process.pid
        cpu, main = cpu_seconds(pid), cpu_seconds(pid, pid)
        results = drive(engine.endpoints)
        cpu, main = cpu_seconds(pid) - cpu, cpu_seconds(pid, pid) - main
        sent = sum(r["sent"] for r in results)
        if any(r["answered"] != r["sent"] for r in results):
            raise WrongResult("e2e: a command was not answered exactly once")
        checked = check_engine(engine, sent, replayed)
        per_order = {
            "cpu_us_per_order": round(cpu * 1e6 / sent, 1),
            "main_thread_cpu_us_per_order": round(main * 1e6 / sent, 1),
        }
        return results, {**checked, **per_order}


def day_of(orders: int) -> tuple[str, ...]:
    """`cxe serve`'s option sizing it for a day of `orders` (as an operator sizes it for the
    busiest day: its tables keyed by ClOrdID then never double, a pause, during the run)."""
    return ("--day-orders", str(orders))


def throughput(root: Path, name: str, orders: int, gateways: int, fsync: bool, *options) -> dict:
    results, engine = engine_run(
        root,
        name,
        fsync,
        lambda endpoints: run_gateways(endpoints["orders"], orders, gateways, *options),
        None,
        *day_of(orders),
    )
    return throughput_of(results, engine)


def throughput_of(results: list[dict], engine: dict) -> dict:
    """Orders/s of the gateways' results, from the first send of any to the last answer of
    any, with what they saw and the engine's figures."""
    first = min(r["first_send_ns"] for r in results)
    last = max(r["last_answer_ns"] for r in results)
    sent = sum(r["sent"] for r in results)
    rejects: dict[str, int] = {}
    for r in results:
        for code, count in r["rejects"].items():
            rejects[code] = rejects.get(code, 0) + count
    seconds = (last - first) / 1e9
    return {
        "orders_per_s": round(sent / seconds),
        "orders": sent,
        "seconds": round(seconds, 3),
        "fills": sum(r["fills"] for r in results),
        "rejects": rejects,
        "unmapped_cancels": sum(r["unmapped_cancels"] for r in results),
        "gateway_cpu_s": [round(r["cpu_s"], 2) for r in results],
        "engine": engine,
    }


def e2e_throughput(orders: int, gateways: int = 2, frame: int = FRAME, window: int = WINDOW):
    options = ("--frame", str(frame), "--window", str(window))
    with tempfile.TemporaryDirectory(prefix="cxe-e2e-") as temporary:
        root = Path(temporary)
        on = throughput(root, "on", orders, gateways, True, *options)
        off = throughput(root, "off", orders, gateways, False, *options)
        messages = throughput(root, "msg", orders // 2, gateways, True, "--messages", *options)
    return {
        "bench": "e2e_throughput",
        "value": on["orders_per_s"],
        "unit": "orders/s",
        "reference": None,
        "fsync_on": on,
        "fsync_off": off,
        "messages_fsync_on": messages,
        "gateways": gateways,
        "frame": frame,
        "window": window,
        "target": 500_000,
        "floor": 200_000,
    }


def fdatasync_latency(directory: Path, seconds: float) -> dict:
    """Raw latency of writing 100 bytes and fdatasync on the disk under `directory`."""
    path = directory / "fdatasync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    times = []
    try:
        end = time.perf_counter() + seconds
        payload = b"x" * 100
        while time.perf_counter() < end:
            start = time.perf_counter_ns()
            os.write(fd, payload)
            os.fdatasync(fd)
            times.append(time.perf_counter_ns() - start)
    finally:
        os.close(fd)
        path.unlink()
    us = np.asarray(times) / 1000
    return {
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p99_us": round(float(np.percentile(us, 99)), 1),
        "samples": len(times),
    }


def echo_main() -> int:
    """`python -m bench.e2e echo`: the floor of the service's transport. A ROUTER on loopback
    TCP that answers each frame with its last part as soon as it reads it (poll with a 100 ms
    timeout, drain without blocking, send without blocking: the service's loop, less
    everything else it does, so a lower bound); prints its endpoint, stops at a frame
    b"stop". No reply is dropped: ROUTER_MANDATORY, no high-water mark."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 0)
    router.bind("tcp://127.0.0.1:*")
    print(router.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while True:
        if not poller.poll(100):
            continue
        while True:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[-1] == b"stop":
                context.destroy(0)
                return 0
            router.send_multipart([frames[0], frames[-1]])  # no high-water mark: never dropped


def echo_floor(rate: int, seconds: float, warmup: float) -> dict:
    """Latency at `rate` messages/s, open loop (from the intended send time), of one-record
    frames through an echo process (`echo_main`) instead of the engine: what pyzmq, loopback
    TCP and two Python processes cost on this machine before the engine does anything. Every
    message must come back once, in order."""
    fine_timers()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.e2e", "echo"], stdout=subprocess.PIPE, text=True
    )
    context = zmq.Context()
    try:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 1000)  # the stop below is delivered
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.connect(server.stdout.readline().strip())
        total = int(rate * (seconds + warmup))
        body = bytes(88)  # a record's size
        socket.send_multipart([wire.RECORDS, b"warm"])
        if not socket.poll(ANSWER_TIMEOUT_S * 1000):
            raise WrongResult("echo: the echo process did not answer")
        socket.recv_multipart()
        start = time.monotonic_ns() + 10_000_000
        due = start + (1_000_000_000 // rate) * np.arange(total, dtype=np.int64)
        due_list, answered_at = due.tolist(), np.zeros(total, dtype=np.int64)
        fd, sent, answered = socket.getsockopt(zmq.FD), 0, 0
        while answered < total:  # latency_gateway's loop: sleeps to the microsecond
            now = time.monotonic_ns()
            while sent < total and due_list[sent] <= now:
                socket.send_multipart([wire.RECORDS, sent.to_bytes(8, "little") + body])
                sent += 1
            while socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                (reply,) = socket.recv_multipart()
                if int.from_bytes(reply[:8], "little") != answered:
                    raise WrongResult(f"echo: message {answered} came back out of order")
                answered_at[answered] = time.monotonic_ns()
                answered += 1
            if sent < total:
                select.select([fd], [], [], max(0, due_list[sent] - time.monotonic_ns()) / 1e9)
            elif answered < total and not socket.poll(ANSWER_TIMEOUT_S * 1000):
                raise WrongResult(f"echo: {total - answered} messages not answered")
        socket.send_multipart([wire.RECORDS, b"stop"])
        server.wait(10)
        measured = due >= start + int(warmup * 1e9)
        return {"sent": total, **percentiles((answered_at - due)[measured] / 1000)}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        context.destroy(0)


def latency(
    root: Path,
    name: str,
    fsync: bool,
    seconds: float,
    warmup: float,
    messages: bool = False,
    rate: int = RATE,
    busy_poll: bool = False,
) -> dict:
    """One open-loop gateway on a fresh engine: single-order RECORDS frames (one 88-byte
    record each), or with `messages` single-NewOrder/CancelOrder MESSAGES frames; with
    `busy_poll` the engine polls without sleeping (`cxe serve --busy-poll`)."""
    orders = int(rate * (seconds + warmup))
    options = ("--rate", str(rate), "--warmup", str(warmup)) + (("--messages",) if messages else ())
    results, engine = engine_run(
        root,
        name,
        fsync,
        lambda endpoints: run_gateways(endpoints["orders"], orders, 1, *options),
        None,
        *(("--busy-poll",) if busy_poll else ()),
        *day_of(orders),
    )
    (result,) = results
    return {**result, "engine": engine}


def e2e_latency(seconds: float, warmup: float = 1.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="cxe-e2e-") as temporary:
        root = Path(temporary)
        off = latency(root, "off", False, seconds, warmup)
        disk = fdatasync_latency(root, 2.0)
        floor = echo_floor(RATE, seconds, warmup)
        on = latency(root, "on", True, seconds, warmup)
        messages = latency(root, "msg", False, seconds, warmup, messages=True)
        busy_off = latency(root, "busy-off", False, seconds, warmup, busy_poll=True)
        busy_on = latency(root, "busy-on", True, seconds, warmup, busy_poll=True)
    return {
        "bench": "e2e_latency",
        "value": on["p99_us"],
        "unit": "us p99 (fsync on)",
        "reference": None,
        "fsync_off": off,
        "fsync_on": on,
        "fdatasync": disk,
        "echo_floor": floor,  # the same load through an echo process: the transport's part
        "messages_fsync_off": messages,
        "busy_poll_fsync_off": busy_off,  # cxe serve --busy-poll: a core kept for the loop
        "busy_poll_fsync_on": busy_on,
        "rate": RATE,
        "seconds": seconds,
        "warmup_s": warmup,
        "target_fsync_on_p99_us": 2 * disk["p99_us"],
        "target_fsync_off": {"p50_us": 50, "p99_us": 250},
    }


# (label, file suffix, function name): cumulative time of each, per order, in the profile
PROFILE_PARTS = (
    ("turn (all the loop's work but the poll wait)", "service.py", "turn"),
    ("  zmq poll (waiting included)", "poll.py", "poll"),
    ("  recv_multipart", "socket.py", "recv_multipart"),
    ("  _take: frame checks and decode", "intake.py", "_take"),
    ("    _permit_records (members allowed)", "intake.py", "_permit_records"),
    ("    message decode (msgspec, per message)", "wire.py", "decode_message"),
    ("  _sequence", "sequencing.py", "_sequence"),
    ("    _apply_staged (the turn's RECORDS frames)", "sequencing.py", "_apply_staged"),
    ("      _checked_run (join, stamp, check)", "sequencing.py", "_checked_run"),
    ("      journal append_batch", "commandlog.py", "append_batch"),
    ("      Exchange.apply_batch", "exchange.py", "apply_batch"),
    ("        compiled batch run", "~", "<built-in method engine.core.batch.run>"),
    ("      replies: encode private events", "replies.py", "encode"),
    ("      replies: route (select per peer)", "outbound.py", "_route_encoded"),
    ("      rows.decode (public and clearing rows)", "rows.py", "decode"),
    ("      status table from the accepted rows", "status.py", "record_accepted"),
    ("    journal append_encoded (a message)", "commandlog.py", "append_encoded"),
    ("    Exchange.apply_stamped (a message)", "exchange.py", "apply_stamped"),
    ("    _observe (status table, phase log)", "sequencing.py", "_observe"),
    ("    _route (encode events, audiences)", "outbound.py", "_route"),
    ("      protocol.encode", "protocol.py", "encode"),
    ("    journal sync (fsync)", "segments.py", "sync"),
    ("    journal flush (fsync off)", "segments.py", "flush"),
    ("  _send (pack + zmq send)", "outbound.py", "_send"),
    ("    trade stream publish", "tradestream.py", "publish"),
    ("    market data publish", "marketdata.py", "publish"),
    ("    send_multipart", "socket.py", "send_multipart"),
)


def profile_parts(stats, orders: int) -> list[tuple[str, float, int]]:
    """(label, cumulative us per order, calls) of each PROFILE_PARTS entry found."""
    out = []
    for label, suffix, name in PROFILE_PARTS:
        calls = cumulative = 0
        for (filename, _, function), (_, ncalls, _, cum, _) in stats.stats.items():
            if function == name and filename.endswith(suffix):
                calls += ncalls
                cumulative += cum
        out.append((label, cumulative * 1e6 / orders, calls))
    return out


def profile_service(orders: int, gateways: int, fsync: bool, *options: str) -> None:
    """`python -m bench.e2e profile ORDERS GATEWAYS on|off [gateway options]`: the service in
    this process under cProfile while gateway processes load it; prints the time per order of
    each part of a turn, then the top functions."""
    import cProfile
    import pstats
    import threading

    from engine.cli.serve import clock_start
    from engine.gateway.service import EngineService, Options
    from tests.support.engine import CLOCK, EngineProcess

    with tempfile.TemporaryDirectory(prefix="cxe-e2e-") as temporary:
        data = Path(temporary) / "data"
        service = EngineService(
            MARKET,
            Options(data, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                    "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", fsync=fsync, quiet=True,
                    clock_start_ns=clock_start(CLOCK)),
            log=lambda line: None,
        )  # fmt: skip
        service.open()
        driver = EngineProcess(data)
        driver.endpoints = service.endpoints
        results: list[dict] = []

        def drive() -> None:
            try:
                driver.open_market(CODE)
                results.extend(
                    run_gateways(service.endpoints["orders"], orders, gateways, *options)
                )
            finally:
                service.stop()

        thread = threading.Thread(target=drive)
        thread.start()
        profiler = cProfile.Profile()
        profiler.enable()
        service.run()
        profiler.disable()
        thread.join()
    sent = sum(r["sent"] for r in results)
    if service.exchange.seq != sent + OPENING:
        raise WrongResult(f"e2e profile: seq {service.exchange.seq}, sent {sent}")
    stats = pstats.Stats(profiler)
    print(f"{sent:,} orders, {gateways} gateways, fsync {'on' if fsync else 'off'}, {options}")
    for label, us, calls in profile_parts(stats, sent):
        print(f"{label:<48} {us:>9.2f} us/order {calls:>9,} calls")
    stats.sort_stats("tottime").print_stats(25)


def frame_steps(frame: int, orders: int) -> dict[str, float]:
    """`python -m bench.e2e steps FRAME ORDERS`: CPU time (this thread's) per order of each
    step the service takes for a turn of one RECORDS frame of `frame` records, called
    directly on the bench market's mixed workload (bench.exchange, bench.recovery), no
    sockets: what each step would cost on a core of its own (the public rows: market data's
    messages and the trade log's frames, engine.gateway.public); and beside the total, what
    decoding the rows into events, the status table from them and encoding the private
    ones costs instead of the encoder's steps (the service's way for small runs)."""
    from bench.exchange import CODE as BENCH_CODE
    from bench.exchange import bench_market
    from engine.core.rows import decode, reject_wording
    from engine.gateway.marketdata import MAX_BATCH
    from engine.gateway.public import PublicEncoder
    from engine.gateway.replies import PrivateReplies
    from engine.gateway.sequencing import check_records, stamped, writable_records
    from engine.gateway.status import OrderStatusTable
    from engine.protocol import Audience, OpenCall, StartOfDay, Uncross, encode

    market = bench_market()
    codes = [i.code for i in market.instruments]
    members = [m.id for m in market.members]
    halves = (members[: len(members) // 2], members[len(members) // 2 :])  # two gateways
    replies = PrivateReplies(codes, reject_wording(market.instruments))
    public = PublicEncoder(market.instruments)
    bodies = [r.tobytes() for r in np.array_split(workload_records(orders, 2), -(-orders // frame))]
    exchanges = []
    for _ in range(2):
        exchange = Exchange(market)
        for command in (StartOfDay("2026-11-24"), OpenCall(BENCH_CODE), Uncross(BENCH_CODE)):
            exchange.apply(command)
        exchanges.append(exchange)
    warm, exchange = exchanges
    head = stamped(writable_records(bytearray(bodies[0])), warm.seq, 0)
    rows = warm.apply_batch(head)
    encoded = replies.encode(rows, {}, members)
    encoded.select(members)
    public.encode(encoded.public_rows(rows), 0, 0).public.messages(len(codes) + 1, MAX_BATCH)
    status, decoded, instead = OrderStatusTable(codes), OrderStatusTable(codes), 0.0
    steps = dict.fromkeys(
        ("join + check_records", "apply_batch", "replies.encode", "select (2 gateways)",
         "public rows encode + group", "status table"), 0.0,
    )  # fmt: skip
    clock = time.thread_time
    for body in bodies:
        state = exchange.state
        t0 = clock()
        run = stamped(writable_records(bytearray().join([body])), exchange.seq, 0)
        check_records(run, exchange.seq)
        private = dict(state.private_seq)
        positions = {"public": state.public_seq, "clearing": state.clearing_seq, "private": {}}
        t1 = clock()
        rows = exchange.apply_batch(run)
        t2 = clock()
        encoded = replies.encode(rows, private, members)
        t3 = clock()
        for half in halves:
            encoded.select(half)
        t4 = clock()
        public_rows = encoded.public_rows(rows)
        if public_rows:
            published = public.encode(public_rows, positions["public"], positions["clearing"])
            published.public.messages(len(codes) + 1, MAX_BATCH)
        t5 = clock()
        status.record_accepted(rows, encoded.accepted)
        t6 = clock()
        positions["private"] = private
        events = decode(rows, market.instruments, positions)  # the small runs' way instead
        decoded.record(events)
        [encode(e) for e in events if type(e).audience is Audience.PRIVATE]
        t7 = clock()
        for name, spent in zip(steps, np.diff([t0, t1, t2, t3, t4, t5, t6]), strict=True):
            steps[name] += spent
        instead += t7 - t6
    out = {name: round(spent * 1e6 / orders, 2) for name, spent in steps.items()}
    out["total"] = round(sum(out.values()), 2)
    return {**out, "instead: decode + status + encode": round(instead * 1e6 / orders, 2)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["gateway"]:
        sys.exit(gateway_main(sys.argv[2:]))
    if sys.argv[1:2] == ["echo"]:
        sys.exit(echo_main())
    if sys.argv[1:2] == ["profile"]:
        orders, gateways, fsync, *rest = sys.argv[2:]
        profile_service(int(orders), int(gateways), fsync == "on", *rest)
    if sys.argv[1:2] == ["steps"]:
        frame, orders = sys.argv[2:4]
        print(json.dumps(frame_steps(int(frame), int(orders))))
