"""ONNX graph analysis for split computing: cuts, head / tail models and the split-point table."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from .errors import ModelError, SplitError, nearest
from .tensorkinds import SHAPE_TENSOR_ELEMENTS

__all__ = ["Cut", "SplitGraph", "SplitPoint", "TensorInfo", "load_model", "format_ranges"]

# Ops whose value differs from run to run: a tail recomputing them would not reproduce the
# head's values, so they are never treated as constants (their outputs cross the cut).
_RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
# Protobuf cannot serialise more than 2 GiB in one message; onnx's in-memory shape inference
# needs to, so bigger models go without inferred shapes.
_PROTOBUF_LIMIT = 2**31 - 1

Split = int | str


@functools.cache
def _dtype(elem_type: int) -> tuple[str | None, int | None]:
    """(numpy-style name, bits per element) of an ONNX element type; bits None for strings."""
    if elem_type == onnx.TensorProto.UNDEFINED:
        return None, None
    if elem_type == onnx.TensorProto.STRING:
        return "string", None
    name = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    packed = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    if hasattr(onnx.TensorProto, "FLOAT4E2M1"):
        packed.add(onnx.TensorProto.FLOAT4E2M1)
    bits = 4 if elem_type in packed else onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize * 8
    return name, bits


@functools.cache
def _bits_by_name() -> dict[str, int | None]:
    return {_dtype(t)[0]: _dtype(t)[1] for t in onnx.TensorProto.DataType.values() if _dtype(t)[0]}


@dataclass(frozen=True)
class TensorInfo:
    """Static type of one tensor as shape inference knows it.

    ``dtype`` is a numpy-style name (``float32``) or None when unknown; ``shape`` holds an int
    per fixed dimension, the parameter name of a symbolic one, None for an unknown one, and
    is None itself when even the rank is unknown.
    """

    name: str
    dtype: str | None
    shape: tuple[int | str | None, ...] | None
    measured: bool = False  # shape taken from a run on a sample input, not from shape inference

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def nbytes(self) -> int | None:
        """Bytes of the raw tensor, or None unless dtype and every dimension are known."""
        bits = _bits_by_name().get(self.dtype) if self.dtype else None
        if bits is None or not self.is_static:
            return None
        return (int(np.prod(self.shape, dtype=np.int64)) * bits + 7) // 8

    @property
    def is_data(self) -> bool:
        """A feature map (float data), as opposed to a shape / index / mask tensor of a few bytes.

        Float tensors of rank >= 2, or with more than 64 elements; an unknown rank counts as
        data when the type is float. int / bool tensors (shapes, indices, masks) and float
        scalars or short float vectors (scale factors, image sizes) are shape tensors, which
        every codec passes bit-exactly (the rule of tasks.tensorkinds.is_feature_map; a 1-d
        float tensor of unknown length counts as data here and is decided by its real size
        when coded).
        """
        if self.dtype is None or not self.dtype.startswith(("float", "bfloat")):
            return False
        if self.is_static and 0 in self.shape:  # an empty tensor carries no data
            return False
        if self.shape is None or len(self.shape) >= 2:
            return True
        return not self.is_static or int(np.prod(self.shape, dtype=np.int64)) > SHAPE_TENSOR_ELEMENTS

    def describe(self) -> str:
        """``float32[1,64,32,32]``; ``?`` for an unknown dimension, ``...`` for an unknown rank."""
        dims = "..." if self.shape is None else ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype or '?'}[{dims}]"


@dataclass(frozen=True)
class Cut:
    """What crosses the link when the graph is cut after node ``split``.

    ``tensors`` are coded and sent (in producer order); ``early_outputs`` are those of them
    that are graph outputs already; ``side_inputs`` are graph inputs the tail still reads,
    passed through uncoded and counted apart. ``tensor_infos`` / ``side_infos`` follow the
    order of ``tensors`` / ``side_inputs``.
    """

    split: int
    node_name: str
    op_type: str
    tensors: tuple[str, ...]
    side_inputs: tuple[str, ...]
    early_outputs: tuple[str, ...]
    tensor_infos: tuple[TensorInfo, ...]
    side_infos: tuple[TensorInfo, ...]

    @property
    def raw_bytes(self) -> int | None:
        return _total(self.tensor_infos)

    @property
    def side_bytes(self) -> int | None:
        return _total(self.side_infos)


@dataclass(frozen=True)
class SplitPoint:
    """One row of the split-point table (TR 26.847: intermediate data size and branches per node)."""

    split: int
    node_name: str
    op_type: str
    tensors: tuple[TensorInfo, ...]
    side_inputs: tuple[TensorInfo, ...]
    valid: bool
    reason: str | None  # why the point is not valid; None when it is

    @property
    def branches(self) -> int:
        return len(self.tensors)

    @property
    def total_bytes(self) -> int | None:
        return _total(self.tensors)

    @property
    def data_tensors(self) -> tuple[TensorInfo, ...]:
        """The feature maps of the cut (see TensorInfo.is_data)."""
        return tuple(t for t in self.tensors if t.is_data)

    @property
    def shape_tensors(self) -> tuple[TensorInfo, ...]:
        """Shape, index and mask tensors and float scalars: a few bytes each."""
        return tuple(t for t in self.tensors if not t.is_data)

    @property
    def data_bytes(self) -> int | None:
        return _total(self.data_tensors)

    @property
    def shape_bytes(self) -> int | None:
        return _total(self.shape_tensors)

    @property
    def measured(self) -> bool:
        """Whether any tensor's size was measured on a sample rather than inferred."""
        return any(t.measured for t in self.tensors)


def _total(infos: Iterable[TensorInfo]) -> int | None:
    sizes = [info.nbytes for info in infos]
    return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]


def _contains_run(have: Sequence[str], want: Sequence[str]) -> bool:
    """Whether ``want`` occurs in ``have`` as consecutive path parts (a scope nested anywhere)."""
    n = len(want)
    return any(list(have[i : i + n]) == list(want) for i in range(len(have) - n + 1))


def format_ranges(indices: Iterable[int]) -> str:
    """``0-5, 7, 9-12``: a compact list of split indices."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts) if parts else "none"


def load_model(model: onnx.ModelProto | str | os.PathLike | bytes) -> tuple[onnx.ModelProto, str | None]:
    """The model proto and the file it came from; ModelError if it is missing or not ONNX."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    if isinstance(model, (bytes, bytearray, memoryview)):
        file, loader = "<bytes>", lambda: onnx.load_model_from_string(bytes(model))
    elif isinstance(model, (str, os.PathLike)):
        path = Path(model)
        file = str(path)
        if not path.exists():
            raise ModelError("model file not found", file=file)
        if not path.is_file():
            raise ModelError("not a file (expected an .onnx model)", file=file)
        loader = functools.partial(onnx.load, str(path))
    else:
        raise TypeError(f"model must be an onnx.ModelProto, a path or bytes, not {type(model).__name__}")
    try:
        proto = loader()
    except Exception as exc:  # any parse failure means the file is not a usable ONNX model
        raise ModelError(f"not an ONNX model ({type(exc).__name__}: {exc})", file=file) from None
    # Protobuf parses some arbitrary bytes without complaint; a real model has both.
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelError("not an ONNX model (no IR version or no graph)", file=file)
    return proto, None if file == "<bytes>" else file


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """Every name a node takes from its scope: inputs, and what its subgraphs (at any depth) read from outside."""
    reads = [name for name in node.input if name]
    for graph in _subgraphs(node):
        reads.extend(_free_names(graph))
    return list(dict.fromkeys(reads))


def _free_names(graph: onnx.GraphProto) -> list[str]:
    """Outer-scope names a subgraph (If/Loop/Scan body) reads."""
    defined = {v.name for v in graph.input}
    defined.update(t.name for t in graph.initializer)
    defined.update(s.values.name for s in graph.sparse_initializer)
    free: list[str] = []
    for node in graph.node:
        free.extend(name for name in _node_reads(node) if name not in defined)
        defined.update(name for name in node.output if name)
    free.extend(v.name for v in graph.output if v.name not in defined)  # a body may return an outer value as is
    return free


def _fix_input_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], file: str | None
) -> onnx.ModelProto:
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {t.name for t in fixed.graph.initializer}
    inputs = {v.name: v for v in fixed.graph.input if v.name not in initializers}
    for name, dims in input_shapes.items():
        if name not in inputs:
            raise ModelError(f"the model has no input {name!r}", file=file, key="input_shapes", allowed=list(inputs))
        dims = tuple(int(d) for d in dims)
        tensor_type = inputs[name].type.tensor_type
        known = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        if known is not None and len(known) != len(dims):
            raise ModelError(
                f"input {name!r} has rank {len(known)}, got shape {dims}",
                file=file,
                key=f"input_shapes.{name}",
                allowed=f"{len(known)} dimensions",
            )
        for i, d in enumerate(dims):
            if d <= 0 or (known is not None and known[i].HasField("dim_value") and known[i].dim_value != d):
                wanted = TensorInfo(name, None, _shape(tensor_type)).describe()
                raise ModelError(
                    f"input {name!r} cannot take shape {dims}", file=file, key=f"input_shapes.{name}", allowed=wanted
                )
        tensor_type.ClearField("shape")
        for d in dims:
            tensor_type.shape.dim.add().dim_value = d
    return fixed


def _shape(tensor_type: onnx.TypeProto.Tensor) -> tuple[int | str | None, ...] | None:
    if not tensor_type.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim
    )


def _info(value: onnx.ValueInfoProto) -> TensorInfo:
    if not value.type.HasField("tensor_type"):
        return TensorInfo(value.name, None, None)
    tensor_type = value.type.tensor_type
    return TensorInfo(value.name, _dtype(tensor_type.elem_type)[0], _shape(tensor_type))


class SplitGraph:
    """An ONNX graph seen as split points: "cut after node k" for k in stored node order.

    The cut after node k holds every tensor produced by nodes 0..k and read by nodes
    k+1..end (also from inside If/Loop/Scan bodies at any depth), plus graph outputs produced
    at or before k. Tensors computed from initializers / Constant nodes alone never cross
    it: the tail has the weights and recomputes them. Nodes whose outputs reach no graph
    output do not count as readers.
    """

    def __init__(
        self,
        model: onnx.ModelProto | str | os.PathLike | bytes,
        *,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        proto, self.file = load_model(model)
        if input_shapes:
            proto = _fix_input_shapes(proto, input_shapes, self.file)
        self.model = proto
        graph = proto.graph
        self._nodes = list(graph.node)
        if not self._nodes:
            raise ModelError("the graph has no nodes", file=self.file)
        self._initializers = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
        # Inputs that are also initializers only carry overridable defaults: treated as weights.
        self.input_names = tuple(v.name for v in graph.input if v.name not in self._initializers)
        self.output_names = tuple(v.name for v in graph.output)
        self._reads = [_node_reads(node) for node in self._nodes]
        self._analyse()
        self._infos = self._infer_infos()

    # ---- analysis -------------------------------------------------------------------------

    def _analyse(self) -> None:
        n = len(self._nodes)
        available = set(self.input_names) | self._initializers
        constant = set(self._initializers)
        self._producer: dict[str, int] = {}
        self._node_const: list[bool] = []
        for i, node in enumerate(self._nodes):
            for name in self._reads[i]:
                if name not in available:
                    raise ModelError(
                        f"node {i} ({node.op_type} {node.name!r}) reads {name!r} before any node, input or "
                        "initializer provides it: nodes must be stored in topological order",
                        file=self.file,
                    )
            # Values computed from weights alone never cross a cut: the tail holds the weights
            # and recomputes them (onnxruntime folds them once per session), so sending them
            # would only add bytes.
            is_const = node.op_type not in _RANDOM_OPS and all(r in constant for r in self._reads[i])
            self._node_const.append(is_const)
            for out in node.output:
                if not out:
                    continue
                if out in available:
                    raise ModelError(f"tensor {out!r} is defined twice (node {i})", file=self.file)
                available.add(out)
                self._producer[out] = i
                if is_const:
                    constant.add(out)
        for name in self.output_names:
            if name not in available:
                raise ModelError(f"graph output {name!r} is produced by no node", file=self.file)

        needed = set(self.output_names)
        self._live = [False] * n
        for i in reversed(range(n)):
            if any(out in needed for out in self._nodes[i].output):
                self._live[i] = True
                needed.update(self._reads[i])
        last_use: dict[str, int] = {}
        for i in range(n):
            if self._live[i]:
                for name in self._reads[i]:
                    last_use[name] = i

        outputs = set(self.output_names)
        # (first k, k past the last, order key, name) per tensor that can cross a cut.
        self._spans: list[tuple[int, int, tuple[int, int], str]] = []
        for p, node in enumerate(self._nodes):
            if self._node_const[p] or not self._live[p]:
                continue
            for pos, out in enumerate(node.output):
                end = n if out in outputs else last_use.get(out)
                if out and end is not None and end > p:
                    self._spans.append((p, end, (p, pos), out))
        self._side_end = {
            name: (n if name in outputs else last_use[name])
            for name in self.input_names
            if name in outputs or name in last_use
        }
        dynamic_live = [i for i in range(n) if self._live[i] and not self._node_const[i]]
        self._first_dynamic = dynamic_live[0] if dynamic_live else n

    def _infer_infos(self) -> dict[str, TensorInfo]:
        model = self.model
        if model.ByteSize() < _PROTOBUF_LIMIT:
            model = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        graph = model.graph
        infos = {v.name: _info(v) for v in graph.value_info}
        infos.update((v.name, _info(v)) for v in graph.output)
        infos.update((v.name, _info(v)) for v in graph.input)
        self._value_infos = {v.name: v for v in (*graph.value_info, *graph.output, *graph.input)}
        return infos

    # ---- queries ---------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return len(self._nodes)

    def node(self, index: int) -> onnx.NodeProto:
        return self._nodes[index]

    @property
    def producer_index(self) -> Mapping[str, int]:
        """Tensor name → index of the node producing it (top-level nodes only)."""
        return self._producer

    def info(self, name: str) -> TensorInfo:
        """Static dtype / shape of a tensor (unknown fields are None)."""
        return self._infos.get(name) or TensorInfo(name, None, None)

    def unknown_size_tensors(self) -> list[str]:
        """Names of tensors that cross some valid cut and whose size shape inference left open."""
        names = {t.name for p in self._table if p.valid for t in p.tensors if t.nbytes is None}
        return [s[3] for s in sorted(self._spans, key=lambda s: s[2]) if s[3] in names]

    def measured_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes measured by set_measured, by tensor name."""
        return {n: i.shape for n, i in self._infos.items() if i.measured and i.shape is not None}

    def set_measured(self, infos: Mapping[str, TensorInfo]) -> None:
        """Replace the static info of tensors whose size is unknown by measured ones (marked so)."""
        for name, info in infos.items():
            if self.info(name).nbytes is None:
                self._infos[name] = TensorInfo(name, info.dtype, info.shape, measured=True)
        self.__dict__.pop("_table", None)

    def index(self, split: Split) -> int:
        """The node index a split names (an index, or a tensor cut right after its producer)."""
        last = len(self._nodes) - 2
        allowed = f"0..{last} (valid: see `splitsweep inspect`)"
        if isinstance(split, bool):
            raise TypeError("split must be an int or a tensor name, not bool")
        if isinstance(split, str):
            if split in self._producer:
                k = self._producer[split]
            elif split.strip().lstrip("-").isdigit():  # "12" from a command line, when no tensor has that name
                k = int(split)
            elif (scoped := self._scope_end(split)) is not None:
                k = scoped
            else:
                if split in self.input_names or split in self._initializers:
                    what = "a graph input" if split in self.input_names else "an initializer"
                    message = f"{split!r} is {what}, not the output of a node"
                elif split in self._inner_names:
                    outer = self._inner_names[split]
                    node = self._nodes[outer]
                    near = self._nearest_valid(outer)
                    message = (
                        f"{split!r} is computed inside the subgraph of node {outer} ({node.op_type} {node.name!r}); "
                        "a cut cannot fall inside an If/Loop/Scan body"
                        + (f" (nearest valid splits: {', '.join(map(str, near))})" if near else "")
                    )
                else:
                    hint = nearest(split, [*self._producer, *self._node_names])
                    message = f"no node produces a tensor named {split!r}, and no node name starts with it"
                    message += f"; did you mean {hint!r}?" if hint else ""
                raise SplitError(
                    message, file=self.file, key="split",
                    allowed="a node index, a node output name, or a node name / layer prefix such as "
                    "'backbone.body.layer2' (list them: `splitsweep inspect MODEL --json`)",
                )
        elif isinstance(split, (int, np.integer)):
            k = int(split)
        else:
            raise TypeError(f"split must be an int or a tensor name, not {type(split).__name__}")
        if not 0 <= k <= last:
            why = "the last node leaves nothing for the tail" if k == last + 1 else "out of range"
            raise SplitError(
                f"split {k} is {why}: the graph has {len(self._nodes)} nodes",
                file=self.file, key="split", allowed=allowed,
            )
        return k

    def cut(self, split: Split) -> Cut:
        """The cut after node ``split``; SplitError if it does not exist or carries nothing."""
        k = self.index(split)
        tensors = tuple(s[3] for s in sorted((s for s in self._spans if s[0] <= k < s[1]), key=lambda s: s[2]))
        if not tensors:
            valid = format_ranges(p.split for p in self.split_points() if p.valid)
            near = self._nearest_valid(k)
            raise SplitError(
                f"the cut after node {k} ({self._nodes[k].op_type} {self._nodes[k].name!r}) is empty: "
                + self._empty_reason(k)
                + (f" (nearest valid splits: {', '.join(map(str, near))})" if near else ""),
                file=self.file, key="split", allowed=valid,
            )
        sides = tuple(name for name in self.input_names if self._side_end.get(name, -1) > k)
        outputs = set(self.output_names)
        node = self._nodes[k]
        return Cut(
            split=k,
            node_name=node.name,
            op_type=node.op_type,
            tensors=tensors,
            side_inputs=sides,
            early_outputs=tuple(t for t in tensors if t in outputs),
            tensor_infos=tuple(self.info(t) for t in tensors),
            side_infos=tuple(self.info(s) for s in sides),
        )

    def _nearest_valid(self, k: int) -> list[int]:
        """The closest valid split before and after node k."""
        valid = self.valid_splits()
        before = [v for v in valid if v < k]
        after = [v for v in valid if v > k]
        return ([before[-1]] if before else []) + ([after[0]] if after else [])

    @functools.cached_property
    def _node_names(self) -> dict[str, int]:
        return {node.name: i for i, node in enumerate(self._nodes) if node.name}

    @functools.cached_property
    def _inner_names(self) -> dict[str, int]:
        """Tensors and node names defined inside subgraphs → index of the top-level node holding them."""
        out: dict[str, int] = {}

        def walk(graph: onnx.GraphProto, owner: int) -> None:
            for node in graph.node:
                for name in (*node.output, node.name):
                    if name:
                        out.setdefault(name, owner)
                for sub in _subgraphs(node):
                    walk(sub, owner)

        for i, node in enumerate(self._nodes):
            for sub in _subgraphs(node):
                walk(sub, i)
        return out

    def _scope_end(self, prefix: str) -> int | None:
        """The last valid split among nodes named ``prefix`` or inside its scope, or None.

        Layer names are matched as paths: ``backbone.body.layer2`` matches the node names
        ``backbone.body.layer2.0.conv1`` and ``/backbone/body/layer2/layer2.3/relu_2/Relu``
        (TorchScript exports) but not ``backbone.body.layer20``.
        """
        def parts(name: str) -> list[str]:
            return [p for p in name.replace("/", ".").split(".") if p]

        want = parts(prefix)
        if not want:
            return None
        if prefix in self._node_names:
            matches = [self._node_names[prefix]]
        else:
            matches = []
            for i, node in enumerate(self._nodes):
                have = parts(node.name)
                # torchscript repeats the scope ("layer2/layer2.3"): match on the path or on a suffix of it
                if have[: len(want)] == want or _contains_run(have, want):
                    matches.append(i)
        if not matches:
            return None
        valid = set(self.valid_splits())
        inside = [i for i in matches if i in valid]
        return max(inside) if inside else max(matches)

    def _empty_reason(self, k: int) -> str:
        if any(self._side_end.get(s, -1) > k for s in self.input_names):
            return (
                f"nodes 0..{k} compute nothing the tail reads but constants: the tail would read only the "
                "graph input(s) themselves, which is no split"
            )
        return (
            f"nodes 0..{k} compute only constants (from initializers / Constant nodes) or values no output "
            "uses; the tail recomputes constants from its own weights, so nothing would cross the link"
        )

    @functools.cached_property
    def _table(self) -> tuple[SplitPoint, ...]:
        n = len(self._nodes)
        starts: dict[int, list[tuple[tuple[int, int], str]]] = {}
        ends: dict[int, list[tuple[int, int]]] = {}
        for p, end, key, name in self._spans:
            starts.setdefault(p, []).append((key, name))
            ends.setdefault(end, []).append(key)
        active: dict[tuple[int, int], str] = {}
        rows = []
        for k, node in enumerate(self._nodes):
            for key in ends.get(k, ()):
                del active[key]
            for key, name in starts.get(k, ()):
                active[key] = name
            tensors = tuple(self.info(active[key]) for key in sorted(active))
            sides = tuple(self.info(s) for s in self.input_names if self._side_end.get(s, -1) > k)
            if k == n - 1:
                reason = "the last node: nothing is left for the tail"
            elif not tensors:
                reason = self._empty_reason(k)
            else:
                reason = None
            rows.append(SplitPoint(k, node.name, node.op_type, tensors, sides, reason is None, reason))
        return tuple(rows)

    def split_points(self) -> list[SplitPoint]:
        """One row per node index: cut tensors, their sizes, and whether the point is valid.

        Split k is valid iff 0 <= k <= N-2 (the tail keeps at least one node) and its cut
        carries at least one tensor that depends on a graph input. Built in one sweep over
        per-tensor (producer, last reader) spans, so it costs O(nodes + table size).
        """
        return list(self._table)

    def valid_splits(self) -> list[int]:
        return [p.split for p in self._table if p.valid]

    # ---- derived models --------------------------------------------------------------------

    def multi_head_model(self, splits: Iterable[Split]) -> onnx.ModelProto:
        """The whole network, with every cut tensor of every split added as a graph output.

        One run gives the full model's outputs and what each split would send: the head
        runs once for all split points.
        """
        extra: list[str] = []
        for split in splits:
            extra.extend(self.cut(split).tensors)
        present = set(self.output_names)
        extra = [t for t in dict.fromkeys(extra) if t not in present]
        model = self._model_shell()
        model.graph.CopyFrom(self.model.graph)
        model.graph.output.extend(self._typed(t) for t in extra)
        return model

    def head_model(self, split: Split) -> onnx.ModelProto:
        """Nodes 0..k that the cut tensors need; outputs are the cut tensors (what a device deploys)."""
        cut = self.cut(split)
        keep = self._slice(cut.tensors, stop=set(self.input_names) | self._initializers, last=cut.split)
        used = self._used(keep)
        inputs = [v for v in self.model.graph.input if v.name in used and v.name in self.input_names]
        return self._build(keep, inputs, [self._typed(t) for t in cut.tensors], f"head_{cut.split}")

    def tail_model(self, split: Split) -> onnx.ModelProto:
        """Nodes k+1..end plus the constant nodes they need; inputs are the cut tensors and
        side inputs, outputs the original graph outputs in their order.

        An early output is both an input and an output of the tail (ONNX and onnxruntime
        accept a graph output that names a graph input), so names stay those of the model.
        """
        cut = self.cut(split)
        provided = set(cut.tensors) | set(self.input_names) | self._initializers
        keep = self._slice(self.output_names, stop=provided, last=len(self._nodes) - 1)
        for i in keep:
            # Anything before the cut that the tail needs but is not sent must be a constant.
            assert i > cut.split or self._node_const[i], (i, cut.split)
        inputs = [self._typed(t) for t in cut.tensors]
        by_name = {v.name: v for v in self.model.graph.input}
        inputs.extend(by_name[s] for s in cut.side_inputs)
        outputs = list(self.model.graph.output)
        return self._build(keep, inputs, outputs, f"tail_{cut.split}")

    def _slice(self, targets: Iterable[str], *, stop: set[str], last: int) -> list[int]:
        """Indices (ascending) of nodes up to ``last`` that ``targets`` depend on, not looking past ``stop``."""
        needed = {t for t in targets if t not in stop}
        keep = []
        for i in range(last, -1, -1):
            if any(out in needed for out in self._nodes[i].output):
                keep.append(i)
                needed.update(r for r in self._reads[i] if r not in stop)
        return keep[::-1]

    def _used(self, keep: Sequence[int]) -> set[str]:
        used: set[str] = set()
        for i in keep:
            used.update(self._reads[i])
        return used

    def _typed(self, name: str) -> onnx.ValueInfoProto:
        value = self._value_infos.get(name)
        if value is None or not value.type.HasField("tensor_type") or not value.type.tensor_type.elem_type:
            raise ModelError(
                f"the type of tensor {name!r} is unknown (shape inference could not infer it), so it "
                "cannot become an input or output of a split model",
                file=self.file, key="split",
            )
        out = onnx.ValueInfoProto()
        out.CopyFrom(value)
        return out

    def _model_shell(self) -> onnx.ModelProto:
        """A model with the source's metadata, opsets, IR version and functions, and no graph."""
        src = self.model
        model = onnx.ModelProto(
            ir_version=src.ir_version,
            producer_name=src.producer_name,
            producer_version=src.producer_version,
            domain=src.domain,
            model_version=src.model_version,
            doc_string=src.doc_string,
        )
        model.opset_import.extend(src.opset_import)
        model.metadata_props.extend(src.metadata_props)
        model.functions.extend(src.functions)
        return model

    def _build(
        self,
        keep: Sequence[int],
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        suffix: str,
    ) -> onnx.ModelProto:
        src = self.model.graph
        used = self._used(keep)
        model = self._model_shell()
        graph = model.graph
        graph.name = f"{src.name or 'graph'}_{suffix}"
        graph.doc_string = src.doc_string
        graph.node.extend(self._nodes[i] for i in keep)
        graph.input.extend(inputs)
        graph.output.extend(outputs)
        needed = used | {o.name for o in outputs}
        graph.initializer.extend(t for t in src.initializer if t.name in needed)
        graph.sparse_initializer.extend(s for s in src.sparse_initializer if s.values.name in needed)
        present = needed | {out for i in keep for out in self._nodes[i].output}
        boundary = {v.name for v in (*inputs, *outputs)}
        graph.value_info.extend(v for v in src.value_info if v.name in present and v.name not in boundary)
        return model
