"""Cast codecs: ``none`` (raw bytes), ``float16`` and ``bfloat16``, each with an optional zstd stage.

Size rule (zstd off): ``coded_bytes = Σ float payload · (2 / itemsize) + Σ other nbytes
+ container.header_size(names, shapes)``, so for float32 tensors exactly half the raw
payload plus a header that depends only on the tensor names and ranks.

Range: a finite value beyond the target format's range saturates to its largest finite
value (±65504 for float16, ±3.3895e38 for bfloat16) instead of becoming ±inf, because an
inf in the tail network turns into NaN at the first ``inf - inf`` or ``0 · inf``; ±inf
and NaN inputs stay ±inf and NaN.
"""

from __future__ import annotations

import numpy as np

from ..errors import CodecError
from . import container
from .base import ZSTD, TensorwiseCodec

__all__ = ["NoneCodec", "Float16Codec", "BFloat16Codec", "to_float16", "to_bfloat16_bits", "from_bfloat16_bits"]

_F16_MAX = np.float16(65504.0)


def to_float16(x: np.ndarray) -> np.ndarray:
    """Round to nearest float16; finite values beyond ±65504 saturate there."""
    if x.dtype == np.float16:
        return x
    shape, x = x.shape, x.reshape(-1)  # 1-d: 0-d arrays decay to scalars in the masking below
    with np.errstate(over="ignore"):
        y = x.astype(np.float16)
    over = np.isinf(y)
    if over.any():
        over &= np.isfinite(x)
        y[over] = np.where(x[over] > 0, _F16_MAX, -_F16_MAX)
    return y.reshape(shape)


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) by round-to-nearest-even; saturating like to_float16."""
    shape, x = x.shape, x.reshape(-1)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32, copy=False)
    bits = x32.view(np.uint32)
    # RNE: add 0x7FFF plus the lowest kept bit, then drop 16 bits (wraps only for NaNs, fixed below)
    out = ((bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)
    nan = np.isnan(x32)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # stay a (quiet) NaN
    over = (out & 0x7FFF) == 0x7F80
    if over.any():
        over &= np.isfinite(x)
        out[over] = (out[over] & 0x8000) | 0x7F7F
    return out.reshape(shape)


def from_bfloat16_bits(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    x32 = (bits.reshape(-1).astype(np.uint32) << 16).view(np.float32).reshape(bits.shape)
    return to_float16(x32) if dtype == np.float16 else x32.astype(dtype)


def _payload(entry: container.Entry, itemsize: int, dtype: str) -> np.ndarray:
    if len(entry.payload) != entry.size * itemsize:
        raise CodecError(
            f"damaged bytes: tensor {entry.name!r} has {len(entry.payload)} payload bytes, "
            f"expected {entry.size * itemsize}"
        )
    return np.frombuffer(entry.payload, dtype=dtype).reshape(entry.shape)


class NoneCodec(TensorwiseCodec):
    name = "none"
    wire_id = 0
    method = container.RAW
    lossless = True
    doc = "Raw tensor bytes plus the header: bit-exact, the reference for sizes and accuracy."
    fields = (ZSTD,)

    def encode_float(self, name: str, arr: np.ndarray) -> container.Entry:
        return container.raw_entry(name, arr)


class Float16Codec(TensorwiseCodec):
    name = "float16"
    wire_id = 1
    method = container.FLOAT16
    doc = (
        "IEEE half precision, round to nearest even; finite values beyond ±65504 saturate. "
        "Feature maps at exactly half their float32 payload, plus the header."
    )
    fields = (ZSTD,)

    def encode_float(self, name: str, arr: np.ndarray) -> container.Entry:
        half = to_float16(arr).astype("<f2", copy=False)
        return container.Entry(name, arr.dtype, arr.shape, self.method, b"", container.as_bytes(half))

    def decode_float(self, entry: container.Entry) -> np.ndarray:
        return _payload(entry, 2, "<f2").astype(entry.dtype)


class BFloat16Codec(TensorwiseCodec):
    name = "bfloat16"
    wire_id = 2
    method = container.BFLOAT16
    doc = (
        "bfloat16 (float32's range, 8-bit mantissa), round to nearest even; same size rule as "
        "float16. float16 tensors come back as float16 (saturating)."
    )
    fields = (ZSTD,)

    def encode_float(self, name: str, arr: np.ndarray) -> container.Entry:
        bits = to_bfloat16_bits(arr).astype("<u2", copy=False)
        return container.Entry(name, arr.dtype, arr.shape, self.method, b"", container.as_bytes(bits))

    def decode_float(self, entry: container.Entry) -> np.ndarray:
        return from_bfloat16_bits(_payload(entry, 2, "<u2"), entry.dtype)
