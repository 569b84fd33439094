"""Uploaded photos: validation through ``fundus.load_image`` and a one-line description of the file."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# What the page says when the file's pixel mode is converted (fundus.load_image does the conversion).
_MODE_NOTES = {
    "L": "grayscale → RGB",
    "LA": "grayscale with alpha → RGB on black",
    "RGBA": "RGBA → RGB (transparency composited on black)",
    "P": "palette → RGB",
    "PA": "palette with alpha → RGB on black",
    "I;16": "16-bit grayscale → 8-bit RGB (scaled, not clipped)",
    "I;16B": "16-bit grayscale → 8-bit RGB (scaled, not clipped)",
    "I": "32-bit integer → 8-bit RGB",
    "F": "floating point → 8-bit RGB",
    "1": "1-bit → RGB",
    "CMYK": "CMYK → RGB",
}


class PhotoRejected(ValueError):
    """An upload that cannot be used; the message is meant for the page."""


class PhotoTooLarge(PhotoRejected):
    """An upload over the size limits (20 MB, 50 megapixels)."""


def load_photo(source: str | Path | bytes) -> np.ndarray:
    """The upload (a file path or its bytes) as ``(H, W, 3) uint8`` RGB, validated by ``fundus.load_image``
    (size limits, EXIF orientation, pixel modes).

    Raises:
        PhotoTooLarge: (a PhotoRejected) over 20 MB or 50 megapixels.
        PhotoRejected: not an image, truncated or corrupt, too small.
    """
    from fundus import ImageError, load_image
    from fundus.imageio import ImageTooLarge

    try:
        return load_image(source if isinstance(source, bytes) else Path(source))
    except ImageTooLarge as exc:
        raise PhotoTooLarge(f"This file cannot be used: {exc}.") from None
    except ImageError as exc:
        raise PhotoRejected(f"This file cannot be used: {exc}.") from None


def describe_file(source: str | Path | bytes) -> str:
    """A short description of an image file (path or bytes) from its header: format, size, mode
    conversion, EXIF rotation."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            parts = [f"{img.format or 'image'} {img.width}×{img.height}"]
            if img.mode in _MODE_NOTES:
                parts.append(_MODE_NOTES[img.mode])
            elif img.mode == "RGB" and "transparency" in img.info:
                parts.append("transparency composited on black")
            orientation = img.getexif().get(0x0112, 1)
            if orientation not in (1, None):
                parts.append(f"EXIF orientation {orientation} applied")
    except Exception:  # noqa: BLE001 - a description is best-effort; load_photo is the real check
        return "photo" if isinstance(source, bytes) else Path(source).name
    return ", ".join(parts)
