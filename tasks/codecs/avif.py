"""``avif``: AV1 intra in an AVIF file through Pillow's AVIF plug-in (libavif), at a quality."""

from __future__ import annotations

import numpy as np

from ..errors import CodecError
from . import pillow
from .base import REQUIRED, Field
from .image import ImageCodec

__all__ = ["AvifCodec", "available"]


def available() -> bool:
    from PIL import features

    return bool(features.check("avif"))


class AvifCodec(ImageCodec):
    name = "avif"
    doc = (
        "Remote inference: the input image coded as AVIF (AV1 intra) by Pillow's libavif plug-in, "
        "4:2:0; coded bytes are the whole AVIF file. Needs Pillow >= 11.3 built with AVIF."
    )
    fields = (
        Field("quality", int, REQUIRED, "AVIF quality (libavif scale)", low=0, high=100),
        Field("speed", int, 6, "encoder speed: 0 slowest/smallest … 10 fastest", low=0, high=10),
    )

    @classmethod
    def check_together(cls, params, *, file, key) -> None:
        if not available():
            raise CodecError(
                "avif needs Pillow with AVIF support (Pillow >= 11.3 wheels have it): pip install -U pillow",
                file=file,
                key=key,
            )

    def encode_image(self, rgb: np.ndarray) -> bytes:
        return pillow.save(rgb, "AVIF", quality=self.params["quality"], speed=self.params["speed"], subsampling="4:2:0")

    def decode_image(self, data: bytes) -> np.ndarray:
        return self._decoded(pillow.load(data, "AVIF", codec=self.name))
