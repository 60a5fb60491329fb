"""docs/PROTOCOL.md's example client and encoding rules, run against a real `cxe serve`.

The client is taken from the document as printed (the code block after
`<!-- example: client.py -->`) and run as its own Python process with only pyzmq and a
msgpack library, so the example cannot rot; the rules of the document's "Encoding" and
"Refusals" sections a client relies on are checked on the same engine with raw frames.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zmq

from engine.gateway import wire
from engine.gateway.client import GatewayClient
from engine.protocol import NewOrder, RejectCode
from tests.support.engine import EngineProcess

pytestmark = pytest.mark.slow
DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"
CODE = "CEA25"  # the instrument the document's example trades


def example_client() -> str:
    found = re.search(r"<!-- example: client.py -->\s*```python\n(.+?)```", DOC.read_text(), re.S)
    assert found, "docs/PROTOCOL.md lost its example client block"
    return found.group(1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("protocol") / "data") as process:
        process.open_market(CODE)
        yield process


def raw_session(engine: EngineProcess, gateway: str = "brokers") -> zmq.Socket:
    """A DEALER logged on with hand-written msgpack, as a client in another language would."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(engine.endpoints["orders"])
    send(socket, [200, gateway, None, 1000])
    assert next_message(socket)[0] == 201
    return socket


def send(socket: zmq.Socket, *messages: list) -> None:
    socket.send_multipart([b"M", msgspec.msgpack.encode(list(messages))])


def next_message(socket: zmq.Socket) -> list:
    assert socket.poll(30_000, zmq.POLLIN), "no answer from the engine"
    kind, body = socket.recv_multipart()
    assert kind == b"M"
    return msgspec.msgpack.decode(body)[0]


def test_the_documented_client_runs_against_a_real_engine(engine, tmp_path):
    code = example_client()
    assert not re.search(r"^\s*(from|import) (engine|tests)\b", code, re.M)
    script = tmp_path / "client.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script), engine.endpoints["orders"]],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "logged on as brokers for members [3, 4], 0 kept frames follow" in done.stdout
    accepted = re.search(r"accepted ex-1: order (\d+) at seq \d+, stream_seq 1\n", done.stdout)
    assert accepted, done.stdout
    with GatewayClient(engine.endpoints["orders"], "brokers") as gateway:  # the order is real
        gateway.resend([NewOrder("ex-1", 3, CODE, 0, 6200, 100)])
        status = gateway.wait_for(lambda r: isinstance(r, wire.OrderStatus))[-1]
    assert (status.state, status.order_id, status.leaves) == ("live", int(accepted[1]), 100)


def test_defaults_may_be_left_off_and_extra_trailing_elements_are_ignored(engine):
    socket = raw_session(engine)
    send(socket, [1, "enc-1", 4, CODE, 1, 6300, 10, 1, 0, 0, "a later field"])
    accepted = next_message(socket)
    assert accepted[:3] == [101, accepted[1], "enc-1"] and accepted[6:9] == [1, 6300, 10]
    send(socket, [1, "enc-2", 4, CODE, 1, 6300])  # qty missing: required
    rejected = next_message(socket)
    assert rejected[0] == 102 and rejected[1] == 0 and rejected[4] == RejectCode.MALFORMED
    assert "at least length 7" in rejected[5]
    socket.close()


def test_a_value_outside_its_range_is_malformed_with_the_field_named_and_not_sequenced(engine):
    before = engine.status().seq
    socket = raw_session(engine)
    send(socket, [1, "enc-3", 4, CODE, 5, 6300, 10])
    rejected = next_message(socket)
    assert rejected[:3] == [102, 0, ""] and rejected[3] == -1  # no ClOrdID, no member
    assert (rejected[4], rejected[6]) == (RejectCode.MALFORMED, 0)  # in no stream
    assert rejected[5].startswith(RejectCode.MALFORMED.text + ": NewOrder.side")
    send(socket, [1, "enc-4", 4, CODE, 0, 63.0, 10])
    assert "NewOrder.price: Expected `int`, got `float`" in next_message(socket)[5]
    assert engine.status().seq == before
    socket.close()
