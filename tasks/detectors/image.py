"""Image geometry shared by adapters: resize / letterbox into the model input, boxes back to the image, NMS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .settings import ImageSettings

__all__ = ["ImageMeta", "prepare_image", "input_image", "resize_bilinear", "nms", "top_k"]


@dataclass(frozen=True)
class ImageMeta:
    """Where the original image sits in the model input: input = original × scale + pad."""

    width: int
    height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes x1, y1, x2, y2 in model-input pixels → original-image pixels, clipped to the image."""
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        x = (boxes[:, [0, 2]] - self.pad_x) / self.scale_x
        y = (boxes[:, [1, 3]] - self.pad_y) / self.scale_y
        out = np.empty_like(boxes)
        out[:, [0, 2]] = np.clip(x, 0, self.width)
        out[:, [1, 3]] = np.clip(y, 0, self.height)
        return out


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise DataError(f"expected an RGB image as uint8 array H×W×3, got {dtype} {shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise DataError(f"empty image {rgb.shape}")
    return rgb


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres and edge clamping (as OpenCV's INTER_LINEAR), float32 out."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.astype(np.float32)

    def taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low).astype(np.float32)

    # Separable: rows first, then columns of the (smaller) row-interpolated image.
    y0, y1, wy = taps(height, src_h)
    x0, x1, wx = taps(width, src_w)
    wy = wy[:, None, None]
    rows = image[y0] * (1 - wy) + image[y1] * wy
    wx = wx[None, :, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _content_size(height: int, width: int, s: ImageSettings) -> tuple[int, int]:
    """(height, width) the image takes inside the model input: all of it, or the letterboxed part."""
    in_h, in_w = s.input_size if s.input_size is not None else (height, width)
    if s.resize != "letterbox":
        return in_h, in_w
    ratio = min(in_h / height, in_w / width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def input_image(rgb: np.ndarray, s: ImageSettings) -> np.ndarray:
    """The picture at the model's input resolution, as 8-bit RGB: what a device sends for
    remote inference. Stretched to ``input_size``, or for ``letterbox`` the scaled image
    without its padding (the server pads); the image's own size when ``input_size`` is
    null. ``prepare_image`` of the result places it exactly where it places the original."""
    rgb = check_rgb(rgb)
    new_h, new_w = _content_size(rgb.shape[0], rgb.shape[1], s)
    if (new_h, new_w) == rgb.shape[:2]:
        return rgb
    return np.clip(np.rint(resize_bilinear(rgb, new_h, new_w)), 0, 255).astype(np.uint8)


def prepare_image(rgb: np.ndarray, s: ImageSettings) -> tuple[np.ndarray, ImageMeta]:
    """RGB uint8 H×W×3 → the model's input tensor and the geometry to map boxes back."""
    rgb = check_rgb(rgb)
    height, width = rgb.shape[:2]
    in_h, in_w = s.input_size if s.input_size is not None else (height, width)
    if s.resize == "letterbox":
        new_h, new_w = _content_size(height, width, s)
        pad_y, pad_x = (in_h - new_h) // 2, (in_w - new_w) // 2
        pixels = np.full((in_h, in_w, 3), s.pad_value, np.float32)
        pixels[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resize_bilinear(rgb, new_h, new_w)
        meta = ImageMeta(width, height, in_w, in_h, new_w / width, new_h / height, float(pad_x), float(pad_y))
    else:
        pixels = resize_bilinear(rgb, in_h, in_w)
        meta = ImageMeta(width, height, in_w, in_h, in_w / width, in_h / height)
    if s.channels == "BGR":
        pixels = pixels[..., ::-1]
    if s.dtype == "uint8":
        tensor = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    else:
        tensor = pixels * np.float32(s.scale)
        if s.mean != (0.0, 0.0, 0.0) or s.std != (1.0, 1.0, 1.0):
            tensor = (tensor - np.asarray(s.mean, np.float32)) / np.asarray(s.std, np.float32)
        tensor = tensor.astype(np.float32, copy=False)
    if s.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    if s.batch:
        tensor = tensor[None]
    return np.ascontiguousarray(tensor), meta


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties: lower index first)."""
    scores = np.asarray(scores).reshape(-1)
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float,
    *,
    classes: np.ndarray | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression over x1, y1, x2, y2 boxes; per class when ``classes`` is given.

    Returns the kept indices, best score first; stops after ``limit`` kept boxes (the
    first ``limit`` are the same as without a limit, and most of the work is saved).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if classes is not None:
        # Shifting each class to its own region makes boxes of different classes never overlap.
        offset = (boxes.max() - boxes.min() + 1) * np.asarray(classes, dtype=np.float64)
        boxes = boxes + offset[:, None]
    order = top_k(scores, len(scores))
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while len(order) and (limit is None or len(keep) < limit):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)
