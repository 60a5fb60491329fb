"""`cxe serve` and `cxe admin` run as an operator runs them (real processes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.test_cli import ROOT, cxe
from tests.support.engine import DAY, EngineProcess
from tests.support.signals import wait_until_caught

pytestmark = pytest.mark.slow


def test_admin_drives_the_day_and_reports_status(tmp_path):
    data = tmp_path / "data"
    with EngineProcess(data):
        started = cxe("admin", "start-of-day", DAY, "--data", str(data))
        assert started.returncode == 0, started.stderr
        assert "done" in started.stdout
        opened = cxe("admin", "open-call", "CEA25", "--data", str(data))
        assert "PhaseChanged seq=2 instrument=CEA25 phase=CALL" in opened.stdout
        status = cxe("admin", "status", "--data", str(data))
        assert "StatusReport seq=2 " in status.stdout and "state_hash=(not asked)" not in (
            status.stdout
        )
        # a probe: the hash holds the engine's loop (0.3 s on a large day); it can be left out
        quick = cxe("admin", "status", "--no-state-hash", "--data", str(data))
        assert "StatusReport seq=2 state_hash=(not asked) " in quick.stdout, quick.stdout
        refused = cxe("admin", "uncross", "NOPE", "--data", str(data))
        assert refused.returncode == 1 and "UNKNOWN_INSTRUMENT" in refused.stdout


def test_admin_without_an_engine_says_what_to_do(tmp_path):
    result = cxe("admin", "status", "--data", str(tmp_path))
    assert result.returncode == 2
    assert "no running engine found" in result.stderr and "cxe serve" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("tool", ["admin", "watch"])
def test_an_endpoints_file_with_endpoints_that_are_not_text_says_what_to_do(tmp_path, tool):
    """Found by a helper's probe: a traceback (allow_ipv6 took the number for text)."""
    endpoints = {"admin": 5, "market_data": 6, "snapshots": 7, "pid": os.getpid()}
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))
    args = ["status"] if tool == "admin" else []
    result = cxe(tool, *args, "--data", str(tmp_path), timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "no running engine found" in result.stderr


def test_serve_refuses_an_endpoint_it_cannot_bind_without_a_traceback(tmp_path):
    result = cxe("serve", "--data", str(tmp_path / "d"), "--orders", "bogus://x")
    assert result.returncode == 2
    assert "cxe serve:" in result.stderr and "Traceback" not in result.stderr


def test_serve_started_with_sigint_ignored_still_stops_cleanly_on_sigint(tmp_path):
    with EngineProcess(tmp_path / "data", sigint_ignored=True) as engine:
        wait_until_caught(engine.process, signal.SIGINT, signal.SIGTERM)
        engine.process.send_signal(signal.SIGINT)
        assert engine.process.wait(60) == 0, engine.output()
    assert "stopped at seq 0, state hash" in engine.output()


def test_admin_runs_a_day_through_every_session_command(tmp_path):
    """Each session command as an operator types it, against a real engine: the phase each
    one leads to is what `cxe admin` prints."""
    data = tmp_path / "data"
    steps = [
        (["set-reference", "CEA25", "6300"], "phase=CLOSED reference=63.00 CNY (6300 fen)"),
        (
            ["start-of-day", DAY],
            f"StartOfDay date={DAY} (the command caused no event; the engine's seq is now 2)",
        ),
        (["open-call", "CEA25"], "phase=CALL reference=63.00 CNY (6300 fen)"),
        (["uncross", "CEA25"], "phase=CONTINUOUS"),
        (["halt", "CEA25"], "phase=HALTED"),
        (["snapshot"], "snapshot requested at seq "),  # written after the turn
        (["resume", "CEA25"], "phase=CALL"),
        (["uncross", "CEA25"], "phase=CONTINUOUS"),
        (["close-call", "CEA25"], "phase=CLOSING_CALL"),
        (["close", "CEA25"], "phase=CLOSED"),
        (["end-of-day"], "DayClosed"),
    ]
    with EngineProcess(data):
        for args, expected in steps:
            done = cxe("admin", *args, "--data", str(data))
            assert done.returncode == 0 and expected in done.stdout, (args, done.stdout)
            if args == ["snapshot"]:
                said = done.stdout
        deadline = time.monotonic() + 30
        while len(list((data / "snapshots").glob("snapshot-*.snap"))) < 2:  # end of day's too
            assert time.monotonic() < deadline, "the requested snapshot was not written"
            time.sleep(0.1)
    snapshots = (data / "snapshots").resolve()
    requested = re.search(r"requested at seq (\d+): to be written to (.+) \(snapshot-", said)
    assert requested is not None and requested[2] == str(snapshots), said
    written = sorted(int(p.name[9:25]) for p in snapshots.glob("snapshot-*.snap"))
    assert written[0] >= int(requested[1])  # the state after the turn: that seq or later


def test_serve_and_relay_listen_on_the_ipv6_loopback(tmp_path):
    """Found by a probe: docs/SECURITY.md names [::1] as loopback, yet `cxe serve` and
    `cxe relay` answered "No such device" for tcp://[::1]:* (libzmq's sockets are IPv4 only
    unless told). An order, a reader of the engine and a reader behind a relay, all on ::1."""
    from engine.config import default_market
    from engine.gateway.client import GatewayClient
    from engine.gateway.marketdata_client import MarketDataClient
    from engine.protocol import Accepted
    from engine.types import Side
    from tests.cli.test_watch import start_relay, stops_on_sigterm

    here = "tcp://[::1]:*"
    names = ("orders", "admin", "market-data", "snapshots", "trades")
    market = default_market()
    code, price = market.instruments[0].code, market.instruments[0].reference_price
    with EngineProcess(tmp_path / "data", *(a for n in names for a in (f"--{n}", here))) as engine:
        endpoints = engine.endpoints
        assert all(endpoints[n.replace("-", "_")].startswith("tcp://[::1]:") for n in names)
        engine.open_market(code)
        relay, relayed = start_relay(engine, "--bind", here)
        try:
            assert relayed.startswith("tcp://[::1]:"), relayed
            readers = [
                MarketDataClient(feed, endpoints["snapshots"], snapshot_timeout=1.0)
                for feed in (endpoints["market_data"], relayed)
            ]
            with GatewayClient(endpoints["orders"], "mm") as mm:
                mm.submit("over-ipv6", 1, code, Side.BUY, price, 7)
                mm.wait_for(lambda r: isinstance(r, Accepted), 10_000)
            deadline = time.monotonic() + 30
            for reader in readers:
                while code not in reader.books or (price, 7, 1) not in reader.books[code].depth(
                    Side.BUY
                ):
                    assert time.monotonic() < deadline, "a reader over IPv6 never saw the order"
                    reader.poll(0.2)
                reader.close()
        finally:
            stops_on_sigterm(relay)


OLD_ENGINES_LOCK = """
import fcntl, sys, time
lock = open(sys.argv[1], "a+")
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_engine_on_a_data_directory_in_use_is_refused(tmp_path):
    """Found by a helper's probe: a second `cxe serve` on the same directory (other ports)
    ran beside the first; both acknowledged orders under seq 14-23 in one journal, which no
    restart could recover; a second probe removed engine.lock and the next engine ran beside
    the first (the lock was on that file). The lock goes with the process, kill -9 too."""
    data = tmp_path / "data"
    free = "tcp://127.0.0.1:*"
    ports = [f"--{name}={free}" for name in ("orders", "admin", "market-data", "snapshots")]
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")
        second = cxe("serve", "--data", str(data), *ports, f"--trades={free}", timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert f"is in use by engine pid {engine.process.pid}" in second.stderr
        assert "one engine per data directory" in second.stderr
        (data / "engine.lock").unlink()  # the usual clean-up of a "stale" lock: still refused
        again = cxe("serve", "--data", str(data), *ports, f"--trades={free}", timeout=120)
        assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
        assert "is in use by another process" in again.stderr
        before = engine.status()
        engine.kill()
        # an engine from before the directory's lock held engine.lock alone (a probe ran one
        # beside a newer one during an upgrade)
        holder = subprocess.Popen(
            [sys.executable, "-c", OLD_ENGINES_LOCK, str(data / "engine.lock")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout.readline() == "locked\n"
            older = cxe("serve", "--data", str(data), *ports, f"--trades={free}", timeout=120)
            assert older.returncode == 2 and "is in use by" in older.stderr, older.stderr
        finally:
            holder.kill()
            holder.wait(30)
        engine.start()  # the lock went with the killed process
        assert engine.status().state_hash == before.state_hash
        assert engine.stop() == 0


def test_a_journal_that_ends_before_the_snapshot_is_refused_at_start(tmp_path):
    """Found by a helper's probe: with the journal ending before the latest snapshot (an old
    backup restored) the engine started, answered status, and stopped at the first command,
    at every restart. Now it refuses to start, saying what is missing and what to do; with
    the journal's segments moved away it goes on from the snapshot."""
    from engine.framing import MAGIC
    from engine.gateway import wire
    from engine.journal.segments import Journal
    from engine.protocol import Halt, StartOfDay
    from engine.types import Phase

    data = tmp_path / "data"
    with EngineProcess(data) as engine:
        engine.open_market("CEA25")  # seq 3
        engine.admin(wire.SnapshotNow())
        while not list((data / "snapshots").glob("snapshot-*.snap")):
            time.sleep(0.1)
        hash_at_snapshot = engine.status().state_hash
        assert engine.stop() == 0
    journal = data / "journal"
    shutil.move(journal, tmp_path / "journal-as-it-was")
    old_copy = Journal(journal)
    old_copy.append(1, 1, StartOfDay(DAY))  # an old copy: seq 1 only
    old_copy.close()
    for kept in ("market.json", "history"):  # copied with it
        shutil.copy(tmp_path / "journal-as-it-was" / kept, journal)
    [segment] = journal.glob("commands-*.log")
    with open(segment, "ab") as file:
        file.write(MAGIC + b"\x40\x00")  # a partial copy: the refusal must not cut it
    held = {path.name: path.read_bytes() for path in journal.iterdir()}
    (data / "endpoints.json").unlink()
    free = "tcp://127.0.0.1:*"
    ports = [f"--{name}={free}" for name in ("orders", "admin", "market-data", "snapshots")]
    refused = cxe("serve", "--data", str(data), *ports, f"--trades={free}", timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "the journal ends at seq 1, before the snapshot recovered (seq 3)" in refused.stderr
    assert "records 2..3 are missing" in refused.stderr
    # the refused start changed nothing (a probe: it cut the partial record first, logged
    # as a crash's torn tail) and published no endpoints
    assert {path.name: path.read_bytes() for path in journal.iterdir()} == held
    assert "cut a torn tail" not in refused.stderr + refused.stdout
    assert not (data / "endpoints.json").exists()
    shutil.move(journal, tmp_path / "journal-old-copy")  # as the message says
    with EngineProcess(data) as engine:
        assert engine.status().state_hash == hash_at_snapshot
        (halted,) = engine.admin(Halt("CEA25"))  # and it takes the next command, seq 4
        assert halted.phase == Phase.HALTED and engine.status().seq == 4
        assert engine.stop() == 0


def test_a_journal_is_recovered_only_under_the_market_it_was_written_under(tmp_path):
    """Found by a helper's probe: a block band narrowed in the config between two runs made
    the restart replay the day under the new band, and an acknowledged block trade was gone
    from the state (snapshots refused another config; the journal did not)."""
    from engine.protocol import BlockTrade

    example = (ROOT / "docs" / "market.example.toml").read_text()
    config = tmp_path / "market.toml"
    config.write_text(example)
    data = tmp_path / "data"
    with EngineProcess(data, "--config", str(config)) as engine:
        engine.open_market("CEA25")
        price = 5_000  # 20% below the reference: inside the example's +-30% block band
        answers = engine.admin(BlockTrade("blk1", "CEA25", 3, 1, price, 100_000))
        assert any(type(a).__name__ == "Trade" for a in answers), answers
        before = engine.status()
        assert engine.stop() == 0
    assert "block_band_ppm = 300_000" in example
    config.write_text(example.replace("block_band_ppm = 300_000", "block_band_ppm = 100_000"))
    free = "tcp://127.0.0.1:*"
    ports = [f"--{name}={free}" for name in ("orders", "admin", "market-data", "snapshots")]
    for with_config in (["--config", str(config)], []):  # edited, and forgotten
        refused = cxe("serve", "--data", str(data), *with_config, *ports, f"--trades={free}",
                      timeout=120)  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert "was written under market config" in refused.stderr
        assert "Start the engine with the config the journal was written under" in (refused.stderr)
    config.write_text(example)
    bound = data / "journal" / "market.json"
    line = bound.read_text()
    # damaged or missing: refused, never taken as the config given's (a probe removed it and
    # started under another config: every order replayed as a reject, the file was rewritten
    # for that config, and following the messages lost 30 acknowledged trades)
    for damage, said in (("{not json", "market.json cannot be read"), (None, "is missing")):
        bound.unlink()
        if damage is not None:
            bound.write_text(damage)
        for given in (["--config", str(config)], []):
            refused = cxe("serve", "--data", str(data), *given, *ports, f"--trades={free}",
                          timeout=120)  # fmt: skip
            assert refused.returncode == 2 and said in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr
            assert bound.exists() == (damage is not None)  # the refusal wrote nothing
            if given:  # the line it names is the config given's, here the journal's own
                assert f"write its line into the file: {line}" in refused.stderr
    bound.write_text(line)  # as the message says, for the config it was written under
    with EngineProcess(data, "--config", str(config)) as engine:
        assert engine.status().state_hash == before.state_hash
        assert engine.stop() == 0


def test_members_no_gateway_may_act_for_are_said_at_start(tmp_path):
    """Found by a newcomer's walk through the guides: docs/market.example.toml had no
    [[gateways]], and `cxe serve --config` with it started without a word while every logon
    was refused ("unknown gateway"). The example lists gateways now; a market that leaves a
    member out of them is said at start."""
    example = (ROOT / "docs" / "market.example.toml").read_text()
    assert "[[gateways]]" in example
    cut = example.index("# The broker gateways allowed")
    for name, text, said in (("example", example, False), ("none", example[:cut], True)):
        config = tmp_path / f"{name}.toml"
        config.write_text(text)
        with EngineProcess(tmp_path / name, "--config", str(config)) as engine:
            warned = "WARNING: members [1, 2, 3, 4] are in no [[gateways]] entry" in (
                engine.output()
            )
            assert warned == said, engine.output()
            assert engine.stop() == 0


def test_admin_on_all_instruments_sends_the_engines_own(tmp_path):
    """Found by a newcomer's walk through the guides: `cxe admin halt` without --config sent
    the embedded market's six codes to an engine on a market file of two; the four it did
    not list were journaled as rejects and the command failed. The engine's status now
    names its instruments and its trading day, and the action takes them."""
    config = tmp_path / "market.toml"
    config.write_text((ROOT / "docs" / "market.example.toml").read_text())
    data = tmp_path / "data"
    with EngineProcess(data, "--config", str(config)) as engine:
        engine.open_market("CEA25", "CCER")
        status = engine.status()
        assert (status.date, status.instruments) == (DAY, ["CEA25", "CCER"])
        halted = cxe("admin", "halt", "--data", str(data))
        assert halted.returncode == 0, halted.stdout
        assert "Rejected" not in halted.stdout
        assert [line.split()[2] for line in halted.stdout.splitlines()] == [
            "instrument=CEA25",
            "instrument=CCER",
        ], halted.stdout
        assert engine.stop() == 0


def test_start_of_day_without_a_date_opens_the_day_of_the_engines_clock(tmp_path):
    """A newcomer's walk through the guides: against a rehearsal (`cxe serve --clock`),
    `cxe admin start-of-day` sent this machine's date, and the engine refused it."""
    data = tmp_path / "data"
    with EngineProcess(data) as engine:  # its clock starts on DAY, not today
        assert engine.status().clock_day == DAY
        opened = cxe("admin", "start-of-day", "--data", str(data))
        assert opened.returncode == 0, opened.stdout
        assert f"StartOfDay date={DAY}" in opened.stdout
        assert engine.status().date == DAY
        assert engine.stop() == 0


@pytest.mark.parametrize("text", ["３", "٣", "1.5", "abc", ""])
def test_whole_number_options_take_ascii_digits_only(text):
    """A probe: `--keep-snapshots ３` (a full-width digit) started the engine."""
    import argparse

    from engine.cli.common import nonnegative_int

    with pytest.raises(argparse.ArgumentTypeError, match="not a whole number"):
        nonnegative_int(text)
