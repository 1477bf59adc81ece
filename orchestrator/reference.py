"""docs/REFERENCE.md, generated from the code: spec keys, codecs, detector adapters, model
variants and commands. `python -m orchestrator.reference > docs/REFERENCE.md`; a test
checks the file is current, so every plug-in and setting stays documented."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from orchestrator.cli import COMMANDS
from orchestrator.planning.spec import (
    DatasetSpec,
    EvaluationSpec,
    ExecutionSpec,
    ModelSpec,
    SearchGoal,
    SearchSpec,
    SearchTarget,
    SelectSpec,
    Spec,
    SplitRange,
)
from tasks import codecs, detectors, variants
from tasks.registry import Field

__all__ = ["render_reference"]

_SPEC_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("top level", Spec),
    ("dataset", DatasetSpec),
    ("evaluation", EvaluationSpec),
    ("evaluation.select", SelectSpec),
    ("models[]", ModelSpec),
    ("models[].splits as a range", SplitRange),
    ("execution", ExecutionSpec),
    ("search", SearchSpec),
    ("search.targets[]", SearchTarget),
    ("search.targets[].goal", SearchGoal),
]


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _type(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("orchestrator.planning.spec.", "")
    return text.replace("NoneType", "null").replace("<class '", "").replace("'>", "")


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(its section below)"
    return _cell(value)


def render_reference() -> str:
    out = ["# splitsweep reference", "",
           "Generated from the code by `python -m orchestrator.reference`; a test keeps it current.", ""]
    out += ["## Sweep spec keys", ""]
    for title, model in _SPEC_SECTIONS:
        out += [f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if name in ("file", "text"):
                continue
            out.append(f"| `{name}` | {_cell(_type(field.annotation))} | {_default(field)} | {_cell(field.description)} |")
        out.append("")
    out += ["## Codecs", "", "Settings given as lists expand to a grid: `{nncodec: {qp: [-38, -18]}}` is two settings.", "",
            "Every codec compresses only the cut's feature maps. Shape tensors (int / bool tensors, 0-d "
            "floats, float vectors of at most 64 elements, empty tensors: the scale factors, image sizes "
            "and indices an exporter's in-graph shape arithmetic reads) cross every codec bit-exactly "
            "as raw side data, counted in coded_bytes at their real size; distortion is measured over "
            "the feature maps.", ""]
    for info in codecs.describe():
        out += [f"### `{info.name}`{' (lossless)' if info.lossless else ''}", "", info.doc, ""]
        out += _fields_table(info.settings)
    out += ["## Detector adapters", ""]
    for name in detectors.ADAPTERS.names():
        cls = detectors.ADAPTERS.get(name)
        out += [f"### `{name}`", "", cls.summary(), ""] + _fields_table(cls.fields)
    out += ["## Model variants", ""]
    for name in variants.VARIANTS.names():
        cls = variants.VARIANTS.get(name)
        out += [f"### `{name}`", "", cls.summary(), ""] + _fields_table(cls.fields)
    out += ["## Commands", "", "| command | what it does |", "|---|---|"]
    for name, text in COMMANDS.items():
        out.append(f"| `splitsweep {name}` | {_cell(text)} |")
    out.append("")
    return "\n".join(out)


def _fields_table(fields: tuple[Field, ...]) -> list[str]:
    """One table shape for every plug-in kind's settings (the one plug-in form)."""
    if not fields:
        return []
    out = ["| setting | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for f in fields:
        default = "required" if f.required else f.default
        out.append(f"| `{f.name}` | {_cell(f.type_name)} | {_cell(default)} | {_cell(f.allowed)} | {_cell(f.doc)} |")
    return out + [""]


if __name__ == "__main__":  # pragma: no cover
    print(render_reference(), end="")
