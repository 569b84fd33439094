"""fundus.load_image: every input kind, every pixel mode, and every rejection with a clear message."""
from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from fundus import ImageError, load_image
from fundus.synthetic import make_fundus


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return make_fundus(96, seed=3)[0]


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_every_source_kind_gives_the_same_rgb(photo, tmp_path):
    png = _encode(Image.fromarray(photo), "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(png)
    for src in (path, str(path), png, bytearray(png), io.BytesIO(png), Image.fromarray(photo), photo):
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == photo.shape and out.flags.c_contiguous
        assert out.flags.writeable
        np.testing.assert_array_equal(out, photo)


def test_array_input_is_copied_not_aliased(photo):
    out = load_image(photo)
    out[0, 0] = 7
    assert photo[0, 0, 0] != 7 or photo[0, 0, 1] != 7


def test_grayscale_becomes_three_equal_channels():
    gray = np.tile(np.arange(80, dtype=np.uint8)[None, :] * 3, (70, 1))
    out = load_image(_encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (70, 80, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_is_composited_on_black():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :32, 3] = 255  # left half opaque
    rgba[:, 32:, 3] = 0  # right half transparent
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[:, :32], np.broadcast_to([200, 100, 50], (64, 32, 3)))
    assert out[:, 32:].max() == 0


def test_la_and_palette_with_transparency():
    la = np.zeros((64, 64, 2), np.uint8)
    la[..., 0] = 180
    la[..., 1] = 128  # half transparent
    out = load_image(_encode(Image.fromarray(la, "LA"), "PNG"))
    assert abs(int(out[0, 0, 0]) - 90) <= 1 and (out[..., 0] == out[..., 2]).all()
    pal = Image.new("P", (64, 64), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    plain = load_image(_encode(pal, "PNG"))
    np.testing.assert_array_equal(plain[5, 5], [10, 200, 30])
    transparent = load_image(_encode(pal, "PNG", transparency=1))
    assert transparent.max() == 0


def test_16bit_png_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 100 * 80).reshape(80, 100).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    out = load_image(_encode(img, "PNG"))
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(out[..., 0].astype(int) - expected).max() <= 1
    assert out.max() == 255 and out.min() == 0
    # Mid-grey stays mid-grey (a clip to 255 would saturate almost everything).
    assert 120 <= out[40, 50, 0] <= 135


def test_16bit_tiff_and_uint16_array():
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    out = load_image(_encode(Image.fromarray(ramp), "TIFF"))
    assert np.abs(out[..., 0].astype(int) - np.round(ramp / 257.0)).max() <= 1
    out_arr = load_image(np.stack([ramp] * 3, axis=-1))
    assert out_arr.dtype == np.uint8 and out_arr.max() == round(ramp.max() / 257.0)


def test_one_bit_image():
    bits = np.zeros((64, 64), bool)
    bits[10:20, 10:20] = True
    out = load_image(_encode(Image.fromarray(bits), "PNG"))
    assert set(np.unique(out)) == {0, 255}
    assert (out[15, 15] == 255).all() and (out[40, 40] == 0).all()


def test_float_and_bool_arrays():
    assert load_image(np.full((64, 64, 3), 0.5, np.float32))[0, 0, 0] == 128
    assert load_image(np.ones((64, 64), bool)).min() == 255
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        load_image(np.full((64, 64, 3), 2.0, np.float32))


def test_exif_orientation_is_applied():
    # A landscape picture with a red left edge, stored with EXIF orientation 6 (rotate 90° CW to view).
    pixels = np.zeros((80, 120, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    assert out.shape == (120, 80, 3)  # portrait once displayed
    # Rotating 90° clockwise moves the left edge to the top.
    assert out[:8, :, 0].mean() > 200 and out[:8, :, 1].mean() < 60
    assert out[-8:, :, 0].mean() < 60


def test_tiny_image_is_rejected():
    with pytest.raises(ImageError, match="too small: 40×30 px"):
        load_image(_encode(Image.new("RGB", (40, 30)), "PNG"))
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((63, 200, 3), np.uint8))


def test_not_an_image_corrupt_and_truncated(photo, tmp_path):
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"this is plain text, not a picture" * 10)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    jpeg = _encode(Image.fromarray(photo), "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(jpeg[: len(jpeg) // 2])
    png = bytearray(_encode(Image.fromarray(photo), "PNG"))
    png[60:80] = b"\x00" * 20  # damage the compressed pixel data
    with pytest.raises(ImageError, match="corrupt|truncated"):
        load_image(bytes(png))
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "missing.png")


def test_size_guards_use_the_header_before_decoding(photo):
    png = _encode(Image.fromarray(photo), "PNG")
    with pytest.raises(ImageError, match=r"too large \(0\.0092 megapixels, 96×96 px; at most 0\.0092 megapixels\)"):
        load_image(png, max_pixels=96 * 96 - 1)
    assert load_image(png, max_pixels=96 * 96).shape == (96, 96, 3)
    with pytest.raises(ImageError, match="file is too large"):
        load_image(png, max_bytes=len(png) - 1)
    with pytest.raises(ImageError, match="file is too large"):
        load_image(io.BytesIO(png), max_bytes=len(png) - 1)


def test_header_check_happens_before_pixels_are_decoded():
    # A PNG whose header claims 20000×20000 but holds 64×64 pixels: decoding would fail as
    # truncated, so a "too large" message proves the header was checked first.
    big = bytearray(_encode(Image.new("L", (64, 64)), "PNG"))
    big[16:24] = (9000).to_bytes(4, "big") * 2  # IHDR width, height: 81 MP
    big[29:33] = zlib.crc32(bytes(big[12:29])).to_bytes(4, "big")  # a valid IHDR checksum
    with pytest.raises(ImageError, match=r"too large \(81 megapixels, 9000×9000 px; at most 50 megapixels\)"):
        load_image(bytes(big))


def test_pil_decompression_bomb_becomes_image_error(monkeypatch):
    """PIL's own guard (behind ours) speaks plain language too: no "decompression bomb DOS attack" on the page."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError) as raised:
        load_image(_encode(Image.new("RGB", (100, 100)), "PNG"))
    message = str(raised.value)
    assert "bomb" not in message.lower() and "DOS" not in message and "exceeds limit" not in message
    with pytest.raises(ImageError, match=r"^the image is too large \(0\.01 megapixels; at most 50 megapixels\)$"):
        load_image(_encode(Image.new("RGB", (100, 100)), "PNG"))


def test_bad_types():
    with pytest.raises(TypeError, match="src must be"):
        load_image(12345)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((64, 64, 2), np.uint8))
