"""Decoding images from outside (uploads, image folders, datasets) without trusting their size.

A 48 kB PNG can declare 20000x20000 pixels and make the decoder allocate gigabytes for seconds,
so the width and height are read from the file header (PNG IHDR, JPEG SOF, BMP, TIFF) by a few
lines of pure Python and checked against a pixel limit before any decoder runs. A format the
header reader does not know is refused rather than handed to OpenCV, whose long list of codecs is
attack surface the station does not need.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from lineguard.config import MAX_IMAGE_PIXELS
from lineguard.errors import InputError

__all__ = [
    "ImageTooLargeError",
    "UnknownImageFormatError",
    "check_size",
    "decode_image",
    "image_size",
    "read_image_file",
]

Image = npt.NDArray[np.uint8]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carry the size; C4 (huffman), C8 (reserved) and CC (arithmetic) do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257


class UnknownImageFormatError(InputError):
    """Not a PNG, JPEG, BMP or TIFF, or its header is cut short."""


class ImageTooLargeError(InputError):
    """The header declares more pixels than the configured limit."""


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` as the header of ``data`` declares it; nothing is decoded.

    Raises ``UnknownImageFormatError`` for any other format or a header that is cut short or
    inconsistent, so a caller never falls back to decoding an image of unknown size.
    """
    try:
        if data.startswith(_PNG_SIGNATURE):
            return _png_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data.startswith(b"BM"):
            return _bmp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except (struct.error, IndexError) as exc:
        raise UnknownImageFormatError("the image header is cut short or corrupt") from exc
    raise UnknownImageFormatError("not a PNG, JPEG, BMP or TIFF image (unknown header)")


def _png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise UnknownImageFormatError("PNG without an IHDR chunk first (corrupt header)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while True:
        while data[pos] == 0xFF and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if data[pos] != 0xFF:
            raise UnknownImageFormatError("JPEG segment without a marker (corrupt header)")
        marker = data[pos + 1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers have no length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise UnknownImageFormatError("JPEG without a frame header before its scan data")
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if length < 2:
            raise UnknownImageFormatError("JPEG segment of impossible length (corrupt header)")
        pos += 2 + length


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))  # a negative height means top-down rows


def _tiff_size(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT):
            fmt = order + ("H" if kind == 3 else "I")
            found[tag] = int(struct.unpack(fmt, entry[8 : 8 + struct.calcsize(fmt)])[0])
    if _TIFF_WIDTH not in found or _TIFF_HEIGHT not in found:
        raise UnknownImageFormatError("TIFF without width and height tags (corrupt header)")
    return found[_TIFF_WIDTH], found[_TIFF_HEIGHT]


def check_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """The header's ``(width, height)``, refused when empty or above ``max_pixels``."""
    width, height = image_size(data)
    if width < 1 or height < 1:
        raise UnknownImageFormatError(f"the header declares an empty {width}x{height} image")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the header declares {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels} (camera.max_image_pixels); send a smaller image or raise the limit"
        )
    return width, height


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image:
    """``data`` decoded to BGR once its header passed ``check_size``; ``InputError`` otherwise."""
    check_size(data, max_pixels)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InputError(f"cannot decode the {len(data)}-byte image (corrupt data after the header)")
    return np.asarray(decoded, dtype=np.uint8)


def read_image_file(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image:
    """The image file at ``path``, checked like ``decode_image``; the message names the file."""
    try:
        return decode_image(path.read_bytes(), max_pixels)
    except InputError as exc:
        raise type(exc)(f"{path}: {exc}") from exc
