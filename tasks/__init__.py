"""What one worker does to one unit of work: split, code, finish inference, score. No Ray here."""

from .errors import (
    AssetError,
    CodecError,
    DataError,
    DetectorError,
    ModelError,
    ResultsError,
    SpecError,
    SplitError,
    SplitsweepError,
    VariantError,
)
from .rows import CodecSetting, Detections, TaskResult, canonical_json

__all__ = [
    "AssetError",
    "CodecError",
    "CodecSetting",
    "DataError",
    "DetectorError",
    "Detections",
    "ModelError",
    "ResultsError",
    "SpecError",
    "SplitError",
    "SplitsweepError",
    "TaskResult",
    "VariantError",
    "canonical_json",
]
