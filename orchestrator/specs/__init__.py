"""Specs shipped with splitsweep: the demo sweep and its full grid."""

from pathlib import Path

SPECS_DIR = Path(__file__).resolve().parent
DEMO_SPEC = SPECS_DIR / "demo.yaml"
FULL_SPEC = SPECS_DIR / "demo-full.yaml"

__all__ = ["SPECS_DIR", "DEMO_SPEC", "FULL_SPEC"]
