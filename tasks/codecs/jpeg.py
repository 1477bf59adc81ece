"""``jpeg``: baseline JPEG through Pillow (libjpeg-turbo) at a quality, 4:2:0 chroma."""

from __future__ import annotations

import numpy as np

from . import pillow
from .base import REQUIRED, Field
from .image import ImageCodec

__all__ = ["JpegCodec"]


class JpegCodec(ImageCodec):
    name = "jpeg"
    doc = (
        "Remote inference: the input image coded as baseline JPEG by Pillow (libjpeg-turbo), "
        "4:2:0 chroma, optimized Huffman tables; coded bytes are the whole JFIF file."
    )
    fields = (Field("quality", int, REQUIRED, "JPEG quality (libjpeg scale)", low=1, high=100),)

    def encode_image(self, rgb: np.ndarray) -> bytes:
        return pillow.save(rgb, "JPEG", quality=self.params["quality"], subsampling="4:2:0", optimize=True)

    def decode_image(self, data: bytes) -> np.ndarray:
        return self._decoded(pillow.load(data, "JPEG", codec=self.name))
