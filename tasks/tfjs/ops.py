"""One handler per TF op: TF node + input values → ONNX nodes (NCHW inside) + output values."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .builder import NCHW, Builder, Const, Tensor, TfNode, Value, identity, inverse

__all__ = ["HANDLERS", "SUPPORTED_OPS"]

Handler = Callable[[Builder, TfNode, list[Value]], list[Value]]
HANDLERS: dict[str, Handler] = {}


def _handles(*ops: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return add


def _const(node: TfNode, value: Value, what: str) -> np.ndarray:
    if not isinstance(value, Const):
        raise node.error(f"{what} must be a constant, computed values are not supported")
    return value.value


def _axes(node: TfNode, value: Value, rank: int) -> list[int]:
    return [int(a) % rank for a in np.atleast_1d(_const(node, value, "the axis"))]


def _broadcast(a: Sequence[int | None], b: Sequence[int | None]) -> tuple[int | None, ...]:
    rank = max(len(a), len(b))
    a = (1,) * (rank - len(a)) + tuple(a)
    b = (1,) * (rank - len(b)) + tuple(b)
    return tuple(y if x == 1 else x if y == 1 else (x if x is not None else y) for x, y in zip(a, b))


@_handles("Identity")
def _identity(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    return [ins[0]]


# --- element-wise ---------------------------------------------------------------------------

_UNARY_NUMPY = {
    "Relu": lambda x: np.maximum(x, 0),
    "Relu6": lambda x: np.clip(x, 0, 6),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "Tanh": np.tanh,
}


def activation(b: Builder, kind: str, x: Tensor, name: str, *, alpha: float = 0.2) -> Tensor:
    """Emit a TF activation on ``x`` (layout kept); also used by fused convolutions."""
    if kind == "Relu6":
        low = b.initializer(np.array(0, x.dtype), "relu6_min", share=True)
        high = b.initializer(np.array(6, x.dtype), "relu6_max", share=True)
        (out,) = b.node("Clip", [x.name, low, high], name=name)
    elif kind == "LeakyRelu":
        (out,) = b.node("LeakyRelu", [x.name], name=name, alpha=alpha)
    else:
        (out,) = b.node(kind, [x.name], name=name)
    return Tensor(out, x.shape, x.dtype, x.perm)


@_handles("Relu", "Relu6", "Sigmoid", "Tanh", "LeakyRelu")
def _unary(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    (x,) = ins[:1]
    alpha = node.float("alpha", 0.2)
    if isinstance(x, Const):
        if node.op == "LeakyRelu":
            return [Const(np.where(x.value >= 0, x.value, alpha * x.value).astype(x.value.dtype))]
        return [Const(_UNARY_NUMPY[node.op](x.value).astype(x.value.dtype))]
    return [activation(b, node.op, x, node.name, alpha=alpha)]


_BINARY = {
    "Add": ("Add", np.add),
    "AddV2": ("Add", np.add),
    "BiasAdd": ("Add", np.add),
    "Sub": ("Sub", np.subtract),
    "Mul": ("Mul", np.multiply),
    "RealDiv": ("Div", np.divide),
    "Maximum": ("Max", np.maximum),
    "Minimum": ("Min", np.minimum),
}


@_handles(*_BINARY)
def _binary(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    onnx_op, fn = _BINARY[node.op]
    left, right = ins[:2]
    if node.op == "BiasAdd" and node.str("data_format", "NHWC") == "NCHW" and isinstance(right, Const):
        right = Const(right.value.reshape(-1, 1, 1))
    if isinstance(left, Const) and isinstance(right, Const):
        return [Const(np.asarray(fn(left.value, right.value)).astype(np.result_type(left.value, right.value)))]
    shape = _broadcast(left.shape, right.shape)
    rank = len(shape)
    tensors = [v for v in (left, right) if isinstance(v, Tensor)]
    # Full-rank operands keep the first tensor's layout; right-aligned broadcasting of a
    # lower-rank tensor only means the same thing in TF's own layout.
    perm = tensors[0].perm if all(t.rank == rank for t in tensors) else identity(rank)
    names = []
    for side, v in (("x", left), ("y", right)):
        if isinstance(v, Const):
            names.append(
                b.initializer(b.aligned_const(v.value.astype(tensors[0].dtype), rank, perm), f"{node.name}/{side}")
            )
        else:
            names.append(b.to_perm(v, perm if v.rank == rank else identity(v.rank), f"{v.name}/relayout").name)
    (out,) = b.node(onnx_op, names, name=node.name)
    return [Tensor(out, shape, tensors[0].dtype, perm)]


# --- convolutions and pooling ---------------------------------------------------------------


def _spatial(node: TfNode) -> tuple[str, tuple[int, int]]:
    fmt = node.str("data_format", "NHWC")
    if fmt not in ("NHWC", "NCHW"):
        raise node.error(f"data_format {fmt!r}", allowed=["NHWC", "NCHW"])
    return fmt, (1, 2) if fmt == "NHWC" else (2, 3)


def _pads(
    node: TfNode, sizes: Sequence[int | None], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> tuple[dict, list[int | None]]:
    """ONNX padding attributes and output sizes of a TF ``padding`` on two spatial axes."""
    padding = node.str("padding", "VALID")
    _, axes = _spatial(node)
    begin, end, out = [], [], []
    for i, (n, k, s, d) in enumerate(zip(sizes, kernel, strides, dilations)):
        eff = (k - 1) * d + 1
        if padding == "SAME":
            if n is None:
                return {"auto_pad": "SAME_UPPER"}, [None, None]
            size = -(-n // s)
            total = max((size - 1) * s + eff - n, 0)
            before, after = total // 2, total - total // 2
        elif padding == "VALID":
            before = after = 0
            size = None if n is None else (n - eff) // s + 1
        elif padding == "EXPLICIT":
            explicit = node.ints("explicit_paddings")
            before, after = explicit[2 * axes[i]], explicit[2 * axes[i] + 1]
            size = None if n is None else (n + before + after - eff) // s + 1
        else:
            raise node.error(f"padding {padding!r}", allowed=["SAME", "VALID", "EXPLICIT"])
        begin.append(before)
        end.append(after)
        out.append(size)
    return {"pads": begin + end}, out


_FUSED_ACTIVATIONS = ("Relu", "Relu6", "LeakyRelu", "Sigmoid", "Tanh")


@_handles("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")
def _conv(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    fmt, axes = _spatial(node)
    x = b.tensor(ins[0], f"{node.name}/input")
    filt = _const(node, ins[1], "the filter").astype(np.float32)
    kh, kw, cin, cout = filt.shape
    channel = x.shape[3 if fmt == "NHWC" else 1]
    if "Depthwise" in node.op:
        weights = filt.transpose(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw)
        group, out_channels = cin, cin * cout
    else:
        weights = filt.transpose(3, 2, 0, 1)
        group = 1 if channel is None else channel // cin
        out_channels = cout
    strides = node.ints("strides", [1, 1, 1, 1])
    dilations = node.ints("dilations", [1, 1, 1, 1])
    s = [strides[a] for a in axes]
    d = [dilations[a] for a in axes]
    pad_attrs, (oh, ow) = _pads(node, [x.shape[a] for a in axes], (kh, kw), s, d)

    fused = node.strs("fused_ops") if node.op.startswith(("_Fused", "Fused")) else []
    act = None
    if fused:
        if fused[0] != "BiasAdd" or len(fused) > 2 or (len(fused) == 2 and fused[1] not in _FUSED_ACTIVATIONS):
            raise node.error(f"fused ops {fused}", allowed=["BiasAdd"] + [f"BiasAdd+{a}" for a in _FUSED_ACTIVATIONS])
        act = fused[1] if len(fused) == 2 else None
    inputs = [b.to_perm(x, NCHW if fmt == "NHWC" else identity(4), f"{x.name}/nchw").name]
    inputs.append(b.initializer(weights, f"{node.name}/weights"))
    if fused:
        bias = _const(node, ins[2], "the bias").astype(np.float32).reshape(-1)
        inputs.append(b.initializer(bias, f"{node.name}/bias"))
    name = f"{node.name}/conv" if act else node.name
    (out,) = b.node("Conv", inputs, name=name, kernel_shape=[kh, kw], strides=s, dilations=d, group=group, **pad_attrs)
    shape = (x.shape[0], oh, ow, out_channels) if fmt == "NHWC" else (x.shape[0], out_channels, oh, ow)
    result = Tensor(out, shape, np.dtype(np.float32), NCHW if fmt == "NHWC" else identity(4))
    if act:
        result = activation(b, act, result, node.name, alpha=node.float("leakyrelu_alpha", 0.2))
    return [result]


@_handles("MaxPool")
def _max_pool(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    fmt, axes = _spatial(node)
    x = b.tensor(ins[0], f"{node.name}/input")
    ksize = node.ints("ksize", [1, 1, 1, 1])
    strides = node.ints("strides", [1, 1, 1, 1])
    k = [ksize[a] for a in axes]
    s = [strides[a] for a in axes]
    pad_attrs, (oh, ow) = _pads(node, [x.shape[a] for a in axes], k, s, (1, 1))
    perm = NCHW if fmt == "NHWC" else identity(4)
    xt = b.to_perm(x, perm, f"{x.name}/nchw")
    (out,) = b.node("MaxPool", [xt.name], name=node.name, kernel_shape=k, strides=s, **pad_attrs)
    shape = list(x.shape)
    shape[axes[0]], shape[axes[1]] = oh, ow
    return [Tensor(out, tuple(shape), x.dtype, perm)]


# --- shape and layout -------------------------------------------------------------------------

_REDUCE = {
    "Mean": ("ReduceMean", np.mean),
    "Sum": ("ReduceSum", np.sum),
    "Max": ("ReduceMax", np.max),
    "Min": ("ReduceMin", np.min),
}


@_handles(*_REDUCE)
def _reduce(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    onnx_op, fn = _REDUCE[node.op]
    x = ins[0]
    axes = sorted(set(_axes(node, ins[1], x.rank)))
    keep = node.bool("keep_dims")
    if isinstance(x, Const):
        return [Const(np.asarray(fn(x.value, axis=tuple(axes), keepdims=keep)).astype(x.value.dtype))]
    physical = sorted(x.physical_axis(a) for a in axes)
    if onnx_op == "ReduceSum":  # opset 13+ takes ReduceSum's axes as an input, the others as an attribute
        (out,) = b.node(
            onnx_op,
            [x.name, b.initializer(np.array(physical, np.int64), f"{node.name}/axes")],
            name=node.name,
            keepdims=int(keep),
        )
    else:
        (out,) = b.node(onnx_op, [x.name], name=node.name, axes=physical, keepdims=int(keep))
    if keep:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        return [Tensor(out, shape, x.dtype, x.perm)]
    renumber = {a: a - sum(r < a for r in axes) for a in range(x.rank) if a not in axes}
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    perm = tuple(renumber[p] for p in x.perm if p not in axes)
    return [Tensor(out, shape, x.dtype, perm)]


@_handles("ConcatV2")
def _concat(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    values, axis_value = ins[:-1], ins[-1]
    rank = values[0].rank
    (axis,) = _axes(node, axis_value, rank)
    if all(isinstance(v, Const) for v in values):
        return [Const(np.concatenate([v.value for v in values], axis=axis))]
    perm = next(v.perm for v in values if isinstance(v, Tensor))
    parts = [b.to_perm(v, perm, f"{node.name}/input{i}") for i, v in enumerate(values)]
    (out,) = b.node("Concat", [p.name for p in parts], name=node.name, axis=perm.index(axis))
    sizes = [v.shape[axis] for v in values]
    shape = list(parts[0].shape)
    shape[axis] = None if None in sizes else sum(sizes)
    return [Tensor(out, tuple(shape), parts[0].dtype, perm)]


@_handles("ResizeBilinear")
def _resize_bilinear(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    x = b.to_perm(b.tensor(ins[0], f"{node.name}/input"), NCHW, f"{node.name}/nchw")
    height, width = (int(v) for v in _const(node, ins[1], "the size"))
    align, half = node.bool("align_corners"), node.bool("half_pixel_centers")
    if align and half:
        raise node.error("align_corners and half_pixel_centers are both set")
    mode = "align_corners" if align else "half_pixel" if half else "asymmetric"
    n, c = x.shape[0], x.shape[3]
    if n is not None and c is not None:
        sizes = b.initializer(np.array([n, c, height, width], np.int64), f"{node.name}/sizes")
    else:
        (shape,) = b.node("Shape", [x.name], name=f"{node.name}/shape", end=2)
        hw = b.initializer(np.array([height, width], np.int64), f"{node.name}/hw")
        (sizes,) = b.node("Concat", [shape, hw], name=f"{node.name}/sizes", axis=0)
    (out,) = b.node(
        "Resize", [x.name, "", "", sizes], name=node.name, mode="linear", coordinate_transformation_mode=mode
    )
    return [Tensor(out, (n, height, width, c), x.dtype, NCHW)]


@_handles("Pad", "PadV2")
def _pad(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    x = ins[0]
    paddings = _const(node, ins[1], "the paddings").astype(np.int64).reshape(x.rank, 2)
    fill = _const(node, ins[2], "the constant value").reshape(()) if node.op == "PadV2" else np.zeros(())
    if isinstance(x, Const):
        return [Const(np.pad(x.value, paddings, constant_values=fill.astype(x.value.dtype)))]
    pads = [int(paddings[p, 0]) for p in x.perm] + [int(paddings[p, 1]) for p in x.perm]
    inputs = [x.name, b.initializer(np.array(pads, np.int64), f"{node.name}/pads")]
    if float(fill) != 0:
        inputs.append(b.initializer(fill.astype(x.dtype), f"{node.name}/value"))
    (out,) = b.node("Pad", inputs, name=node.name, mode="constant")
    shape = tuple(None if d is None else d + int(paddings[i].sum()) for i, d in enumerate(x.shape))
    return [Tensor(out, shape, x.dtype, x.perm)]


@_handles("Transpose")
def _transpose(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    x = ins[0]
    order = [int(p) for p in _const(node, ins[1], "the permutation")]
    if isinstance(x, Const):
        return [Const(np.ascontiguousarray(x.value.transpose(order)))]
    # Only the bookkeeping changes: the data stays where it is.
    inv = inverse(order)
    return [Tensor(x.name, tuple(x.shape[o] for o in order), x.dtype, tuple(inv[p] for p in x.perm))]


@_handles("Reshape")
def _reshape(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    x = ins[0]
    target = _const(node, ins[1], "the shape").astype(np.int64).reshape(-1)
    if isinstance(x, Const):
        return [Const(x.value.reshape(target))]
    x = b.to_perm(x, identity(x.rank), f"{x.name}/logical")
    shape = [int(d) for d in target]
    known = [d for d in x.shape]
    if -1 in shape and None not in known:
        rest = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = int(np.prod(known)) // max(rest, 1)
    shape_name = b.initializer(target, f"{node.name}/shape", share=True)
    (out,) = b.node("Reshape", [x.name, shape_name], name=node.name, allowzero=int(0 in shape))
    return [Tensor(out, tuple(d if d >= 0 else None for d in shape), x.dtype, identity(len(shape)))]


@_handles("SplitV", "Split")
def _split(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    if node.op == "Split":
        axis_value, x = ins[0], ins[1]
    else:
        x, axis_value = ins[0], ins[2]
    (axis,) = _axes(node, axis_value, x.rank)
    count = node.int("num_split", 1)
    total = x.shape[axis]
    if node.op == "Split":
        if total is None:
            raise node.error("splitting an axis of unknown size")
        sizes = [total // count] * count
    else:
        sizes = [int(s) for s in _const(node, ins[1], "the split sizes")]
        if -1 in sizes:
            if total is None:
                raise node.error("split size -1 on an axis of unknown size")
            sizes[sizes.index(-1)] = total - (sum(sizes) + 1)
    if isinstance(x, Const):
        return [Const(p) for p in np.split(x.value, np.cumsum(sizes)[:-1], axis=axis)]
    split = b.initializer(np.array(sizes, np.int64), f"{node.name}/split")
    outs = b.node("Split", [x.name, split], name=node.name, outputs=len(sizes), axis=x.physical_axis(axis))
    results = []
    for out, size in zip(outs, sizes):
        shape = list(x.shape)
        shape[axis] = size
        results.append(Tensor(out, tuple(shape), x.dtype, x.perm))
    return results


@_handles("SparseToDense")
def _sparse_to_dense(b: Builder, node: TfNode, ins: list[Value]) -> list[Value]:
    indices, shape, values, default = (_const(node, v, "every input") for v in ins[:4])
    dense = np.full(shape.astype(np.int64).reshape(-1), default.reshape(()), dtype=values.dtype)
    indices = indices.astype(np.int64).reshape(len(indices), -1) if indices.size else indices.reshape(0, dense.ndim)
    values = np.broadcast_to(values, (len(indices),))
    for index, value in zip(indices, values):
        dense[tuple(index)] = value
    return [Const(dense)]


SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(set(HANDLERS) | {"Const", "Placeholder"}))
