"""Image decoding: encoded bytes → RGB uint8 pixels, with one clear DataError for bad input."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

__all__ = ["decode_image", "encode_png"]

# Modes whose samples are wider than 8 bits: scaled down to 0..255 instead of clipped
# (Pillow's own convert("L") clips 16-bit samples, turning most of an image white).
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def decode_image(data: bytes, *, name: str) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, BMP, WebP, TIFF, …) to RGB ``uint8`` (H, W, 3).

    Grayscale is replicated to three channels, palette images are expanded, alpha is
    dropped (as ``cv2.imread`` and torchvision's ``CocoDetection`` do: detectors see the
    colour channels only), 16-bit samples are scaled to 8 bits (``>> 8``), CMYK and
    YCbCr are converted.

    EXIF orientation is deliberately **not** applied: COCO's ``width``/``height`` and
    every annotation refer to the pixel array as stored in the file (the COCO tools and
    torchvision's ``CocoDetection`` open images with PIL without ``exif_transpose``).
    Rotating a tagged image would put its boxes in the wrong place and swap its
    width and height. Note that ``cv2.imread`` *does* rotate by default.

    Empty, truncated, corrupt or unrecognised bytes raise ``DataError(file=name)`` with
    the reason; a decompression-bomb-sized image too.
    """
    if not data:
        raise DataError("image is empty (0 bytes)", file=name)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and, past twice the limit, raises) on huge images; warn → error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # Image.open is lazy: truncation only shows up here
                return _to_rgb(image)
    except UnidentifiedImageError:
        raise DataError(
            f"not a readable image: unknown format or truncated header ({len(data)} bytes, starting {data[:8]!r})",
            file=name,
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"image too large to decode safely: {exc}", file=name) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncation and corrupt streams as OSError ("image file is
        # truncated", "broken data stream"), some plug-ins as SyntaxError/ValueError.
        raise DataError(f"image is truncated or corrupt ({len(data)} bytes): {exc}", file=name) from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _WIDE_MODES:
        wide = np.asarray(image).astype(np.int64)
        gray = np.clip(wide >> 8, 0, 255).astype(np.uint8) if wide.max(initial=0) > 255 else wide.astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.nan_to_num(np.asarray(image)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    rgb = np.asarray(image, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"decoder produced shape {rgb.shape} from mode {mode}")  # a bug, not user input
    return np.ascontiguousarray(rgb)


def encode_png(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Lossless PNG of an RGB ``uint8`` (H, W, 3) array (how video frames are shipped).

    Level 1 by default: frames are shipped once and decoded once, so speed matters more
    than the last few percent of size.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png wants uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()
