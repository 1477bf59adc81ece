"""The model-variant interface: validated settings, the built variant and what it costs."""

from __future__ import annotations

import hashlib
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx

from ..errors import ModelError, VariantError
from ..macs import count_macs, count_params
from ..registry import Field, Plugin
from ..rows import canonical_json

__all__ = [
    "Field",
    "Variant",
    "VariantModel",
    "Transformed",
    "Calibration",
    "ZLIB_LEVEL",
    "load_model",
    "serialize",
    "variant_key_digest",
]

# One calibration sample: a feed dict for the model's graph inputs (already preprocessed).
Calibration = Sequence[Mapping[str, np.ndarray]]

# transmission_bytes of variants without a codec of their own: the serialized model
# deflated at zlib's default level, so that sparse (pruned) weights show their gain.
ZLIB_LEVEL = 6


@dataclass(frozen=True)
class Transformed:
    """What a family's transform returns to :meth:`Variant.build`."""

    model: onnx.ModelProto
    notes: tuple[str, ...] = ()
    # Set by families that carry their own coded form (NNCodec weights); else zlib.
    transmission_bytes: int | None = None
    transmission: str | None = None


@dataclass(frozen=True)
class VariantModel:
    """A built model variant and its costs.

    ``file_bytes`` is the serialized ONNX size; ``transmission_bytes`` the size that would
    be sent to a device: the family's coded form where it has one (``transmission`` says
    what it is), else the serialized model deflated with zlib at level 6 (``"zlib-6"``).
    ``params`` / ``nonzero_params`` count the elements of initializers and Constant
    tensors except int64/bool ones (shapes, axes, indices), see :func:`tasks.macs.count_params`.
    ``macs`` is None when the graph's shapes are not static.
    """

    name: str
    settings: str  # canonical JSON, defaults filled in
    label: str
    model_bytes: bytes = field(repr=False)
    file_bytes: int
    transmission_bytes: int
    transmission: str
    params: int
    nonzero_params: int
    macs: int | None
    build_s: float
    notes: tuple[str, ...] = ()

    @property
    def model(self) -> onnx.ModelProto:
        """A fresh ModelProto parsed from ``model_bytes`` (callers may mutate it)."""
        return onnx.load_from_string(self.model_bytes)


def load_model(model: onnx.ModelProto | bytes) -> onnx.ModelProto:
    """A private copy of the caller's model: variants never mutate their input."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_from_string(bytes(model))
        except Exception as exc:  # protobuf raises its own DecodeError
            raise ModelError(f"not an ONNX model: {exc}") from None
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected onnx.ModelProto or bytes, got {type(model).__name__}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


class Variant(Plugin, ABC):
    """One model-variant family with validated settings; :meth:`build` makes the model.

    Subclasses set ``name`` and ``fields`` and implement :meth:`transform`; they are
    listed in ``tasks.variants``' registry.
    """

    plugin_kind = "model variant"
    error = VariantError
    uses_calibration: ClassVar[bool] = False

    def __init__(self, settings: Mapping[str, Any] | None = None, *, file: str | None = None, key: str | None = None):
        self.settings: Mapping[str, Any] = self.check_settings(settings, file=file, key=key)
        self.file = file
        self.key = key

    @property
    def canonical(self) -> str:
        return canonical_json(self.settings)

    def calibration_used(self, ids: list) -> list:
        """The calibration ids this variant's build reads (all of them by default)."""
        return list(ids) if self.uses_calibration else []

    def label(self) -> str:
        """Short display label; families override for a field-style one."""
        defaults = {f.name: f.default for f in self.fields}
        extras = " ".join(f"{k}={v}" for k, v in sorted(self.settings.items()) if v != defaults[k])
        return f"{self.name} {extras}".strip()

    @abstractmethod
    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        """Return the variant of ``model`` (a private copy that may be modified)."""

    def build(
        self,
        model: onnx.ModelProto | bytes,
        *,
        calibration: Calibration | None = None,
    ) -> VariantModel:
        start = time.perf_counter()
        source = load_model(model)
        out = self.transform(source, calibration)
        built = out.model
        try:
            onnx.checker.check_model(built)
        except onnx.checker.ValidationError as exc:
            raise VariantError(
                f"{self.label()}: built model is not valid ONNX: {str(exc).splitlines()[0]}", key=self.key, file=self.file
            ) from None
        data = serialize(built)
        _check_loads(data, label=self.label())
        if out.transmission_bytes is None:
            transmission_bytes = len(zlib.compress(data, ZLIB_LEVEL))
            transmission = f"zlib-{ZLIB_LEVEL}"
        else:
            transmission_bytes = out.transmission_bytes
            transmission = out.transmission or self.name
        params = count_params(built)
        try:
            macs: int | None = count_macs(built).total_macs
        except ModelError:
            macs = None
        return VariantModel(
            name=self.name,
            settings=self.canonical,
            label=self.label(),
            model_bytes=data,
            file_bytes=len(data),
            transmission_bytes=transmission_bytes,
            transmission=transmission,
            params=params.params,
            nonzero_params=params.nonzero_params,
            macs=macs,
            build_s=time.perf_counter() - start,
            notes=out.notes,
        )


def _check_loads(data: bytes, *, label: str) -> None:
    """A variant onnxruntime cannot load would fail every task of the sweep: say so once, here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VariantError(f"{label}: onnxruntime cannot load the built model: {first}") from None


def variant_key_digest(model_bytes: bytes, name: str, canonical: str, calibration_ids: Sequence[Any]) -> str:
    """sha256 over the model content, the variant, its canonical settings and calibration ids."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(model_bytes).digest())
    digest.update(b"\0" + name.encode())
    digest.update(b"\0" + canonical.encode())
    digest.update(b"\0" + canonical_json({"calibration": [str(i) for i in calibration_ids]}).encode())
    return digest.hexdigest()
