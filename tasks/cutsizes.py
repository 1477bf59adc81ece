"""Measured cut sizes: where shape inference cannot follow a graph, run it once on a sample and read the shapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from .errors import ModelError
from .graph import SplitGraph, TensorInfo
from .runtime import make_session

__all__ = ["sample_feeds", "measure", "measure_into", "unmeasurable_inputs", "mac_shapes"]

_CHUNK = 256  # extra outputs per run: bounds the memory the measured activations hold at once


def unmeasurable_inputs(graph: SplitGraph) -> list[TensorInfo]:
    """Graph inputs without a fully known shape: no synthetic sample can be made for them."""
    return [graph.info(n) for n in graph.input_names if not graph.info(n).is_static]


def sample_feeds(graph: SplitGraph, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic input of the right shape and type: floats uniform in [0, 1) (an image
    scaled as torchvision exports take it), integers zero, booleans false.

    ModelError names the inputs whose shape is not fully known, and the setting that fixes them.
    """
    missing = unmeasurable_inputs(graph)
    if missing:
        names = ", ".join(f"{t.name} {t.describe()}" for t in missing)
        raise ModelError(
            f"cut sizes cannot be measured: input(s) {names} have no fixed shape",
            file=graph.file, key="input_shapes",
            allowed="`--input-shape NAME=1x3x800x800` for inspect; input_shapes or the adapter's input_size in a spec",
        )
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.input_names:
        info = graph.info(name)
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            feeds[name] = rng.random(info.shape, dtype=np.float64).astype(dtype)
        else:
            feeds[name] = np.zeros(info.shape, dtype)
    return feeds


def measure(
    graph: SplitGraph,
    feeds: Mapping[str, np.ndarray],
    names: Sequence[str] | None = None,
    *,
    threads: int = 1,
) -> dict[str, TensorInfo]:
    """Run the model on ``feeds`` and return the actual dtype and shape of ``names`` (default:
    every tensor crossing a valid cut whose size is unknown), marked as measured.

    The model runs once per 256 tensors, so the memory of all activations is never held at once.
    """
    names = list(graph.unknown_size_tensors() if names is None else names)
    out: dict[str, TensorInfo] = {}
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        model = onnx.ModelProto()
        model.CopyFrom(graph.model)
        present = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in chunk if n not in present)
        session = make_session(model, threads=threads)
        wanted = [o.name for o in session.get_outputs()]
        values = session.run(wanted, {k: v for k, v in feeds.items() if k in graph.input_names})
        for name, value in zip(wanted, values):
            if name in chunk:
                arr = np.asarray(value)
                out[name] = TensorInfo(name, arr.dtype.name, tuple(int(d) for d in arr.shape), measured=True)
    return out


def measure_into(graph: SplitGraph, feeds: Mapping[str, np.ndarray] | None = None, *, threads: int = 1) -> int:
    """Measure every unknown cut size into ``graph`` (see SplitGraph.set_measured); how many were measured."""
    names = graph.unknown_size_tensors()
    if not names:
        return 0
    infos = measure(graph, feeds if feeds is not None else sample_feeds(graph), names, threads=threads)
    graph.set_measured(infos)
    return len(infos)


def mac_shapes(
    model: onnx.ModelProto,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    threads: int = 1,
) -> dict[str, tuple[int, ...]]:
    """Shapes that MAC counting needs (the outputs and data inputs of Conv / Gemm / MatMul
    and their quantized forms) but shape inference cannot tell, measured by one run on
    ``feeds`` (default: a synthetic input, see sample_feeds). For count_macs(known_shapes=).

    On an exporter graph the counts then hold for that input: an in-graph resize makes the
    backbone's shapes depend on the input size, and a detector's RoI head runs on as many
    proposals as that input leaves after NMS.
    """
    from .macs import _COUNTED, _shapes

    static = _shapes(model, input_shapes)
    top = {o for n in model.graph.node for o in n.output if o} | {i.name for i in model.graph.input}
    wanted = []
    for node in model.graph.node:
        if node.op_type in _COUNTED and node.domain in ("", "ai.onnx"):
            for name in (*node.output[:1], *node.input[:2]):
                shape = static.get(name)
                if name in top and (shape is None or any(d is None for d in shape)) and name not in wanted:
                    wanted.append(name)
    if not wanted:
        return {}
    graph = SplitGraph(model, input_shapes=input_shapes)
    infos = measure(graph, feeds if feeds is not None else sample_feeds(graph), wanted, threads=threads)
    return {name: tuple(int(d) for d in info.shape) for name, info in infos.items() if info.shape is not None}
