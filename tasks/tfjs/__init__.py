"""TF.js graph-model → ONNX converter (numpy + onnx only): the demo detectors come as TF.js models."""

from .convert import CONVERTER_VERSION, IR_VERSION, OPSET, convert
from .ops import SUPPORTED_OPS
from .weights import decode_weights, weight_paths

__all__ = [
    "CONVERTER_VERSION",
    "IR_VERSION",
    "OPSET",
    "SUPPORTED_OPS",
    "convert",
    "decode_weights",
    "weight_paths",
]
