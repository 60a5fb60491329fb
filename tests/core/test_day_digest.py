"""The day's trades digest (engine.digest): one value for one byte stream, however it is fed,
and a running state that resumes exactly (what a snapshot carries)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.digest import PIECE, DayDigest, digest_of


def chained(stream: bytes) -> str:
    """The definition, written out: h0 = zeros, h(i+1) = SHA-256(h(i) + piece i), then the
    tail."""
    chain, whole = bytes(32), len(stream) - len(stream) % PIECE
    for at in range(0, whole, PIECE):
        chain = hashlib.sha256(chain + stream[at : at + PIECE]).digest()
    return hashlib.sha256(chain + stream[whole:]).hexdigest()


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=3 * PIECE + 100) | st.integers(0, 3).map(lambda k: bytes(k * PIECE)),
    st.lists(st.integers(0, 3 * PIECE + 100), max_size=8),
)
def test_the_digest_depends_on_the_stream_only_and_resumes_from_its_state(stream, cuts):
    digest = DayDigest()
    at = 0
    for cut in [*sorted(min(cut, len(stream)) for cut in cuts), len(stream)]:
        digest.update(stream[at:cut])
        at = cut
        assert digest.hexdigest() == chained(stream[:at])  # reading it changes nothing
        digest = DayDigest.resume(digest.state())
        assert len(digest.state()) == 32 + at % PIECE
    assert digest.hexdigest() == chained(stream) == digest_of(stream)


@pytest.mark.parametrize("size", [0, 31, 32 + PIECE, 32 + 2 * PIECE])
def test_a_state_of_the_wrong_size_is_refused(size):
    with pytest.raises(ValueError, match="not a day digest state"):
        DayDigest.resume(bytes(size))
