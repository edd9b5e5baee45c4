"""The pixel size an image file declares, read from its first bytes without decoding it, so a
file that would take gigabytes to decode (a 'decompression bomb': a 1 MB PNG declaring 32000 x
32000 pixels) is refused before it costs memory.

Formats: PNG, JPEG, GIF, BMP, WebP (VP8, VP8L, VP8X) and TIFF (the first image). Anything else
gives None, and the decoder's own limit (OPENCV_IO_MAX_IMAGE_PIXELS) still applies.
"""

from __future__ import annotations

import struct
from typing import Optional

Size = tuple[int, int]  # (width, height)

JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def declared_size(data: bytes) -> Optional[Size]:
    """(width, height) from the header, or None for a format or header this does not read."""
    try:
        for probe in (_png, _jpeg, _gif, _bmp, _webp, _tiff):
            size = probe(data)
            if size is not None:
                return size
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png(d: bytes) -> Optional[Size]:
    if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    return None


def _gif(d: bytes) -> Optional[Size]:
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", d[6:10])
    return None


def _bmp(d: bytes) -> Optional[Size]:
    if d[:2] == b"BM" and len(d) >= 26:
        header = struct.unpack("<I", d[14:18])[0]
        if header == 12:
            return struct.unpack("<HH", d[18:22])
        w, h = struct.unpack("<ii", d[18:26])
        return abs(w), abs(h)
    return None


def _jpeg(d: bytes) -> Optional[Size]:
    if d[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(d):
        if d[i] != 0xFF:
            i += 1
            continue
        marker = d[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", d[i + 2: i + 4])[0]
        if marker in JPEG_SOF:
            h, w = struct.unpack(">HH", d[i + 5: i + 9])
            return w, h
        i += 2 + length
    return None


def _webp(d: bytes) -> Optional[Size]:
    if d[:4] != b"RIFF" or d[8:12] != b"WEBP":
        return None
    chunk = d[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = d[21:25]
        w = 1 + (((b[1] & 0x3F) << 8) | b[0])
        h = 1 + (((b[3] & 0x0F) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
        return w, h
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(d[24:27], "little")
        h = 1 + int.from_bytes(d[27:30], "little")
        return w, h
    return None


def _tiff(d: bytes) -> Optional[Size]:
    if d[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    e = "<" if d[:2] == b"II" else ">"
    ifd = struct.unpack(e + "I", d[4:8])[0]
    count = struct.unpack(e + "H", d[ifd: ifd + 2])[0]
    found: dict[int, int] = {}
    for k in range(count):
        entry = d[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        tag, kind = struct.unpack(e + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            found[tag] = struct.unpack(e + ("H" if kind == 3 else "I"), entry[8: 8 + (2 if kind == 3 else 4)])[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1 to 8; 1 when absent) of a JPEG's APP1, a PNG's eXIf chunk or a
    WebP's EXIF chunk, from the first IFD's tag 0x0112."""
    for marker in (b"Exif\x00\x00", b"eXIf", b"EXIF"):
        at = data.find(marker)
        if at < 0:
            continue
        start = at + len(marker) + (4 if marker == b"EXIF" else 0)  # WebP: the chunk's size follows
        for offset in (start, start + 4, at + len(marker)):
            value = _orientation_at(data, offset)
            if value:
                return value
    return 1


def _orientation_at(d: bytes, t: int) -> int:
    try:
        order = d[t: t + 4]
        if order not in (b"II*\x00", b"MM\x00*"):
            return 0
        e = "<" if order[:2] == b"II" else ">"
        ifd = t + struct.unpack(e + "I", d[t + 4: t + 8])[0]
        for k in range(struct.unpack(e + "H", d[ifd: ifd + 2])[0]):
            entry = d[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
            if struct.unpack(e + "H", entry[:2])[0] == 0x0112:
                value = struct.unpack(e + "H", entry[8:10])[0]
                return value if 1 <= value <= 8 else 0
    except (struct.error, IndexError):
        return 0
    return 0
