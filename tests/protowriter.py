"""Protocol Buffers' wire format, written by hand for test fixtures (Caffe's caffemodel, TensorFlow's GraphDef), so
that googlenet.protowire, the reader under test, is checked against a separate writer."""

from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): bytes, strings and nested messages."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload
