"""NanoDet (GFL head): per-stride class scores and 4×(reg_max+1) distance bins, decoded with class-wise NMS."""

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

__all__ = ["NanoDet", "NanoDetSettings"]


@dataclass(frozen=True)
class NanoDetSettings(ImageSettings):
    # NanoDet was trained on OpenCV (BGR) images normalised by these mean/std; on the demo
    # photos this finds the cat and the cup, which RGB/255 (what Human feeds) misses.
    input: str = setting("input_1", "name of the model's image input")
    input_size: tuple[int, int] | None = setting((416, 416), "model input [height, width]")
    channels: Literal["RGB", "BGR"] = setting("BGR", "channel order of the input tensor")
    scale: float = setting(1.0, "pixel values are multiplied by this")
    mean: tuple[float, float, float] = setting((103.53, 116.28, 123.675), "subtracted after scaling (B, G, R)")
    std: tuple[float, float, float] = setting((57.375, 57.12, 58.395), "divided by after subtracting mean")
    scores: tuple[str, ...] = setting(
        ("Identity", "Identity_1", "Identity_2"), "outputs: class scores 1×N×80 (after sigmoid), one per stride"
    )
    distances: tuple[str, ...] = setting(
        ("Identity_3", "Identity_4", "Identity_5"), "outputs: distance bins 1×N×4·(reg_max+1), one per stride"
    )
    strides: tuple[int, ...] = setting((8, 16, 32), "stride of each output pair, in input pixels")
    reg_max: int = setting(10, "largest distance bin (distances are softmax expectations × stride)")
    nms_iou: float = setting(0.6, "IoU above which a lower-scoring box of the same class is dropped")
    pre_nms_top_k: int = setting(1000, "per stride, keep the cells with the best class scores before NMS")

    def __post_init__(self) -> None:
        if self.input_size is None:
            raise SettingProblem("input_size", "NanoDet needs a fixed input size")
        super().__post_init__()
        if not len(self.scores) == len(self.distances) == len(self.strides) > 0:
            raise SettingProblem("strides", "scores, distances and strides must have the same length")
        if self.reg_max < 1 or self.pre_nms_top_k < 1 or min(self.strides) < 1:
            raise SettingProblem("reg_max", "reg_max, pre_nms_top_k and strides must be positive")
        if not 0 < self.nms_iou <= 1:
            raise SettingProblem("nms_iou", "must be in (0, 1]")


class NanoDet(Adapter):
    """Cell centres at (col + 0.5, row + 0.5) × stride, as NanoDet's GFL head; boxes clipped to the input."""

    name = "nanodet"
    Settings = NanoDetSettings
    settings: NanoDetSettings

    @property
    def output_names(self) -> tuple[str, ...]:
        return (*self.settings.scores, *self.settings.distances)

    def decode(self, outputs: Mapping[str, np.ndarray], meta: ImageMeta) -> Detections:
        s = self.settings
        bins = s.reg_max + 1
        project = np.arange(bins, dtype=np.float64)
        all_boxes, all_scores, all_classes = [], [], []
        for score_name, dist_name, stride in zip(s.scores, s.distances, s.strides):
            cls = np.asarray(outputs[score_name], dtype=np.float32)
            reg = np.asarray(outputs[dist_name], dtype=np.float32)
            cls = cls.reshape(-1, cls.shape[-1])
            cols, rows = -(-meta.input_width // stride), -(-meta.input_height // stride)
            if cls.shape != (rows * cols, 80) or reg.size != rows * cols * 4 * bins:
                raise DetectorError(
                    f"outputs {score_name!r} {np.shape(outputs[score_name])} / "
                    f"{dist_name!r} {np.shape(outputs[dist_name])} "
                    f"do not fit stride {stride} on a {meta.input_width}×{meta.input_height} input "
                    f"({rows * cols} cells × 80 classes, × {4 * bins} bins)",
                    key=f"{self.name}.strides",
                )
            cells = top_k(cls.max(axis=1), min(s.pre_nms_top_k, len(cls)))
            logits = reg.reshape(-1, 4, bins)[cells].astype(np.float64)
            logits -= logits.max(axis=2, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=2, keepdims=True)
            dist = (prob @ project) * stride
            cx = (cells % cols + 0.5) * stride
            cy = (cells // cols + 0.5) * stride
            boxes = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, meta.input_width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, meta.input_height)
            cell, klass = np.nonzero(cls[cells] > s.score_threshold)
            all_boxes.append(boxes[cell])
            all_scores.append(cls[cells][cell, klass])
            all_classes.append(klass)
        boxes = np.concatenate(all_boxes)
        scores = np.concatenate(all_scores)
        classes = np.concatenate(all_classes)
        keep = nms(boxes, scores, s.nms_iou, classes=classes, limit=s.max_detections)
        return finish(boxes[keep], scores[keep], coco80_to_ids(classes[keep]), meta, s)
