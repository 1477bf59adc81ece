"""The image codec base: an RGB picture → one standard bitstream and back (remote inference).

Image codecs code what a device sends when the whole network runs on the server: the
picture at the model's input resolution (see ``tasks.remote``), as 8-bit RGB. Unlike the
tensor codecs they write no container: ``encode_image`` returns exactly the bitstream a
device would send (a JPEG / WebP / AVIF file, an HEVC Annex-B stream), so
``coded_bytes = len(bitstream)`` counts nothing else, and ``decode_image`` reads it with the
same library. ``encode`` / ``decode`` keep the generic codec contract for one ``image`` array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import CodecError
from .base import Codec

__all__ = ["ImageCodec", "IMAGE_KEY", "check_image", "image_psnr"]

IMAGE_KEY = "image"


def check_image(rgb: object, *, codec: str) -> np.ndarray:
    """A C-contiguous uint8 H×W×3 array, or CodecError saying what an image codec takes."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise CodecError(
            f"{codec} codes RGB images (uint8 H×W×3), got {arr.dtype} {arr.shape}",
            key=codec,
            allowed="the split `input` (remote inference)",
        )
    return np.ascontiguousarray(arr)


def image_psnr(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(MSE, PSNR in dB) of 8-bit RGB images over all channels, peak 255; (0, inf) when identical."""
    diff = np.subtract(decoded, original, dtype=np.float64)
    mse = float(np.mean(diff * diff))
    return (0.0, math.inf) if mse == 0.0 else (mse, 10.0 * math.log10(255.0 * 255.0 / mse))


class ImageCodec(Codec):
    """An image codec: subclasses implement ``encode_image`` and ``decode_image``."""

    lossless = False

    def encode_image(self, rgb: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode_image(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        if not isinstance(arrays, Mapping) or len(arrays) != 1:
            raise CodecError(
                f"{self.name} codes one RGB image, not a set of tensors",
                key=self.name,
                allowed="the split `input` (remote inference)",
            )
        (value,) = arrays.values()
        return self.encode_image(check_image(value, codec=self.name))

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        return {IMAGE_KEY: self.decode_image(data)}

    def _decoded(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise CodecError(f"damaged bytes: {self.name} decoded {rgb.dtype} {rgb.shape}, not an RGB image")
        return np.array(rgb, copy=True)  # writeable, owning its memory
