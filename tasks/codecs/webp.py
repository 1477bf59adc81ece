"""``webp``: lossy WebP (libwebp, VP8 intra) through Pillow at a quality."""

from __future__ import annotations

import numpy as np

from . import pillow
from .base import REQUIRED, Field
from .image import ImageCodec

__all__ = ["WebpCodec"]


class WebpCodec(ImageCodec):
    name = "webp"
    doc = "Remote inference: the input image coded as lossy WebP by Pillow (libwebp); coded bytes are the whole RIFF file."
    fields = (
        Field("quality", int, REQUIRED, "WebP quality (libwebp scale)", low=0, high=100),
        Field("method", int, 4, "libwebp effort: 0 fastest … 6 smallest", low=0, high=6),
    )

    def encode_image(self, rgb: np.ndarray) -> bytes:
        return pillow.save(rgb, "WEBP", quality=self.params["quality"], method=self.params["method"], lossless=False)

    def decode_image(self, data: bytes) -> np.ndarray:
        return self._decoded(pillow.load(data, "WEBP", codec=self.name))
