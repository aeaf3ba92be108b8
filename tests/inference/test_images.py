"""Image headers are read without decoding, and a bomb is refused before any decoder runs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from support.bombs import png_bomb

from lineguard.inference.images import (
    ImageTooLargeError,
    UnknownImageFormatError,
    check_size,
    decode_image,
    image_size,
    read_image_file,
)
from lineguard.redact import mask_url

IMAGE = np.zeros((37, 53, 3), np.uint8)  # height 37, width 53: the order is checked too


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_header_size_matches_the_image(suffix: str) -> None:
    data = cv2.imencode(suffix, IMAGE)[1].tobytes()
    assert image_size(data) == (53, 37)
    assert decode_image(data, 10_000).shape == (37, 53, 3)


def test_progressive_jpeg_with_exif_is_read_past_its_segments() -> None:
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    data = cv2.imencode(".jpg", IMAGE, params)[1].tobytes()
    app1 = b"\xff\xe1" + (2 + 300).to_bytes(2, "big") + b"Exif\x00\x00" + bytes(294)
    assert image_size(data[:2] + app1 + data[2:]) == (53, 37)


@pytest.mark.parametrize("side", [20_000, 60_000])
def test_bomb_is_refused_from_its_header(side: int, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []

    def spy(*args: object) -> None:
        decoded.append(1)

    monkeypatch.setattr(cv2, "imdecode", spy)
    bomb = png_bomb(side, side)
    assert len(bomb) < 64 * 1024
    with pytest.raises(ImageTooLargeError, match=f"{side}x{side}.*camera.max_image_pixels"):
        decode_image(bomb, 40_000_000)
    assert decoded == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a" + bytes(20), "unknown header"),
        (b"", "unknown header"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 3, "IHDR"),
        (b"\xff\xd8\xff\xe0\x00", "cut short"),
        (b"\xff\xd8\xff\xd9", "frame header"),
        (b"II*\x00\xff\xff\xff\x00", "cut short"),
    ],
    ids=["gif", "empty", "png-no-ihdr", "jpeg-cut", "jpeg-no-sof", "tiff-bad-offset"],
)
def test_unknown_or_broken_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(UnknownImageFormatError, match=message):
        check_size(data, 10_000)


def test_image_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(20_000, 20_000))
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: the header declares 20000x20000"):
        read_image_file(path, 40_000_000)


@pytest.mark.parametrize(
    ("shown", "masked"),
    [
        ("rtsp://user:pass@10.0.0.5:554/stream", "rtsp://***@10.0.0.5:554/stream"),
        ("stream:http://admin@cam/mjpg", "stream:http://***@cam/mjpg"),
        ("OpenCV cannot open 'rtsp://u:p%40ss@h/x'", "OpenCV cannot open 'rtsp://***@h/x'"),
        ("rtsp://10.0.0.5/stream?user=a@b", "rtsp://10.0.0.5/stream?user=a@b"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_credentials_in_urls_are_masked(shown: str, masked: str) -> None:
    assert mask_url(shown) == masked
