"""Dataset readers shared by every part: image suffixes and the image files of a folder.

Training imports, the registry's gate, the station's folder source and the golden check must agree
on what an image file is, or a ``.tif`` that training learned from is silently skipped by the gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["IMAGE_SUFFIXES", "image_files"]

IMAGE_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name (any suffix case)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
