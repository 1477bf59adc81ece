"""Spec → deterministic tasks (one per model, variant, split, codec setting, image) → work units."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks import codecs as codec_registry
from tasks import detectors as detector_registry
from tasks import variants as variant_registry
from tasks.errors import ModelError, SpecError, SplitError, SplitsweepError
from tasks.graph import SplitGraph
from tasks.rows import CodecSetting, canonical_json
from tasks.work import INPUT_SPLIT, NO_SPLIT

from .cache import sha256_file
from .datasets import Dataset, ImageRecord, make_dataset
from .schema import SCHEMA_VERSION
from .spec import ModelSpec, Spec

__all__ = [
    "VariantRef", "ModelPlan", "Task", "WorkUnit", "Plan", "build_plan", "task_id", "resolve_model_path",
    "INPUT", "INPUT_SPLIT",
]  # fmt: skip

BASELINE = CodecSetting("none", {})
INPUT = "input"  # the remote-inference split in a spec's `splits` (rows: split INPUT_SPLIT = -2)


@dataclass(frozen=True)
class VariantRef:
    """A model variant of the sweep: registry name, validated settings, row label."""

    name: str
    params: Mapping[str, Any]
    label: str

    @property
    def canonical(self) -> str:
        return canonical_json(self.params)


@dataclass(frozen=True)
class ModelPlan:
    spec: ModelSpec
    path: str
    model_hash: str
    num_nodes: int
    splits: tuple[int, ...]
    variants: tuple[VariantRef, ...]
    adapter_canonical: str
    remote: bool = False  # `input` is among the splits: the picture is coded with the image codecs

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Task:
    task_id: str
    model: str
    variant: str
    split: int
    setting: CodecSetting
    image_id: int


@dataclass(frozen=True)
class WorkUnit:
    """Tasks sharing one head run: same (model, variant, image). Large units come in chunks."""

    model: str
    variant: str
    image_id: int
    tasks: tuple[Task, ...]

    @property
    def head_key(self) -> tuple[str, str, int]:
        return (self.model, self.variant, self.image_id)


def task_id(*, model_hash: str, adapter: str, variant: VariantRef, split: int, setting: CodecSetting, image_id: int) -> str:
    """Stable across machines and file moves: the model's content hash, never its path."""
    key = [SCHEMA_VERSION, model_hash, adapter, variant.name, variant.canonical, int(split),
           setting.codec, setting.canonical, int(image_id)]
    return hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:32]


def resolve_model_path(spec: Spec, model: ModelSpec, *, fetch_assets: bool = True) -> str:
    if model.path.startswith("asset:"):
        from .assets import ensure_models

        name = model.path.split(":", 1)[1]
        models = ensure_models() if fetch_assets else {}
        if name not in models and fetch_assets:
            raise SpecError(
                f"unknown asset {name!r}", file=spec.file, key=f"models.{model.name}.path", allowed=[f"asset:{n}" for n in models]
            )
        return str(models[name])
    path = spec.resolve(model.path)
    if not Path(path).is_file():
        raise ModelError("model file not found", file=path, key=f"models.{model.name}.path")
    return path


def _resolve_splits(spec: Spec, model: ModelSpec, graph: SplitGraph, key: str) -> tuple[int, ...]:
    splits = model.splits
    where = f"{key}.splits"
    if isinstance(splits, list):
        out = []
        for i, split in enumerate(splits):
            if split == NO_SPLIT or split == INPUT:
                continue  # the unsplit baseline is always in the plan; `input` is ModelPlan.remote
            try:
                out.append(graph.cut(split).split)
            except SplitsweepError as exc:
                raise type(exc)(exc.message, file=spec.file, key=f"{where}[{i}]", allowed=exc.allowed) from None
        return tuple(sorted(set(out)))
    stop = graph.num_nodes - 1 if splits.stop is None else min(splits.stop, graph.num_nodes - 1)
    valid = set(graph.valid_splits())
    out = tuple(k for k in range(splits.start, stop + 1, splits.every) if k in valid)
    if not out:
        raise SplitError(
            f"no valid split point in range(start={splits.start}, stop={stop}, every={splits.every})",
            file=spec.file,
            key=where,
            allowed=f"node indices 0..{graph.num_nodes - 2} (see `splitsweep inspect {model.path}`)",
        )
    return out


def _variants(spec: Spec, model: ModelSpec, key: str) -> tuple[VariantRef, ...]:
    out, labels = [], set()
    for i, (name, settings) in enumerate(model.variant_entries()):
        where = f"{key}.variants[{i}]"
        v = variant_registry.variant(name, settings, file=spec.file, key=where)
        label = v.label()
        if label in labels:
            raise SpecError(f"variant {label!r} listed twice", file=spec.file, key=where)
        labels.add(label)
        out.append(VariantRef(name, dict(v.settings), label))
    return tuple(out)


def codec_settings(spec: Spec) -> tuple[CodecSetting, ...]:
    return tuple(s for s, _ in _codec_settings(spec))


def _codec_settings(spec: Spec) -> list[tuple[CodecSetting, str]]:
    """Every codec setting of the spec, in order, with the key it was written under."""
    out: list[tuple[CodecSetting, str]] = []
    for name, params, where in spec.codec_entries():
        for setting in codec_registry.setting_grid(name, params, file=spec.file, key=where):
            if setting not in (s for s, _ in out):
                out.append((setting, where))
    if not out:
        raise SpecError("list at least one codec", file=spec.file, key="codecs", allowed=codec_registry.names())
    return out


def _check_split_kinds(spec: Spec, models: Sequence[ModelPlan], settings: Sequence[tuple[CodecSetting, str]]) -> None:
    """Image codecs run only at the split `input`, tensor codecs only at node splits; each side needs the other."""
    images = [(s, w) for s, w in settings if codec_registry.is_image_codec(s.codec)]
    tensors = [(s, w) for s, w in settings if not codec_registry.is_image_codec(s.codec)]
    if images and not any(m.remote for m in models):
        setting, where = images[0]
        raise SpecError(
            f"codec {setting.codec!r} codes the input picture (remote inference) and runs only at the split "
            f"`{INPUT}`, which no model lists",
            file=spec.file,
            key=where,
            allowed="add `input` to a model's splits, e.g. splits: [input, 20, 100]",
        )
    for i, m in enumerate(models):
        if m.remote and not images:
            raise SpecError(
                f"the split `{INPUT}` (remote inference) needs an image codec under `codecs`",
                file=spec.file,
                key=f"models[{i}].splits",
                allowed=codec_registry.image_codec_names(),
            )
    if tensors and not any(m.splits for m in models) and any(s.codec != "none" for s, _ in tensors):
        setting, where = next((s, w) for s, w in tensors if s.codec != "none")
        raise SpecError(
            f"codec {setting.codec!r} codes cut tensors, but no model lists a node split (only `{INPUT}`)",
            file=spec.file,
            key=where,
            allowed=f"image codecs at `{INPUT}`: {', '.join(codec_registry.image_codec_names())}",
        )


def plan_model(spec: Spec, model: ModelSpec, index: int, *, fetch_assets: bool = True) -> ModelPlan:
    key = f"models[{index}]"
    path = resolve_model_path(spec, model, fetch_assets=fetch_assets)
    adapter = detector_registry.adapter(model.adapter_type, model.adapter_settings, file=spec.file, key=f"{key}.adapter")
    input_shapes = {k: tuple(v) for k, v in (model.input_shapes or {}).items()} or None
    graph = SplitGraph(path, input_shapes=input_shapes)
    adapter.check_model(graph.input_names, graph.output_names)
    return ModelPlan(
        spec=model,
        path=path,
        model_hash=sha256_file(path),
        num_nodes=graph.num_nodes,
        splits=_resolve_splits(spec, model, graph, key),
        variants=_variants(spec, model, key),
        adapter_canonical=canonical_json({"type": model.adapter_type, **adapter.params()}),
        remote=INPUT in model.splits if isinstance(model.splits, list) else model.splits.input,
    )


@dataclass
class Plan:
    """Every task of a sweep in a deterministic order, and their grouping into work units."""

    spec: Spec
    dataset: Dataset
    records: tuple[ImageRecord, ...]
    models: tuple[ModelPlan, ...]
    settings: tuple[CodecSetting, ...]
    tasks: list[Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tasks:
            self.tasks = list(self._enumerate(self.records))

    def _enumerate(self, records: Iterable[ImageRecord]) -> Iterable[Task]:
        for m in self.models:
            for v in m.variants:
                images = [c for c in self.settings if codec_registry.is_image_codec(c.codec)]
                tensors = [c for c in self.settings if not codec_registry.is_image_codec(c.codec)]
                pairs = [(NO_SPLIT, BASELINE)]
                pairs += [(INPUT_SPLIT, c) for c in images] if m.remote else []
                pairs += [(s, c) for s in m.splits for c in tensors]
                for rec in records:
                    for split, setting in pairs:
                        yield Task(
                            task_id(model_hash=m.model_hash, adapter=m.adapter_canonical, variant=v, split=split,
                                    setting=setting, image_id=rec.image_id),
                            m.name, v.label, split, setting, rec.image_id,
                        )

    def with_images(self, image_ids: Sequence[int]) -> Plan:
        keep = set(image_ids)
        return Plan(self.spec, self.dataset, tuple(r for r in self.records if r.image_id in keep), self.models, self.settings)

    def baseline_only(self) -> Plan:
        plan = Plan(self.spec, self.dataset, self.records, self.models, self.settings, tasks=[None])  # type: ignore[list-item]
        plan.tasks = [t for t in self._enumerate(self.records) if t.split == NO_SPLIT]
        return plan

    def units(self, *, skip: set[str] = frozenset(), chunk_tasks: int = 64) -> list[WorkUnit]:
        """Remaining tasks grouped by head run, in plan order; long groups cut into chunks.

        Chunks of one image stay adjacent so the scheduler can hand them to the worker
        that still holds that image's head outputs.
        """
        groups: dict[tuple[str, str, int], list[Task]] = defaultdict(list)
        for t in self.tasks:
            if t.task_id not in skip:
                groups[(t.model, t.variant, t.image_id)].append(t)
        units = []
        for (model, variant, image_id), tasks in groups.items():
            for i in range(0, len(tasks), chunk_tasks):
                units.append(WorkUnit(model, variant, image_id, tuple(tasks[i : i + chunk_tasks])))
        return units

    def record(self, image_id: int) -> ImageRecord:
        if not hasattr(self, "_records_by_id"):
            self._records_by_id = {r.image_id: r for r in self.records}
        return self._records_by_id[image_id]

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)

    def counts(self, done: Mapping[str, str] | None = None) -> dict[str, int]:
        done = done or {}
        status = Counter(done.get(t.task_id, "remaining") for t in self.tasks)
        return {
            "tasks": len(self.tasks),
            "units": len({(t.model, t.variant, t.image_id) for t in self.tasks}),
            "ok": status.get("ok", 0),
            "failed": status.get("failed", 0),
            "remaining": status.get("remaining", 0),
        }

    def to_table(self) -> pa.Table:
        """plan.parquet: what `status` and the dashboard compare the stored rows with."""
        return pa.table(
            {
                "task_id": [t.task_id for t in self.tasks],
                "model": [t.model for t in self.tasks],
                "variant": [t.variant for t in self.tasks],
                "split": pa.array([t.split for t in self.tasks], pa.int32()),
                "codec": [t.setting.codec for t in self.tasks],
                "codec_params": [t.setting.canonical for t in self.tasks],
                "qp": pa.array([t.setting.qp for t in self.tasks], pa.int32()),
                "image_id": pa.array([t.image_id for t in self.tasks], pa.int64()),
            }
        )


def build_plan(spec: Spec, *, fetch_assets: bool = True, dataset: Dataset | None = None) -> Plan:
    """Everything `validate` and `plan` need; no Ray. Raises the first user error found."""
    written = _codec_settings(spec)
    settings = tuple(s for s, _ in written)
    models = tuple(plan_model(spec, m, i, fetch_assets=fetch_assets) for i, m in enumerate(spec.models))
    _check_split_kinds(spec, models, written)
    if dataset is None:
        dataset = make_dataset(spec.dataset.config(spec.resolve), spec_file=spec.file)
    records = tuple(dataset.records())
    if not records:
        raise SpecError("the dataset has no images", file=spec.file, key="dataset")
    return Plan(spec, dataset, records, models, settings)
