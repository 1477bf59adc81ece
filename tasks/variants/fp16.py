"""The fp32 baseline and the float16 variant: weights and compute in float16, I/O float32.

The converter is written here over the graph rather than taken from onnxconverter-common:
it decides every tensor's type from the op schemas (an input whose type constraint admits
float16 gets float16, one that does not, such as Resize ``scales``, stays float32), so
it needs no op block-list, keeps every original tensor name (cut tensors of the fp16
model are the fp32 model's, now float16), and adds no dependency.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import VariantError
from .base import Calibration, Transformed, Variant

__all__ = ["Fp32", "Fp16", "to_float16"]

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
_FP16_MAX = float(np.finfo(np.float16).max)
# Ops whose float output type is set by an attribute rather than by an input.
_DTYPE_ATTR_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike", "Multinomial"}


class Fp32(Variant):
    """The unchanged model: the baseline every other variant is compared with."""

    name = "fp32"

    def label(self) -> str:
        return "fp32"

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        return Transformed(model=model)


class Fp16(Variant):
    """Weights and activations in float16; graph inputs and outputs stay float32."""

    name = "fp16"

    def label(self) -> str:
        return "fp16"

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        converted, notes = to_float16(model)
        return Transformed(model=converted, notes=notes)


def _opset(model: onnx.ModelProto, domain: str) -> int:
    for imp in model.opset_import:
        if imp.domain == domain or (domain == "" and imp.domain == "ai.onnx"):
            return imp.version
    raise VariantError(f"model imports no opset for domain {domain!r}")


def _schema(node: onnx.NodeProto, model: onnx.ModelProto) -> onnx.defs.OpSchema:
    domain = node.domain or ""
    try:
        return onnx.defs.get_schema(node.op_type, _opset(model, domain), domain)
    except onnx.defs.SchemaError:
        raise VariantError(
            f"fp16: node {node.name!r}: op {domain + '::' if domain else ''}{node.op_type} has no ONNX schema; "
            "its float16 typing is unknown"
        ) from None


def _wants_fp16(schema: onnx.defs.OpSchema, index: int) -> bool:
    """Whether input ``index`` of this op may be float16 (its type constraint allows it)."""
    formals = schema.inputs
    if not formals:
        return False
    formal = formals[index] if index < len(formals) else formals[-1]
    allowed = {tc.type_param_str: set(tc.allowed_type_strs) for tc in schema.type_constraints}
    return "tensor(float16)" in allowed.get(formal.type_str, {formal.type_str})


def _to_f16(array: np.ndarray, counters: dict[str, int]) -> np.ndarray:
    big = np.abs(array) > _FP16_MAX
    counters["clipped"] += int(np.count_nonzero(big & np.isfinite(array)))
    tiny = (array != 0) & (np.abs(array) < np.finfo(np.float16).tiny)
    counters["subnormal"] += int(np.count_nonzero(tiny))
    return np.clip(array, -_FP16_MAX, _FP16_MAX).astype(np.float16)


def _tensor_f16(tensor: TensorProto, counters: dict[str, int]) -> TensorProto:
    out = numpy_helper.from_array(_to_f16(numpy_helper.to_array(tensor), counters), tensor.name)
    return out


def _float_source(node: onnx.NodeProto) -> bool:
    """Nodes with no float input whose float32 output type comes from an attribute."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Cast":
        return attrs["to"].i == F32
    if node.op_type == "Constant":
        if "value" in attrs:
            return attrs["value"].t.data_type == F32
        return "value_float" in attrs or "value_floats" in attrs
    if node.op_type == "ConstantOfShape":
        return "value" not in attrs or attrs["value"].t.data_type == F32
    if node.op_type in _DTYPE_ATTR_OPS:
        return "dtype" not in attrs or attrs["dtype"].i == F32
    return False


def _make_source_f16(node: onnx.NodeProto, counters: dict[str, int]) -> None:
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Cast":
        attrs["to"].i = F16
    elif node.op_type == "Constant":
        if "value" in attrs:
            attrs["value"].t.CopyFrom(_tensor_f16(attrs["value"].t, counters))
        else:
            attr = attrs.get("value_float") or attrs["value_floats"]
            values = np.array(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(_to_f16(values, counters))))
    elif node.op_type == "ConstantOfShape":
        value = attrs["value"].t if "value" in attrs else numpy_helper.from_array(np.zeros(1, np.float32))
        new = helper.make_attribute("value", _tensor_f16(value, counters))
        if "value" in attrs:
            node.attribute.remove(attrs["value"])
        node.attribute.append(new)
    else:
        if "dtype" in attrs:
            attrs["dtype"].i = F16
        else:
            node.attribute.append(helper.make_attribute("dtype", F16))


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _rename_reads(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Point a subgraph's (and its nested subgraphs') reads of outer names at new names."""
    for node in graph.node:
        for idx, name in enumerate(node.input):
            if name in renames:
                node.input[idx] = renames[name]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                _rename_reads(sub, renames)
    for out in graph.output:  # a body may return an outer value unchanged; outputs are positional
        if out.name in renames:
            out.name = renames[out.name]


def _original_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the fp32 model's tensors, as shape inference sees them."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - best effort; If/Loop outputs then come from their bodies
        inferred = model
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.output, *g.input)}


def _subgraph_output_types(node: onnx.NodeProto) -> list[int]:
    """Element types of an If / Loop / Scan node's outputs, read off its (unchanged) body."""
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "If":
        body = attrs["then_branch"].g
        return [o.type.tensor_type.elem_type for o in body.output]
    if node.op_type == "Loop":
        return [o.type.tensor_type.elem_type for o in attrs["body"].g.output[1:]]
    if node.op_type == "Scan":
        return [o.type.tensor_type.elem_type for o in attrs["body"].g.output]
    return []


def to_float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """Convert ``model`` (modified in place and returned) to float16 compute.

    Nodes with subgraphs (If / Loop / Scan: an exporter's post-processing, e.g. NMS
    inside If) keep their bodies float32: their inputs and every outer tensor their
    bodies read are cast back to float32 at the boundary, their outputs stay float32.
    """
    graph = model.graph
    from ..graph import _free_names

    boundary_nodes = [node for node in graph.node if _has_subgraph(node)]
    subgraph_reads = {
        id(node): list(dict.fromkeys(n for a in node.attribute
                                     for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))
                                     for n in _free_names(sub)))
        for node in boundary_nodes
    }
    fp32_types = _original_types(model) if boundary_nodes else {}
    schemas = [_schema(node, model) for node in graph.node]
    output_names = {o.name for o in graph.output}
    taken = {n for node in graph.node for n in list(node.input) + list(node.output)}
    taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    # Which uses of each tensor want float16: decided by the consumer's schema alone.
    uses: dict[str, list[bool]] = defaultdict(list)
    for node, schema in zip(graph.node, schemas):
        keeps_fp32 = _has_subgraph(node)
        for idx, name in enumerate(node.input):
            if name:
                uses[name].append(not keeps_fp32 and _wants_fp16(schema, idx))
        for name in subgraph_reads.get(id(node), ()):
            uses[name].append(False)

    counters = {"clipped": 0, "subnormal": 0}
    dtype: dict[str, int] = {}
    alias: dict[tuple[str, int], str] = {}  # (tensor, dtype) → name holding it in that type
    new_inits: list[TensorProto] = []
    converted_inits = 0
    for init in graph.initializer:
        dtype[init.name] = init.data_type
        if init.data_type != F32:
            new_inits.append(init)
            continue
        wants = uses.get(init.name, [])
        if wants and all(wants):
            new_inits.append(_tensor_f16(init, counters))
            dtype[init.name] = F16
            converted_inits += 1
        else:
            new_inits.append(init)
            if any(wants):  # mixed uses: a float16 copy next to the float32 original
                copy = _tensor_f16(init, counters)
                copy.name = fresh(init.name + "_fp16")
                new_inits.append(copy)
                alias[(init.name, F16)] = copy.name
                converted_inits += 1

    new_nodes: list[onnx.NodeProto] = []
    for graph_input in graph.input:
        elem = graph_input.type.tensor_type.elem_type
        dtype.setdefault(graph_input.name, elem)
        if elem == F32 and graph_input.name not in alias and any(uses.get(graph_input.name, [])):
            cast_name = fresh(graph_input.name + "_fp16")
            new_nodes.append(helper.make_node("Cast", [graph_input.name], [cast_name], to=F16, name=cast_name))
            alias[(graph_input.name, F16)] = cast_name
            dtype[cast_name] = F16

    def typed(name: str, want: int) -> str:
        """The name of ``name`` held as ``want``, inserting a Cast before the consumer if needed."""
        if dtype.get(name) == want:
            return name
        if (name, want) not in alias:
            cast_name = fresh(f"{name}_{'fp16' if want == F16 else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [cast_name], to=want, name=cast_name))
            alias[(name, want)] = cast_name
            dtype[cast_name] = want
        return alias[(name, want)]

    opsets = list(model.opset_import)
    kept_fp32 = 0
    for node, schema in zip(graph.node, schemas):
        if _has_subgraph(node):
            for idx, name in enumerate(node.input):
                if name and dtype.get(name) in (F16, F32):
                    node.input[idx] = typed(name, F32)
            renames = {
                name: typed(name, F32) for name in subgraph_reads[id(node)] if dtype.get(name) == F16
            }
            if renames:
                for attr in node.attribute:
                    for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                        _rename_reads(sub, renames)
            body_types = _subgraph_output_types(node)
            for pos, out in enumerate(node.output):
                if not out:
                    continue
                elem = fp32_types.get(out) or (body_types[pos] if pos < len(body_types) else 0)
                if elem:
                    dtype[out] = elem
            kept_fp32 += 1
            new_nodes.append(node)
            continue
        if _float_source(node):
            consumers = [w for o in node.output for w in uses.get(o, [])]
            if consumers and all(consumers) and not (set(node.output) & output_names):
                _make_source_f16(node, counters)
        for idx, name in enumerate(node.input):
            if not name or dtype.get(name) not in (F16, F32):
                continue
            node.input[idx] = typed(name, F16 if _wants_fp16(schema, idx) else F32)
        input_types = {n: helper.make_tensor_type_proto(dtype[n], None) for n in node.input if n and n in dtype}
        try:
            out_types = onnx.shape_inference.infer_node_outputs(schema, node, input_types, opset_imports=opsets)
        except Exception as exc:  # onnx raises InferenceError or RuntimeError here
            raise VariantError(f"fp16: node {node.name!r} ({node.op_type}) does not type-check: {exc}") from None
        for out in node.output:
            if out and out in out_types:
                dtype[out] = out_types[out].tensor_type.elem_type
        new_nodes.append(node)

    # Graph outputs stay float32: the producer writes `<name>_fp16`, a final Cast restores `<name>`.
    renames: dict[str, str] = {}
    for out in graph.output:
        if out.type.tensor_type.elem_type == F32 and dtype.get(out.name) == F16:
            renames[out.name] = fresh(out.name + "_fp16")
    if renames:
        for node in new_nodes:
            for seq in (node.input, node.output):
                for idx, name in enumerate(seq):
                    if name in renames:
                        seq[idx] = renames[name]
        for original, inner in renames.items():
            new_nodes.append(helper.make_node("Cast", [inner], [original], to=F32, name=fresh(original + "_cast")))

    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del graph.value_info[:]  # stale element types; shape inference recomputes them

    notes = [f"{converted_inits} initializers converted to float16"]
    if counters["clipped"]:
        notes.append(f"{counters['clipped']} weights beyond ±65504 clipped")
    if counters["subnormal"]:
        notes.append(f"{counters['subnormal']} weights below float16's normal range")
    if kept_fp32:
        notes.append(f"{kept_fp32} If/Loop/Scan node(s) kept float32 inside, cast at their boundary")
    kept = sum(1 for i in new_inits if i.data_type == F32)
    if kept:
        notes.append(f"{kept} float initializers kept float32 (op requires it)")
    return model, tuple(notes)
