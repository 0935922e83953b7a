"""Odd and hostile files, made on the fly: every test that feeds bad input to a command takes them from here.

``make_odd_images`` returns files that must be converted (correct result), ``make_bad_files`` files that must be
refused with a one-line reason. Nothing here is committed: all files are generated into a temp folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


@contextlib.contextmanager
def peak_rss_growth():
    """``with peak_rss_growth() as grown: ...`` then ``grown["kib"]``: how far this process's resident memory rose,
    at its peak inside the block, above its level when the block began. The kernel's high-water mark (VmHWM) is
    reset first (writing 5 to /proc/self/clear_refs, Linux 4.0+), so a peak reached before the block, by an
    earlier test, cannot hide growth inside it, as it does for a difference of ru_maxrss readings."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _status_kib("VmRSS:")
    grown: dict = {}
    yield grown
    grown["kib"] = _status_kib("VmHWM:") - start


def _pattern(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) % 256)], -1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def exif_rotated_jpeg(path: Path) -> Path:
    """A 40x20 (w x h) JPEG whose EXIF says "rotate 90 CW" (orientation 6): it must load as 20 wide, 40 high,
    with the red left half ending up on top."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    return path


def make_odd_images(folder: Path) -> dict[str, Path]:
    """Files that are odd but valid: each must load as a 3 x H x W uint8 image."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _pattern(48, 32)
    out = {}

    def save(name: str, img: Image.Image, fmt: str, **kw) -> None:
        p = folder / name
        img.save(p, fmt, **kw)
        out[name] = p

    save("gray.png", base.convert("L"), "PNG")
    save("cmyk.jpg", base.convert("CMYK"), "JPEG")
    save("rgba.png", base.convert("RGBA"), "PNG")
    save("palette.png", base.convert("P"), "PNG")
    save("one_by_one.png", Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    save("image.webp", base, "WEBP")
    save("image.bmp", base, "BMP")
    arr16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    save("sixteen_bit.png", Image.fromarray(arr16), "PNG")  # uint16 -> mode I;16
    frames = [_pattern(30, 30), Image.new("RGB", (30, 30), (255, 0, 0))]
    p = folder / "animated.gif"
    frames[0].save(p, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["animated.gif"] = p
    out["exif_rotated.jpg"] = exif_rotated_jpeg(folder / "exif_rotated.jpg")
    save("name with  spaces .jpg", base, "JPEG")
    raw = os.fsencode(str(folder)) + b"/non_utf8_\xff\xfe.jpg"
    with open(raw, "wb") as f:
        base.save(f, "JPEG")
    out["non_utf8"] = Path(os.fsdecode(raw))
    return out


def png_bomb(path: Path, side: int = 30000) -> Path:
    """A real decompression bomb: a side x side 8-bit grayscale PNG of zeros (900 MB of pixels at 30000) whose file
    is under 1 MB. Written in streaming fashion, so making it needs no memory either."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    parts = []
    block = row * 256
    for _ in range(side // 256):
        parts.append(comp.compress(block))
    parts.append(comp.compress(row * (side % 256)))
    parts.append(comp.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(parts)))
        f.write(chunk(b"IEND", b""))
    return path


def make_bad_files(folder: Path, *, bomb: bool = True) -> dict[str, Path]:
    """Files that are not usable images: each must be refused with a one-line reason."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    out["zero_bytes.jpg"] = folder / "zero_bytes.jpg"
    out["zero_bytes.jpg"].write_bytes(b"")
    buf = io.BytesIO()
    _pattern(256, 256).save(buf, "JPEG", quality=90)  # cut in the middle of the scan data, header intact
    out["truncated.jpg"] = folder / "truncated.jpg"
    out["truncated.jpg"].write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    out["not_an_image.jpg"] = folder / "not_an_image.jpg"
    out["not_an_image.jpg"].write_text("this is text, not a JPEG\n")
    out["notes.txt"] = folder / "notes.txt"
    out["notes.txt"].write_text("hello")
    buf = io.BytesIO()
    _pattern(64, 64).save(buf, "PNG")
    out["truncated.png"] = folder / "truncated.png"
    out["truncated.png"].write_bytes(buf.getvalue()[:100])
    if bomb:
        out["bomb.png"] = png_bomb(folder / "bomb.png")
    return out


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def hostile_pickle(path: Path, marker: Path) -> Path:
    """A file that runs code when unpickled (it creates ``marker``). torch.save's zip format and a bare pickle."""
    import torch

    torch.save({"state_dict": {"fc.weight": _RunsCode(marker)}}, path)
    return path


def bare_hostile_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"fc.weight": _RunsCode(marker)}))
    return path


SPARSE_SIZE = 3 << 30  # "a sparse 3 GB file": truncate() sets the size, no disk blocks are used


def sparse_file(path: Path, size: int = SPARSE_SIZE) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def noise_png(path: Path, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    """A small valid PNG (width x height ``size``) of seeded noise: distinct seeds give distinct files."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path
