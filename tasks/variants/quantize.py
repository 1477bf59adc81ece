"""int8 variants through onnxruntime's quantizer: dynamic (weights only) and static QDQ."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping

import numpy as np
import onnx

from ..errors import VariantError
from .base import Calibration, Field, Transformed, Variant

__all__ = ["Int8Dynamic", "Int8Static"]


def _run_quantizer(model: onnx.ModelProto, quantize) -> onnx.ModelProto:
    """Run an onnxruntime quantizer that only writes its result to a path.

    onnxruntime.quantization's quantize_dynamic / quantize_static take a ModelProto but
    save their output (and, for static, the calibration-augmented model) to files. tasks/
    writes no files of its own, so the output lives in a private temporary directory that
    is removed before returning; nothing else on disk is touched (calibration cache off).
    """
    with tempfile.TemporaryDirectory(prefix="splitsweep-quant-") as tmp:
        path = os.path.join(tmp, "quantized.onnx")
        try:
            # The quantizer divides by zero-width ranges of tensors it then leaves alone
            # (nodes_to_exclude); the scales it does write are checked by _check_scales.
            with np.errstate(invalid="ignore", divide="ignore"):
                quantize(model, path)
        except VariantError:
            raise
        except Exception as exc:  # the quantizer raises ValueError/RuntimeError/KeyError on graphs it cannot handle
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VariantError(f"onnxruntime's quantizer cannot handle this graph: {message}") from None
        return _topological(onnx.load(path))


def _topological(model: onnx.ModelProto) -> onnx.ModelProto:
    """Re-sort the nodes so that every producer comes before its readers, also readers
    inside If / Loop bodies: onnxruntime's quantizer sorts by explicit inputs only, so on
    an exporter graph it may place an If before the Q/DQ pair of a tensor its body reads."""
    from ..graph import _node_reads

    graph = model.graph
    nodes = list(graph.node)
    produced = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps = [{produced[r] for r in _node_reads(n) if r in produced and produced[r] != i} for i, n in enumerate(nodes)]
    order: list[int] = []
    state = [0] * len(nodes)  # 0 new, 1 on the stack, 2 placed
    for root in range(len(nodes)):
        stack = [(root, iter(sorted(deps[root])))]
        if state[root]:
            continue
        state[root] = 1
        while stack:
            i, it = stack[-1]
            nxt = next((d for d in it if state[d] != 2), None)
            if nxt is None:
                stack.pop()
                state[i] = 2
                order.append(i)
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(deps[nxt]))))
            else:  # a cycle: leave the order alone, the checker reports the graph
                return model
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)
    return model


def _quantized_ops(before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[str, ...]:
    """Notes on what the quantizer changed: new integer ops and node counts."""
    ops_before = Counter(n.op_type for n in before.graph.node)
    ops_after = Counter(n.op_type for n in after.graph.node)
    added = {op: ops_after[op] - ops_before.get(op, 0) for op in ops_after if ops_after[op] > ops_before.get(op, 0)}
    summary = ", ".join(f"{op}×{k}" for op, k in sorted(added.items())) or "nothing"
    return (f"nodes {len(before.graph.node)} → {len(after.graph.node)}; added {summary}",)


class Int8Dynamic(Variant):
    """Weights quantized to int8 ahead of time, activations quantized at run time.

    By default only MatMul and Gemm weights (MatMulInteger; onnxruntime's quantizer
    rewrites a Gemm with constant B as MatMulInteger + Add); a purely convolutional
    detector has none, and the variant fails with VariantError. ``conv: true`` also turns
    Conv into ConvInteger with a DynamicQuantizeLinear of each conv's input: on the demo
    CenterNet that is about 8× slower on CPU than fp32 (onnxruntime's ConvInteger kernel
    is not its optimized QLinearConv path) and loses the detections; int8-static is the
    variant for conv detectors.
    """

    name = "int8-dynamic"
    fields = (
        Field("conv", bool, False, "also quantize Conv weights (ConvInteger)"),
        Field("per_channel", bool, False, "one scale per output channel instead of per tensor"),
    )

    def label(self) -> str:
        parts = ["int8-dynamic"]
        if self.settings["conv"]:
            parts.append("+conv")
        if self.settings["per_channel"]:
            parts.append("per-channel")
        return " ".join(parts)

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        ops = ["MatMul", "Gemm"] + (["Conv"] if self.settings["conv"] else [])
        quantizable = [n for n in model.graph.node if n.op_type in ops]
        if not quantizable:
            raise VariantError(f"{self.label()}: the graph has no {'/'.join(ops)} node to quantize", key=self.key)
        quantized = _run_quantizer(
            model,
            lambda m, path: quantize_dynamic(
                m,
                path,
                op_types_to_quantize=ops,
                per_channel=self.settings["per_channel"],
                weight_type=QuantType.QInt8,
            ),
        )
        notes = _quantized_ops(model, quantized)
        _check_scales(quantized, self.label())
        if len(quantized.graph.node) == len(model.graph.node):
            raise VariantError(f"{self.label()}: onnxruntime's quantizer changed no node of this graph", key=self.key)
        return Transformed(model=quantized, notes=notes)


def _non_finite_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes a QDQ quantizer must leave in float: those with an inf/NaN constant input
    (a Pad with value -inf before a MaxPool, as TF's SAME max-pooling converts) and their
    consumers, whose input range then reaches -inf: int8 scales of such ranges are NaN."""
    bad = {
        i.name
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        and not np.isfinite(onnx.numpy_helper.to_array(i)).all()
    }
    if not bad:
        return []
    first = [n for n in model.graph.node if bad & set(n.input)]
    outputs = {o for n in first for o in n.output}
    second = [n for n in model.graph.node if outputs & set(n.input)]
    return [n.name for n in first + second if n.name]


def _check_scales(model: onnx.ModelProto, label: str) -> None:
    """A NaN/inf/zero scale silently turns a tensor into garbage: refuse the variant instead."""
    bad = [
        i.name
        for i in model.graph.initializer
        if i.name.endswith("scale")
        and i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        and not (np.isfinite(a := onnx.numpy_helper.to_array(i)).all() and (a > 0).all())
    ]
    if bad:
        raise VariantError(f"{label}: quantization produced non-finite or zero scales: {', '.join(bad[:5])}")


class _Feeds:
    """A CalibrationDataReader over the caller's already-preprocessed feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)


def _check_feeds(model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]], label: str) -> list[dict]:
    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in inits}
    checked = []
    for k, feed in enumerate(feeds):
        missing = sorted(set(inputs) - set(feed))
        extra = sorted(set(feed) - set(inputs))
        if missing or extra:
            raise VariantError(
                f"{label}: calibration feed {k} has inputs {sorted(feed)}, the model needs {sorted(inputs)}",
                key="calibration",
            )
        row = {}
        for name, value in feed.items():
            elem = inputs[name].type.tensor_type.elem_type
            want = onnx.helper.tensor_dtype_to_np_dtype(elem)
            array = np.asarray(value)
            if array.dtype != want:
                raise VariantError(
                    f"{label}: calibration feed {k} input {name!r} is {array.dtype}, the model wants {want}",
                    key="calibration",
                )
            row[name] = array
        checked.append(row)
    return checked


def _entropy_ranges(model: onnx.ModelProto, feeds: list[dict], tmp: str) -> str:
    """Entropy (KL) ranges with TensorRT's 2048-bin histogram searched for a 128-bin threshold.

    quantize_static builds its entropy calibrator with 128 histogram bins and 128
    quantized bins, which leaves a single candidate threshold (the full range), so
    "entropy" would equal "minmax". Its calibrator is built here with 2048 bins instead
    and the ranges handed to quantize_static through its calibration cache (a file in
    the caller's temporary directory).
    """
    import inspect

    from onnxruntime.quantization import CalibrationMethod, create_calibrator, quantize_static
    from onnxruntime.quantization import calibrate as ort_calibrate
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise VariantError(
            f"entropy calibration needs an onnxruntime whose quantize_static takes calibration_cache_path "
            f"(1.31 has it; this is {onnxruntime.__version__})",
            key="method",
            allowed=("minmax", "percentile"),
        )

    source = os.path.join(tmp, "calibration-source.onnx")
    onnx.save_model(model, source)
    calibrator = create_calibrator(
        source,
        sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),  # what quantize_static calibrates
        augmented_model_path=os.path.join(tmp, "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": 2048, "num_quantized_bins": 128},
    )
    calibrator.collect_data(_Feeds(feeds))
    ranges = calibrator.compute_data()
    del calibrator
    cache = os.path.join(tmp, "ranges.json")
    ort_calibrate.save_tensors_data(ranges, cache)
    return cache


class Int8Static(Variant):
    """Weights and activations int8 in QDQ format, activation ranges calibrated on images.

    ``images`` feeds (the first N of the calibration set the caller passes) are run
    through the model; ``method`` turns the observed activations into ranges: minmax
    (observed extremes), entropy (KL-divergence threshold: 2048-bin histograms searched
    for the best 128-bin range, as TensorRT does; slow: ~2.5 min on the demo CenterNet
    with 8 images on 2 cores), percentile (99.999th percentile of |x|). Activations
    default to uint8 with int8 weights, the combination onnxruntime recommends for x86
    CPUs. Weights use 7 of their 8 bits by default (``reduce_range``): x86 CPUs without
    VNNI (AVX2, e.g. AMD EPYC before Zen 4) multiply uint8 by int8 with an int16 sum that
    saturates, so full-range weights give results that depend on the worker's CPU (on an
    AVX2 EPYC, 16% relative output error on the test detector where 7-bit weights stay
    under 10%); with 7-bit weights no CPU saturates. Weight scales are per output
    channel by default: with BN folded into conv weights, channel ranges differ so much
    that one scale per tensor ruins MobileNet-style detectors (none of the demo
    CenterNet's top-20 heatmap peaks survive per-tensor minmax; 15 do per channel).
    """

    name = "int8-static"
    uses_calibration = True
    fields = (
        Field("images", int, 8, "number of calibration images", low=1, high=10_000),
        Field("method", str, "minmax", "calibration method", choices=("minmax", "entropy", "percentile")),
        Field("per_channel", bool, True, "one weight scale per output channel (false: per tensor)"),
        Field("activations", str, "uint8", "activation integer type", choices=("uint8", "int8")),
        Field(
            "reduce_range",
            bool,
            True,
            "7-bit weights: the same results on every x86 CPU (false: 8-bit, exact only on VNNI CPUs)",
        ),
    )

    def label(self) -> str:
        parts = ["int8-static", self.settings["method"], f"n={self.settings['images']}"]
        if not self.settings["per_channel"]:
            parts.append("per-tensor")
        if self.settings["activations"] != "uint8":
            parts.append("s8s8")
        if not self.settings["reduce_range"]:
            parts.append("8-bit")
        return " ".join(parts)

    def calibration_used(self, ids: list) -> list:
        return list(ids)[: self.settings["images"]]

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        need = self.settings["images"]
        have = 0 if calibration is None else len(calibration)
        if have < need:
            raise VariantError(
                f"{self.label()}: needs {need} calibration images, {have} given", key=self.key, file=self.file
            )
        feeds = _check_feeds(model, list(calibration)[:need], self.label())
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.settings["method"]]
        activation = QuantType.QUInt8 if self.settings["activations"] == "uint8" else QuantType.QInt8

        def quantize(m: onnx.ModelProto, path: str) -> None:
            cache = None
            if method == CalibrationMethod.Entropy:
                cache = _entropy_ranges(m, feeds, os.path.dirname(path))
            quantize_static(
                m,
                path,
                None if cache else _Feeds(feeds),
                quant_format=QuantFormat.QDQ,
                per_channel=self.settings["per_channel"],
                activation_type=activation,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                calibration_cache_path=cache,
                nodes_to_exclude=excluded,
                reduce_range=self.settings["reduce_range"],
            )

        excluded = _non_finite_nodes(model)
        quantized = _run_quantizer(model, quantize)
        if not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node):
            raise VariantError(f"{self.label()}: onnxruntime's quantizer found nothing to quantize", key=self.key)
        _check_scales(quantized, self.label())
        defer_dequantize(quantized)
        notes = _quantized_ops(model, quantized)
        if excluded:
            notes += (f"left in float (inf/NaN constants): {', '.join(excluded)}",)
        return Transformed(model=quantized, notes=notes)


def defer_dequantize(model: onnx.ModelProto) -> None:
    """Move every DequantizeLinear to just before its first reader, in place.

    onnxruntime's quantizer puts each Q/DQ pair right after the producer, so a skip
    connection crossing a cut would cross as the dequantized float tensor. With DQ nodes
    as late as possible, every activation crosses any cut in its quantized (8-bit) form,
    as a quantized deployment would send it. The order stays topological: a DQ reads only
    its Q's output and constants, and keeps its place after that Q.
    """
    nodes = list(model.graph.node)
    deferred = [n for n in nodes if n.op_type == "DequantizeLinear"]
    pending = {out: n for n in deferred for out in n.output}
    order: list[onnx.NodeProto] = []
    placed: set[int] = set()
    for node in nodes:
        if node.op_type == "DequantizeLinear":
            continue
        for name in list(node.input) + _subgraph_reads(node):
            dq = pending.get(name)
            if dq is not None and id(dq) not in placed:
                order.append(dq)
                placed.add(id(dq))
        order.append(node)
    order += [n for n in deferred if id(n) not in placed]  # read only by graph outputs
    del model.graph.node[:]
    model.graph.node.extend(order)


def _subgraph_reads(node: onnx.NodeProto) -> list[str]:
    names = []
    for attr in node.attribute:
        for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            for inner in graph.node:
                names += list(inner.input) + _subgraph_reads(inner)
    return names
