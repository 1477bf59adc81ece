"""The Codec base class, declarative codec settings and their validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import CodecError, nearest
from ..rows import CodecSetting
from ..tensorkinds import is_feature_map
from . import container

__all__ = [
    "REQUIRED",
    "Setting",
    "CodecInfo",
    "Codec",
    "TensorwiseCodec",
    "FLOAT_DTYPES",
    "ZSTD",
    "check_arrays",
    "qualified_key",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_KIND_NAMES = {bool: "bool", int: "int", float: "float"}


def qualified_key(key: str | None, name: str) -> str:
    """``codecs.uniform`` + ``bits`` → ``codecs.uniform.bits``: errors point at the exact setting."""
    return f"{key}.{name}" if key else name


@dataclass(frozen=True)
class Setting:
    """One setting of a codec: its type, default (or REQUIRED), allowed range and meaning."""

    name: str
    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    range_text: str | None = None  # when the range depends on other settings

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return _KIND_NAMES[self.kind]

    @property
    def allowed(self) -> str:
        if self.range_text:
            return self.range_text
        if self.kind is bool:
            return "true, false"
        if self.low is not None and self.high is not None:
            return f"{self.type_name} in [{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"{self.type_name} >= {_num(self.low)}"
        return self.type_name

    def check(self, value: Any, *, codec: str, file: str | None, key: str | None) -> Any:
        """The value in canonical form (plain bool / int / float), or CodecError."""
        where = qualified_key(key, self.name)
        if self.kind is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise CodecError(
                f"{codec} setting {self.name!r} must be true or false, got {value!r}",
                file=file,
                key=where,
                allowed=self.allowed,
            )
        # bool is an int in Python; `bits: true` is a spec mistake, not 1
        numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        )
        if not numeric or not np.isfinite(value):
            raise CodecError(
                f"{codec} setting {self.name!r} must be a number, got {value!r}",
                file=file,
                key=where,
                allowed=self.allowed,
            )
        if self.kind is int:
            if float(value) != int(value):
                raise CodecError(
                    f"{codec} setting {self.name!r} must be an integer, got {value!r}",
                    file=file,
                    key=where,
                    allowed=self.allowed,
                )
            out: int | float = int(value)
        else:
            out = float(value)
        if (self.low is not None and out < self.low) or (self.high is not None and out > self.high):
            raise CodecError(
                f"{codec} setting {self.name!r} = {out} is out of range",
                file=file,
                key=where,
                allowed=self.allowed,
            )
        return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


ZSTD = Setting(
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
    settings: tuple[Setting, ...]


class Codec:
    """Turns the tensors crossing a cut into one self-describing byte string and back.

    Subclasses declare ``name``, ``wire_id``, ``lossless``, ``doc`` and ``settings``; an
    instance holds validated settings (``self.params``). ``encode`` and ``decode`` are
    pure functions of their input and the settings: instances can be shared and reused.
    """

    name: ClassVar[str]
    wire_id: ClassVar[int]
    lossless: ClassVar[bool] = False
    doc: ClassVar[str] = ""
    settings: ClassVar[tuple[Setting, ...]] = ()

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = self.validate(params or {})

    # settings -------------------------------------------------------------------------
    @classmethod
    def validate(
        cls, params: Mapping[str, Any], *, file: str | None = None, key: str | None = None
    ) -> dict[str, Any]:
        """Complete, canonical settings (defaults filled), or CodecError naming the key."""
        if not isinstance(params, Mapping):
            raise CodecError(
                f"settings of codec {cls.name!r} must be a mapping, got {type(params).__name__}",
                file=file,
                key=key,
            )
        known = {s.name: s for s in cls.settings}
        for name in params:
            if name not in known:
                hint = nearest(str(name), known)
                suffix = f"; did you mean {hint!r}?" if hint else ""
                raise CodecError(
                    f"codec {cls.name!r} has no setting {name!r}{suffix}",
                    file=file,
                    key=qualified_key(key, str(name)),
                    allowed=sorted(known) or "no settings",
                )
        out: dict[str, Any] = {}
        for s in cls.settings:
            if s.name in params:
                out[s.name] = s.check(params[s.name], codec=cls.name, file=file, key=key)
            elif s.required:
                raise CodecError(
                    f"codec {cls.name!r} needs setting {s.name!r}",
                    file=file,
                    key=qualified_key(key, s.name),
                    allowed=s.allowed,
                )
            else:
                out[s.name] = s.default
        cls.check_together(out, file=file, key=key)
        return dict(sorted(out.items()))

    @classmethod
    def check_together(cls, params: dict[str, Any], *, file: str | None, key: str | None) -> None:
        """Constraints between settings (e.g. the QP range depends on qp_density)."""

    @property
    def setting(self) -> CodecSetting:
        return CodecSetting(self.name, self.params)

    @classmethod
    def info(cls) -> CodecInfo:
        return CodecInfo(cls.name, cls.lossless, cls.doc, cls.settings)

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
