"""Feature maps versus shape tensors: one rule for inspect's tables and for every codec.

Exporter graphs (torchvision, MLPerf) pass more than feature maps across a cut: int64
shape and index tensors, bool masks, and float *scalars* or short float vectors (the
pre-processing's resize scale, image sizes, a box-coder's clip value) that in-graph shape
arithmetic reads. A few bytes each; rounding one of them to float16 or 8 bits can change
a computed output size and break the tail. So every codec passes them losslessly as side
data (raw bytes in the container, counted in ``coded_bytes`` at their real size) and only
feature maps are compressed; distortion is measured over the feature maps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHAPE_TENSOR_ELEMENTS", "is_feature_map", "is_float_dtype"]

SHAPE_TENSOR_ELEMENTS = 64  # a float tensor of rank <= 1 with at most this many elements is a shape tensor


def is_float_dtype(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def is_feature_map(arr: np.ndarray) -> bool:
    """Whether a cut tensor is data a codec may compress: a non-empty float tensor of rank
    >= 2, or of rank 1 with more than SHAPE_TENSOR_ELEMENTS elements. Everything else
    (integer / bool tensors, 0-d floats, short float vectors, empty tensors) is a shape
    tensor and crosses every codec bit-exactly."""
    arr = np.asarray(arr)
    if not is_float_dtype(arr.dtype) or arr.size == 0:
        return False
    return arr.ndim >= 2 or arr.size > SHAPE_TENSOR_ELEMENTS
