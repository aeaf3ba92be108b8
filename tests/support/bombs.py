"""Image bombs: small files whose header declares an enormous image."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, size: int = 48 * 1024) -> bytes:
    """A valid-looking RGB PNG of ``width`` x ``height`` whose IDAT holds about ``size`` bytes of
    deflated zero rows: decoding it would allocate ``3 * width * height`` bytes."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    stream = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0 + black pixels
    body = b""
    while len(body) < size:
        body += stream.compress(row * 64)
    body += stream.flush(zlib.Z_SYNC_FLUSH)
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
