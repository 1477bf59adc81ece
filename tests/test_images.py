"""Image decoding: every pixel format we meet becomes RGB uint8; bad bytes become one clear DataError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.errors import DataError, SplitsweepError
from tasks.images import decode_image, encode_png


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_png_round_trip_is_exact(rgb):
    decoded = decode_image(encode_png(rgb), name="a.png")
    assert decoded.dtype == np.uint8 and decoded.shape == (37, 53, 3)
    assert np.array_equal(decoded, rgb)


def test_jpeg_decodes_close_to_the_original():
    smooth = np.zeros((64, 96, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 96, dtype=np.uint8)[None, :]
    smooth[..., 1] = 128
    smooth[..., 2] = np.linspace(255, 0, 64, dtype=np.uint8)[:, None]
    decoded = decode_image(_encode(Image.fromarray(smooth), "JPEG", quality=95), name="a.jpg")
    assert decoded.shape == (64, 96, 3)
    assert np.abs(decoded.astype(int) - smooth).mean() < 3


def test_grayscale_is_replicated_to_three_channels():
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    decoded = decode_image(_encode(Image.fromarray(gray), "PNG"), name="g.png")
    assert decoded.shape == (12, 10, 3)
    for c in range(3):
        assert np.array_equal(decoded[..., c], gray)


def test_alpha_is_dropped_not_blended(rgb):
    alpha = np.full(rgb.shape[:2] + (1,), 7, np.uint8)  # almost transparent: blending would darken
    decoded = decode_image(_encode(Image.fromarray(np.concatenate([rgb, alpha], axis=2)), "PNG"), name="a.png")
    assert np.array_equal(decoded, rgb)


def test_palette_image_is_expanded():
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    decoded = decode_image(_encode(image, "PNG"), name="p.png")
    assert decoded[0, 0].tolist() == [255, 0, 0]
    assert decoded[0, 1].tolist() == [0, 255, 0]
    assert decoded[1, 3].tolist() == [255, 0, 0]


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    wide = np.array([[0, 256, 1000, 65535]], dtype=np.uint16)
    decoded = decode_image(_encode(Image.fromarray(wide), "PNG"), name="d.png")
    # >> 8: 0 → 0, 256 → 1, 1000 → 3, 65535 → 255 (clipping would give 0, 255, 255, 255)
    assert decoded[0, :, 0].tolist() == [0, 1, 3, 255]


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(_encode(image, "JPEG", quality=95), name="c.jpg")
    assert decoded.shape == (6, 8, 3)
    assert decoded[..., 0].mean() > 200 and decoded[..., 1].mean() < 60


def test_exif_orientation_is_not_applied():
    # A 40 wide × 20 high image tagged "rotate 90° CW" (orientation 6): COCO's width,
    # height and boxes refer to the stored pixels, so we must return 20 × 40 unrotated.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    data = _encode(image, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif().get(0x0112) == 6
    decoded = decode_image(data, name="rotated.jpg")
    assert decoded.shape == (20, 40, 3)
    assert decoded[10, 5, 0] > 200 and decoded[10, 35, 0] < 60


def test_bmp_and_webp_decode(rgb):
    assert np.array_equal(decode_image(_encode(Image.fromarray(rgb), "BMP"), name="a.bmp"), rgb)
    assert np.array_equal(decode_image(_encode(Image.fromarray(rgb), "WEBP", lossless=True), name="a.webp"), rgb)


def test_empty_bytes_raise_data_error_naming_the_file():
    with pytest.raises(DataError) as info:
        decode_image(b"", name="photos/empty.jpg")
    assert info.value.file == "photos/empty.jpg"
    assert "empty" in str(info.value) and str(info.value).startswith("photos/empty.jpg: ")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_raises_data_error(rgb, fmt):
    data = _encode(Image.fromarray(rgb), fmt)
    with pytest.raises(DataError, match="truncated") as info:
        decode_image(data[: len(data) * 2 // 3], name="cut." + fmt.lower())
    assert info.value.file == "cut." + fmt.lower()
    assert isinstance(info.value, SplitsweepError)


def test_header_only_raises_data_error(rgb):
    data = encode_png(rgb)
    with pytest.raises(DataError, match="truncated header"):
        decode_image(data[:10], name="head.png")


def test_garbage_raises_data_error():
    with pytest.raises(DataError, match="unknown format"):
        decode_image(b"this is not an image at all" * 10, name="notes.txt")


def test_corrupt_png_stream_raises_data_error(rgb):
    data = bytearray(encode_png(rgb))
    data[60:80] = b"\xff" * 20  # inside the IDAT stream: zlib and CRC both break
    with pytest.raises(DataError):
        decode_image(bytes(data), name="bad.png")


def test_encode_png_rejects_wrong_arrays():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.uint8))
