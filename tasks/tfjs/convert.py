"""TF.js graph model (model.json + weights) → ONNX ModelProto, opset 17, IR 8."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx
from onnx import helper

from ..errors import ModelError
from .builder import TF_DTYPES, Builder, Const, Tensor, TfNode, Value, identity, value_info
from .ops import HANDLERS, SUPPORTED_OPS
from .weights import decode_weights

__all__ = ["convert", "CONVERTER_VERSION", "OPSET", "IR_VERSION"]

# Bump when converted models change (part of the assets manifest: a bump rebuilds them).
CONVERTER_VERSION = "1"
OPSET = 17
IR_VERSION = 8  # onnxruntime 1.31 rejects newer IR versions


def convert(
    model_json: Mapping[str, Any],
    weights: bytes,
    *,
    outputs: Sequence[str] | None = None,
    name: str | None = None,
    file: str | None = None,
) -> onnx.ModelProto:
    """Convert a TF.js graph model to ONNX.

    ``weights`` is the concatenation of the shard files (:func:`weight_paths`).
    ``outputs`` picks the TF tensors to expose (default: the signature's outputs); only
    the nodes they need are converted. Inputs and outputs keep their TF names, shapes and
    layouts (NHWC stays NHWC at the boundary); convolutions run NCHW inside.
    """
    topology = model_json.get("modelTopology")
    if not isinstance(topology, Mapping) or not isinstance(topology.get("node"), list):
        raise ModelError("not a TF.js graph model: no modelTopology.node list", file=file, key="modelTopology")
    nodes = {}
    for raw in topology["node"]:
        node = TfNode.parse(raw)
        nodes[node.name] = node
    values = decode_weights(model_json, weights, file=file)
    wanted = [_ref(o) for o in (outputs or _signature_outputs(model_json, nodes))]
    for node_name, _ in wanted:
        if node_name not in nodes:
            raise ModelError(f"output {node_name!r} is not a node of the graph", file=file, key="outputs")
    order = _topological(nodes, [n for n, _ in wanted], file)
    unsupported = [n for n in order if n.op not in HANDLERS and n.op not in ("Const", "Placeholder")]
    if unsupported:
        first = unsupported[0]
        ops = sorted({n.op for n in unsupported})
        raise ModelError(
            f"unsupported op {first.op!r} at node {first.name!r} ({len(unsupported)} nodes of ops {', '.join(ops)})",
            file=file,
            key=first.name,
            allowed=SUPPORTED_OPS,
        )

    out_names = [_onnx_name(n, i) for n, i in wanted]
    b = Builder(reserved=out_names)
    env: dict[tuple[str, int], Value] = {}
    inputs: list[onnx.ValueInfoProto] = []
    for node in order:
        if node.op == "Const":
            if node.name not in values:
                raise ModelError(f"constant {node.name!r} has no weights entry", file=file, key=node.name)
            env[(node.name, 0)] = Const(values[node.name])
            continue
        if node.op == "Placeholder":
            tensor = _placeholder(node, model_json, file)
            b.use(tensor.name)
            inputs.append(value_info(tensor.name, tensor.dtype, tensor.shape, _dims(tensor.name, tensor.rank)))
            env[(node.name, 0)] = tensor
            continue
        args = []
        for ref in node.inputs:
            key = _ref(ref)
            if key not in env:
                raise ModelError(f"node {node.name!r} reads {ref!r}, which no node produces", file=file, key=node.name)
            args.append(env[key])
        try:
            results = HANDLERS[node.op](b, node, args)
        except ModelError as exc:
            raise ModelError(exc.message, file=file, key=node.name, allowed=exc.allowed) from None
        for i, result in enumerate(results):
            env[(node.name, i)] = result

    graph_outputs = []
    for (node_name, index), out_name in zip(wanted, out_names):
        value = env[(node_name, index)]
        tensor = b.tensor(value, f"{out_name}/value") if isinstance(value, Const) else value
        inv = [tensor.perm.index(i) for i in range(tensor.rank)]
        if tensor.perm == identity(tensor.rank):
            b.nodes.append(helper.make_node("Identity", [tensor.name], [out_name], name=out_name))
        else:
            b.nodes.append(helper.make_node("Transpose", [tensor.name], [out_name], name=out_name, perm=inv))
        graph_outputs.append(value_info(out_name, tensor.dtype, tensor.shape, _dims(out_name, tensor.rank)))
    _drop_redundant_identities(b, set(out_names))

    graph = helper.make_graph(b.nodes, name or "tfjs", inputs, graph_outputs, initializer=list(b.initializers.values()))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="splitsweep.tfjs",
        producer_version=CONVERTER_VERSION,
    )
    model.ir_version = IR_VERSION
    for key in ("generatedBy", "convertedBy", "format"):
        if model_json.get(key):
            entry = model.metadata_props.add()
            entry.key, entry.value = f"tfjs.{key}", str(model_json[key])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def _ref(text: str) -> tuple[str, int]:
    """``name`` / ``name:k`` → (node, output index)."""
    node, sep, index = text.rpartition(":")
    if sep and index.isdigit():
        return node, int(index)
    return text, 0


def _onnx_name(node: str, index: int) -> str:
    return node if index == 0 else f"{node}:{index}"


def _dims(name: str, rank: int) -> list[str]:
    return ["batch"] + [f"{name}_d{i}" for i in range(1, rank)]


def _signature_outputs(model_json: Mapping[str, Any], nodes: Mapping[str, TfNode]) -> list[str]:
    signature = model_json.get("signature") or model_json.get("userDefinedMetadata", {}).get("signature") or {}
    outs = signature.get("outputs") or {}
    if outs:
        return sorted(str(v.get("name", k)) for k, v in outs.items())
    consumed = {_ref(i)[0] for n in nodes.values() for i in n.inputs}
    return [n.name for n in nodes.values() if n.name not in consumed and n.op not in ("Const", "Placeholder")]


def _topological(nodes: Mapping[str, TfNode], roots: Sequence[str], file: str | None) -> list[TfNode]:
    """The nodes the roots depend on, each after its inputs (iterative DFS: graphs can be deep)."""
    order: list[TfNode] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in roots:
        stack = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(nodes[name])
                continue
            if state.get(name) == 2:
                continue
            if name not in nodes:
                raise ModelError(f"input {name!r} is not a node of the graph", file=file, key="modelTopology")
            if state.get(name) == 1:
                raise ModelError(f"the graph has a cycle through {name!r}", file=file, key="modelTopology")
            state[name] = 1
            stack.append((name, True))
            for ref in reversed(nodes[name].inputs):
                dep = _ref(ref)[0]
                if state.get(dep) != 2:
                    if state.get(dep) == 1:
                        raise ModelError(f"the graph has a cycle through {dep!r}", file=file, key="modelTopology")
                    stack.append((dep, False))
    return order


def _placeholder(node: TfNode, model_json: Mapping[str, Any], file: str | None) -> Tensor:
    dims = node.attr.get("shape", {}).get("shape", {})
    if dims.get("unknownRank") or "dim" not in dims:
        signature = (model_json.get("signature") or {}).get("inputs", {})
        for key, spec in signature.items():
            if _ref(spec.get("name", key))[0] == node.name:
                dims = spec.get("tensorShape", {})
    if "dim" not in dims:
        raise ModelError(f"input {node.name!r} has no known rank", file=file, key=node.name)
    shape = tuple(None if int(d.get("size", -1)) < 0 else int(d["size"]) for d in dims["dim"])
    dtype = node.attr.get("dtype", {}).get("type", "DT_FLOAT")
    if dtype not in TF_DTYPES:
        raise ModelError(f"input {node.name!r} has dtype {dtype}", file=file, key=node.name, allowed=sorted(TF_DTYPES))
    return Tensor(node.name, shape, TF_DTYPES[dtype], identity(len(shape)))


def _drop_redundant_identities(b: Builder, outputs: set[str]) -> None:
    """An output Identity whose input is a graph-internal tensor read by nobody else is renamed away."""
    consumers: dict[str, int] = {}
    for node in b.nodes:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {out: node for node in b.nodes for out in node.output}
    keep = []
    for node in b.nodes:
        source = node.input[0] if node.op_type == "Identity" and node.output[0] in outputs else None
        producer = producers.get(source) if source else None
        if producer is not None and consumers.get(source) == 1 and source not in outputs:
            # Let the producer write the output directly; its node keeps its readable name.
            index = list(producer.output).index(source)
            producer.output[index] = node.output[0]
            continue
        keep.append(node)
    del b.nodes[:]
    b.nodes.extend(keep)
