"""Value types that cross module boundaries: detections, codec settings, per-task results."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Detections", "CodecSetting", "canonical_json", "TaskResult", "NO_SPLIT", "INPUT_SPLIT"]

# The two splits of a row that are not a node index (orchestrator.results.schema re-exports them
# with their display labels): stored as numbers, so they sort and stay int32.
NO_SPLIT = -1  # the unsplit, uncompressed model: the baseline of every (model, variant)
INPUT_SPLIT = -2  # remote inference: the coded picture, the whole model on the server


def canonical_json(params: Mapping[str, Any]) -> str:
    """The one textual form of a settings dict: sorted keys, no spaces (part of task ids)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {value!r}")


@dataclass(frozen=True)
class Detections:
    """Detections of one image in COCO convention.

    ``boxes`` are float32 (N, 4) ``x, y, w, h`` in original-image pixels, ``scores``
    float32 (N,), ``category_ids`` int32 (N,) COCO category ids (1…90 with gaps).
    """

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        cats = np.asarray(self.category_ids, dtype=np.int32).reshape(-1)
        if not (len(boxes) == len(scores) == len(cats)):
            raise ValueError(
                f"detections disagree in length: {len(boxes)} boxes, {len(scores)} scores, {len(cats)} categories"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "category_ids", cats)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.scores)

    def to_records(self) -> list[dict[str, Any]]:
        """As the Parquet ``detections`` column holds them."""
        return [
            {"category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
            for b, s, c in zip(self.boxes, self.scores, self.category_ids)
        ]

    @classmethod
    def from_records(cls, records: list[Mapping[str, Any]] | None) -> Detections:
        if not records:
            return cls.empty()
        return cls(
            np.array([r["bbox"] for r in records], np.float32),
            np.array([r["score"] for r in records], np.float32),
            np.array([r["category_id"] for r in records], np.int32),
        )

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """pycocotools ``loadRes`` records for this image."""
        return [dict(r, image_id=int(image_id)) for r in self.to_records()]


@dataclass(frozen=True)
class CodecSetting:
    """One point of a codec's settings grid, validated: what a task is keyed by."""

    codec: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def canonical(self) -> str:
        return canonical_json(self.params)

    @property
    def qp(self) -> int | None:
        qp = self.params.get("qp")
        return None if qp is None else int(qp)

    def __hash__(self) -> int:
        return hash((self.codec, self.canonical))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodecSetting) and (self.codec, self.canonical) == (
            other.codec,
            other.canonical,
        )


@dataclass(frozen=True)
class TaskResult:
    """What one (split, codec setting) of one image produced, before it becomes a row.

    ``outputs`` are the raw outputs of the network's tail (the full model's outputs for
    the ``none`` codec), for the detector adapter to decode.
    """

    split: int
    setting: CodecSetting
    raw_bytes: int
    float32_bytes: int  # the cut's elements at 4 bytes each: what "ratio against float32" divides
    coded_bytes: int
    side_bytes: int
    feature_mse: float
    feature_psnr: float
    head_s: float
    encode_s: float
    decode_s: float
    tail_s: float
    outputs: Mapping[str, np.ndarray]
