"""Pruning variants: unstructured magnitude pruning and L1-norm filter (channel) pruning."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import VariantError
from .base import Calibration, Field, Transformed, Variant

__all__ = ["PruneMagnitude", "PruneFilters", "magnitude_masks"]

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; a sparsity of 0.5 over 5 weights prunes 3.
    return int(math.floor(x + 0.5 + 1e-9))


def _prunable_weights(model: onnx.ModelProto) -> list[str]:
    """Names of float weight initializers of Conv/ConvTranspose/MatMul/Gemm, in node order."""
    inits = {i.name: i for i in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            candidates = node.input[1:2]
        elif node.op_type in ("MatMul", "Gemm"):
            candidates = node.input[0:2]
        else:
            continue
        for name in candidates:
            init = inits.get(name)
            if init is not None and init.data_type in _FLOATS and len(init.dims) >= 2 and name not in names:
                names.append(name)
    return names


def magnitude_masks(weights: dict[str, np.ndarray], sparsity: float, *, scope: str) -> dict[str, np.ndarray]:
    """Boolean masks (True = pruned) reaching round(sparsity × total) pruned weights exactly.

    ``scope="layer"``: every tensor gets floor(sparsity × n) and the remaining count goes
    to the tensors with the largest fractional parts (ties in tensor order), so each layer
    is within one weight of the asked sparsity and the total is exact. ``"global"``: one
    threshold over all tensors. Inside a selection, equal magnitudes are broken by
    position (stable sort), so the result is deterministic.
    """
    sizes = {k: int(w.size) for k, w in weights.items()}
    total = sum(sizes.values())
    target = _round_half_up(sparsity * total)
    masks = {k: np.zeros(w.shape, bool) for k, w in weights.items()}
    if scope == "global":
        flat = np.concatenate([np.abs(w.astype(np.float64)).ravel() for w in weights.values()])
        chosen = np.argsort(flat, kind="stable")[:target]
        hit = np.zeros(total, bool)
        hit[chosen] = True
        offset = 0
        for k, w in weights.items():
            masks[k] = hit[offset : offset + sizes[k]].reshape(w.shape)
            offset += sizes[k]
        return masks
    exact = {k: sparsity * n for k, n in sizes.items()}
    counts = {k: int(math.floor(v + 1e-9)) for k, v in exact.items()}
    remainder = target - sum(counts.values())
    order = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), list(weights).index(k)))
    for k in order[: max(remainder, 0)]:
        counts[k] += 1
    for k, w in weights.items():
        flat = np.abs(w.astype(np.float64)).ravel()
        hit = np.zeros(flat.size, bool)
        hit[np.argsort(flat, kind="stable")[: counts[k]]] = True
        masks[k] = hit.reshape(w.shape)
    return masks


class PruneMagnitude(Variant):
    """Zero the smallest-magnitude Conv/ConvTranspose/MatMul/Gemm weights.

    The model file keeps dense tensors (same size); the gain shows in the zlib-6
    transmission size and in ``nonzero_params``. Per-layer scope by default: global
    thresholds over BN-folded weights of different scales would empty whole layers.
    """

    name = "prune-magnitude"
    fields = (
        Field("sparsity", float, 0.5, "fraction of prunable weights set to zero", low=0.0, high=1.0),
        Field("scope", str, "layer", "per-layer or one global threshold", choices=("layer", "global")),
    )

    def label(self) -> str:
        scope = "" if self.settings["scope"] == "layer" else " global"
        return f"prune-magnitude {self.settings['sparsity'] * 100:g}%{scope}"

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        names = _prunable_weights(model)
        if not names:
            raise VariantError(f"{self.label()}: no Conv/MatMul/Gemm weight initializer to prune", key=self.key)
        inits = {i.name: i for i in model.graph.initializer}
        weights = {n: numpy_helper.to_array(inits[n]) for n in names}
        masks = magnitude_masks(weights, self.settings["sparsity"], scope=self.settings["scope"])
        pruned = 0
        for name, weight in weights.items():
            new = np.where(masks[name], np.zeros((), weight.dtype), weight)
            inits[name].CopyFrom(numpy_helper.from_array(new, name))
            pruned += int(masks[name].sum())
        total = sum(w.size for w in weights.values())
        notes = (f"{pruned} of {total} weights in {len(names)} tensors pruned ({pruned / total:.4%})",)
        return Transformed(model=model, notes=notes)


# --- filter pruning -----------------------------------------------------------------

# Ops that act on each channel independently with their activation at input 0 and any
# other inputs scalar-like (Clip min/max): a removed channel simply stays removed.
_PER_CHANNEL_UNARY = {
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Elu", "Selu",
    "Softplus", "Softsign", "Identity", "Abs", "Neg", "Exp", "Log", "Sqrt", "Floor", "Ceil",
    "Round", "Erf", "Mish", "Cast", "Dropout", "MaxPool", "AveragePool", "LpPool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
}  # fmt: skip
# Elementwise ops whose other operand is a constant that may be per-channel (then sliced).
_BROADCAST_BINARY = {"Add", "Sub", "Mul", "Div", "PRelu", "Pow"}
_REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2"}


@dataclass
class _Plan:
    """Everything that changes when output channels of one conv are removed."""

    conv: int  # node index of the pruned conv
    slices: list[tuple[str, int]] = field(default_factory=list)  # (initializer, axis) to cut to the kept channels
    depthwise: list[int] = field(default_factory=list)  # nodes whose `group` becomes the kept count


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.nodes = list(model.graph.node)
        self.inits = {i.name: i for i in model.graph.initializer}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        self.init_uses: Counter[str] = Counter()
        for k, node in enumerate(self.nodes):
            for name in node.input:
                if name:
                    self.consumers[name].append(k)
                    if name in self.inits:
                        self.init_uses[name] += 1
        self.outputs = {o.name for o in model.graph.output}
        self.shapes = {name: tuple(init.dims) for name, init in self.inits.items()}
        # Constant-node outputs count as constants for shape checks (never sliced).
        self.consts = dict(self.shapes)
        for node in self.nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.consts[node.output[0]] = tuple(node.attribute[0].t.dims)
            elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value_float":
                self.consts[node.output[0]] = ()

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def own(self, name: str) -> bool:
        """An initializer used by exactly one node input, so it may be sliced."""
        return name in self.inits and self.init_uses[name] == 1

    def label(self, k: int) -> str:
        node = self.nodes[k]
        return f"{node.op_type} {node.name or '#' + str(k)}"


def _channel_axis(shape: tuple[int, ...], rank: int) -> int | None:
    """The axis of a constant that lines up with channel axis 1 of a rank-`rank` activation."""
    p = len(shape) - rank + 1
    return p if p >= 0 else None


def _plan(g: _Graph, k: int) -> _Plan | str:
    """The changes pruning conv ``k``'s filters needs, or why it cannot be pruned."""
    node = g.nodes[k]
    weight = node.input[1]
    channels = g.shapes[weight][0]
    rank = len(g.shapes[weight])
    plan = _Plan(conv=k, slices=[(weight, 0)])
    if len(node.input) > 2 and node.input[2]:
        if not g.own(node.input[2]):
            return "bias is not an initializer of its own"
        plan.slices.append((node.input[2], 0))
    frontier = [node.output[0]]
    seen: set[str] = set()
    # Activations met as the other operand of an elementwise op (hard-swish's x · relu6(x + 3)):
    # fine if they turn out to lie in this same region, checked once the region is known.
    partners: list[tuple[str, str]] = []
    while frontier:
        tensor = frontier.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in g.outputs:
            return f"its channels reach graph output {tensor!r}"
        for c in sorted(set(g.consumers.get(tensor, []))):
            consumer = g.nodes[c]
            op = consumer.op_type
            where = g.label(c)
            others = [(i, n) for i, n in enumerate(consumer.input) if n and n != tensor]
            if op in _PER_CHANNEL_UNARY:
                if consumer.input[0] != tensor:
                    return f"feeds {where} at a non-data input"
                if op == "MaxPool" and len(consumer.output) > 1 and consumer.output[1]:
                    return f"feeds {where}, whose indices output is used"
                if op == "Dropout" and len(consumer.output) > 1 and consumer.output[1]:
                    return f"feeds {where}, whose mask output is used"
                if any(n not in g.consts or int(np.prod(g.consts[n])) != 1 for _, n in others):
                    return f"feeds {where} with non-scalar extra inputs"
                frontier.append(consumer.output[0])
            elif op in _BROADCAST_BINARY:
                for _, n in others:
                    if n not in g.consts:
                        partners.append((n, where))
                        continue
                    axis = _channel_axis(g.consts[n], rank)
                    if axis is None or g.consts[n][axis] == 1:
                        continue
                    if g.consts[n][axis] != channels or not g.own(n):
                        return f"feeds {where}, whose constant {n!r} cannot be sliced per channel"
                    plan.slices.append((n, axis))
                frontier.append(consumer.output[0])
            elif op in ("BatchNormalization", "InstanceNormalization"):
                if consumer.input[0] != tensor or len([o for o in consumer.output if o]) > 1:
                    return f"feeds {where} in a form that cannot be adjusted"
                for _, n in others:
                    if not g.own(n):
                        return f"feeds {where}, whose parameter {n!r} is shared or not constant"
                    plan.slices.append((n, 0))
                frontier.append(consumer.output[0])
            elif op == "Conv":
                if consumer.input[0] != tensor or consumer.input[1] not in g.inits or not g.own(consumer.input[1]):
                    return f"feeds {where}, whose weight is shared or not constant"
                group = g.attr(consumer, "group", 1)
                w_shape = g.shapes[consumer.input[1]]
                if group == 1:
                    plan.slices.append((consumer.input[1], 1))  # terminal: drop its input channels
                elif group == channels and w_shape[0] == channels and w_shape[1] == 1:
                    plan.slices.append((consumer.input[1], 0))  # depthwise: channel j in, channel j out
                    if len(consumer.input) > 2 and consumer.input[2]:
                        if not g.own(consumer.input[2]):
                            return f"feeds {where}, whose bias is shared or not constant"
                        plan.slices.append((consumer.input[2], 0))
                    plan.depthwise.append(c)
                    frontier.append(consumer.output[0])
                else:
                    return f"feeds grouped {where} (group={group}), whose groups would not stay whole"
            elif op == "Pad":
                pads = consumer.input[1] if len(consumer.input) > 1 else ""
                if consumer.input[0] != tensor or (len(consumer.input) > 3 and consumer.input[3]):
                    return f"feeds {where} in a form that cannot be checked"
                if pads:
                    if pads not in g.inits:
                        return f"feeds {where}, whose pads are not constant"
                    values = numpy_helper.to_array(g.inits[pads])
                    if values[1] != 0 or values[1 + rank] != 0:
                        return f"feeds {where}, which pads the channel axis"
                frontier.append(consumer.output[0])
            elif op == "Resize":
                ok = consumer.input[0] == tensor and len(consumer.input) > 2 and consumer.input[2] in g.inits
                ok = ok and not (len(consumer.input) > 3 and consumer.input[3])
                if not ok or float(numpy_helper.to_array(g.inits[consumer.input[2]]).reshape(-1)[1]) != 1.0:
                    return f"feeds {where}, which is not a constant-scales resize keeping channels"
                frontier.append(consumer.output[0])
            elif op in _REDUCE:
                axes = g.attr(consumer, "axes")
                if axes is None and len(consumer.input) > 1 and consumer.input[1] in g.inits:
                    axes = numpy_helper.to_array(g.inits[consumer.input[1]]).tolist()
                axes = None if axes is None else [a % rank for a in axes]
                if axes is None or 1 in axes or g.attr(consumer, "keepdims", 1) != 1:
                    return f"feeds {where}, which reduces over or drops the channel axis"
                frontier.append(consumer.output[0])
            else:
                return f"feeds {where}, which cannot be adjusted to fewer channels"
    for tensor, where in partners:
        if tensor not in seen:
            return f"feeds {where} together with another activation"
    return plan


def _filters_to_remove(weight: np.ndarray, ratio: float) -> np.ndarray:
    """Indices of the lowest-L1 filters (ties: lower index first); at least one filter stays."""
    norms = np.abs(weight.astype(np.float64)).reshape(weight.shape[0], -1).sum(axis=1)
    count = min(_round_half_up(ratio * weight.shape[0]), weight.shape[0] - 1)
    return np.sort(np.argsort(norms, kind="stable")[:count])


class PruneFilters(Variant):
    """Remove the lowest-L1-norm filters of each convolution whose channel changes can be
    followed through to the next convolution (structured pruning: smaller tensors, fewer MACs).

    From a pruned conv, the removed channels are followed through its bias, per-channel
    ops (activations, pooling, BatchNormalization, Add/Mul with per-channel constants)
    and depthwise convs (their channels and ``group`` shrink too) to every consuming
    regular conv, whose input channels are removed; elementwise ops joining two tensors
    of the same region (hard-swish: x · relu6(x + 3)) are followed too. Convs whose
    channels meet another conv's channels (residual Add, Concat, squeeze-excitation Mul),
    a Reshape, a graph output or anything else are left alone. Output shapes are unchanged.
    """

    name = "prune-filters"
    fields = (
        Field("ratio", float, 0.25, "fraction of each prunable conv's filters removed", low=0.0, high=1.0, exclusive=True),
    )

    def label(self) -> str:
        return f"prune-filters {self.settings['ratio'] * 100:g}%"

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        g = _Graph(model)
        plans: list[_Plan] = []
        refused: list[str] = []
        for k, node in enumerate(g.nodes):
            if node.op_type != "Conv":
                continue
            if node.input[1] not in g.inits or not g.own(node.input[1]):
                refused.append(f"{g.label(k)}: weight is shared or not constant")
                continue
            if g.attr(node, "group", 1) != 1:
                refused.append(f"{g.label(k)}: grouped/depthwise conv (pruned only with its producer)")
                continue
            if g.shapes[node.input[1]][0] < 2:
                refused.append(f"{g.label(k)}: a single filter")
                continue
            plan = _plan(g, k)
            if isinstance(plan, str):
                refused.append(f"{g.label(k)}: {plan}")
            else:
                plans.append(plan)
        if not plans:
            shown = "; ".join(refused[:8]) + (f"; … {len(refused) - 8} more" if len(refused) > 8 else "")
            reasons = shown or "the graph has no Conv"
            raise VariantError(f"{self.label()}: no convolution can be pruned: {reasons}", key=self.key)

        arrays = {name: numpy_helper.to_array(init) for name, init in g.inits.items()}
        pruned: list[str] = []
        removed_total = 0
        for plan in plans:
            node = g.nodes[plan.conv]
            # Norms of the original filters (Li et al.): independent of neighbours' pruning.
            weight = numpy_helper.to_array(g.inits[node.input[1]])
            remove = _filters_to_remove(weight, self.settings["ratio"])
            if remove.size == 0:
                continue
            keep = np.setdiff1d(np.arange(weight.shape[0]), remove)
            for name, axis in plan.slices:
                arrays[name] = np.take(arrays[name], keep, axis=axis)
            for c in plan.depthwise:
                for a in g.nodes[c].attribute:
                    if a.name == "group":
                        a.i = int(keep.size)
            removed_total += int(remove.size)
            pruned.append(f"{g.label(plan.conv)} {weight.shape[0]}→{keep.size}")
        if not pruned:
            raise VariantError(f"{self.label()}: the ratio removes no filter from any prunable conv", key=self.key)
        for name, init in g.inits.items():
            if tuple(arrays[name].shape) != tuple(init.dims):
                init.CopyFrom(numpy_helper.from_array(arrays[name], name))
        del model.graph.value_info[:]  # channel counts changed
        try:
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except onnx.shape_inference.InferenceError as exc:
            raise VariantError(f"{self.label()}: pruned graph does not type-check: {exc}") from None
        notes = (
            f"{len(pruned)} convs pruned, {removed_total} filters removed: " + ", ".join(pruned),
            f"{len(refused)} convs left alone" + (": " + "; ".join(refused) if refused else ""),
        )
        return Transformed(model=model, notes=notes)
