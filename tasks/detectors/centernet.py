"""CenterNet (MobileNetV3, the demo detector): class heatmap peaks + left/top/right/bottom distances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import DetectorError
from ..rows import Detections
from .base import Adapter, finish
from .coco import coco80_to_ids
from .image import ImageMeta, nms, top_k
from .settings import ImageSettings, SettingProblem, setting

__all__ = ["CenterNet", "CenterNetSettings", "peaks"]


@dataclass(frozen=True)
class CenterNetSettings(ImageSettings):
    # RGB 0–255, NHWC, aspect kept and centred on black: the model author's own inference
    # code (mobilenetv3_centernet) does this. Human stretches instead (resize: stretch), which
    # on the demo photos calls the cat a dog and scores the true classes lower.
    input: str = setting("tower_0/images", "name of the model's image input")
    input_size: tuple[int, int] | None = setting((512, 512), "model input [height, width]")
    resize: Literal["stretch", "letterbox"] = setting(
        "letterbox", "keep the aspect ratio and pad (centred), or stretch to input_size"
    )
    layout: Literal["NCHW", "NHWC"] = setting("NHWC", "input tensor layout")
    scale: float = setting(1.0, "pixel values are multiplied by this (the model takes 0–255)")
    heatmap: str = setting("tower_0/keypoints", "output: class heatmap 1×H×W×80 after sigmoid")
    sizes: str = setting("tower_0/wh", "output: 1×H×W×4 distances left, top, right, bottom in input pixels")
    nms_iou: float | None = setting(None, "optional class-wise NMS after peak picking (null: none, as CenterNet)")

    def __post_init__(self) -> None:
        if self.input_size is None:
            raise SettingProblem("input_size", "CenterNet needs a fixed input size")
        super().__post_init__()
        if self.nms_iou is not None and not 0 < self.nms_iou <= 1:
            raise SettingProblem("nms_iou", "must be in (0, 1] or null")


def peaks(heatmap: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Which flat indices of an H×W×C heatmap equal the maximum of their 3×3 neighbourhood (same class).

    Neighbours are read at clipped coordinates: at an edge that re-reads a cell of the
    same neighbourhood, which leaves the maximum unchanged (and copies no padded map).
    """
    height, width, classes = heatmap.shape
    c = candidates % classes
    cell = candidates // classes
    x, y = cell % width, cell // width
    value = heatmap.reshape(-1)[candidates]
    local = value.copy()
    for dy in (-1, 0, 1):
        yy = np.clip(y + dy, 0, height - 1)
        for dx in (-1, 0, 1):
            if dy or dx:
                np.maximum(local, heatmap[yy, np.clip(x + dx, 0, width - 1), c], out=local)
    return value == local


class CenterNet(Adapter):
    """Decodes as the graph's own ``tower_0/detections`` branch does.

    Flattened index i over H×W×80: class = i mod 80, cell = i div 80, x = cell mod W,
    y = cell div W; box = (x·s − l, y·s − t, x·s + r, y·s + b) with s = input / W (4).
    """

    name = "centernet"
    Settings = CenterNetSettings
    settings: CenterNetSettings

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.settings.heatmap, self.settings.sizes)

    def decode(self, outputs: Mapping[str, np.ndarray], meta: ImageMeta) -> Detections:
        s = self.settings
        heat = _squeeze_batch(np.asarray(outputs[s.heatmap]), 3, s.heatmap)
        sizes = _squeeze_batch(np.asarray(outputs[s.sizes]), 3, s.sizes)
        height, width, classes = heat.shape
        if sizes.shape != (height, width, 4):
            raise DetectorError(
                f"output {s.sizes!r} has shape {sizes.shape}, expected {(height, width, 4)} to match the heatmap",
                key=f"{self.name}.sizes",
            )
        if classes != 80:
            raise DetectorError(
                f"heatmap {s.heatmap!r} has {classes} classes, expected COCO's 80", key=f"{self.name}.heatmap"
            )
        flat = heat.reshape(-1)
        # Thresholding before the top-k keeps the same detections as the graph's own branch
        # (top-100 peaks, then threshold) and checks far fewer peaks.
        candidates = np.flatnonzero(flat >= s.score_threshold)
        candidates = candidates[peaks(heat, candidates)]
        idx = candidates[top_k(flat[candidates], min(s.max_detections, len(candidates)))]
        scores = flat[idx]
        cls = idx % classes
        cell = idx // classes
        x, y = cell % width, cell // width
        stride_x, stride_y = meta.input_width / width, meta.input_height / height
        ltrb = sizes.reshape(-1, 4)[cell].astype(np.float64)
        cx, cy = x * stride_x, y * stride_y
        boxes = np.stack([cx - ltrb[:, 0], cy - ltrb[:, 1], cx + ltrb[:, 2], cy + ltrb[:, 3]], axis=1)
        if s.nms_iou is not None:
            keep = nms(boxes, scores, s.nms_iou, classes=cls)
            boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
        return finish(boxes, scores, coco80_to_ids(cls), meta, s)


def _squeeze_batch(array: np.ndarray, rank: int, name: str) -> np.ndarray:
    while array.ndim > rank and array.shape[0] == 1:
        array = array[0]
    if array.ndim != rank:
        raise DetectorError(f"output {name!r} has shape {array.shape}, expected rank {rank} (plus a batch of 1)")
    return array
