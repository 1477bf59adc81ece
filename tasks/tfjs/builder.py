"""What a TF.js → ONNX op handler works with: TF nodes, values with their layout, the ONNX graph being built."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError

__all__ = ["TfNode", "Const", "Tensor", "Value", "Builder", "NCHW", "identity", "inverse"]

# A 4-D NHWC tensor stored channels-first: physical axis i holds logical axis NCHW[i].
NCHW = (0, 3, 1, 2)


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def inverse(perm: Sequence[int]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


@dataclass(frozen=True)
class TfNode:
    """One node of a TF.js ``modelTopology``; attribute accessors apply TF's defaults."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> TfNode:
        # "^name" inputs are control dependencies: they carry no data.
        inputs = tuple(i for i in raw.get("input", []) if not i.startswith("^"))
        return cls(str(raw["name"]), str(raw["op"]), inputs, raw.get("attr", {}) or {})

    def error(self, message: str, **kwargs: Any) -> ModelError:
        return ModelError(f"{self.op} node {self.name!r}: {message}", **kwargs)

    def int(self, key: str, default: int = 0) -> int:
        return int(self.attr.get(key, {}).get("i", default))

    def float(self, key: str, default: float = 0.0) -> float:
        return float(self.attr.get(key, {}).get("f", default))

    def bool(self, key: str, default: bool = False) -> bool:
        return bool(self.attr.get(key, {}).get("b", default))

    def str(self, key: str, default: str = "") -> str:
        value = self.attr.get(key, {}).get("s")
        return default if value is None else base64.b64decode(value).decode()

    def ints(self, key: str, default: Sequence[int] = ()) -> list[int]:
        values = self.attr.get(key, {}).get("list", {}).get("i")
        return [int(v) for v in values] if values else list(default)

    def strs(self, key: str) -> list[str]:
        values = self.attr.get(key, {}).get("list", {}).get("s") or []
        return [base64.b64decode(v).decode() for v in values]


@dataclass(frozen=True)
class Const:
    """A value known at conversion time (weights and everything folded from them)."""

    value: np.ndarray

    @property
    def rank(self) -> int:
        return self.value.ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)


@dataclass(frozen=True)
class Tensor:
    """A value computed by the ONNX graph.

    ``shape`` is the TF (logical) shape, ``None`` where unknown. The ONNX tensor ``name``
    holds it transposed by ``perm``: physical axis i is logical axis ``perm[i]``. This lets
    NHWC graphs run as NCHW convolutions and TF Transpose ops cost nothing.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    perm: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def physical_axis(self, axis: int) -> int:
        return self.perm.index(axis % self.rank)


Value = Const | Tensor


class Builder:
    """Accumulates ONNX nodes and initializers with unique, readable names."""

    def __init__(self, *, reserved: Sequence[str] = ()) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._used: set[str] = set(reserved)
        self._shared: dict[tuple[str, bytes, tuple[int, ...]], str] = {}
        self._transposed: dict[tuple[str, tuple[int, ...]], Tensor] = {}

    def fresh(self, hint: str) -> str:
        """A tensor / node name not yet used (graph output names are reserved up front)."""
        name, k = hint, 1
        while name in self._used:
            name, k = f"{hint}_{k}", k + 1
        self._used.add(name)
        return name

    def use(self, name: str) -> None:
        self._used.add(name)

    def initializer(self, array: np.ndarray, hint: str, *, share: bool = False) -> str:
        """Add a constant; ``share`` reuses one initializer for equal small constants (clip bounds, shapes)."""
        array = np.asarray(array)
        key = (str(array.dtype), array.tobytes(), tuple(array.shape))
        if share and key in self._shared:
            return self._shared[key]
        name = self.fresh(hint)
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        if share:
            self._shared[key] = name
        return name

    def node(self, op_type: str, inputs: Sequence[str], *, name: str, outputs: int = 1, **attrs: Any) -> list[str]:
        """Emit one ONNX node named ``name``; its first output is named ``name`` too."""
        node_name = self.fresh(name)
        names = [node_name] + [self.fresh(f"{node_name}:{k}") for k in range(1, outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=node_name, **attrs))
        return names

    def tensor(self, value: Value, hint: str) -> Tensor:
        """A Const as an initializer in its logical layout, or a Tensor unchanged."""
        if isinstance(value, Tensor):
            return value
        name = self.initializer(value.value, hint)
        return Tensor(name, value.shape, value.value.dtype, identity(value.rank))

    def to_perm(self, value: Value, perm: Sequence[int], hint: str) -> Tensor:
        """The value stored with layout ``perm``, adding (and caching) one Transpose if needed."""
        perm = tuple(perm)
        if isinstance(value, Const):
            physical = np.ascontiguousarray(value.value.transpose(perm))
            name = self.initializer(physical, hint)
            return Tensor(name, value.shape, value.value.dtype, perm)
        if value.perm == perm:
            return value
        key = (value.name, perm)
        if key not in self._transposed:
            inv = inverse(value.perm)
            (out,) = self.node("Transpose", [value.name], name=hint, perm=[inv[p] for p in perm])
            self._transposed[key] = Tensor(out, value.shape, value.dtype, perm)
        return self._transposed[key]

    @staticmethod
    def aligned_const(value: np.ndarray, rank: int, perm: Sequence[int]) -> np.ndarray:
        """A constant that broadcasts against a rank-``rank`` tensor, rearranged into layout ``perm``."""
        value = np.asarray(value)
        if value.size == 1:
            return value.reshape(())
        full = value.reshape((1,) * (rank - value.ndim) + value.shape).transpose(perm)
        # ONNX broadcasting is right-aligned like numpy's: leading ones are redundant.
        while full.ndim > 1 and full.shape[0] == 1:
            full = full[0]
        return np.ascontiguousarray(full)


def onnx_dtype(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def value_info(name: str, dtype: np.dtype, shape: Sequence[int | None], dims: Sequence[str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(
        name, onnx_dtype(dtype), [d if d is not None else dims[i] for i, d in enumerate(shape)]
    )


TF_DTYPES = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_BOOL": np.dtype(np.bool_),
    "DT_HALF": np.dtype(np.float16),
    "DT_UINT8": np.dtype(np.uint8),
}
