"""Builds each model variant once per sweep (cached by content hash in the results store)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .schema import VARIANTS_DIR

__all__ = ["VariantBuild", "build_variants"]


@dataclass
class VariantBuild:
    """A built variant: its ONNX bytes, how sweep split points map onto its nodes, its cost."""

    key: str
    model_bytes: bytes | None
    split_map: dict[int, int] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def build_variants(plan, store, *, out: TextIO) -> dict[str, VariantBuild]:
    """fp32 is the model file itself; other variants come from tasks.variants (see there)."""
    builds: dict[str, VariantBuild] = {}
    for m in plan.models:
        data = Path(m.path).read_bytes()
        for v in m.variants:
            key = f"{m.name}/{v.label}"
            if v.name == "fp32":
                builds[key] = VariantBuild(key, data, {s: s for s in m.splits})
                continue
            builds[key] = VariantBuild(key, None, error=f"variant {v.name!r} is not available yet")
    return builds
