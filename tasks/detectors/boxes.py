"""Models that already decode: outputs boxes, labels and scores (torchvision exports, MLPerf SSD, TF OD API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import DetectorError
from ..rows import Detections
from .base import Adapter, finish
from .coco import COCO80_IDS, COCO_IDS
from .image import ImageMeta
from .settings import ImageSettings, SettingProblem, setting

__all__ = ["BoxesLabelsScores", "BoxesLabelsScoresSettings", "BOX_FORMATS"]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh", "xyxy-normalized", "ltrb-normalized", "yxyx-normalized")


@dataclass(frozen=True)
class BoxesLabelsScoresSettings(ImageSettings):
    boxes: str = setting("boxes", "output: boxes N×4 (or 1×N×4)")
    labels: str = setting("labels", "output: class labels N (or 1×N), integer or float")
    scores: str = setting("scores", "output: scores N (or 1×N)")
    box_format: Literal["xyxy", "xywh", "cxcywh", "xyxy-normalized", "ltrb-normalized", "yxyx-normalized"] = setting(
        "xyxy",
        "xyxy / xywh / cxcywh: model-input pixels; *-normalized: fractions of the input size "
        "(ltrb-normalized, as MLPerf SSD-ResNet34, is the same as xyxy-normalized; yxyx as the TF OD API)",
    )
    label_map: Literal["coco80", "coco-id"] | tuple[int | None, ...] = setting(
        "coco-id",
        "coco-id: label − label_offset is the COCO category id (torchvision); coco80: it indexes the 80 "
        "classes in order; or a list: it indexes this list of category ids (null entries are dropped)",
    )
    label_offset: int = setting(0, "subtracted from each label first (1 for 1-based labels with background 0)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.label_map, tuple):
            bad = [c for c in self.label_map if c is not None and c not in COCO_IDS]
            if bad:
                raise SettingProblem("label_map", f"{bad} are not COCO category ids", "1…90 as in tasks.detectors.coco")


class BoxesLabelsScores(Adapter):
    """Rescales the model's own boxes to the image and maps its labels to COCO ids; no NMS (the model did it).

    Labels that map to no COCO category (background, out of range) are dropped.
    """

    name = "boxes-labels-scores"
    Settings = BoxesLabelsScoresSettings
    settings: BoxesLabelsScoresSettings

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.settings.boxes, self.settings.labels, self.settings.scores)

    def decode(self, outputs: Mapping[str, np.ndarray], meta: ImageMeta) -> Detections:
        s = self.settings
        raw_boxes = np.asarray(outputs[s.boxes], dtype=np.float64)
        labels = np.asarray(outputs[s.labels]).reshape(-1)
        scores = np.asarray(outputs[s.scores], dtype=np.float32).reshape(-1)
        if (
            raw_boxes.size != 4 * len(scores)
            or len(labels) != len(scores)
            or (raw_boxes.size and raw_boxes.shape[-1] != 4)
        ):
            raise DetectorError(
                f"outputs disagree: {s.boxes!r} {raw_boxes.shape}, {s.labels!r} {labels.shape}, "
                f"{s.scores!r} {scores.shape} "
                "(expected N×4, N, N with an optional leading batch of 1)",
                key=self.name,
            )
        boxes = _to_xyxy(raw_boxes.reshape(-1, 4), s.box_format, meta)
        ids = _category_ids(labels, s)
        valid = ids > 0
        return finish(boxes[valid], scores[valid], ids[valid], meta, s)


def _to_xyxy(b: np.ndarray, fmt: str, meta: ImageMeta) -> np.ndarray:
    if fmt == "xyxy":
        return b
    if fmt == "xywh":
        return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)
    if fmt == "cxcywh":
        half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
        return np.stack([b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], axis=1)
    if fmt == "yxyx-normalized":
        b = b[:, [1, 0, 3, 2]]
    return b * np.array([meta.input_width, meta.input_height, meta.input_width, meta.input_height])


def _category_ids(labels: np.ndarray, s: BoxesLabelsScoresSettings) -> np.ndarray:
    """COCO ids per label; 0 where the label maps to none."""
    index = np.rint(labels.astype(np.float64)).astype(np.int64) - s.label_offset
    if s.label_map == "coco-id":
        return np.where(np.isin(index, sorted(COCO_IDS)), index, 0).astype(np.int32)
    table = np.array(
        [0 if c is None else c for c in (COCO80_IDS if s.label_map == "coco80" else s.label_map)], dtype=np.int32
    )
    inside = (index >= 0) & (index < len(table))
    return np.where(inside, table[np.clip(index, 0, len(table) - 1)], 0).astype(np.int32)
