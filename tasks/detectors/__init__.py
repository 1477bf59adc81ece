"""Detector adapters: image → model input, model outputs → COCO detections; one registry, one small class per family.

adapter("centernet", {"score_threshold": 0.1}).preprocess(rgb) -> Prepared(feeds, meta)
adapter(...).postprocess(outputs, meta) -> Detections (x, y, w, h in image pixels, COCO ids)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import DetectorError
from ..registry import Registry
from .base import Adapter, Prepared
from .boxes import BOX_FORMATS, BoxesLabelsScores, BoxesLabelsScoresSettings
from .centernet import CenterNet, CenterNetSettings
from .coco import CATEGORY_NAMES, COCO80_IDS, COCO80_NAMES, categories, coco80_to_ids
from .image import ImageMeta, nms, resize_bilinear
from .nanodet import NanoDet, NanoDetSettings
from .settings import ImageSettings, settings_table

ADAPTERS: Registry[type[Adapter]] = Registry("detector adapter", DetectorError, (BoxesLabelsScores, CenterNet, NanoDet))

__all__ = [
    "ADAPTERS",
    "Adapter",
    "BOX_FORMATS",
    "BoxesLabelsScores",
    "BoxesLabelsScoresSettings",
    "CATEGORY_NAMES",
    "COCO80_IDS",
    "COCO80_NAMES",
    "CenterNet",
    "CenterNetSettings",
    "ImageMeta",
    "ImageSettings",
    "NanoDet",
    "NanoDetSettings",
    "Prepared",
    "adapter",
    "categories",
    "coco80_to_ids",
    "nms",
    "resize_bilinear",
    "settings_table",
]


def adapter(
    name: str, settings: Mapping[str, Any] | None = None, *, file: str | None = None, key: str | None = None
) -> Adapter:
    """The adapter ``name`` with ``settings`` validated; DetectorError names the bad key and what is allowed."""
    return ADAPTERS.get(name, file=file, key=key).from_settings(settings, file=file, key=key)
