"""Multiply-accumulate and parameter counts from an ONNX graph's static shapes, and latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ModelError, SplitError

__all__ = [
    "NodeMacs",
    "ModelCost",
    "ParamCount",
    "SplitMacs",
    "count_macs",
    "count_params",
    "split_macs",
    "macs_by_split",
    "measure_latency",
]

# Convolution-like ops: (weight input index). MACs = output elements × prod(W.shape[1:]),
# since W.shape[1] is already Cin / groups: grouped and depthwise convs need no special case.
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
# Matrix products: (A input index, B input index). MACs = output elements × K.
_MATMUL_A = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}

# Initializer types that are not learned values: shapes, axes, indices, masks.
_NOT_PARAMS = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL, onnx.TensorProto.STRING}


@dataclass(frozen=True)
class NodeMacs:
    """MACs of one node (0 for ops that are not counted)."""

    index: int
    name: str
    op_type: str
    macs: int


@dataclass(frozen=True)
class ParamCount:
    params: int
    nonzero_params: int


@dataclass(frozen=True)
class ModelCost:
    """MACs of a whole graph, per node in graph order, and its parameter counts."""

    total_macs: int
    nodes: tuple[NodeMacs, ...]
    params: int
    nonzero_params: int


class SplitMacs(NamedTuple):
    """MACs on each side of a cut: head = nodes 0..split, tail = the rest."""

    head_macs: int
    tail_macs: int


def _as_model(model: onnx.ModelProto | bytes) -> onnx.ModelProto:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return onnx.load_from_string(bytes(model))
    return model


def count_params(model: onnx.ModelProto | bytes) -> ParamCount:
    """Elements of every initializer and Constant tensor except int64/bool/string ones.

    int64 tensors hold shapes, axes and indices rather than learned values; quantized
    graphs' int8 weights, int32 biases, scales and zero points are all counted.
    """
    model = _as_model(model)
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    tensors.append(attr.t)
    params = nonzero = 0
    for tensor in tensors:
        if tensor.data_type in _NOT_PARAMS:
            continue
        array = numpy_helper.to_array(tensor)
        params += int(array.size)
        nonzero += int(np.count_nonzero(array))
    return ParamCount(params=params, nonzero_params=nonzero)


def _shapes(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None,
    known_shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, tuple]:
    """Static shape of every tensor shape inference can tell; unknown dims are None."""
    if input_shapes:
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        names = {i.name for i in fixed.graph.input}
        for name, dims in input_shapes.items():
            if name not in names:
                raise ModelError("no such graph input", key=f"input_shapes.{name}", allowed=sorted(names))
            vi = next(i for i in fixed.graph.input if i.name == name)
            vi.type.tensor_type.ClearField("shape")
            shape = vi.type.tensor_type.shape
            for d in dims:
                shape.dim.add().dim_value = int(d)
        del fixed.graph.value_info[:]
        model = fixed
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ModelError(f"shape inference failed: {str(exc).splitlines()[0]}") from None
    shapes: dict[str, tuple] = {}
    graph = inferred.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for name, dims in (known_shapes or {}).items():  # measured on a sample where inference gave up
        if name not in shapes or any(d is None for d in shapes[name]):
            shapes[name] = tuple(int(d) for d in dims)
    return shapes


def _static(shapes: dict[str, tuple], name: str, node: onnx.NodeProto, index: int) -> tuple[int, ...]:
    shape = shapes.get(name)
    if shape is None or any(d is None for d in shape):
        raise ModelError(
            f"node {index} ({node.op_type} {node.name!r}): shape of {name!r} is not static "
            f"({shape}); pass input_shapes to fix symbolic dimensions",
            key=node.name or str(index),
        )
    return shape


def _node_macs(node: onnx.NodeProto, index: int, shapes: dict[str, tuple]) -> int:
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return 0
    if op in _CONV_WEIGHT:
        out = _static(shapes, node.output[0], node, index)
        weight = _static(shapes, node.input[_CONV_WEIGHT[op]], node, index)
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
    if op == "ConvTranspose":
        # Every input element is scattered through Cout/groups × kernel weights.
        x = _static(shapes, node.input[0], node, index)
        weight = _static(shapes, node.input[1], node, index)
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(weight[1:], dtype=np.int64))
    if op == "Gemm":
        out = _static(shapes, node.output[0], node, index)
        a = _static(shapes, node.input[0], node, index)
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
        return int(np.prod(out, dtype=np.int64)) * int(k)
    if op in _MATMUL_A:
        out = _static(shapes, node.output[0], node, index)
        a = _static(shapes, node.input[_MATMUL_A[op]], node, index)
        return int(np.prod(out, dtype=np.int64)) * int(a[-1])
    return 0


_COUNTED = set(_CONV_WEIGHT) | set(_MATMUL_A) | {"ConvTranspose", "Gemm"}


def count_macs(
    model: onnx.ModelProto | bytes,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    known_shapes: Mapping[str, Sequence[int]] | None = None,
) -> ModelCost:
    """MACs of Conv (grouped, depthwise, strided, dilated, padded), ConvTranspose, Gemm,
    batched MatMul and their quantized forms (QLinearConv, ConvInteger, MatMulInteger,
    QLinearMatMul count the same MACs). Bias additions, activations, pooling and
    elementwise ops are not counted (the usual convention). Nodes inside subgraphs
    (If/Loop bodies) are not counted.

    ``input_shapes`` fixes symbolic input dimensions ({"input": [1, 3, 512, 512]});
    a shape that stays unknown where it is needed raises ModelError. ``known_shapes``
    gives shapes measured on a sample for tensors that shape inference cannot follow
    (an in-graph Resize whose size is computed from the input's shape).
    """
    model = _as_model(model)
    needed = any(n.op_type in _COUNTED for n in model.graph.node)
    shapes = _shapes(model, input_shapes, known_shapes) if needed else {}
    nodes = tuple(
        NodeMacs(index=i, name=node.name, op_type=node.op_type, macs=_node_macs(node, i, shapes))
        for i, node in enumerate(model.graph.node)
    )
    params = count_params(model)
    return ModelCost(
        total_macs=sum(n.macs for n in nodes),
        nodes=nodes,
        params=params.params,
        nonzero_params=params.nonzero_params,
    )


def macs_by_split(
    model: onnx.ModelProto | bytes | ModelCost,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[int]:
    """Cumulative head MACs: element k is the MACs of nodes 0..k (one pass)."""
    cost = model if isinstance(model, ModelCost) else count_macs(model, input_shapes=input_shapes)
    return [int(v) for v in np.cumsum([n.macs for n in cost.nodes], dtype=np.int64)]


def split_macs(
    model: onnx.ModelProto | bytes | ModelCost,
    split: int,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> SplitMacs:
    """Head (nodes 0..split) and tail MACs; split -1 puts every node in the tail."""
    cost = model if isinstance(model, ModelCost) else count_macs(model, input_shapes=input_shapes)
    n = len(cost.nodes)
    if not -1 <= split < n:
        raise SplitError(f"split {split} out of range", key="split", allowed=f"-1..{n - 1}")
    head = sum(node.macs for node in cost.nodes[: split + 1])
    return SplitMacs(head_macs=head, tail_macs=cost.total_macs - head)


def measure_latency(
    model_bytes: bytes,
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int = 1,
    repeats: int = 5,
) -> float:
    """Median seconds of one onnxruntime run (CPU, ``threads`` intra-op threads) after one
    untimed warm-up run; the thread count is explicit because Ray sets OMP_NUM_THREADS=1."""
    import onnxruntime as ort

    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(bytes(model_bytes), options, providers=["CPUExecutionProvider"])
    feeds = dict(feeds)
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
