"""A small protobuf wire-format reader with bounded memory, for the binary files of Caffe and TensorFlow.

Hand-written rather than the ``protobuf`` package with a schema defined in code because every length field is
checked against the bytes that remain *before* anything is sliced, so a file claiming a 4 GB blob fails in one line
instead of allocating: the reader only takes zero-copy views (memoryview) of the bytes already read, whose size
``open_weights_file`` bounds. Unknown fields are skipped, as protobuf does.
"""

from __future__ import annotations

from typing import Iterator


class WireError(ValueError):
    pass


def varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: ints for varint/fixed fields, memoryviews (no copy) for
    length-delimited ones. Every length is checked against the bytes left before it is used."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            n, pos = varint(buf, pos)
            if n > len(buf) - pos:
                raise WireError(f"a field claims {n:,} bytes where {len(buf) - pos:,} remain")
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if width > len(buf) - pos:
                raise WireError("truncated fixed-width field")
            value, pos = bytes(buf[pos:pos + width]), pos + width
        else:
            raise WireError(f"unsupported wire type {wire} (groups are not used by caffe.proto)")
        yield number, wire, value


__all__ = ["WireError", "fields", "varint"]
