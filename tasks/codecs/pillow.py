"""Shared Pillow plumbing of the still-image codecs (jpeg, webp, avif): save to bytes, open from bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CodecError

__all__ = ["save", "load"]


def save(rgb: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, fmt, **options)
    return buf.getvalue()


def load(data: bytes, fmt: str, *, codec: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(bytes(data)), formats=[fmt]) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CodecError(f"damaged bytes: not a {fmt} bitstream {codec} can read ({exc})") from None
