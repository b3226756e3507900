"""Image files cut short: found from their bytes, before a decoder fills the gap with grey.

libjpeg decodes a JPEG truncated halfway as an image whose missing part is grey, and OpenCV's
``imread`` returns it as a success (only a warning reaches stderr). A file copy interrupted, a
camera that lost power, a download cut short: each gives such a file, and fusing, scoring or
training on it is wrong without any error. So the container is checked instead: a JPEG must
reach its end-of-image marker (after its compressed data, not inside an EXIF thumbnail), a PNG
its ``IEND`` chunk. Bytes after the end are allowed (some cameras append data there).
"""

from __future__ import annotations

import re
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
_EOI, _SOS, _TEM = 0xD9, 0xDA, 0x01
_RST = range(0xD0, 0xD8)
#: in entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything
#: else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def truncation(data: bytes) -> str | None:
    """Why these image file bytes are cut short, or None (complete, or a format not checked)."""
    if data.startswith(JPEG_SOI):
        return _jpeg(data)
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    return None


def _jpeg(data: bytes) -> str | None:
    """Walk the marker segments (their lengths skip APPn payloads such as thumbnails) and the
    compressed data after each SOS, to the EOI marker."""
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them too
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                break
            pos = nxt
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= size:
            break
        marker = data[pos + 1]
        if marker == _EOI:
            return None
        if marker == _TEM or marker in _RST:
            pos += 2
            continue
        if pos + 4 > size:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
        if marker == _SOS:
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return (f"truncated JPEG: the compressed image data stops at byte {size} "
                        "without the end-of-image marker (FFD9)")
            pos = found.start()
    return f"truncated JPEG: no end-of-image marker (FFD9) in its {size} bytes"


def _png(data: bytes) -> str | None:
    """Walk the chunks to IEND."""
    pos, size = len(PNG_SIGNATURE), len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IEND":
            return None
        pos += 12 + length
    return (f"truncated PNG: no IEND chunk in its {size} bytes (the file stops inside "
            "its image data)")
