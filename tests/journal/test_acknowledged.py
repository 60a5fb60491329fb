"""DATA/acknowledged (engine.journal.acknowledged): the last seq acknowledged, read back at
start; a file that is not one is refused, never taken as 0. The engine's refusal of a journal
short of it is in tests/gateway/test_service_e2e.py."""

from __future__ import annotations

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
