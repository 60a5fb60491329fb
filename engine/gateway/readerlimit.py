"""How many bytes a feed's reader may send, and how many readers may come in: a
per-connection allowance and an admission on the XPUB sockets of the engine's feed
(engine.gateway.marketdata) and of a relay (engine.gateway.relay), enforced from a thread
of its own and from the context's ZAP handler.

Why a thread: libzmq files each subscription a reader sends into its socket's subscription
trie before the socket's owner can read the notice and judge it
(engine.gateway.subscriptions). It does so in one call that reads a connection's queue
for as long as the reader keeps sending, inside whatever the owner asked of the socket. A
made-up topic costs the trie about 80 bytes per byte. Measured: 3,000 subscriptions of
4 KiB (12 MB sent) grew the owner's process by 565 MB before it could read the
hundred-and-first notice. No socket option bounds this (XPUB_MANUAL files them too). What
bounds it is what a connection may send, and while the owner is inside that call only the
kernel sees that.

So a monitor of the socket reports each connection the socket accepts. This thread watches
their descriptors with edge-triggered epoll: it wakes when a reader sends, which an honest
reader does a few times (its handshake, its subscriptions). It then reads the kernel's count
of bytes received on the connection (TCP_INFO), and again every RECHECK_MS for as long as
the count grows: the kernel does not wake every watcher for every segment (seen here: the
last 20 KB of a burst came with no wakeup), and a sweep of every connection each SWEEP_NS
catches what slips past both. Past the allowance it shuts the connection down. libzmq's I/O
thread then sees the end, the connection's queue ends, and what the trie held for it is
freed. The reader's ZeroMQ reconnects by itself (an honest reader resyncs); the subscription
guard still judges what it sends.

Invariants:
- a connection that has received more than `allowance(age)` bytes (MAX_READER_BURST plus
  READER_BYTES_PER_S for each second since it was accepted) is ended (`cut`); what it
  costs the socket before that is bounded by the allowance plus what arrives while this
  thread waits for the interpreter or for a wakeup the kernel skipped (measured: under
  20 MB for a reader sending without pause, against 565 MB unwatched);
- so is a connection whose new bytes do not fit in what the readers together may still
  send: their bytes are taken from one SharedAllowance (READERS_BURST, refilled at
  READERS_BYTES_PER_S), so many connections each within its own allowance add up to less
  (measured with 100 connections sending at once: 84 and 194 MB grown with it, 214 and
  241 MB without). Nothing is owed past it: a reader that sends nothing is never ended.
  A connection's first HANDSHAKE_BYTES are not taken from it: handshakes refused for an
  unknown key (some 500 bytes each) took it all (a probe: 900 a second kept every reader
  out).
  While less than MAX_READER_BURST is left, a new connection is ended as soon as it is
  seen. An honest crowd reconnecting at once (after a reset) sends a few hundred bytes
  to a few KiB each: past the burst some are ended and come back as it refills;
- a connection the process has no descriptor left to duplicate is ended through libzmq's
  own (if it is still a tcp connection to this listener): one not watched is not served;
- the socket holds at most `max_connections` tcp connections (waiting ones included;
  default: a quarter of the process's descriptors, `connection_cap`); one more is ended as
  soon as it is seen. Why: readers that are admitted and then send nothing are never ended,
  and a probe holding them took every descriptor of an engine (1,024), whose next day's
  journal segment could then not be opened: it stopped. The engine and a relay raise their
  soft descriptor limit to the hard one at start (`raise_descriptor_limit`);
- with `allowances` False only the cap applies (the engine's order entry, admin and trade
  stream sockets, each with its share: connections there that log on and say nothing are
  honest, and a probe's 20,000 such connections to order entry stopped the engine the same
  way); nothing of a connection's bytes is read;
- with the context's ZAP handler (`zap`: the engine's and a relay's, plain mode too) a
  connection's handshake completes, and libzmq takes what it sends, only when `open` says
  so: ADMISSIONS_BURST connections at once and ADMISSIONS_PER_S more each second, and only
  while the readers together may still send one reader's burst and what they sent past it
  has been made up for (`Allowance.overdrawn`). Why: libzmq reads a new
  connection's first bytes before the monitor reports it, and ending a connection walks
  the socket's whole subscription tree, so connections that each sent long made-up topics
  and connected again, thousands a second, stopped the owner for minutes (a probe: no
  order answered for two minutes after one second of it). One not admitted yet waits in
  the handler (engine.gateway.zap); libzmq ends its handshake after ADMISSION_WAIT_MS and
  its ZeroMQ connects again by itself;
- a connection's bytes are taken from the shared allowance even when it is past its own
  (libzmq filed them all the same): else readers admitted one after another each sent
  their own allowance and more (a probe: 3.4 MB/s against 256 KiB/s);
- a connection shut down still gives libzmq what the kernel had queued for it, so the
  socket's receive buffer is READER_RCVBUF (readers send little; measured with 100
  connections: 456 MB grown with the kernel's default, 125 MB with it);
- a connection is read and shut down only through a duplicate of its descriptor that is
  checked to be the socket accepted (its inode), closed at once after: libzmq's
  descriptor is never closed here, and no duplicate keeps a connection alive that libzmq
  has closed;
- ipc connections are not watched: the kernel keeps no count of a Unix socket's bytes.
  The ipc endpoints' directories are the engine user's (owner-only), so their readers are
  the operator's own processes. Neither are tcp connections whose kernel gives no count
  (Linux before 4.1): `watching` is then false and the log says so once;
- the socket has one monitor, this one: it also reports its listener's close, which
  `reconnect_all` (engine.gateway.security) waits for through `listener_closed`;
- `stop` ends the thread and closes the monitor; the owner calls it before closing the
  socket or its context.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import socket as sockets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from engine.gateway.security import ask_zap, next_monitor_address
from engine.gateway.zap import HOLD_MS, ZapHandler

MAX_READER_BURST = 16 * 1024  # bytes a reader may send at once: handshake and subscriptions
READER_BYTES_PER_S = 1024  # and more each second it stays (subscription changes, pings)
HANDSHAKE_BYTES = 1024  # of a connection's first bytes, not taken from the shared allowance
READER_RCVBUF = 8 * 1024  # the kernel's queue of a reader's bytes (Linux doubles it)
READERS_BURST = 1024 * 1024  # bytes all readers of the socket together may send at once
READERS_BYTES_PER_S = 256 * 1024  # and more each second (a reconnecting crowd refills it)
ADMISSIONS_BURST = 16  # readers' connections that may come in at once
ADMISSIONS_PER_S = 128  # and more each second (a crowd after a reset)
# a handshake still waiting for its admission this long after it began is ended by libzmq
ADMISSION_WAIT_MS = HOLD_MS + 500
LOG_INTERVAL_NS = 10_000_000_000  # at most one line about ended readers per 10 s
WAKE_MS = 50  # how often the thread looks for `stop` when nothing happens
RECHECK_MS = 10  # a connection that has sent is looked at again this soon, until it stops
SWEEP_NS = 1_000_000_000  # and every connection this often (the kernel may skip a wakeup)
_BYTES_RECEIVED = struct.Struct("=Q")  # tcpi_bytes_received, a u64 ...
_BYTES_RECEIVED_AT = 128  # ... at this offset of Linux's struct tcp_info (since 4.1)
_TCP_INFO_BYTES = _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size
_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_CLOSED
MIN_CONNECTIONS = 16  # the cap on a socket's connections is never below this
ALONE = f"more than a reader may ({MAX_READER_BURST} and {READER_BYTES_PER_S} a second)"
TOGETHER = (
    f"while the readers together had sent more than they may ({READERS_BURST} and "
    f"{READERS_BYTES_PER_S} a second)"
)
UNWATCHED = "the process is out of file descriptors (raise its limit: ulimit -n)"


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit of open descriptors to its hard limit (a reader's
    connection holds one); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):  # a hard limit the kernel caps lower
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# each listening socket's share of the process's descriptors (1/N): the feed and the snapshot
# socket a quarter each, order entry an eighth, the admin socket and the trade stream a
# sixteenth each; the last quarter is the journal's, the snapshots', libzmq's own
FEED_SHARE, SNAPSHOTS_SHARE, ORDERS_SHARE, ADMIN_SHARE, TRADES_SHARE = 4, 4, 8, 16, 16


def connection_cap(share: int = FEED_SHARE) -> int:
    """How many connections one listening socket may hold: its share (1/`share`) of the
    process's descriptors, at least MIN_CONNECTIONS."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MIN_CONNECTIONS, soft // share)


def allowance(age_ns: int) -> int:
    """The bytes a connection accepted `age_ns` ago may have sent."""
    return MAX_READER_BURST + READER_BYTES_PER_S * age_ns // 1_000_000_000


def over_allowance(received: int, age_ns: int) -> bool:
    return received > allowance(age_ns)


class Allowance:
    """A bucket of `capacity` tokens refilled at `rate` a second: the bytes the readers of a
    socket together may still send, or the connections that may still come in. What does
    not fit is not owed: the tokens stop at zero. It is remembered, though: `overdrawn`
    (at most `capacity`) runs down at `rate` as the tokens refill, and until it has, nobody
    new is let in (`ReaderByteLimit.open`). Not thread-safe: its owner locks."""

    def __init__(self, capacity: int, rate: int, now_ns: int) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens = capacity
        self.overdrawn = 0  # what did not fit lately, less what has been refilled since
        self._at_ns = now_ns  # when the tokens were last refilled
        self._residue = 0  # of the refill's division, in token-nanoseconds not yet paid

    def available(self, now_ns: int) -> int:
        """The tokens at `now_ns` (refilled, capped at the capacity)."""
        paid, self._residue = divmod(self.rate * (now_ns - self._at_ns) + self._residue, 10**9)
        self._at_ns = now_ns
        self.tokens = min(self.capacity, self.tokens + paid)
        self.overdrawn = max(0, self.overdrawn - paid)
        return self.tokens

    def take(self, count: int, now_ns: int) -> bool:
        """Take `count` tokens at `now_ns`: whether they fitted. What did not fit is not owed
        (a reader's bytes: its sender is ended, which frees what it sent), so a reader that
        sends nothing always fits, and the others fit again as it refills."""
        self.tokens = self.available(now_ns) - count
        fitted = self.tokens >= 0
        if not fitted:
            self.overdrawn = min(self.capacity, self.overdrawn - self.tokens)
            self.tokens = 0
        return fitted


def bytes_received(connection: sockets.socket) -> int | None:
    """The kernel's count of bytes received on a tcp `connection`; None where it keeps none."""
    info = connection.getsockopt(sockets.IPPROTO_TCP, sockets.TCP_INFO, _TCP_INFO_BYTES)
    if len(info) < _TCP_INFO_BYTES:
        return None
    return _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)[0]


def _duplicate(descriptor: int) -> sockets.socket | None:
    """A socket on a duplicate of `descriptor` (the caller closes it); None if the number is
    no socket now (libzmq closed it, and may have given the number to a file); OSError if
    the process has no descriptor left."""
    try:
        duplicate = os.dup(descriptor)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise
        return None
    try:
        return sockets.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return None


def _port(connection: sockets.socket) -> bytes:
    """The local port of a tcp connection, as a ZeroMQ endpoint ends with it."""
    return str(connection.getsockname()[1]).encode()


@dataclass
class _Accepted:
    inode: int  # the socket's, to know it again behind a descriptor number libzmq may reuse
    accepted_ns: int  # time.monotonic_ns()
    # its bytes received up to here are accounted for: past its handshake's, taken from the
    # readers' shared allowance
    counted: int = HANDSHAKE_BYTES


class ReaderByteLimit:
    """The allowance (module docstring) on the connections `socket` accepts; make it before
    the socket binds. `name` is what the log calls the feed. With `zap`, the context's ZAP
    handler, a connection's handshake completes only when `open` says so (ZAP `domain`)."""

    def __init__(
        self,
        socket: zmq.Socket,
        name: str,
        log: Callable[[str], None] | None = None,
        zap: ZapHandler | None = None,
        domain: str = "market_data",
        max_connections: int | None = None,
        allowances: bool = True,
    ) -> None:
        self.name = name
        self.max_connections = connection_cap() if max_connections is None else max_connections
        self.allowances = allowances  # False: only the cap (order entry, admin, trade stream)
        self.log = log or (lambda line: None)
        self.cut = 0  # connections ended for sending more than their allowance
        self.watching = True  # false once a tcp connection's kernel gave no byte count
        self.faults = 0  # errors of the thread's own (logged once; it goes on)
        self.listener_closed = threading.Event()  # set when the socket's listener closes
        self._socket = socket
        if allowances:
            socket.setsockopt(zmq.RCVBUF, READER_RCVBUF)  # what one shut down still gives
        self._monitor = socket.get_monitor_socket(_EVENTS, next_monitor_address())
        self._epoll = select.epoll()
        now = time.monotonic_ns()
        self._lock = threading.Lock()  # the allowances: this thread and the ZAP handler's take
        self._shared = Allowance(READERS_BURST, READERS_BYTES_PER_S, now)
        self._admissions = Allowance(ADMISSIONS_BURST, ADMISSIONS_PER_S, now)
        self._accepted: dict[int, _Accepted] = {}  # by libzmq's descriptor number
        self._swept_ns = time.monotonic_ns()  # when every connection was last looked at
        self._said_ns: int | None = None  # when an ended reader was last logged
        self._unsaid = 0  # readers ended since, not logged
        self._stopping = threading.Event()
        self._full = (
            f"while the socket held its {self.max_connections} connections (its share of the "
            f"process's descriptors: raise its limit, ulimit -n"
            + (", or serve readers from a relay)" if allowances else ")")
        )
        self._thread = threading.Thread(target=self._run, name=f"cxe-{name}-limit", daemon=True)
        self._thread.start()
        if zap is not None:
            socket.setsockopt(zmq.HANDSHAKE_IVL, ADMISSION_WAIT_MS)
            ask_zap(socket, domain)
            zap.gate(domain, self)

    def open(self) -> bool:
        """May a reader's connection come in now (engine.gateway.zap.Gate, asked by the ZAP
        handler's thread before the connection can subscribe to anything)? Only while the
        readers together may still send one reader's burst and a connection's admission is
        left, and what the readers sent past their shared allowance lately has been made up
        for (a probe: without, readers let in one after another while it was overdrawn, each
        ended only after it had sent its own 16 KiB and more, got 2.5 MB/s into the engine
        and stopped it for 30 s). One not let in waits in the handler, may be ended at
        accept, or is ended by libzmq after ADMISSION_WAIT_MS; its ZeroMQ connects again by
        itself."""
        now = time.monotonic_ns()
        with self._lock:
            return (
                self._shared.available(now) >= MAX_READER_BURST
                and self._shared.overdrawn == 0
                and self._admissions.available(now) >= 1
            )

    def took(self) -> None:
        """A reader's connection came in: it spends an admission."""
        with self._lock:
            self._admissions.take(1, time.monotonic_ns())

    def ask_to_stop(self) -> None:
        """Tell the thread to end, without waiting for it (an owner stopping several limits
        asks them all first, then waits: each takes up to WAKE_MS to notice). libzmq's end
        of the monitor goes first: with no one at the other end, its next event would block
        the context's I/O thread (found by the suite: a listener's close hung it)."""
        if self._stopping.is_set():
            return
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._stopping.set()

    def stop(self) -> None:
        """End the thread and close the monitor (idempotent; by the socket's owner)."""
        self.ask_to_stop()
        if self._thread.is_alive():
            self._thread.join()
        self._monitor.close(0)
        self._epoll.close()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._epoll.fileno(), zmq.POLLIN)
        sending: dict[int, int] = {}  # connections that sent lately: bytes when last looked at
        while not self._stopping.is_set():
            try:
                poller.poll(RECHECK_MS if sending else WAKE_MS)
                self._turn(sending)
            except zmq.ContextTerminated:  # the owner's context closed under it
                return
            except Exception as exc:  # a fault of its own: the monitor must still be read
                self._fault(exc)

    def _turn(self, sending: dict[int, int]) -> None:
        """Look at the connections that sent, or all of them when a sweep is due, then take
        the monitor's events."""
        look = {descriptor for descriptor, _ in self._epoll.poll(0)}
        look.update(sending)
        now = time.monotonic_ns()
        if now - self._swept_ns >= SWEEP_NS:
            look.update(self._accepted)
            self._swept_ns = now
        for descriptor in look:
            received = self._check(descriptor)
            if received is None or received == sending.get(descriptor):
                sending.pop(descriptor, None)
            else:
                sending[descriptor] = received
        while self._monitor.poll(0):
            event = parse_monitor_message(self._monitor.recv_multipart())
            if event["event"] == zmq.EVENT_CLOSED:
                self.listener_closed.set()
            else:
                self._accept(event["value"], event["endpoint"])

    def _fault(self, exc: Exception) -> None:
        """A fault of this thread's own is logged (once) and the thread goes on: libzmq
        blocks the socket's I/O thread when nobody reads its monitor."""
        self.faults += 1
        if self.faults == 1:
            self.log(f"{self.name}: the reader limit failed ({exc!r}); it goes on, report it")

    def _accept(self, descriptor: int, endpoint: bytes) -> None:
        """Watch a connection just accepted on the listener at `endpoint`, if it is tcp and
        still the one accepted (libzmq may have closed it and given its number to another
        socket of the process, such as a relay's own connection to the engine). While what
        the readers together may still send is less than one reader's burst, it is ended at
        once, before it can subscribe: connections that each send a little and reconnect
        cannot come in one after another."""
        try:
            connection = _duplicate(descriptor)
        except OSError:  # out of descriptors: one it cannot watch is not served
            self._end_unwatchable(descriptor, endpoint)
            return
        if connection is None:
            return
        with connection:
            if connection.family not in (sockets.AF_INET, sockets.AF_INET6):
                return  # ipc: the kernel counts nothing
            try:
                if _port(connection) != endpoint.rsplit(b":", 1)[-1]:
                    return  # not a connection to this listener
                if len(self._accepted) >= self.max_connections:
                    self._end(connection, None, self._full)
                    return
                now = time.monotonic_ns()
                if not self.allowances:  # the cap alone: counted, nothing of it read
                    inode = os.fstat(connection.fileno()).st_ino
                    self._accepted[descriptor] = _Accepted(inode, now)
                    return
                received = bytes_received(connection)
                if received is None:
                    self._not_watching()
                    return
                with self._lock:
                    fitted = self._shared.take(max(0, received - HANDSHAKE_BYTES), now)
                    spent = not fitted or self._shared.tokens < MAX_READER_BURST
                if spent:
                    self._end(connection, received, TOGETHER)
                    return
                inode = os.fstat(connection.fileno()).st_ino
                counted = max(received, HANDSHAKE_BYTES)
                self._accepted[descriptor] = _Accepted(inode, now, counted)
                self._epoll.register(descriptor, select.EPOLLIN | select.EPOLLET)
            except OSError:  # ended meanwhile (or registered under this number still)
                return
        self._check(descriptor)  # what it sent before it was watched

    def _check(self, descriptor: int) -> int | None:
        """End the connection behind `descriptor` if it is past its allowance, or sends
        while the readers together may send nothing more; the bytes it has received if it
        goes on, None if it does not (or is not watched)."""
        accepted = self._accepted.get(descriptor)
        if accepted is None:
            return None
        try:
            connection = _duplicate(descriptor)
        except OSError:  # out of descriptors: the next sweep looks again
            return None
        if connection is None:
            self._accepted.pop(descriptor, None)  # gone: its place is free
            return None
        with connection:
            try:
                if os.fstat(connection.fileno()).st_ino != accepted.inode:
                    self._accepted.pop(descriptor, None)  # gone: the number's new record comes
                    return None
                if not self.allowances:
                    return None  # still there: the cap counts it
                received = bytes_received(connection)
                if received is None:
                    return None
                now = time.monotonic_ns()
                fresh = max(0, received - accepted.counted)
                accepted.counted = max(accepted.counted, received)
                with self._lock:  # a reader past its own allowance spends the shared one too
                    fitted = self._shared.take(fresh, now)
                alone = over_allowance(received, now - accepted.accepted_ns)
                if fitted and not alone:
                    return received
                if self._accepted.pop(descriptor, None) is not None:  # not a test's call's
                    self._end(connection, received, ALONE if alone else TOGETHER)
            except OSError:  # ended meanwhile
                pass
        return None

    def _end(self, connection: sockets.socket, received: int | None, why: str) -> None:
        """Shut `connection` down, count it and say so (OSError if it has ended); `received`
        None: its bytes were not counted (the cap alone)."""
        host, port = connection.getpeername()[:2]
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # the line, then the count, then the end: whoever sees one sees what came before
        if received is None:
            self._say_cut(f"a connection from {peer}, {why}")
        else:
            self._say_cut(f"a reader at {peer} sent {received} bytes, {why}")
        self.cut += 1
        connection.shutdown(sockets.SHUT_RDWR)

    def _end_unwatchable(self, descriptor: int, endpoint: bytes) -> None:
        """End a connection the process has no descriptor left to watch with: through
        libzmq's own descriptor, if it is still a tcp connection to this listener."""
        try:
            connection = sockets.socket(fileno=descriptor)
        except OSError:
            return
        try:
            if _port(connection) == endpoint.rsplit(b":", 1)[-1]:
                self._say_cut(f"a reader's connection came with no descriptor left: {UNWATCHED}")
                self.cut += 1
                connection.shutdown(sockets.SHUT_RDWR)
        except OSError:
            pass
        finally:
            connection.detach()  # libzmq's: never closed here

    def _say_cut(self, what: str) -> None:
        now = time.monotonic_ns()
        if self._said_ns is not None and now - self._said_ns < LOG_INTERVAL_NS:
            self._unsaid += 1
            return
        since = f" ({self._unsaid} more since the last such line)" if self._unsaid else ""
        self.log(f"{self.name}: {what}: its connection ended{since}")
        self._said_ns, self._unsaid = now, 0

    def _not_watching(self) -> None:
        if self.watching:
            self.watching = False
            self.log(
                f"{self.name}: this kernel does not count a connection's bytes (TCP_INFO): "
                f"readers' connections are not limited; serve untrusted readers from a relay "
                f"on a newer kernel"
            )
