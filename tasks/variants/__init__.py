"""Model variants: an fp32 ONNX detector turned into another ONNX model, and what it costs.

    variant("int8-static", {"images": 8, "method": "entropy"}).build(model, calibration=feeds)
        -> VariantModel(model_bytes, file_bytes, transmission_bytes, params, nonzero_params, macs, …)

Families: fp32 (baseline), fp16, int8-dynamic, int8-static, prune-magnitude,
prune-filters, nncodec-weights. A family that cannot apply to a graph raises VariantError
with the reason, so a sweep marks that variant failed and runs the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import VariantError
from ..registry import Registry
from .base import Calibration, Field, Transformed, Variant, VariantModel, variant_key_digest
from .fp16 import Fp16, Fp32
from .nncodec_weights import NncodecWeights
from .prune import PruneFilters, PruneMagnitude
from .quantize import Int8Dynamic, Int8Static

__all__ = [
    "VARIANTS",
    "Calibration",
    "Field",
    "Transformed",
    "Variant",
    "VariantModel",
    "variant",
    "variant_label",
    "variant_key",
]

VARIANTS: Registry[type[Variant]] = Registry(
    "model variant",
    VariantError,
    (Fp32, Fp16, Int8Dynamic, Int8Static, PruneMagnitude, PruneFilters, NncodecWeights),
)


def variant(
    name: str,
    settings: Mapping[str, Any] | None = None,
    *,
    file: str | None = None,
    key: str | None = None,
) -> Variant:
    """The named variant with validated settings (defaults filled in); VariantError names
    the unknown variant or setting and what is allowed."""
    family = VARIANTS.get(name, file=file, key=key)
    return family(settings, file=file, key=key)


def variant_label(name: str, settings: Mapping[str, Any] | None = None) -> str:
    """Display label, e.g. ``int8-static minmax n=8`` or ``prune-filters 25%``."""
    return variant(name, settings).label()


def variant_key(
    model_bytes: bytes,
    name: str,
    settings: Mapping[str, Any] | None,
    calibration_ids: Sequence[Any] = (),
) -> str:
    """sha256 hex naming one built variant: model content, variant, canonical settings
    (defaults filled, so {} and explicit defaults agree) and the ids of the calibration
    images it actually uses (none for families that use no calibration)."""
    built = variant(name, settings)
    used = built.calibration_used(list(calibration_ids)) if built.uses_calibration else []
    return variant_key_digest(bytes(model_bytes), built.name, built.canonical, used)
