"""Detector adapters: image → model input, model outputs → COCO detections; one registry, one small class per family.

adapter("centernet", {"score_threshold": 0.1}).preprocess(rgb) -> Prepared(feeds, meta)
adapter(...).postprocess(outputs, meta) -> Detections (x, y, w, h in image pixels, COCO ids)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Built-ins register themselves on import; importing them here, explicitly, makes every
# lookup independent of what else happened to be imported.
from . import boxes as _boxes  # noqa: F401
from . import centernet as _centernet  # noqa: F401
from . import nanodet as _nanodet  # noqa: F401
from .base import ADAPTERS, Adapter, Prepared
from .boxes import BOX_FORMATS, BoxesLabelsScores, BoxesLabelsScoresSettings
from .centernet import CenterNet, CenterNetSettings
from .coco import CATEGORY_NAMES, COCO80_IDS, COCO80_NAMES, categories, coco80_to_ids
from .image import ImageMeta, nms, resize_bilinear
from .nanodet import NanoDet, NanoDetSettings
from .settings import ImageSettings, parse_settings, settings_table

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
    cls = ADAPTERS.get(name, file=file, key=key)
    return cls(parse_settings(cls.Settings, settings, file=file, key=key))
