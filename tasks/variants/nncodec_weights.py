"""The nncodec-weights variant: every float weight tensor NNCodec-coded at a QP and decoded back."""

from __future__ import annotations

import zlib

import numpy as np
import onnx
from onnx import numpy_helper

from ..codecs.nnc import decode_arrays, encode_arrays, qp_range, step_size
from ..errors import CodecError, VariantError
from .base import ZLIB_LEVEL, Calibration, Field, Transformed, Variant

__all__ = ["NncodecWeights", "coded_weight_names"]

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
# Ops whose float inputs are geometry, not learned values: an NNR round trip of a Resize
# scale of 2.0 to 1.999999 would change the output size. They stay in the graph skeleton.
_GEOMETRY_OPS = {"Resize", "Upsample", "Range", "Pad", "Slice", "Tile", "Expand", "Reshape", "ConstantOfShape"}


def coded_weight_names(model: onnx.ModelProto) -> list[str]:
    """Float initializers with more than one element not feeding a geometry input."""
    geometry = {
        name
        for node in model.graph.node
        if node.op_type in _GEOMETRY_OPS
        for name in node.input[1:]
    }
    return [
        init.name
        for init in model.graph.initializer
        if init.data_type in _FLOATS and int(np.prod(init.dims)) > 1 and init.name not in geometry
    ]


class NncodecWeights(Variant):
    """Weights NNCodec-coded at ``qp`` (step Δ = 2^(qp/4)) and decoded back into the model.

    Tensors of two or more dimensions are coded at ``qp``; 1-D ones (biases, BN
    parameters) at NNCodec's nearly lossless non-weight QP. Scalars and geometry inputs
    (Resize scales) are not coded. ``transmission_bytes`` is what a receiver needs to
    rebuild the model: the NNCodec bytes plus the graph skeleton (the model without the
    coded tensors) deflated with zlib level 6; ``notes`` give the two parts.

    NNCodec's QP is an absolute step, but BN-folded detector weights differ in scale by
    five orders of magnitude between layers (std 1e-4 … 13 in the demo CenterNet): one
    step either wipes out the small layers or wastes bits on the large ones. With
    ``relative: true`` each weight tensor gets its own QP, about ``qp + 4·log2 σ``: the
    one whose step is nearest to ``2^(qp/4)·σ`` (σ: the tensor's standard deviation,
    within a factor 1.12 since NNR's steps grow by 1.14–1.25 per QP); tensors
    sharing a QP go into one NNCodec stream, and the streams' sizes add up.
    """

    name = "nncodec-weights"
    fields = (
        Field("qp", int, -32, "NNCodec QP of weight tensors (Δ = 2^(qp/4))", low=-128, high=127),
        Field("use_dq", bool, True, "dependent (trellis) quantization: fewer bytes, error up to 2Δ"),
        Field("relative", bool, False, "per-tensor QP: step 2^(qp/4) times each weight tensor's std"),
    )

    def label(self) -> str:
        qp = f"qp={self.settings['qp']}" + ("·σ" if self.settings["relative"] else "")
        return f"nncodec-weights {qp}" + ("" if self.settings["use_dq"] else " no-dq")

    def tensor_qps(self, weights: dict[str, np.ndarray]) -> dict[str, int]:
        """The QP each weight tensor is coded at (1-D tensors use the non-weight QP anyway)."""
        qp = self.settings["qp"]
        if not self.settings["relative"]:
            return {name: qp for name in weights}
        lo, hi = qp_range()
        out = {}
        for name, w in weights.items():
            sigma = float(np.std(w.astype(np.float64)))
            if sigma == 0 or w.ndim < 2:
                out[name] = qp
                continue
            # NNR steps are piecewise linear between powers of two, so pick the QP whose
            # step is nearest (in ratio) to 2^(qp/4)·σ among the neighbours of the estimate.
            target = qp / 4 + np.log2(sigma)
            guess = int(np.round(4 * target))
            candidates = [int(np.clip(q, lo, hi)) for q in (guess - 1, guess, guess + 1)]
            out[name] = min(candidates, key=lambda q: (abs(np.log2(step_size(q)) - target), q))
        return out

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        names = coded_weight_names(model)
        if not names:
            raise VariantError(f"{self.label()}: the model has no float weight initializer to code", key=self.key)
        inits = {i.name: i for i in model.graph.initializer}
        weights = {name: numpy_helper.to_array(inits[name]) for name in names}
        qps = self.tensor_qps(weights)
        groups: dict[int, dict[str, np.ndarray]] = {}
        for name, w in weights.items():
            groups.setdefault(qps[name], {})[name] = w
        coded_bytes = 0
        decoded: dict[str, np.ndarray] = {}
        try:
            for qp, group in sorted(groups.items()):
                coded = encode_arrays(group, qp=qp, use_dq=self.settings["use_dq"])
                coded_bytes += len(coded)
                decoded.update(decode_arrays(coded))
        except CodecError as exc:
            raise VariantError(f"{self.label()}: {exc}", key=self.key, file=self.file) from None

        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(model)
        kept = [i for i in skeleton.graph.initializer if i.name not in weights]
        del skeleton.graph.initializer[:]
        skeleton.graph.initializer.extend(kept)
        skeleton_bytes = len(zlib.compress(skeleton.SerializeToString(), ZLIB_LEVEL))

        worst = 0.0  # largest weight error in units of that tensor's step
        for name, original in weights.items():
            restored = decoded[name].astype(original.dtype, copy=False).reshape(original.shape)
            if original.ndim > 1:
                err = float(np.abs(restored.astype(np.float64) - original).max())
                worst = max(worst, err / step_size(qps[name]))
            inits[name].CopyFrom(numpy_helper.from_array(restored, name))
        streams = f"{len(groups)} NNCodec streams" if len(groups) > 1 else "NNCodec"
        notes = (
            f"{len(names)} tensors coded: {streams} {coded_bytes} B + zlib-{ZLIB_LEVEL} graph skeleton {skeleton_bytes} B",
            f"weight QPs {min(qps.values())}…{max(qps.values())}; largest weight error {worst:.2f} Δ",
        )
        return Transformed(
            model=model,
            notes=notes,
            transmission_bytes=coded_bytes + skeleton_bytes,
            transmission=f"nncodec+zlib-{ZLIB_LEVEL} skeleton",
        )
