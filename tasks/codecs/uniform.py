"""``uniform``: min/max integer quantization to 2–16 bits, bit-packed, optional zstd stage.

Per group (the whole tensor, or each channel along axis 1 of a rank >= 2 tensor when
``per_channel``), ``lo = min``, ``step = (max - lo) / (2**bits - 1)``, ``q = round((x -
lo) / step)`` and the decoder returns ``lo + q · step``: the error is at most ``step / 2``
(plus float rounding). A constant group has ``step = 0`` and comes back exactly. ``lo``
and ``step`` travel as float32 in the tensor's meta (6 + 8 · groups bytes); the ``q``
values are packed LSB-first into exactly ``ceil(n · bits / 8)`` payload bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import CodecError
from . import container
from .base import ZSTD, Field, TensorwiseCodec
from .floats import to_float16

__all__ = ["UniformCodec", "pack_bits", "unpack_bits", "PER_TENSOR", "PER_CHANNEL"]

PER_TENSOR, PER_CHANNEL = 0, 1
_META_HEAD = struct.Struct("<BBI")  # bits, mode, groups
_CHUNK = 1 << 20  # values per packing step: bounds the temporary bit arrays (a multiple of 8)


def pack_bits(q: np.ndarray, bits: int) -> bytes:
    """Pack unsigned values < 2**bits LSB-first into exactly ceil(len(q) · bits / 8) bytes."""
    q = q.reshape(-1)
    if bits == 8:
        return q.astype(np.uint8).tobytes()
    if bits == 16:
        return q.astype("<u2").tobytes()
    if 8 % bits == 0:  # 2 and 4 bits: whole values per byte, plain shifts
        per = 8 // bits
        padded = np.zeros(-(-q.size // per) * per, np.uint8)
        padded[: q.size] = q
        groups = padded.reshape(-1, per)
        out = np.zeros(len(groups), np.uint8)
        for i in range(per):
            out |= groups[:, i] << np.uint8(i * bits)
        return out.tobytes()
    parts = []
    for start in range(0, q.size, _CHUNK):
        chunk = q[start : start + _CHUNK].astype("<u2")
        planes = np.unpackbits(chunk.view(np.uint8).reshape(-1, 2), axis=1, bitorder="little")
        parts.append(np.packbits(planes[:, :bits], bitorder="little").tobytes())
    return b"".join(parts)


def unpack_bits(data: bytes | memoryview, n: int, bits: int) -> np.ndarray:
    """Inverse of pack_bits: ``n`` uint16 values."""
    buf = np.frombuffer(data, np.uint8)
    if bits == 8:
        return buf.astype(np.uint16)
    if bits == 16:
        return buf.view("<u2").astype(np.uint16)
    if 8 % bits == 0:
        per = 8 // bits
        mask = np.uint8((1 << bits) - 1)
        out = np.empty((len(buf), per), np.uint16)
        for i in range(per):
            out[:, i] = (buf >> np.uint8(i * bits)) & mask
        return out.reshape(-1)[:n]
    out = np.empty(n, np.uint16)
    chunk_bytes = _CHUNK * bits // 8
    for i, start in enumerate(range(0, n, _CHUNK)):
        count = min(_CHUNK, n - start)
        planes = np.unpackbits(buf[i * chunk_bytes : (i + 1) * chunk_bytes], bitorder="little", count=count * bits)
        full = np.zeros((count, 16), np.uint8)
        full[:, :bits] = planes.reshape(count, bits)
        out[start : start + count] = np.packbits(full, axis=1, bitorder="little").view("<u2").reshape(-1)
    return out


class UniformCodec(TensorwiseCodec):
    name = "uniform"
    wire_id = 3
    method = container.UNIFORM
    doc = (
        "Min/max uniform integer quantization to `bits` bits per value, per tensor or per "
        "channel (axis 1), bit-packed; max error step/2. Cannot carry NaN or inf."
    )
    fields = (
        Field("bits", int, 8, "bits per value; payload is exactly ceil(n·bits/8) bytes", low=2, high=16),
        Field(
            "per_channel",
            bool,
            True,
            "own min/step per channel along axis 1 for tensors of rank >= 2 (else per tensor)",
        ),
        ZSTD,
    )

    def encode_float(self, name: str, arr: np.ndarray) -> container.Entry:
        if not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "inf"
            raise CodecError(f"uniform cannot carry {bad}: tensor {name!r} contains it", key=name)
        bits = self.params["bits"]
        levels = (1 << bits) - 1
        if self.params["per_channel"] and arr.ndim >= 2:
            mode, groups = PER_CHANNEL, arr.reshape(arr.shape[0], arr.shape[1], -1)
            lo, hi = groups.min(axis=(0, 2)), groups.max(axis=(0, 2))
        else:
            mode, groups = PER_TENSOR, arr.reshape(1, 1, -1)
            lo, hi = groups.min(axis=(0, 2)), groups.max(axis=(0, 2))
        with np.errstate(over="ignore"):
            lo32 = lo.astype(np.float32)
            step32 = ((hi.astype(np.float64) - lo32) / levels).astype(np.float32)
        if not (np.isfinite(lo32).all() and np.isfinite(step32).all()):
            raise CodecError(f"uniform: tensor {name!r} has values beyond the float32 range", key=name)
        # quantize with the float32 lo/step the decoder will use, so the bound holds for them
        lo64 = lo32.astype(np.float64)[None, :, None]
        step64 = step32.astype(np.float64)[None, :, None]
        q = np.zeros(groups.shape, np.float64)
        np.divide(groups - lo64, step64, out=q, where=step64 > 0)
        np.rint(q, out=q)
        np.clip(q, 0, levels, out=q)
        meta = _META_HEAD.pack(bits, mode, len(lo32)) + lo32.astype("<f4").tobytes() + step32.astype("<f4").tobytes()
        return container.Entry(name, arr.dtype, arr.shape, self.method, meta, pack_bits(q.astype(np.uint16), bits))

    def decode_float(self, entry: container.Entry) -> np.ndarray:
        meta = entry.meta
        if len(meta) < _META_HEAD.size:
            raise CodecError(f"damaged bytes: uniform meta of tensor {entry.name!r} is too short")
        bits, mode, count = _META_HEAD.unpack_from(meta)
        rank = len(entry.shape)
        want = entry.shape[1] if mode == PER_CHANNEL and rank >= 2 else 1 if mode == PER_TENSOR else None
        if not 2 <= bits <= 16 or want != count or len(meta) != _META_HEAD.size + 8 * count:
            raise CodecError(f"damaged bytes: inconsistent uniform meta for tensor {entry.name!r}")
        n = entry.size
        if len(entry.payload) != -(-n * bits // 8):
            raise CodecError(f"damaged bytes: uniform payload of tensor {entry.name!r} has the wrong length")
        lo = np.frombuffer(meta, "<f4", count, _META_HEAD.size).astype(np.float64)
        step = np.frombuffer(meta, "<f4", count, _META_HEAD.size + 4 * count).astype(np.float64)
        q = unpack_bits(entry.payload, n, bits)
        lead = entry.shape[0] if mode == PER_CHANNEL else 1
        x = lo[None, :, None] + q.reshape(lead, count, -1) * step[None, :, None]
        x = x.reshape(entry.shape)
        return to_float16(x) if entry.dtype == np.float16 else x.astype(entry.dtype)
