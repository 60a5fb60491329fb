"""The day's trades digest: a SHA-256 chain whose running state is plain bytes.

`hashlib.sha256()` cannot be exported, so a digest that is one SHA-256 over the whole day
could not continue after a restart from a snapshot. The day's `trades_digest` is therefore
a chain over the byte stream of the day's trade encodings, cut into PIECE-byte pieces:

    h0 = 32 zero bytes;  h(i+1) = SHA-256(h(i) + piece i);  digest = SHA-256(h(n) + tail)

where `tail` is what follows the last whole piece (fewer than PIECE bytes), hex encoded.

Invariants:
- the digest depends only on the byte stream, never on how it was split into updates, so
  the per-command path, the batch and clearing's recomputation agree;
- `state()` is h(n) followed by the tail (32 to 32 + PIECE - 1 bytes), and
  `DayDigest.resume(d.state())` continues exactly as `d` would;
- `hexdigest()` does not change the state (more updates may follow it).
"""

from __future__ import annotations

import hashlib

PIECE = 16_384  # bytes per chained piece (the most a snapshot holds unhashed per instrument):
# large enough that starting a piece costs next to nothing beside hashing it
_CHAIN = 32


class DayDigest:
    __slots__ = ("_chain", "_tail")

    def __init__(self) -> None:
        self._chain = bytes(_CHAIN)
        self._tail = bytearray()

    def update(self, data: bytes) -> None:
        tail = self._tail
        need = PIECE - len(tail)
        if len(data) < need:
            tail += data
            return
        with memoryview(data) as view:
            piece = hashlib.sha256(self._chain)
            piece.update(tail)
            piece.update(view[:need])
            chain, at = piece.digest(), need
            while len(view) - at >= PIECE:
                piece = hashlib.sha256(chain)
                piece.update(view[at : at + PIECE])
                chain, at = piece.digest(), at + PIECE
            tail.clear()
            tail += view[at:]
        self._chain = chain

    def hexdigest(self) -> str:
        final = hashlib.sha256(self._chain)
        final.update(self._tail)
        return final.hexdigest()

    def state(self) -> bytes:
        """The running state: the chain value, then the bytes not yet in a piece."""
        return self._chain + bytes(self._tail)

    @classmethod
    def resume(cls, state: bytes) -> DayDigest:
        """The digest whose `state()` was `state`; ValueError if these bytes cannot be one."""
        if not isinstance(state, bytes) or not _CHAIN <= len(state) < _CHAIN + PIECE:
            raise ValueError(f"not a day digest state: {len(state)} bytes")
        resumed = cls()
        resumed._chain = state[:_CHAIN]
        resumed._tail += state[_CHAIN:]
        return resumed


def digest_of(encoded: bytes) -> str:
    """The digest of one byte stream (the day's trade encodings, back to back)."""
    digest = DayDigest()
    digest.update(encoded)
    return digest.hexdigest()
