"""TF.js weights manifests: which shard files hold the weights, and decoding them to numpy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["weight_paths", "decode_weights"]

# Storage dtypes of the manifest (`dtype`), and of its optional `quantization.dtype`.
_STORED = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANTIZED = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def weight_paths(model_json: Mapping[str, Any]) -> list[str]:
    """The shard files of the weights, in the order their bytes are to be concatenated."""
    return [path for group in _manifest(model_json, None) for path in group.get("paths", [])]


def decode_weights(model_json: Mapping[str, Any], weights: bytes, *, file: str | None = None) -> dict[str, np.ndarray]:
    """Every weight of the manifest as a numpy array in its original dtype (float32/int32/bool).

    ``weights`` is the concatenation of all shard files (see :func:`weight_paths`).
    float16 storage and uint8/uint16 affine quantization (``q * scale + min``) are undone;
    quantized int32 weights are rounded, as TF.js does.
    """
    buffer = memoryview(weights)
    values: dict[str, np.ndarray] = {}
    offset = 0
    for group in _manifest(model_json, file):
        for spec in group.get("weights", []):
            name = spec["name"]
            shape = [int(d) for d in spec.get("shape", [])]
            count = int(np.prod(shape, dtype=np.int64))
            dtype = spec.get("dtype", "float32")
            if dtype not in _STORED:
                raise ModelError(
                    f"weight {name!r} has dtype {dtype!r}", file=file, key="weightsManifest", allowed=sorted(_STORED)
                )
            quant = spec.get("quantization") or {}
            storage = _QUANTIZED.get(quant.get("dtype")) if quant else _STORED[dtype]
            if storage is None:
                raise ModelError(
                    f"weight {name!r} is quantized as {quant.get('dtype')!r}",
                    file=file,
                    key="weightsManifest",
                    allowed=sorted(_QUANTIZED),
                )
            size = count * np.dtype(storage).itemsize
            if offset + size > len(buffer):
                raise ModelError(
                    f"weights end after {len(buffer)} bytes but {name!r} needs bytes {offset}…{offset + size}",
                    file=file,
                    key="weightsManifest",
                )
            raw = np.frombuffer(buffer, dtype=storage, count=count, offset=offset)
            offset += size
            values[name] = _dequantize(raw, dtype, quant, name, file).reshape(shape)
    if offset != len(buffer):
        raise ModelError(
            f"the manifest describes {offset} bytes of weights but {len(buffer)} were given",
            file=file,
            key="weightsManifest",
        )
    return values


def _dequantize(raw: np.ndarray, dtype: str, quant: Mapping[str, Any], name: str, file: str | None) -> np.ndarray:
    target = _STORED[dtype]
    kind = quant.get("dtype") if quant else None
    if kind is None:
        return raw.copy()
    if kind == "float16":
        if dtype != "float32":
            raise ModelError(f"weight {name!r}: float16 storage of {dtype}", file=file, key="weightsManifest")
        return raw.astype(np.float32)
    if "scale" not in quant or "min" not in quant:
        raise ModelError(f"weight {name!r}: {kind} quantization without scale/min", file=file, key="weightsManifest")
    values = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
    if target is np.int32:
        return np.round(values).astype(np.int32)
    return values.astype(target)


def _manifest(model_json: Mapping[str, Any], file: str | None) -> list[Mapping[str, Any]]:
    manifest = model_json.get("weightsManifest")
    if not isinstance(manifest, list):
        raise ModelError("not a TF.js graph model: no weightsManifest list", file=file, key="weightsManifest")
    return manifest
