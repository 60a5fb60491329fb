"""The framing tells a torn tail (a prefix of one record, as a crash mid-write leaves it) from
corruption: damage anywhere else stops reading and opening for append, naming the file, the
byte offset and what to do, and changes nothing."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from engine.framing import read_frames
from engine.journal import CommandLog, CorruptLog, read_log
from tests.cli.test_cli import cxe
from tests.journal.test_journal import ROOT, session_commands


def write_log(path, n: int = 40) -> bytes:
    with CommandLog(path) as log:
        for seq, command in enumerate(session_commands(3, n)[:n], 1):
            log.append(seq, seq, command)
    return path.read_bytes()


def refused_everywhere(path, offset: int) -> None:
    """Reading, opening for append and `cxe replay` all stop at byte `offset`; nothing cut."""
    before = path.read_bytes()
    where = rf"{path.name}.* byte {offset}\b"
    with pytest.raises(CorruptLog, match=where):
        CommandLog(path)
    assert path.read_bytes() == before
    with pytest.raises(CorruptLog, match=where) as read_error:
        list(read_log(path))
    assert "Restore the file" in str(read_error.value)  # says what to do
    result = cxe("replay", str(path))
    assert result.returncode != 0, result.stdout
    assert f"byte {offset}" in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == before


def test_a_flipped_bit_in_a_length_field_mid_log_is_corruption_not_a_torn_tail(tmp_path):
    """The length of a record in the middle once read as 'runs past the end of the file':
    replay read half the log and exited 0, and reopening the log cut the other half."""
    path = tmp_path / "day.log"
    data = bytearray(write_log(path))
    offset, payload = list(read_frames(path))[20]
    header = bytes(data[offset : offset + len(data)]).split(payload, 1)[0]
    length_at = offset + header.index(struct.pack("<I", len(payload)))
    for bit in (20, 12, 30, 7, 3, 0):  # longer than the file, or shorter than the record
        damaged = bytearray(data)
        damaged[length_at + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        refused_everywhere(path, offset)


def test_zero_bytes_at_the_end_are_not_a_record(tmp_path):
    """Eight zero bytes once passed as an empty record: the writer appended after them and
    every later replay failed there."""
    path = tmp_path / "day.log"
    data = write_log(path)
    path.write_bytes(data + bytes(8))
    refused_everywhere(path, len(data))


def test_a_damaged_record_before_the_last_is_corruption_however_it_is_damaged(tmp_path):
    path = tmp_path / "day.log"
    data = write_log(path)
    (offset, _), (end, _) = list(read_frames(path))[-2:]
    for at in range(offset, end):  # every byte of the record before the last
        damaged = bytearray(data)
        damaged[at] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptLog, match=rf"byte {offset}\b"):
            list(read_log(path))
        with pytest.raises(CorruptLog, match=rf"byte {offset}\b"):
            CommandLog(path)
        assert path.read_bytes() == bytes(damaged)


FULL_DISK = """
import resource, signal, sys
from engine.framing import FramedWriter, WriterFailed

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
writer = FramedWriter(sys.argv[1])
written = 0
try:
    while True:
        writer.write(b"r" * 1_000)
        written += 1
        if written % 7 == 0:
            writer.sync()
except OSError as exc:
    print("failed", type(exc).__name__, exc.errno, flush=True)
for later in (lambda: writer.write(b"x"), writer.sync):
    try:
        later()
        print("accepted", flush=True)
    except WriterFailed as exc:
        print("refused", exc, flush=True)
writer.close()
print("closed", flush=True)
"""


def test_a_writer_refuses_everything_after_a_failed_write(tmp_path):
    """After a failed write the bytes on disk are unknown (a partial frame may be there): a
    retry that succeeded could acknowledge a record that was lost, so the writer refuses."""
    path = tmp_path / "full.log"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0].startswith("failed OSError 27")  # EFBIG
    assert lines[1].startswith("refused") and "an earlier write or sync failed" in lines[1]
    assert lines[2].startswith("refused") and lines[3] == "closed"
    records = list(read_frames(path))
    assert records and all(payload == b"r" * 1_000 for _, payload in records)
