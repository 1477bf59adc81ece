"""The Codec base class (a Plugin: typed fields, validated by tasks.registry) and shared codec parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError
from ..registry import REQUIRED, Field, Plugin, qualified_key
from ..rows import CodecSetting
from ..tensorkinds import is_feature_map
from . import container

__all__ = [
    "REQUIRED",
    "Field",
    "CodecInfo",
    "Codec",
    "TensorwiseCodec",
    "FLOAT_DTYPES",
    "ZSTD",
    "check_arrays",
    "qualified_key",
]


ZSTD = Field(
    "zstd",
    int,
    0,
    "lossless zstd stage over the coded bytes: 0 = off, 1–22 = zstd level",
    low=0,
    high=22,
)


@dataclass(frozen=True)
class CodecInfo:
    """What ``describe()`` reports about one codec, for docs and the CLI."""

    name: str
    lossless: bool
    doc: str
    settings: tuple[Field, ...]


class Codec(Plugin):
    """Turns the tensors crossing a cut into one self-describing byte string and back.

    Subclasses declare ``name``, ``wire_id``, ``lossless``, ``doc`` and ``fields``; an
    instance holds validated settings (``self.params``). ``encode`` and ``decode`` are
    pure functions of their input and the settings: instances can be shared and reused.
    """

    plugin_kind = "codec"
    error = CodecError
    wire_id: ClassVar[int]
    lossless: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = self.validate(params or {})

    @classmethod
    def validate(
        cls, params: Mapping[str, Any], *, file: str | None = None, key: str | None = None
    ) -> dict[str, Any]:
        """Complete, canonical settings (defaults filled, keys sorted), or CodecError naming the key."""
        return dict(sorted(cls.check_settings(params, file=file, key=key).items()))

    @property
    def setting(self) -> CodecSetting:
        return CodecSetting(self.name, self.params)

    @classmethod
    def info(cls) -> CodecInfo:
        return CodecInfo(cls.name, cls.lossless, cls.doc, cls.fields)

    # coding ---------------------------------------------------------------------------
    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _unpack(self, data: bytes) -> container.Container:
        box = container.unpack(data)
        if box.codec_id != self.wire_id:
            raise CodecError(
                f"these bytes were written by codec {container.codec_name(box.codec_id)!r}, "
                f"not {self.name!r}"
            )
        return box

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<{type(self).__name__} {self.name} {settings}>"


def check_arrays(arrays: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(name, C-contiguous little-endian array) pairs, or CodecError for what no codec carries."""
    if not isinstance(arrays, Mapping):
        raise CodecError(f"codecs take a mapping of name → array, got {type(arrays).__name__}")
    out = []
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise CodecError(f"tensor names must be strings, got {name!r}")
        arr = np.asarray(value)
        if arr.dtype.newbyteorder("=") not in container.DTYPES:
            raise CodecError(
                f"tensor {name!r} has dtype {arr.dtype}, which no codec carries",
                key=name,
                allowed=sorted(d.name for d in container.DTYPES),
            )
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
        out.append((name, arr if arr.flags.c_contiguous else arr.copy(order="C")))
    return out


FLOAT_DTYPES = (np.dtype("float16"), np.dtype("float32"), np.dtype("float64"))


class TensorwiseCodec(Codec):
    """A codec that codes each feature map on its own and passes the others through raw
    (integer / bool tensors, and float scalars and short float vectors: see tasks.tensorkinds).

    Subclasses implement ``encode_float`` / ``decode_float`` for one non-empty float tensor
    and read ``self.params["zstd"]`` for the optional zstd stage.
    """

    method: ClassVar[int]

    def encode(self, arrays: Mapping[str, np.ndarray]) -> bytes:
        entries = [
            self.encode_float(name, arr)
            if arr.dtype in FLOAT_DTYPES and is_feature_map(arr)
            else container.raw_entry(name, arr)
            for name, arr in check_arrays(arrays)
        ]
        return container.pack(self.wire_id, entries, zstd_level=self.params.get("zstd", 0))

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        box = self._unpack(data)
        out = {}
        for e in box.entries:
            if e.method == container.RAW:
                out[e.name] = container.raw_array(e)
            elif e.method == self.method and e.dtype in FLOAT_DTYPES:
                arr = self.decode_float(e)
                if arr.shape != e.shape or arr.dtype != e.dtype:
                    raise AssertionError(f"{self.name} decoded {e.name!r} to {arr.dtype}{arr.shape}")
                out[e.name] = arr
            else:
                raise CodecError(f"damaged bytes: tensor {e.name!r} has a payload {self.name} does not write")
        if len(box.stream):
            raise CodecError(f"damaged bytes: {self.name} writes no shared stream")
        return out

    def encode_float(self, name: str, arr: np.ndarray) -> container.Entry:
        raise NotImplementedError

    def decode_float(self, entry: container.Entry) -> np.ndarray:
        raise NotImplementedError
