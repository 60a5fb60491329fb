"""msgpack written by compiled code, byte for byte what msgspec writes for the same values.

The writers put into a uint8 buffer at a position and return the position after what they
wrote; the caller sizes the buffer. `put_int` is msgpack's shortest int encoding (msgspec's
choice), property-tested against msgspec (tests/core/test_batch.py).
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, _nrt=False)
def put_int(buf, p, v):
    """msgpack's shortest encoding of the int64 v (what msgspec writes) at buf[p]; the end."""
    if 0 <= v < 128 or -32 <= v < 0:
        buf[p] = v & 0xFF
        return p + 1
    if v >= 0:
        if v < 1 << 8:
            marker, size = 0xCC, 1
        elif v < 1 << 16:
            marker, size = 0xCD, 2
        elif v < 1 << 32:
            marker, size = 0xCE, 4
        else:
            marker, size = 0xCF, 8
    elif v >= -(1 << 7):
        marker, size = 0xD0, 1
    elif v >= -(1 << 15):
        marker, size = 0xD1, 2
    elif v >= -(1 << 31):
        marker, size = 0xD2, 4
    else:
        marker, size = 0xD3, 8
    return put_marked(buf, p, marker, v, size)


@njit(cache=True, _nrt=False)
def put_marked(buf, p, marker, v, size):
    """A msgpack marker byte, then v big-endian in `size` bytes, at buf[p]; the end."""
    buf[p] = marker
    for k in range(size):
        buf[p + 1 + k] = (v >> (8 * (size - 1 - k))) & 0xFF
    return p + 1 + size


@njit(cache=True, _nrt=False)
def put_bytes(buf, p, src):
    """The bytes of the uint8 array src at buf[p]; the end."""
    for k in range(src.shape[0]):
        buf[p + k] = src[k]
    return p + src.shape[0]


@njit(cache=True, _nrt=False)
def put_array_header(buf, p, n):
    """msgpack's header of an array of n items (engine.gateway.wire.array_header in Python)."""
    if n < 16:
        buf[p] = 0x90 | n
        return p + 1
    if n < 1 << 16:
        return put_marked(buf, p, 0xDC, n, 2)
    return put_marked(buf, p, 0xDD, n, 4)
