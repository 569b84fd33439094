"""Validated loading of fundus photographs into 8-bit RGB arrays.

Every photo in the project (uploads in the app, data set images, CLI inputs) goes through
:func:`load_image`, so the guards live in one place: size limits checked on the header before
any pixel is decoded (decompression bombs), EXIF orientation, and every common pixel mode
(grayscale, palette, alpha, 1-bit, 16-bit) turned into plain ``(H, W, 3) uint8`` RGB.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 20 * 2**20
MIN_SIDE = 64

# PIL's own bomb guard (warning above MAX_IMAGE_PIXELS, error above twice that) stays armed as a
# second line of defence behind our header check; a caller that disabled it (None) gets it back.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 2 * DEFAULT_MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = 2 * DEFAULT_MAX_PIXELS

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image, np.ndarray]


class ImageError(ValueError):
    """A photo that cannot be used; the message is meant for the end user."""


class ImageTooLarge(ImageError):
    """A photo over the size limits (bytes or pixels): the app keeps the page as it was and says why."""


def load_image(
    src: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Load a photo as an ``(H, W, 3) uint8`` RGB array.

    Args:
        src: a path, encoded bytes, a binary file-like object, a PIL image or a numpy array
            (``(H, W)``, ``(H, W, 1|3|4)``; uint8, uint16, bool, or float in [0, 1]).
        max_pixels: largest accepted width × height, checked on the header before decoding.
        max_bytes: largest accepted encoded size (paths, bytes and file-like objects).

    Returns:
        A C-contiguous ``(H, W, 3) uint8`` array, EXIF orientation applied, transparency
        composited on black, 16-bit data scaled (not clipped) to 8 bits.

    Raises:
        ImageError: not an image, corrupt or truncated, too large (bytes or pixels), or smaller
            than 64 px on a side.
        TypeError: ``src`` is of an unsupported type.
    """
    if max_pixels <= 0 or max_bytes <= 0:
        raise ValueError(f"max_pixels and max_bytes must be positive, got {max_pixels} and {max_bytes}")
    if isinstance(src, np.ndarray):
        return _from_array(src, max_pixels)
    if isinstance(src, Image.Image):
        _check_dimensions(src.size, max_pixels)
        return _to_rgb(_decode(src, max_pixels))
    with _open(src, max_bytes, max_pixels) as img:
        _check_dimensions(img.size, max_pixels)
        return _to_rgb(_decode(img, max_pixels))


def _writable(rgb: np.ndarray) -> np.ndarray:
    # np.asarray(PIL image) is read-only; callers draw on and normalise the array in place.
    return np.require(rgb, dtype=np.uint8, requirements=["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])


def _open(src: ImageSource, max_bytes: int, max_pixels: int) -> Image.Image:
    """Open (lazily: header only) an encoded image after checking its byte size."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise ImageError(f"no such image file: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageTooLarge(f"the file is too large: {_mib(size)} (limit {_mib(max_bytes)})")
        data = path.read_bytes()
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if len(data) > max_bytes:
            raise ImageTooLarge(f"the file is too large: {_mib(len(data))} (limit {_mib(max_bytes)})")
    elif hasattr(src, "read"):
        data = src.read(max_bytes + 1)  # one byte more tells "too large" without reading it all
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"file-like src must be opened in binary mode, read() gave {type(data).__name__}")
        if len(data) > max_bytes:
            raise ImageTooLarge(f"the file is too large: over {_mib(max_bytes)}")
    else:
        raise TypeError(
            "src must be a path, bytes, a binary file-like object, a PIL image or a numpy array, "
            f"got {type(src).__name__}"
        )
    if not data:
        raise ImageError("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("the file is not a readable image (expected JPEG, PNG, TIFF, BMP or WebP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(_bomb_message(exc, max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image file is corrupt: {exc}") from None


def _megapixels(pixels: int) -> str:
    """A pixel count in megapixels as people write it: "81", "51.2", "0.0092"."""
    return f"{pixels / 1e6:.1f}".removesuffix(".0") if pixels >= 1e6 else f"{pixels / 1e6:.2g}"


def _too_large(pixels: int | None, max_pixels: int, size: tuple[int, int] | None = None) -> str:
    """The plain-language "too large" message: the photo's megapixels (and pixels, where known) and the limit."""
    limit = f"at most {_megapixels(max_pixels)} megapixels"
    if pixels is None:
        return f"the image is too large ({limit})"
    shape = f", {size[0]}×{size[1]} px" if size else ""
    return f"the image is too large ({_megapixels(pixels)} megapixels{shape}; {limit})"


def _bomb_message(exc: Exception, max_pixels: int) -> str:
    """PIL's decompression-bomb guard in the user's words: its own text ("could be decompression bomb DOS
    attack") never reaches the page; the pixel count is read from it where it is there."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return _too_large(int(found.group(1)) if found else None, max_pixels)


def _check_dimensions(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(_too_large(width * height, max_pixels, (width, height)))
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"the image is too small: {width}×{height} px (at least {MIN_SIDE} px on each side)")


def _decode(img: Image.Image, max_pixels: int) -> Image.Image:
    """Decode all pixels (turning PIL's failures into ImageError) and apply EXIF orientation."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(_bomb_message(exc, max_pixels)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ImageError(f"the image file is {reason} and cannot be decoded ({exc})") from None
    try:
        # Phones and some fundus cameras store the photo sideways plus an orientation tag.
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a good photo
        return img


def _to_rgb(img: Image.Image) -> np.ndarray:
    return _writable(_convert(img))


def _convert(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        # Composite on black: the outside of a fundus field is black, so transparent = background.
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        rgb = rgba[..., :3] * (rgba[..., 3:4] / 255.0)
        return np.ascontiguousarray(np.round(rgb).astype(np.uint8))
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _gray_to_rgb(_scale_to_uint8(np.asarray(img)))
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    # "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV": PIL knows the conversion.
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale high-bit-depth samples to 8 bits by their full range (65535 → 255), never clipping."""
    values = np.asarray(values)
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint8:
        return values
    if np.issubdtype(values.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ImageError("the image contains NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 1:
            raise ImageError(f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return np.round(values * 255.0).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        lo, hi = int(values.min()), int(values.max())
        if lo < 0:
            raise ImageError(f"integer images must be non-negative, got a minimum of {lo}")
        full = 65535 if hi <= 65535 else hi  # 16-bit containers (also PIL's 32-bit "I" mode)
        return np.round(values.astype(np.float64) * (255.0 / full)).astype(np.uint8)
    raise ImageError(f"unsupported pixel type {values.dtype}")


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


def _from_array(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    height, width = array.shape[:2]
    _check_dimensions((width, height), max_pixels)
    values = _scale_to_uint8(array)
    if values.ndim == 2:
        return _gray_to_rgb(values)
    if values.shape[2] == 4:
        alpha = values[..., 3:4].astype(np.float32) / 255.0
        return np.ascontiguousarray(np.round(values[..., :3] * alpha).astype(np.uint8))
    return np.array(values, dtype=np.uint8, order="C", copy=True)  # never alias the caller's array


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"
