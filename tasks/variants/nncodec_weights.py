"""The nncodec-weights variant: every float weight tensor NNCodec-coded at a QP and decoded back."""

from __future__ import annotations

import zlib

import numpy as np
import onnx
from onnx import numpy_helper

from ..codecs.nnc import decode_arrays, encode_arrays, step_size
from ..errors import CodecError, VariantError
from .base import ZLIB_LEVEL, Calibration, Option, Transformed, Variant

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
    """

    name = "nncodec-weights"
    options = {
        "qp": Option(-32, int, "NNCodec QP of weight tensors (Δ = 2^(qp/4))", minimum=-128, maximum=127),
        "use_dq": Option(True, bool, "dependent (trellis) quantization: fewer bytes, error up to 2Δ"),
    }

    def label(self) -> str:
        return f"nncodec-weights qp={self.settings['qp']}" + ("" if self.settings["use_dq"] else " no-dq")

    def transform(self, model: onnx.ModelProto, calibration: Calibration | None) -> Transformed:
        names = coded_weight_names(model)
        if not names:
            raise VariantError(f"{self.label()}: the model has no float weight initializer to code", key=self.key)
        inits = {i.name: i for i in model.graph.initializer}
        weights = {name: numpy_helper.to_array(inits[name]) for name in names}
        try:
            coded = encode_arrays(weights, qp=self.settings["qp"], use_dq=self.settings["use_dq"])
            decoded = decode_arrays(coded)
        except CodecError as exc:
            raise VariantError(f"{self.label()}: {exc}", key=self.key, file=self.file) from None

        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(model)
        kept = [i for i in skeleton.graph.initializer if i.name not in weights]
        del skeleton.graph.initializer[:]
        skeleton.graph.initializer.extend(kept)
        skeleton_bytes = len(zlib.compress(skeleton.SerializeToString(), ZLIB_LEVEL))

        worst = 0.0
        for name, original in weights.items():
            restored = decoded[name].astype(original.dtype, copy=False).reshape(original.shape)
            if original.ndim > 1:
                worst = max(worst, float(np.abs(restored.astype(np.float64) - original).max()))
            inits[name].CopyFrom(numpy_helper.from_array(restored, name))
        delta = step_size(self.settings["qp"])
        notes = (
            f"{len(names)} tensors coded: NNCodec {len(coded)} B + zlib-{ZLIB_LEVEL} graph skeleton {skeleton_bytes} B",
            f"step Δ = {delta:.3g}; largest weight error {worst:.3g} ({worst / delta:.2f} Δ)",
        )
        return Transformed(
            model=model,
            notes=notes,
            transmission_bytes=len(coded) + skeleton_bytes,
            transmission=f"nncodec+zlib-{ZLIB_LEVEL} skeleton",
        )
