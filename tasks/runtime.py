"""onnxruntime sessions with explicit thread counts, and SplitRunner: the head once for all splits, cached tails."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from .errors import ModelError, SpecError, SplitError
from .graph import Cut, SplitGraph

__all__ = [
    "OPTIMIZATIONS",
    "HeadResult",
    "SplitRunner",
    "TailResult",
    "make_session",
]

_LEVELS = {
    "exact": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
OPTIMIZATIONS: tuple[str, ...] = tuple(_LEVELS)
_LOAD_ERRORS = (
    _ort_state.Fail,
    _ort_state.InvalidGraph,
    _ort_state.InvalidArgument,
    _ort_state.InvalidProtobuf,
    _ort_state.NotImplemented,
)

# Rewrites that change the float arithmetic, not just the schedule. When a cut falls between
# the ops they merge, the whole model runs them fused and the split model cannot, so head ->
# tail would differ from the unsplit model in the last bits (measured with onnxruntime 1.31):
# - Conv+BatchNorm / Conv+Add(const) / Conv+Mul(const) fold the constant into the weights;
# - MatMul+Add -> Gemm and MatMul*scale -> alpha re-associate the bias or the scale;
# - Conv+Add(+Relu) (level "all", plain and NCHWc) accumulates the conv into the residual
#   before adding the bias: (z + sum) + b instead of (sum + b) + z;
# - Gelu / LayerNorm fusions replace the decomposed formula by a kernel computing it otherwise;
# - QDQ fusion turns DequantizeLinear -> op -> QuantizeLinear into integer kernels.
# "exact" keeps every other rewrite (constant folding, Conv+activation fusion, eliminations).
# onnxruntime ignores names it does not know: tests/test_runtime.py holds one graph per
# pattern and fails if a release renames or adds such a fusion.
_ARITHMETIC_FUSIONS = (
    "ConvBNFusion",
    "ConvAddFusion",
    "ConvMulFusion",
    "MatMulAddFusion",
    "MatMulScaleFusion",
    "ConvAddActivationFusion",
    "NchwcTransformer",
    "GeluFusion",
    "GeluFusionL1",
    "GeluFusionL2",
    "FastGeluFusion",
    "BiasGeluFusion",
    "QuickGeluFusion",
    "LayerNormFusion",
    "LayerNormFusionL1",
    "LayerNormFusionL2",
    "SimplifiedLayerNormFusion",
    "SimplifiedLayerNormFusionL1",
    "SkipLayerNormFusion",
    "QDQSelectorActionTransformer",
)


def make_session(
    model: onnx.ModelProto | bytes,
    *,
    threads: int = 1,
    optimization: str = "exact",
) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads, one inter-op thread, sequential execution.

    The thread count is always set explicitly: Ray sets OMP_NUM_THREADS=1 in its workers
    and onnxruntime would otherwise pick its own. ``optimization`` is one of OPTIMIZATIONS:
    "exact" (default) makes a head and a tail compute bit for bit what the unsplit model
    computes; "all" is faster (NCHWc convolutions) but only equal to about 1e-7.
    """
    if optimization not in _LEVELS:
        raise SpecError(f"unknown graph optimization {optimization!r}", key="optimization", allowed=OPTIMIZATIONS)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise SpecError(f"threads must be a positive integer, got {threads!r}", key="threads", allowed=">= 1")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _LEVELS[optimization]
    options.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    # No CPU memory arena: a worker holds one session per split, and each arena would keep
    # its tail's peak activation memory for good. Measured on the demo CenterNet with 3
    # splits: 444 → 348 MB resident, unit time unchanged (0.293 vs 0.294 s).
    options.enable_cpu_mem_arena = False
    disabled = list(_ARITHMETIC_FUSIONS) if optimization == "exact" else []
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else bytes(model)
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    except _LOAD_ERRORS as exc:  # the model itself is the problem (unsupported op, bad graph)
        raise ModelError(f"onnxruntime cannot load the model: {exc}") from None


@dataclass(frozen=True)
class HeadResult:
    """One run of the whole network: its outputs and the cut tensors of every split."""

    outputs: dict[str, np.ndarray]
    tensors: dict[str, np.ndarray]
    seconds: float

    def tensors_for(self, cut: Cut) -> dict[str, np.ndarray]:
        """What crosses the link for one cut, in the cut's order."""
        return {name: self.tensors[name] for name in cut.tensors}


@dataclass(frozen=True)
class TailResult:
    """The graph outputs the tail computed, in the model's output order."""

    outputs: dict[str, np.ndarray]
    seconds: float


class SplitRunner:
    """Runs a model split at several points: the whole network once per input (giving the
    full outputs and every cut tensor), then a tail per split, each session built once.
    """

    def __init__(
        self,
        model: onnx.ModelProto | str | os.PathLike | bytes,
        splits: Iterable[int | str],
        *,
        threads: int = 1,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        optimization: str = "exact",
        skip_invalid: bool = False,
    ) -> None:
        self.graph = SplitGraph(model, input_shapes=input_shapes)
        self.threads = threads
        self.optimization = optimization
        # With skip_invalid, a split the graph cannot take is left out and its SplitError
        # kept in `invalid` (a variant's mapped split fails alone, not the whole model).
        self.invalid: dict[int | str, SplitError] = {}
        cuts = []
        for s in splits:
            try:
                cuts.append(self.graph.cut(s))
            except SplitError as exc:
                if not skip_invalid:
                    raise
                self.invalid[s] = exc
        self._cuts: dict[int, Cut] = {c.split: c for c in cuts}
        self.splits: tuple[int, ...] = tuple(self._cuts)
        self._head = make_session(
            self.graph.multi_head_model(self.splits), threads=threads, optimization=optimization
        )
        self._head_names = [o.name for o in self._head.get_outputs()]
        self._head_inputs = [i.name for i in self._head.get_inputs()]
        self._cut_names = list(dict.fromkeys(t for c in cuts for t in c.tensors))
        self._tails: dict[int, ort.InferenceSession] = {}

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.graph.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.graph.output_names

    def cut(self, split: int | str) -> Cut:
        k = self.graph.index(split)
        if k not in self._cuts:
            self._cuts[k] = self.graph.cut(k)
        return self._cuts[k]

    def side_feeds(self, split: int | str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph inputs the tail of ``split`` still reads (sent uncoded)."""
        return _pick(feeds, self.cut(split).side_inputs, self.input_names)

    def run_head(self, feeds: Mapping[str, np.ndarray]) -> HeadResult:
        inputs = _pick(feeds, self._head_inputs, self.input_names)
        start = time.perf_counter()
        values = self._head.run(None, inputs)
        seconds = time.perf_counter() - start
        named = dict(zip(self._head_names, values))
        return HeadResult(
            outputs={name: named[name] for name in self.output_names},
            tensors={name: named[name] for name in self._cut_names},
            seconds=seconds,
        )

    def run_tail(
        self,
        split: int | str,
        tensors: Mapping[str, np.ndarray],
        feeds: Mapping[str, np.ndarray],
    ) -> TailResult:
        """Finish inference from the (decoded) cut tensors of ``split``; side inputs come from ``feeds``."""
        cut = self.cut(split)
        missing = [t for t in cut.tensors if t not in tensors]
        if missing:
            raise ValueError(f"cut tensors missing for split {cut.split}: {missing}")
        inputs = {name: tensors[name] for name in cut.tensors}
        inputs.update(self.side_feeds(cut.split, feeds))
        session = self.tail_session(cut.split)
        start = time.perf_counter()
        values = session.run(None, inputs)
        seconds = time.perf_counter() - start
        return TailResult(outputs=dict(zip(self.output_names, values)), seconds=seconds)

    def tail_session(self, split: int | str) -> ort.InferenceSession:
        """The tail's session, built on first use and kept."""
        k = self.cut(split).split
        if k not in self._tails:
            self._tails[k] = make_session(
                self.graph.tail_model(k), threads=self.threads, optimization=self.optimization
            )
        return self._tails[k]


def _pick(feeds: Mapping[str, np.ndarray], names: Iterable[str], allowed: Sequence[str]) -> dict[str, np.ndarray]:
    picked = {}
    for name in names:
        if name not in feeds:
            raise ModelError(f"no value fed for model input {name!r}", key="feeds", allowed=allowed)
        picked[name] = feeds[name]
    return picked
