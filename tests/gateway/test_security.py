"""CURVE security end to end: keys made by `cxe keys`, a real `cxe serve --config` with a
[security] section, real clients over loopback TCP.

Who gets in is read from the client side with a socket monitor (a handshake the engine's
ZAP handler refuses shows as HANDSHAKE_FAILED_AUTH), what a connected key may do from the
engine's answers. Fail-closed is shown on a bare CURVE server with no ZAP handler at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from engine.clearing.capture import TradeStore
from engine.cli.watch import StatusPoller
from engine.config import Security, default_market, load_market
from engine.gateway import wire
from engine.gateway.client import GatewayClient, LogonRefused
from engine.gateway.marketdata_client import MarketDataClient
from engine.gateway.relay import FeedRelay
from engine.gateway.security import (
    KeyPair,
    read_key,
    reconnect_all,
    secure_client,
    secure_server,
    start_authenticator,
)
from engine.gateway.subscriptions import MAX_BAD_SUBSCRIPTIONS
from engine.protocol import Accepted, Filled, OpenCall, RejectCode, Rejected
from engine.types import Side
from tests.cli.test_cli import cxe_command
from tests.cli.test_watch import start_relay
from tests.gateway.test_subscriptions import Peer, made_up
from tests.support.engine import DAY, EngineProcess

pytestmark = pytest.mark.slow
MARKET = default_market()
CODES = [i.code for i in MARKET.instruments]
NAMES = ("engine", "mm", "brokers", "alice", "feed", "stranger", "mm2")
SUCCEEDED, FAILED_AUTH = zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH
HANDSHAKE_EVENTS = (
    SUCCEEDED
    | FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def cxe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cxe_command(), *args], capture_output=True, text=True, timeout=300)


def make_keys(directory: Path) -> dict[str, KeyPair]:
    for name in NAMES:
        done = cxe("keys", name, "--dir", str(directory))
        assert done.returncode == 0, done.stderr
    return {name: read_key(str(directory / f"{name}.key_secret"), name) for name in NAMES}


def write_config(
    path: Path,
    keys: dict[str, KeyPair],
    gateways: dict[str, str],
    operators: tuple[str, ...] = ("alice",),
    readers: tuple[str, ...] = ("feed",),
) -> Path:
    """The embedded market with a [security] section (JSON, as clearing exports a market):
    key files relative to the config, the market data readers' keys given inline in Z85."""
    market = msgspec.to_builtins(MARKET)
    market["security"] = {
        "server_key": "keys/engine.key_secret",
        "gateways": gateways,
        "operators": {name: f"keys/{name}.key" for name in operators},
        "market_data": {name: keys[name].public.decode() for name in readers},
    }
    path.write_text(json.dumps(market))
    return path


GATEWAY_KEYS = {"mm": "keys/mm.key", "brokers": "keys/brokers.key"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> tuple[Path, dict[str, KeyPair]]:
    """A directory with keys/ made by `cxe keys`, for configs written beside it."""
    tmp = tmp_path_factory.mktemp("secure")
    return tmp, make_keys(tmp / "keys")


def secured_engine(tmp: Path, keys: dict[str, KeyPair], name: str) -> EngineProcess:
    config = write_config(tmp / f"{name}.json", keys, GATEWAY_KEYS)
    operator = (keys["alice"], keys["engine"].public)
    return EngineProcess(tmp / name, "--config", str(config), admin_keys=operator)


@pytest.fixture(scope="module")
def engine(keyed):
    tmp, keys = keyed
    with secured_engine(tmp, keys, "engine") as process:
        process.open_market(*CODES)
        yield process, keys


def as_(keys: dict[str, KeyPair], name: str) -> tuple[KeyPair, bytes]:
    return keys[name], keys["engine"].public


def handshake(endpoint: str, curve: tuple[KeyPair, bytes] | None, kind: int = zmq.DEALER) -> int:
    """The first handshake event a client socket with these keys sees (0: none in 10 s)."""
    socket = zmq.Context.instance().socket(kind)
    socket.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        secure_client(socket, *curve)
    monitor = socket.get_monitor_socket(HANDSHAKE_EVENTS)
    try:
        socket.connect(endpoint)
        if not monitor.poll(10_000):
            return 0
        return recv_monitor_message(monitor)["event"]
    finally:
        socket.disable_monitor()
        monitor.close(0)
        socket.close(0)


def answer(endpoint: str, curve: tuple[KeyPair, bytes] | None, messages: list) -> list | None:
    """Send one MESSAGES frame on a fresh connection; the engine's answer, None if none."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        secure_client(socket, *curve)
    socket.connect(endpoint)
    try:
        try:
            socket.send_multipart(wire.messages_frame(messages), zmq.NOBLOCK)
        except zmq.Again:  # no connection took it (a refused handshake)
            return None
        if not socket.poll(3_000):
            return None
        return wire.unpack(socket.recv_multipart()[1])
    finally:
        socket.close(0)


def test_cxe_keys_writes_a_secret_only_its_owner_reads_and_never_overwrites(tmp_path):
    done = cxe("keys", "gw", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "gw.key_secret").st_mode) == 0o600
    public = read_key(str(tmp_path / "gw.key"), "gw")
    pair = read_key(str(tmp_path / "gw.key_secret"), "gw")
    assert public.secret is None and pair.public == public.public and pair.secret
    before = (tmp_path / "gw.key_secret").read_bytes()
    again = cxe("keys", "gw", "--dir", str(tmp_path))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert "Traceback" not in again.stderr
    assert (tmp_path / "gw.key_secret").read_bytes() == before


@pytest.mark.parametrize(
    ("gateways", "expected"),
    [
        ({"nosuch": "keys/mm.key"}, "keys for unknown gateways ['nosuch']"),
        ({"mm": "keys/missing.key"}, "security.gateways.mm: no key file"),
        ({"mm": "not-a-key"}, "security.gateways.mm: b'not-a-key' is not a 40-character Z85"),
        ({"mm": "keys/mm.key", "brokers": "keys/mm.key"}, "the same key as 'gateway:mm'"),
    ],
)
def test_a_bad_security_section_is_refused_at_load_with_a_clear_error(keyed, gateways, expected):
    tmp, keys = keyed
    config = write_config(tmp / "bad.json", keys, gateways)
    done = cxe("serve", "--config", str(config), "--data", str(tmp / "never"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp / "never").exists()


def test_a_curve_server_fails_closed_without_a_zap_handler(keyed):
    """With no ZAP handler, libzmq lets any CURVE key in unless the socket enforces its ZAP
    domain: secure_server must refuse every key until the authenticator runs (mutation:
    without ZMQ_ZAP_ENFORCE_DOMAIN the stranger's message arrives)."""
    tmp, keys = keyed
    context = zmq.Context()
    server = context.socket(zmq.ROUTER)
    server.setsockopt(zmq.LINGER, 0)
    secure_server(server, keys["engine"], "orders")
    port = server.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        assert handshake(endpoint, as_(keys, "stranger")) != SUCCEEDED
        assert answer(endpoint, as_(keys, "stranger"), [wire.Heartbeat()]) is None
        assert not server.poll(500), "a frame got through a CURVE server with no ZAP handler"
        config = msgspec.convert(
            {"server_key": str(tmp / "keys" / "engine.key_secret"),
             "gateways": {"mm": str(tmp / "keys" / "mm.key")}},
            Security,
        )  # fmt: skip
        authenticator = start_authenticator(context, config)
        try:  # the positive control: with the handler, the listed key gets in
            assert handshake(endpoint, as_(keys, "mm")) == SUCCEEDED
            assert handshake(endpoint, as_(keys, "stranger")) == FAILED_AUTH
        finally:
            authenticator.stop()
    finally:
        context.destroy(0)


@pytest.mark.parametrize("where", ["tcp://127.0.0.1:*", "ipc://{tmp}/feed", "ipc://*"])
def test_reconnect_all_ends_every_connection_and_serves_the_same_endpoint_again(
    where, tmp_path, monkeypatch
):
    """libzmq closes the old listener in its I/O thread, after `unbind` returns: binding at
    once can find the TCP port still taken, and an `ipc://*` endpoint's file and directory
    are removed after the new bind has made them."""
    monkeypatch.chdir(tmp_path)  # where ipc://* makes its directory
    context = zmq.Context.instance()
    server = context.socket(zmq.PUB)
    server.setsockopt(zmq.LINGER, 0)
    server.bind(where.format(tmp=tmp_path))
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
    reader = context.socket(zmq.SUB)
    reader.setsockopt(zmq.LINGER, 0)
    reader.setsockopt(zmq.RECONNECT_IVL, 10)
    reader.setsockopt(zmq.SUBSCRIBE, b"")
    monitor = reader.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    reader.connect(endpoint)
    try:
        for round_ in range(20):
            deadline = time.monotonic() + 10
            while not reader.poll(10):  # until the reader is connected (again)
                assert time.monotonic() < deadline, f"round {round_}: nothing received"
                server.send(b"%d" % round_)
            while reader.poll(0):
                reader.recv()
            reconnect_all(server, endpoint)
            deadline = time.monotonic() + 5
            while not monitor.poll(10):  # the socket completes the ending as it is used
                assert time.monotonic() < deadline, f"round {round_}: the connection did not end"
                server.send(b"lost")
            recv_monitor_message(monitor)
    finally:
        reader.disable_monitor()
        monitor.close(0)
        reader.close(0)
        server.close(0)


def test_reconnect_all_runs_back_to_back_on_one_socket():
    """Each call watches the socket for the old listener's close; with pyzmq's default
    monitor address (one per socket) a call soon after another found it still taken and
    failed with EADDRINUSE (two revocations in a row; the suite's CI run found it)."""
    server = zmq.Context.instance().socket(zmq.PUB)
    server.setsockopt(zmq.LINGER, 0)
    server.bind("tcp://127.0.0.1:*")
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        for _ in range(500):
            reconnect_all(server, endpoint)
        assert server.getsockopt_string(zmq.LAST_ENDPOINT) == endpoint
    finally:
        server.close(0)


def test_reconnect_all_refuses_an_ipc_directory_that_is_not_the_one_it_bound_in(tmp_path):
    """Another local user could make the directory of an `ipc://*` endpoint in the moment
    between the old listener's removing it and the new bind: here the directory is replaced
    as the socket unbinds."""
    context = zmq.Context.instance()
    server = context.socket(zmq.PUB)
    server.setsockopt(zmq.LINGER, 0)
    (tmp_path / "feed").mkdir()
    server.bind(f"ipc://{tmp_path}/feed/socket")
    endpoint = server.getsockopt_string(zmq.LAST_ENDPOINT)

    class ReplacedAsItUnbinds:
        def __getattr__(self, name: str):
            return getattr(server, name)

        def unbind(self, where: str) -> None:
            server.unbind(where)
            (tmp_path / "feed").rename(tmp_path / "moved")
            (tmp_path / "feed").mkdir()

    try:
        reconnect_all(server, endpoint)  # the same directory: bound again
        with pytest.raises(zmq.ZMQError, match="was replaced"):
            reconnect_all(ReplacedAsItUnbinds(), endpoint)
    finally:
        server.close(0)


def test_an_unknown_key_cannot_connect_to_any_socket(engine):
    process, keys = engine
    endpoints = process.endpoints
    sockets = [("orders", zmq.DEALER), ("admin", zmq.DEALER), ("market_data", zmq.SUB),
               ("snapshots", zmq.DEALER)]  # fmt: skip
    for name, kind in sockets:
        assert handshake(endpoints[name], as_(keys, "stranger"), kind) == FAILED_AUTH, name
    # the same sockets let a listed key in (the check above can fail)
    assert handshake(endpoints["orders"], as_(keys, "mm")) == SUCCEEDED
    assert handshake(endpoints["admin"], as_(keys, "alice")) == SUCCEEDED
    for name, kind in sockets[2:]:
        assert handshake(endpoints[name], as_(keys, "feed"), kind) == SUCCEEDED, name
    # a client with no keys at all is not answered, even a Status on the admin endpoint
    assert answer(endpoints["admin"], None, [wire.Status()]) is None
    assert answer(endpoints["admin"], as_(keys, "alice"), [wire.Status()]) is not None


def test_the_trade_stream_admits_operator_keys_only(engine):
    """Clearing records name both members and their fees: the trade stream is the operators'
    (ZAP domain "admin"), not a gateway's nor a market data reader's, nor a stranger's."""
    process, keys = engine
    trades = process.endpoints["trades"]
    for name in ("stranger", "mm", "feed"):
        assert handshake(trades, as_(keys, name)) == FAILED_AUTH, name
    assert handshake(trades, as_(keys, "alice")) == SUCCEEDED


def test_cxe_capture_follows_a_keyed_engine_with_an_operator_key(engine, keyed, tmp_path):
    """Written when it could not: the trade stream's 64-byte frame limit cut every CURVE
    handshake (HELLO is 200 bytes) and cxe capture had no key options."""
    process, keys = engine
    key_dir = keyed[0] / "keys"
    with GatewayClient(process.endpoints["orders"], "mm", curve_keys=as_(keys, "mm")) as mm:
        mm.submit("cap-s", 2, CODES[1], Side.SELL, 6150, 5)
        mm.submit("cap-b", 1, CODES[1], Side.BUY, 6150, 5)
        mm.wait_for(lambda r: isinstance(r, Filled) and r.member == 1)
    store = tmp_path / "capture.db"
    command = [*cxe_command(), "capture", "--data", str(process.data), "--store", str(store)]
    half = subprocess.run([*command, "--key", str(key_dir / "alice.key_secret")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert half.returncode == 2 and "give both --key" in half.stderr, half.stderr
    assert not store.exists()
    keyed_command = [*command, "--key", str(key_dir / "alice.key_secret"),
                     "--server-key", str(key_dir / "engine.key")]  # fmt: skip
    capture = subprocess.Popen(keyed_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while stored(store, TradeStore.stream_position) < 1:
            if capture.poll() is not None or time.monotonic() > deadline:
                capture.kill()
                pytest.fail(f"cxe capture stored nothing: {capture.communicate()[1]!r}")
            time.sleep(0.2)
    finally:
        capture.send_signal(signal.SIGTERM)
    assert capture.wait(30) == 0
    trades = stored(store, lambda captured: captured.trades_of(DAY))
    assert [(t.price, t.qty) for t in trades if t.buyer == 1][-1:] == [(6150, 5)]


def stored(path: Path, read):
    store = TradeStore(path)
    try:
        return read(store)
    finally:
        store.close()


def test_a_gateway_key_acts_only_for_its_members_and_sends_no_operator_commands(engine):
    process, keys = engine
    orders = process.endpoints["orders"]
    with GatewayClient(orders, "mm", curve_keys=as_(keys, "mm")) as mm:
        mm.submit("sec-1", 1, CODES[0], Side.BUY, 6150, 1)
        assert mm.wait_for(lambda r: isinstance(r, Accepted))[-1].member == 1
        mm.submit("sec-2", 3, CODES[0], Side.BUY, 6150, 1)  # member 3 is the brokers'
        refused = mm.wait_for(lambda r: isinstance(r, Rejected))[-1]
        assert refused.code == RejectCode.UNAUTHORISED and refused.member == 3
        mm.send([OpenCall(CODES[0])])
        session = mm.wait_for(lambda r: isinstance(r, wire.SessionRejected))[-1]
        assert "operator command" in session.text
    with pytest.raises(LogonRefused, match="may not log on as 'brokers'"):
        GatewayClient(orders, "brokers", curve_keys=as_(keys, "mm"))
    assert handshake(process.endpoints["admin"], as_(keys, "mm")) == FAILED_AUTH


def test_a_market_data_key_reads_the_feed_but_cannot_send_orders(engine):
    process, keys = engine
    assert handshake(process.endpoints["orders"], as_(keys, "feed")) == FAILED_AUTH
    logon = wire.Logon("mm", None, 1000)
    assert answer(process.endpoints["orders"], as_(keys, "feed"), [logon]) is None
    assert answer(process.endpoints["orders"], as_(keys, "mm"), [logon]) is not None
    reader = MarketDataClient(process.endpoints["market_data"], process.endpoints["snapshots"],
                              curve_keys=as_(keys, "feed"))  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not reader.synced:
            assert time.monotonic() < deadline, "the market data reader never synced"
            reader.poll(0.2)
        assert set(reader.books) == set(CODES)
    finally:
        reader.close()


def test_a_relay_serves_the_feed_to_listed_keys_only_and_subscribes_with_its_own(engine, keyed):
    """`FeedRelay` with the config's [security]: a CURVE client of the engine under a market
    data identity, a CURVE server to its subscribers with the engine's key pair and key
    table, so a subscriber connects to it as it would to the engine."""
    process, keys = engine
    tmp, _ = keyed
    security = load_market(write_config(tmp / "relay.json", keys, GATEWAY_KEYS)).security
    upstream = process.endpoints["market_data"]
    with FeedRelay(upstream, "tcp://127.0.0.1:*", security=security,
                   client=as_(keys, "feed")) as relay:  # fmt: skip
        assert handshake(relay.endpoint, as_(keys, "stranger"), zmq.SUB) == FAILED_AUTH
        assert handshake(relay.endpoint, None, zmq.SUB) != SUCCEEDED  # no CURVE at all
        assert handshake(relay.endpoint, as_(keys, "mm"), zmq.SUB) == SUCCEEDED
        reader = MarketDataClient(relay.endpoint, process.endpoints["snapshots"],
                                  curve_keys=as_(keys, "feed"))  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not reader.synced or relay.statistics().received == 0:  # heartbeats pass
                assert time.monotonic() < deadline, "nothing came through the relay"
                reader.poll(0.2)
            assert set(reader.books) == set(CODES)
        finally:
            reader.close()
    # a relay with a key pair of its own for its subscribers: they trust its public key
    with FeedRelay(upstream, "tcp://127.0.0.1:*", security=security, client=as_(keys, "feed"),
                   server=keys["mm2"]) as relay:  # fmt: skip
        assert handshake(relay.endpoint, (keys["mm"], keys["mm2"].public), zmq.SUB) == SUCCEEDED
        assert handshake(relay.endpoint, as_(keys, "mm"), zmq.SUB) != SUCCEEDED
        behind = MarketDataClient(
            relay.endpoint, process.endpoints["snapshots"], curve_keys=as_(keys, "feed"),
            feed_server_key=keys["mm2"].public,
        )  # fmt: skip
        try:  # the feed under the relay's key, snapshots under the engine's
            messages_before = behind.messages
            deadline = time.monotonic() + 30
            while not behind.synced or behind.messages == messages_before:
                assert time.monotonic() < deadline, "nothing from a relay with its own key pair"
                behind.poll(0.2)
        finally:
            behind.close()
    # a relay whose own key the engine does not list gets nothing to pass on
    with FeedRelay(upstream, "tcp://127.0.0.1:*", security=security,
                   client=as_(keys, "stranger")) as relay:  # fmt: skip
        time.sleep(2.5)  # two of the engine's idle heartbeats
        assert relay.statistics().received == 0
    assert handshake(upstream, as_(keys, "stranger"), zmq.SUB) == FAILED_AUTH


def test_a_key_making_up_topics_on_a_relay_is_refused_there_until_its_keys_reload(engine, keyed):
    """The relay holds its subscribers to the feed's topics as the engine does: past 100
    made-up topics the key is refused on the relay (not on the engine) until a reload."""
    process, keys = engine
    tmp, _ = keyed
    security = load_market(write_config(tmp / "relay-topics.json", keys, GATEWAY_KEYS)).security
    upstream = process.endpoints["market_data"]
    with FeedRelay(upstream, "tcp://127.0.0.1:*", security=security,
                   client=as_(keys, "feed")) as relay:  # fmt: skip
        deadline = time.monotonic() + 30
        while relay.statistics().received == 0:  # a heartbeat: the relay knows the topics
            assert time.monotonic() < deadline, "nothing came through the relay"
            time.sleep(0.1)
        offender = Peer(relay.endpoint, as_(keys, "brokers"))
        try:
            offender.subscribe(made_up(MAX_BAD_SUBSCRIPTIONS + 1))
            assert offender.event(10) == zmq.EVENT_DISCONNECTED
            deadline = time.monotonic() + 10
            while relay.statistics().resets == 0:  # counted when the rebind is done
                assert time.monotonic() < deadline, relay.statistics()
                time.sleep(0.05)
            assert handshake(relay.endpoint, as_(keys, "brokers"), zmq.SUB) == FAILED_AUTH
            assert handshake(relay.endpoint, as_(keys, "mm"), zmq.SUB) == SUCCEEDED
            assert handshake(upstream, as_(keys, "brokers"), zmq.SUB) == SUCCEEDED
            assert relay.reload(security) == set()
            assert handshake(relay.endpoint, as_(keys, "brokers"), zmq.SUB) == SUCCEEDED
        finally:
            offender.close()


def test_cxe_watch_shows_a_keyed_engine_to_an_operator_key_and_says_why_not_to_others(engine):
    """Written when it could not: `cxe watch` had no key options, so an engine with CURVE
    could not be watched at all."""
    process, pairs = engine
    keys = process.data.parent / "keys"
    watch = ("watch", "--once", "--data", str(process.data), "--timeout", "2")
    operator = cxe(*watch, "--key", str(keys / "alice.key_secret"),
                   "--server-key", str(keys / "engine.key"))  # fmt: skip
    assert operator.returncode == 0, operator.stdout + operator.stderr
    for code in CODES:
        assert code in operator.stdout
    assert "gateway" in operator.stdout and "mm" in operator.stdout  # the Status counters
    plain = cxe(*watch)
    assert plain.returncode == 2 and "no market data snapshot" in plain.stderr
    assert "an engine with CURVE answers only --key and --server-key" in plain.stderr
    # a gateway's key reads market data but the admin socket is the operators'
    gateway = cxe(*watch, "--key", str(keys / "mm.key_secret"),
                  "--server-key", str(keys / "engine.key"))  # fmt: skip
    assert gateway.returncode == 1 and CODES[0] in gateway.stdout
    assert (
        "no answer from admin" in gateway.stderr and "list --key as an operator" in gateway.stderr
    )
    half = cxe(*watch, "--key", str(keys / "alice.key_secret"))
    assert half.returncode == 2 and "give both --key" in half.stderr
    public = cxe(*watch, "--key", str(keys / "alice.key"), "--server-key", str(keys / "engine.key"))
    assert public.returncode == 2 and "secret key" in public.stderr
    secret = cxe(*watch, "--key", str(keys / "alice.key_secret"),
                 "--server-key", str(keys / "engine.key_secret"))  # fmt: skip
    assert secret.returncode == 2 and "holds a secret key" in secret.stderr
    feed_only = cxe(*watch, "--feed-server-key", str(keys / "mm2.key"))
    assert feed_only.returncode == 2 and "give --key and --server-key too" in feed_only.stderr
    for result in (operator, plain, gateway, half, public, secret, feed_only):
        assert "Traceback" not in result.stderr
    # through a relay with a key pair of its own (cxe relay --server-key)
    security = load_market(process.data.parent / "engine.json").security
    endpoints = process.endpoints
    with FeedRelay(endpoints["market_data"], "tcp://127.0.0.1:*", security=security,
                   client=as_(pairs, "feed"), server=pairs["mm2"]) as relay:  # fmt: skip
        relayed = cxe(
            "watch", "--once", "--timeout", "5", "--market-data", relay.endpoint,
            "--snapshots", endpoints["snapshots"], "--admin", endpoints["admin"],
            "--key", str(keys / "alice.key_secret"), "--server-key", str(keys / "engine.key"),
            "--feed-server-key", str(keys / "mm2.key"),
        )  # fmt: skip
    assert relayed.returncode == 0, relayed.stdout + relayed.stderr
    assert CODES[0] in relayed.stdout


def test_the_watch_status_poller_times_out_after_its_handshake_was_refused(engine):
    """`cxe watch --once` with a key market data admits and admin refuses hung now and then:
    once the handshake had failed (libzmq does not try a refused one again) the DEALER had no
    connection and a blocking send waited forever."""
    process, keys = engine
    poller = StatusPoller(process.endpoints["admin"], zmq.Context.instance(), 0.5, as_(keys, "mm"))
    outcome: list[str] = []
    try:
        time.sleep(1.0)  # the refusal comes within milliseconds on loopback
        asking = threading.Thread(target=lambda: (poller.fetch(), outcome.append(poller.error)))
        asking.daemon = True
        asking.start()
        asking.join(10)
        assert not asking.is_alive(), "the Status request blocked"
        assert outcome[0].startswith("no answer from admin")
        assert "list --key as an operator" in outcome[0]
    finally:
        poller.close()


def test_a_relay_ends_a_revoked_keys_subscription_when_it_reloads(engine, keyed):
    process, keys = engine
    tmp, _ = keyed
    config = write_config(tmp / "relay-revoke.json", keys, GATEWAY_KEYS)
    security = load_market(config).security
    with FeedRelay(process.endpoints["market_data"], "tcp://127.0.0.1:*", security=security,
                   client=as_(keys, "feed")) as relay:  # fmt: skip
        subscribers = {}
        for name in ("mm", "brokers"):
            socket = subscribers[name] = zmq.Context.instance().socket(zmq.SUB)
            socket.setsockopt(zmq.LINGER, 0)
            secure_client(socket, *as_(keys, name))
            socket.setsockopt(zmq.SUBSCRIBE, b"")
            socket.connect(relay.endpoint)
        try:
            for name, socket in subscribers.items():  # the engine's heartbeat, each second
                assert socket.poll(5_000), f"{name} received nothing through the relay"
            write_config(config, keys, {"brokers": "keys/brokers.key"})
            assert relay.reload(load_market(config).security) == {"gateway:mm"}
            time.sleep(0.5)
            for socket in subscribers.values():
                while socket.poll(100):
                    socket.recv_multipart()
            assert subscribers["brokers"].poll(5_000), "an admitted key lost the feed"
            assert not subscribers["mm"].poll(3_000), "a revoked key still reads the feed"
            assert relay.running and relay.statistics().received > 0
            with pytest.raises(ValueError, match=r"no \[security\] section now"):
                relay.reload(None)  # a config whose section was removed: the old files were read
        finally:
            for socket in subscribers.values():
                socket.close(0)


def test_a_market_data_client_with_a_refused_key_times_out_instead_of_hanging(engine):
    """Its snapshot request waited forever for a connection the engine had refused."""
    process, keys = engine
    outcome: list = []

    def read() -> None:
        endpoints = process.endpoints
        client = MarketDataClient(
            endpoints["market_data"], endpoints["snapshots"],
            curve_keys=as_(keys, "stranger"), snapshot_timeout=0.5,
        )  # fmt: skip
        try:
            outcome.append(client.next_update(3.0))
            outcome.append(client.snapshot_retries)
            outcome.append(client.refused and client.auth_failures >= 1)
        finally:
            client.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    assert not reader.is_alive(), "next_update(3.0) never returned"
    assert outcome[0] is None and outcome[1] >= 2  # it kept asking, and nothing came
    assert outcome[2:] == [True]  # and it knows why: `refused`


def test_cxe_relay_refuses_a_key_the_config_does_not_admit_to_market_data(keyed):
    tmp, keys = keyed
    config = str(write_config(tmp / "relay-cli.json", keys, GATEWAY_KEYS))
    relay = ("relay", "--upstream", "tcp://127.0.0.1:1", "--config", config, "--key")
    stranger = cxe(*relay, str(tmp / "keys" / "stranger.key_secret"))
    assert stranger.returncode == 2 and "lists no market data reader" in stranger.stderr
    public = cxe(*relay, str(tmp / "keys" / "feed.key"))
    assert public.returncode == 2 and "holds no secret key" in public.stderr
    missing = cxe(*relay, str(tmp / "keys" / "nobody.key_secret"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    for result in (stranger, public, missing):
        assert "Traceback" not in result.stderr


def test_a_revoked_key_is_refused_after_reload_and_its_session_ends(keyed):
    tmp, keys = keyed
    process = secured_engine(tmp, keys, "revoke")
    config = tmp / "revoke.json"
    with process:
        process.open_market(CODES[0])
        orders = process.endpoints["orders"]
        old = GatewayClient(orders, "mm", curve_keys=as_(keys, "mm"))
        write_config(config, keys, {"mm": "keys/mm2.key", "brokers": "keys/brokers.key"})
        operator = ["--key", str(tmp / "keys" / "alice.key_secret"), "--server-key",
                    str(tmp / "keys" / "engine.key"), "--config", str(config)]  # fmt: skip
        done = cxe("admin", "reload-keys", "--data", str(process.data), *operator)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "revoked=['gateway:mm']" in done.stdout
        assert handshake(orders, as_(keys, "mm")) == FAILED_AUTH  # a new connection
        assert "session ended: key of gateway:mm revoked" in process.output()
        old.send([wire.Logon("mm", None, 1000)])  # the open connection tries again
        refused = old.wait_for(lambda r: isinstance(r, wire.SessionRejected))[-1]
        assert "was revoked" in refused.text
        assert not [r for r in old.replies() if isinstance(r, wire.LogonAccepted)]
        old.close(logout=False)
        with GatewayClient(orders, "mm", curve_keys=as_(keys, "mm2")) as new:
            assert new.logon.members == [1, 2]
        # SIGHUP rereads the config too: the brokers' gateway loses its key
        write_config(config, keys, {"mm": "keys/mm2.key"})
        process.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "revoked ['gateway:brokers']" not in process.output():
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.1)
        assert handshake(orders, as_(keys, "brokers")) == FAILED_AUTH
        # a reload that cannot read its keys changes nothing and says why
        write_config(config, keys, {"mm": "keys/gone.key"})
        done = cxe("admin", "reload-keys", "--data", str(process.data), *operator[:4])
        assert done.returncode == 1 and "keys not reloaded" in done.stdout
        assert handshake(orders, as_(keys, "mm2")) == SUCCEEDED
        # nor can a config file that has gone (the engine stopped with exit status 2)
        config.rename(config.with_suffix(".moved"))
        done = cxe("admin", "reload-keys", "--data", str(process.data), *operator[:4])
        assert done.returncode == 1 and "cannot read it" in done.stdout, done.stdout
        process.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert process.process.poll() is None, process.output()
        assert handshake(orders, as_(keys, "mm2")) == SUCCEEDED


def synced_reader(process: EngineProcess, curve: tuple[KeyPair, bytes]) -> MarketDataClient:
    endpoints = process.endpoints
    reader = MarketDataClient(endpoints["market_data"], endpoints["snapshots"], curve_keys=curve,
                              snapshot_timeout=1.0, silence_timeout=2.0)  # fmt: skip
    deadline = time.monotonic() + 30
    while not reader.synced:
        assert time.monotonic() < deadline, "the market data reader never synced"
        reader.poll(0.2)
    return reader


def wait_for_log(process: EngineProcess, line: str) -> None:
    deadline = time.monotonic() + 20
    while line not in process.output():
        assert time.monotonic() < deadline, process.output()
        time.sleep(0.1)


def test_a_revoked_key_loses_its_open_market_data_and_trade_stream_connections(keyed):
    """Neither socket takes an identity from its peers' frames, so a reload ends all their
    connections where a revoked identity may hold one: the readers still admitted reconnect
    and resync, the revoked reader and operator get nothing more (both kept receiving until
    they disconnected before)."""
    tmp, keys = keyed
    process = secured_engine(tmp, keys, "unsubscribe")
    config = tmp / "unsubscribe.json"
    code = CODES[0]
    with process:
        process.open_market(code)
        kept = synced_reader(process, as_(keys, "brokers"))  # a gateway's key reads the feed
        revoked = synced_reader(process, as_(keys, "feed"))
        try:
            write_config(config, keys, GATEWAY_KEYS, readers=())
            process.process.send_signal(signal.SIGHUP)
            wait_for_log(process, "revoked ['md:feed']")
            seq_before = revoked.seq
            with GatewayClient(process.endpoints["orders"], "mm",
                               curve_keys=as_(keys, "mm")) as mm:  # fmt: skip
                mm.submit("after-revoke", 1, code, Side.BUY, 6150, 7)
                mm.wait_for(lambda r: isinstance(r, Accepted))
            quiet_until = time.monotonic() + 3
            while time.monotonic() < quiet_until:
                revoked.poll(0.2)
            assert revoked.seq == seq_before, "a revoked reader still reads the feed"
            assert (6150, 7, 1) not in revoked.books[code].depth(Side.BUY)
            deadline = time.monotonic() + 30
            while (6150, 7, 1) not in kept.books[code].depth(Side.BUY):
                assert time.monotonic() < deadline, "the admitted reader lost the feed"
                kept.poll(0.2)
            assert kept.resyncs >= 1  # it reconnected, saw the gap and took a snapshot
            assert "market data and snapshots: every connection ended" in process.output()
            assert "trade stream: every connection ended" not in process.output()  # no operator
            # admitted again: ZeroMQ never retries a refused connection, the client's silence
            # check does (it stayed "synced" on a dead connection before)
            write_config(config, keys, GATEWAY_KEYS)
            process.process.send_signal(signal.SIGHUP)
            wait_for_log(process, "keys reloaded: 4 admitted, revoked []")
            deadline = time.monotonic() + 30
            while (6150, 7, 1) not in revoked.books[code].depth(Side.BUY):
                assert time.monotonic() < deadline, "the key admitted again never read again"
                revoked.poll(0.2)
            assert revoked.reconnects >= 1 and revoked.synced
        finally:
            kept.close()
            revoked.close()
        # the trade stream: an operator's consumer, then the operator's key revoked
        consumer = zmq.Context.instance().socket(zmq.DEALER)
        consumer.setsockopt(zmq.LINGER, 0)
        secure_client(consumer, *as_(keys, "alice"))
        consumer.connect(process.endpoints["trades"])
        try:
            consumer.send_multipart([b"FROM", (1).to_bytes(8, "big")])
            assert consumer.poll(5_000), "the trade stream sent nothing to an operator"
            while consumer.poll(100):
                consumer.recv_multipart()
            assert consumer.poll(2_500), "no heartbeat"  # one each second while nothing trades
            write_config(config, keys, GATEWAY_KEYS, operators=("mm2",))
            process.process.send_signal(signal.SIGHUP)
            wait_for_log(process, "revoked ['operator:alice']")
            time.sleep(0.5)
            while consumer.poll(100):
                consumer.recv_multipart()
            with contextlib.suppress(zmq.Again):  # no connection to take it: as it should be
                consumer.send_multipart([b"FROM", (1).to_bytes(8, "big")], zmq.NOBLOCK)
            assert not consumer.poll(3_000), "a revoked operator still reads the trade stream"
        finally:
            consumer.close(0)
        assert "trade stream: every connection ended" in process.output()
        assert handshake(process.endpoints["trades"], as_(keys, "alice")) == FAILED_AUTH


def test_a_key_making_up_topics_is_refused_on_market_data_only_until_the_keys_reload(keyed):
    """A gateway's key may read the feed; past 100 made-up topics its feed connection ends
    and the key is refused on market data (its memory freed, not to be filled again), while
    it still enters orders, another reader keeps reading, and a key reload admits it again.
    (Plain mode, which has no identity to refuse: test_subscriptions.)"""
    tmp, keys = keyed
    process = secured_engine(tmp, keys, "made-up")
    code = CODES[0]
    with process:
        process.open_market(code)
        endpoints = process.endpoints
        kept = synced_reader(process, as_(keys, "feed"))
        offender = Peer(endpoints["market_data"], as_(keys, "brokers"))
        try:
            offender.subscribe(made_up(MAX_BAD_SUBSCRIPTIONS + 1))
            assert offender.event(10) == zmq.EVENT_DISCONNECTED
            wait_for_log(process, "gateway:brokers sent more than 100 subscriptions to topics")
            assert "refused on market data and snapshots until the keys" in process.output()
            for endpoint, kind in ((endpoints["market_data"], zmq.SUB),
                                   (endpoints["snapshots"], zmq.DEALER)):  # fmt: skip
                assert handshake(endpoint, as_(keys, "brokers"), kind) == FAILED_AUTH
            assert handshake(endpoints["orders"], as_(keys, "brokers")) == SUCCEEDED
            with GatewayClient(endpoints["orders"], "mm", curve_keys=as_(keys, "mm")) as mm:
                mm.submit("after-offence", 1, code, Side.BUY, 6150, 9)
                mm.wait_for(lambda r: isinstance(r, Accepted))
            deadline = time.monotonic() + 30
            while (6150, 9, 1) not in kept.books[code].depth(Side.BUY):
                assert time.monotonic() < deadline, "the other reader lost the feed"
                kept.poll(0.2)
            keyfiles = tmp / "keys"
            watched = cxe("watch", "--once", "--data", str(process.data), "--timeout", "2",
                          "--key", str(keyfiles / "brokers.key_secret"),
                          "--server-key", str(keyfiles / "engine.key"))  # fmt: skip
            assert watched.returncode == 2 and "Traceback" not in watched.stderr
            assert "refused --key for market data" in watched.stderr, watched.stderr
            refused = MarketDataClient(endpoints["market_data"], endpoints["snapshots"],
                                       curve_keys=as_(keys, "brokers"), snapshot_timeout=1.0,
                                       silence_timeout=2.0)  # fmt: skip
            try:
                assert refused.poll(2.0) == [] and refused.refused
                process.process.send_signal(signal.SIGHUP)
                wait_for_log(process, "keys reloaded: 4 admitted, revoked []")
                deadline = time.monotonic() + 30
                while not refused.synced:  # its silence check connects afresh: admitted
                    assert time.monotonic() < deadline, "the key admitted again never read"
                    refused.poll(0.2)
                assert not refused.refused
            finally:
                refused.close()
        finally:
            offender.close()
            kept.close()


def test_cxe_relay_reads_again_when_its_key_is_admitted_again(keyed):
    """A reload that revokes the relay's own key ends its connection to the engine, and
    ZeroMQ never retries a refused one: the relay stayed deaf after the key was admitted
    again. It now connects afresh every SILENCE_S while it hears nothing."""
    tmp, keys = keyed
    process = secured_engine(tmp, keys, "relay-readmit")
    config = tmp / "relay-readmit.json"
    with process:
        relay, _ = start_relay(process, "--report", "1", "--config", str(config),
                               "--key", str(tmp / "keys" / "feed.key_secret"))  # fmt: skip
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(relay.stdout), daemon=True)
        reader.start()

        def said(text: str, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while not any(text in line for line in lines):
                assert relay.poll() is None, relay.stderr.read()
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)

        try:
            said("messages from the engine")  # heartbeats come through
            write_config(config, keys, GATEWAY_KEYS, readers=())
            process.process.send_signal(signal.SIGHUP)
            said("WARNING: nothing from the engine")
            write_config(config, keys, GATEWAY_KEYS)
            process.process.send_signal(signal.SIGHUP)
            said("is back")
        finally:
            relay.terminate()
            relay.wait(30)


def test_plain_mode_says_so_and_binds_to_loopback_only(tmp_path):
    with EngineProcess(tmp_path / "data") as process:
        assert "PLAIN LOOPBACK MODE: no authentication" in process.output()
    done = cxe("serve", "--data", str(tmp_path / "open"), "--orders", "tcp://0.0.0.0:*")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "plain mode binds to loopback only, not ['tcp://0.0.0.0:*']" in done.stderr
    assert "--insecure" in done.stderr and "Traceback" not in done.stderr
