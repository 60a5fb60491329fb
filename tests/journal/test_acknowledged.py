"""DATA/acknowledged (engine.journal.acknowledged): the last seq acknowledged, read back at
start; a file that is not one is refused, never taken as 0. The engine's refusal of a journal
short of it is in tests/gateway/test_service_e2e.py."""

from __future__ import annotations

import os

import pytest

from engine.journal.acknowledged import ACKNOWLEDGED_FILE, AcknowledgedMark


def test_the_mark_is_read_back_and_names_what_a_shorter_journal_misses(tmp_path):
    mark = AcknowledgedMark(tmp_path)
    assert mark.seq == 0 and not mark.missing(0)  # no file: a mark of 0
    mark.mark(53)
    mark.close()
    again = AcknowledgedMark(tmp_path)
    try:
        assert again.seq == 53
        assert again.missing(33) == range(34, 54)
        assert not again.missing(53) and not again.missing(60)
    finally:
        again.close()


@pytest.mark.parametrize("held", [b"abc", b"\0" * 9])
def test_a_mark_of_another_size_is_refused_not_taken_as_zero(tmp_path, held):
    (tmp_path / ACKNOWLEDGED_FILE).write_bytes(held)
    with pytest.raises(ValueError, match=f"{len(held)} bytes, not the 8 of a sequence number"):
        AcknowledgedMark(tmp_path)


@pytest.mark.parametrize("seq", [0, 2**63, 2**64 - 1])
def test_a_mark_the_engine_never_writes_is_refused_as_damage(tmp_path, seq):
    """Found by a probe: 8 bytes of 0xFF made the start count 2**64 - 1 missing commands
    with len() and crash with a traceback; 8 zero bytes (blocks zeroed by a crash) silently
    turned the check off. The engine writes neither: both are damage."""
    (tmp_path / ACKNOWLEDGED_FILE).write_bytes(seq.to_bytes(8, "big"))
    with pytest.raises(ValueError, match=f"holds {seq}, which the engine never writes"):
        AcknowledgedMark(tmp_path)


def test_the_largest_sequence_number_is_a_mark(tmp_path):
    (tmp_path / ACKNOWLEDGED_FILE).write_bytes((2**63 - 1).to_bytes(8, "big"))
    mark = AcknowledgedMark(tmp_path)
    try:
        assert mark.seq == 2**63 - 1 and mark.missing(2**63 - 3) == range(2**63 - 2, 2**63)
    finally:
        mark.close()


def test_a_fifo_in_its_place_is_refused_naming_it(tmp_path):
    """Found by a probe: a FIFO there stopped the start with a bare 'Illegal seek'."""
    os.mkfifo(tmp_path / ACKNOWLEDGED_FILE)
    with pytest.raises(OSError, match=f"{ACKNOWLEDGED_FILE}: not a regular file"):
        AcknowledgedMark(tmp_path)


def test_a_mark_that_cannot_be_written_names_its_file_and_a_refused_start_makes_none(tmp_path):
    """Found by a probe: the engine stopped on a mark it could not write saying 'journal
    failed: [Errno 1] Operation not permitted', naming neither the file nor the step; and
    a start that refused left an empty mark behind (it is now made at the first mark)."""
    mark = AcknowledgedMark(tmp_path)
    assert not (tmp_path / ACKNOWLEDGED_FILE).exists()
    (tmp_path / ACKNOWLEDGED_FILE).mkdir()  # something in its way when it is first written
    with pytest.raises(OSError) as raised:
        mark.mark(3)
    assert raised.value.filename == str(tmp_path / ACKNOWLEDGED_FILE)
    assert str(tmp_path / ACKNOWLEDGED_FILE) in str(raised.value) and mark.seq == 0
    mark.close()
