"""Spec → deterministic tasks (one per model, variant, split, codec setting, image) → work units."""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.data.cache import sha256_file
from orchestrator.data.datasets import Dataset, ImageRecord, VideoDataset, make_dataset
from orchestrator.planning import idkeys, taskids
from orchestrator.planning.spec import ModelSpec, Spec
from orchestrator.results.schema import PLAN_DIGEST_KEY
from tasks import codecs as codec_registry
from tasks import detectors as detector_registry
from tasks import variants as variant_registry
from tasks.errors import ModelError, SpecError, SplitError, SplitsweepError
from tasks.graph import SplitGraph
from tasks.rows import CodecSetting, canonical_json
from tasks.sequence import is_sequence
from tasks.work import INPUT_SPLIT, NO_SPLIT

__all__ = [
    "VariantRef", "ModelPlan", "Task", "TaskBlock", "WorkUnit", "SequenceUnit", "Plan", "build_plan", "task_id",
    "resolve_model_path", "INPUT", "INPUT_SPLIT", "REMAINING", "OK", "FAILED", "PLAN_DIGEST_KEY",
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
    # split → (name, shape) of the cut's feature maps where shape inference knows them all (hevc's frame check)
    feature_shapes: Mapping[int, tuple[tuple[str, tuple[int, ...]], ...]] = field(default_factory=dict)

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


@dataclass(frozen=True, eq=False)
class WorkUnit:
    """Tasks sharing one head run: same (model, variant, image). Large units come in chunks.

    Holds the tasks' positions in the plan; Task objects are made only when the unit is
    sent to a worker. ``shared_head``: a piece of a head run spread over several workers,
    which receive the head outputs through the object store (execute.spread_units).
    """

    model: str
    variant: str
    image_id: int
    positions: np.ndarray
    plan: Plan = field(repr=False)
    shared_head: bool = False

    @property
    def head_key(self) -> tuple[str, str, int]:
        return (self.model, self.variant, self.image_id)

    @property
    def size(self) -> int:
        return int(self.positions.size)

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self.plan.task(i) for i in self.positions.tolist())

    def pieces(self, n: int) -> list[WorkUnit]:
        """This unit cut into ``n`` adjacent pieces (at most one per task) that share its head run."""
        n = max(1, min(n, self.size))
        return [replace(self, positions=p, shared_head=True) for p in np.array_split(self.positions, n)]


@dataclass(frozen=True)
class SequenceUnit:
    """A sequence unit: every frame of a video at one (model, variant, split, sequence setting),
    coded as one stream (tasks.sequence). ``frames`` are all its tasks in frame order (the coder
    needs them all); ``tasks`` those still to store (resume stores each frame once)."""

    model: str
    variant: str
    split: int
    setting: CodecSetting
    frames: tuple[Task, ...]
    tasks: tuple[Task, ...]

    @property
    def image_ids(self) -> tuple[int, ...]:
        return tuple(t.image_id for t in self.frames)

    shared_head = False  # its frames' heads run inside the unit

    @property
    def head_key(self) -> tuple:
        return (self.model, self.variant, "sequence", self.split, self.setting.canonical)

    def pieces(self, n: int) -> list[SequenceUnit]:
        """A sequence is coded as one stream: never cut into pieces (execute.spread_units)."""
        return [self]

    @property
    def size(self) -> int:
        return len(self.tasks)


def task_id(*, model_hash: str, adapter: str, variant: VariantRef, split: int, setting: CodecSetting, image_id: int) -> str:
    """Stable across machines and file moves: the model's content hash, never its path.

    The reference for one task; plans compute all their ids at once (Plan.task_ids,
    orchestrator.planning.taskids), equal to this (tests/test_plan.py).
    """
    key = taskids.task_id_key(model_hash=model_hash, adapter=adapter, variant_name=variant.name,
                              variant_canonical=variant.canonical, split=split, codec=setting.codec,
                              codec_canonical=setting.canonical, image_id=image_id)  # fmt: skip
    return hashlib.sha256(key.encode()).hexdigest()[: taskids.ID_CHARS]


def resolve_model_path(spec: Spec, model: ModelSpec, *, fetch_assets: bool = True) -> str:
    if model.path.startswith("asset:"):
        from orchestrator.data.assets import ensure_models

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
    tensors = [(s, w) for s, w in settings if codec_registry.is_tensor_codec(s.codec)]
    # hevc is both: the picture at `input`, packed cut tensors at node splits
    picture_only = [(s, w) for s, w in images if not codec_registry.is_tensor_codec(s.codec)]
    if images and not any(m.remote for m in models) and (picture_only or not any(m.splits for m in models)):
        setting, where = (picture_only or images)[0]
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
    tensor_only = [(s, w) for s, w in tensors if s.codec != "none" and not codec_registry.is_image_codec(s.codec)]
    if tensor_only and not any(m.splits for m in models):
        setting, where = tensor_only[0]
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
    splits = _resolve_splits(spec, model, graph, key)
    return ModelPlan(
        spec=model,
        path=path,
        model_hash=sha256_file(path),
        num_nodes=graph.num_nodes,
        splits=splits,
        variants=_variants(spec, model, key),
        adapter_canonical=canonical_json({"type": model.adapter_type, **adapter.params()}),
        remote=INPUT in model.splits if isinstance(model.splits, list) else model.splits.input,
        feature_shapes=_feature_shapes(graph, splits),
    )


@dataclass(frozen=True)
class TaskBlock:
    """The tasks of one (model, variant): every image × every (split, codec setting) pair,
    image-major, so task ``start + i * len(pairs) + p`` is image i at pair p."""

    model: ModelPlan
    variant: VariantRef
    pairs: tuple[tuple[int, CodecSetting], ...]
    start: int
    n_images: int

    @property
    def size(self) -> int:
        return self.n_images * len(self.pairs)


def _pairs(m: ModelPlan, settings: Sequence[CodecSetting]) -> tuple[tuple[int, CodecSetting], ...]:
    """A model's (split, codec setting) pairs in plan order: unsplit, remote inference, node splits."""
    images = [c for c in settings if codec_registry.is_image_codec(c.codec)]
    tensors = [c for c in settings if codec_registry.is_tensor_codec(c.codec)]  # hevc is both
    pairs = [(NO_SPLIT, BASELINE)]
    pairs += [(INPUT_SPLIT, c) for c in images] if m.remote else []
    pairs += [(s, c) for s in m.splits for c in tensors]
    return tuple(pairs)


def _layout(groups: Iterable[tuple[ModelPlan, VariantRef, tuple]], n_images: int) -> tuple[TaskBlock, ...]:
    blocks, start = [], 0
    for m, v, pairs in groups:
        blocks.append(TaskBlock(m, v, tuple(pairs), start, n_images))
        start += blocks[-1].size
    return tuple(blocks)


# Per-task state codes of Plan.state (int8): what status and resume count.
REMAINING, OK, FAILED = 0, 1, 2


def _feature_shapes(graph: SplitGraph, splits: Sequence[int]) -> dict[int, tuple[tuple[str, tuple[int, ...]], ...]]:
    out = {}
    for split in splits:
        infos = [graph.info(name) for name in graph.cut(split).tensors]
        data = [i for i in infos if i.is_data]
        if data and all(i.is_static for i in data):
            out[split] = tuple((i.name, tuple(int(d) for d in i.shape)) for i in data)
    return out


def _check_frame_sizes(spec: Spec, models: Sequence[ModelPlan], settings: Sequence[tuple[CodecSetting, str]]) -> None:
    """hevc packs a cut into one frame: refuse up front a split whose known shapes make one HEVC cannot code."""
    from tasks.codecs.hevc import check_frame_size

    if not any(s.codec == "hevc" for s, _ in settings):
        return
    where = next(w for s, w in settings if s.codec == "hevc")
    for m in models:
        for split, shapes in m.feature_shapes.items():
            check_frame_size(shapes, file=spec.file, key=where, where=f"split {split} of model {m.name!r}")


@dataclass(frozen=True, eq=False)
class Plan:
    """Every task of a sweep in a deterministic order, and their grouping into work units.

    Tasks are kept as columns (task ids in one Arrow array, the rest derived from the
    blocks by index arithmetic), never as a Python object each: a million-task plan costs
    tens of MB. ``tasks`` makes Task objects for code that wants them on small plans.
    Frozen: a smaller plan is a new one (``subset``); only derived columns are cached.
    """

    spec: Spec
    dataset: Dataset
    records: tuple[ImageRecord, ...]
    models: tuple[ModelPlan, ...]
    settings: tuple[CodecSetting, ...]
    blocks: tuple[TaskBlock, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.blocks:
            object.__setattr__(self, "blocks", _layout(((m, v, _pairs(m, self.settings)) for m in self.models for v in m.variants),
                                  len(self.records)))  # fmt: skip

    # -- columns ------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return sum(b.size for b in self.blocks)

    def _cached(self, name: str, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def image_ids(self) -> np.ndarray:
        """The images' ids in plan order (int64)."""
        return self._cached("image_ids", lambda: np.array([r.image_id for r in self.records], dtype=np.int64))

    @property
    def id_words(self) -> np.ndarray:
        """Every task's id as its 128 bits, ``(size, 2)`` uint64 in plan order (``idkeys``):
        how the plan holds its ids; the text form is made from it where needed."""
        def make() -> np.ndarray:
            parts = [taskids.block_task_words(prefix, pairs, self.image_ids) for prefix, pairs in self._key_parts()]
            return np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.uint64)

        return self._cached("id_words", make)

    def _id_bytes(self) -> np.ndarray:
        return self._cached("id_bytes", lambda: idkeys.hex_ids(self.id_words))

    @property
    def task_ids(self) -> pa.Array:
        """Every task's id, in plan order (equal to ``task_id(...)`` of each task)."""
        return self._cached("task_ids", lambda: taskids.ids_to_arrow(self._id_bytes()))

    def _per_task(self, name: str, per_block) -> np.ndarray:
        """A per-task column built block by block: ``per_block(block) -> (n_images, n_pairs) array``."""
        def make() -> np.ndarray:
            parts = [np.broadcast_to(per_block(b), (b.n_images, len(b.pairs))).reshape(-1) for b in self.blocks]
            return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

        return self._cached(name, make)

    def image_index(self) -> np.ndarray:
        """Per task: the index of its image in ``records``."""
        return self._per_task("image_index", lambda b: np.arange(b.n_images, dtype=np.int32)[:, None])

    def _block_index(self) -> np.ndarray:
        index = {id(b): i for i, b in enumerate(self.blocks)}
        return self._per_task("block_index", lambda b: np.array([[index[id(b)]]], dtype=np.int32))

    def _setting_index(self) -> np.ndarray:
        index = {s: i for i, s in enumerate(self._all_settings())}
        return self._per_task("setting_index",
                              lambda b: np.array([index[c] for _, c in b.pairs], dtype=np.int32)[None, :])  # fmt: skip

    def _splits(self) -> np.ndarray:
        return self._per_task("splits", lambda b: np.array([s for s, _ in b.pairs], dtype=np.int32)[None, :])

    def _all_settings(self) -> list[CodecSetting]:
        out: list[CodecSetting] = []
        for b in self.blocks:
            out += [c for _, c in b.pairs if c not in out]
        return out

    def task(self, position: int) -> Task:
        """The task at a position of the plan, as an object."""
        starts = [b.start for b in self.blocks]
        b = self.blocks[bisect.bisect_right(starts, position) - 1]
        image, pair = divmod(position - b.start, len(b.pairs))
        split, setting = b.pairs[pair]
        return Task(idkeys.hex_ids(self.id_words[position : position + 1])[0].decode(), b.model.name, b.variant.label, split, setting,
                    self.records[image].image_id)  # fmt: skip

    @property
    def tasks(self) -> list[Task]:
        """Every task as an object: for small plans (tests, tools); the sweep itself uses columns."""
        return self._cached("tasks", lambda: [self.task(i) for i in range(self.size)])

    # -- sub-plans ----------------------------------------------------------------------
    def subset(self, *, images: Sequence[int] | None = None, model: str | None = None, variant: str | None = None,
               baseline_only: bool = False) -> Plan:
        """A smaller plan: only ``images`` (ids, in this plan's order), only one model /
        variant when named, only the unsplit tasks with ``baseline_only``."""
        records = self.records
        if images is not None:
            keep = set(images)
            records = tuple(r for r in self.records if r.image_id in keep)
        groups = ((b.model, b.variant, ((NO_SPLIT, BASELINE),) if baseline_only else b.pairs) for b in self.blocks
                  if model in (None, b.model.name) and variant in (None, b.variant.label))  # fmt: skip
        return Plan(self.spec, self.dataset, records, self.models, self.settings, _layout(groups, len(records)))

    def with_images(self, image_ids: Sequence[int]) -> Plan:
        return self.subset(images=image_ids)

    def baseline_only(self, *, model: str | None = None, variant: str | None = None) -> Plan:
        """The unsplit tasks only (of one model / variant when named)."""
        return self.subset(model=model, variant=variant, baseline_only=True)

    # -- state of the stored rows -------------------------------------------------------
    def state(self, stored: pa.Table | Mapping[str, str] | None = None) -> np.ndarray:
        """Per task: REMAINING, OK or FAILED from the stored rows' ``task_id`` and ``status``
        (one row per task: store.latest_rows), or from a task_id → status mapping."""
        state = np.zeros(self.size, dtype=np.int8)
        if stored is None:
            return state
        if isinstance(stored, Mapping):
            stored = pa.table({"task_id": pa.array(list(stored), pa.string()),
                               "status": pa.array(list(stored.values()), pa.string())})  # fmt: skip
        if stored.num_rows == 0:
            return state
        pos = idkeys.index_in(stored.column("task_id"), self.id_words)
        found = pos >= 0
        where = pos[found]
        ok = pc.fill_null(pc.equal(stored.column("status"), "ok"), False).to_numpy(zero_copy_only=False)[found]
        state[where] = np.where(ok, OK, FAILED)
        return state

    def resume(self, stored: pa.Table, *, image_hashes: Sequence[str | None] | None = None,
               retry_failed: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Masks over the plan's tasks: (not to run again, run again because the image changed).

        ``stored``: the latest row of each stored task (task_id, status, image_hash);
        ``image_hashes``: the content hash of each of ``records`` now. A stored task is
        reused unless it failed and ``retry_failed``, or it recorded another image hash.
        """
        done = np.zeros(self.size, dtype=bool)
        changed = np.zeros(self.size, dtype=bool)
        if stored.num_rows == 0:
            return done, changed
        pos = idkeys.index_in(stored.column("task_id"), self.id_words)
        found = pos >= 0
        stored = stored.filter(pa.array(found))
        where = pos[found]
        keep = np.ones(where.size, dtype=bool)
        if retry_failed:
            keep = pc.fill_null(pc.equal(stored.column("status"), "ok"), False).to_numpy(zero_copy_only=False)
        same = np.ones(where.size, dtype=bool)
        if image_hashes is not None:
            now = pa.array(list(image_hashes), pa.string()).take(pa.array(self.image_index()[where]))
            same = pc.fill_null(pc.equal(stored.column("image_hash"), now), False).to_numpy(zero_copy_only=False)
        done[where[keep & same]] = True
        changed[where[keep & ~same]] = True
        return done, changed

    def _state(self, done) -> np.ndarray:
        if done is None or isinstance(done, (Mapping, pa.Table)):
            return self.state(done)
        return np.asarray(done)

    def counts(self, done: np.ndarray | Mapping[str, str] | pa.Table | None = None) -> dict[str, int]:
        """Totals; ``done`` is a state array (Plan.state) or what Plan.state takes."""
        state = self._state(done)
        tally = np.bincount(state, minlength=3) if state.size else np.zeros(3, dtype=np.int64)
        return {
            "tasks": self.size,
            "units": sum(b.n_images for b in self.blocks),  # head runs: one per (model, variant, image)
            "ok": int(tally[OK]),
            "failed": int(tally[FAILED]),
            "remaining": int(tally[REMAINING]),
        }

    def config_counts(self, done: np.ndarray | Mapping[str, str] | pa.Table | None = None) -> list[dict[str, Any]]:
        """Per (model, variant, split, codec setting): tasks, ok, failed, remaining, in plan order."""
        state = self._state(done)
        out = []
        for b in self.blocks:
            block = state[b.start : b.start + b.size].reshape(b.n_images, len(b.pairs))
            tally = [(block == code).sum(axis=0) for code in (OK, FAILED, REMAINING)]
            for p, (split, setting) in enumerate(b.pairs):
                ok, failed, rem = (int(t[p]) for t in tally)
                out.append({"model": b.model.name, "variant": b.variant.label, "split": split, "setting": setting,
                            "tasks": ok + failed + rem, "ok": ok, "failed": failed, "remaining": rem})  # fmt: skip
        return out

    # -- work units ---------------------------------------------------------------------
    def units(self, *, skip: np.ndarray | Collection[str] = (), chunk_tasks: int = 64) -> list[WorkUnit]:
        """Remaining tasks grouped by head run, in plan order; long groups cut into chunks.

        ``skip`` is a boolean mask over the plan's tasks (or a collection of task ids).
        Chunks of one image stay adjacent so the scheduler can hand them to the worker
        that still holds that image's head outputs.
        """
        mask = self._skip_mask(skip) | self._sequence_mask()  # sequence tasks run in sequence units
        positions = np.flatnonzero(~mask)
        if not positions.size:
            return []
        n_records = len(self.records)
        group = self._block_index()[positions].astype(np.int64) * n_records + self.image_index()[positions]
        cuts = np.flatnonzero(np.diff(group)) + 1
        units = []
        for chunk in np.split(positions, cuts):
            b = self.blocks[int(self._block_index()[chunk[0]])]
            image_id = self.records[int(self.image_index()[chunk[0]])].image_id
            for i in range(0, chunk.size, chunk_tasks):
                units.append(WorkUnit(b.model.name, b.variant.label, image_id, chunk[i : i + chunk_tasks], self))
        return units

    def _skip_mask(self, skip: np.ndarray | Collection[str]) -> np.ndarray:
        if isinstance(skip, np.ndarray) and skip.dtype == bool:
            return skip
        if len(skip):
            return pc.is_in(self.task_ids, value_set=pa.array(list(skip), pa.string())).to_numpy(zero_copy_only=False)
        return np.zeros(self.size, dtype=bool)

    def _sequence_mask(self) -> np.ndarray:
        """Per task: whether its setting codes a video's frames together (``sequence: true``)."""
        sequence = np.array([is_sequence(c) for c in self._all_settings()], dtype=bool)
        return sequence[self._setting_index()] if self.size else np.zeros(0, dtype=bool)

    def sequence_units(self, *, skip: np.ndarray | Collection[str] = ()) -> list[SequenceUnit]:
        """Sequence units (``sequence: true`` settings) with a frame still to store, in plan order:
        one per (model, variant, split, setting), its frames in image order."""
        positions = np.flatnonzero(self._sequence_mask())
        if not positions.size:
            return []
        stored = self._skip_mask(skip)
        pair = (positions - np.array([self.blocks[b].start for b in self._block_index()[positions]])) % np.array(
            [len(self.blocks[b].pairs) for b in self._block_index()[positions]])
        key = self._block_index()[positions].astype(np.int64) * (1 << 20) + pair
        units = []
        for k in dict.fromkeys(key.tolist()):
            frames = positions[key == k]  # image-major blocks: already in image order
            todo = frames[~stored[frames]]
            if todo.size:
                tasks = [self.task(int(p)) for p in frames]
                units.append(SequenceUnit(tasks[0].model, tasks[0].variant, tasks[0].split, tasks[0].setting,
                                          tuple(tasks), tuple(self.task(int(p)) for p in todo)))
        return units

    def record(self, image_id: int) -> ImageRecord:
        return self._cached("records_by_id", lambda: {r.image_id: r for r in self.records})[image_id]

    def model(self, name: str) -> ModelPlan:
        return next(m for m in self.models if m.name == name)

    # -- plan.parquet -------------------------------------------------------------------
    def _key_parts(self) -> list[tuple[str, list[str]]]:
        """Per block: the key prefix and the (split, setting) parts (orchestrator.planning.taskids)."""
        return [
            (taskids.block_prefix(model_hash=b.model.model_hash, adapter=b.model.adapter_canonical,
                                  variant_name=b.variant.name, variant_canonical=b.variant.canonical),
             [taskids.pair_part(s, c.codec, c.canonical) for s, c in b.pairs])
            for b in self.blocks
        ]  # fmt: skip

    @property
    def digest(self) -> str:
        """A hash of everything the plan's ids and labels are made of, computed without the
        ids: equal digests mean an identical plan.parquet (not rewritten, and its task ids
        are reused instead of hashing a million keys again)."""
        def make() -> str:
            blocks = [[prefix, pairs, b.model.name, b.variant.label, [s for s, _ in b.pairs],
                       [c.codec for _, c in b.pairs], [c.qp for _, c in b.pairs]]
                      for (prefix, pairs), b in zip(self._key_parts(), self.blocks)]  # fmt: skip
            h = hashlib.sha256(json.dumps(blocks, separators=(",", ":")).encode())
            h.update(self.image_ids.tobytes())
            return h.hexdigest()

        return self._cached("digest", make)

    def adopt_ids(self, words: np.ndarray, digest: str) -> bool:
        """Take the task ids (``idkeys.id_words``) of a stored plan.parquet whose digest is
        this plan's (footer metadata ``PLAN_DIGEST_KEY``); False, and nothing taken, when
        it is another plan."""
        if digest != self.digest or words.shape != (self.size, 2) or words.dtype != np.uint64:
            return False
        self._cache["id_words"] = words
        return True

    def to_table(self) -> pa.Table:
        """plan.parquet: what `status` and the dashboard compare the stored rows with."""
        blocks, settings = self._block_index(), self._setting_index()
        all_settings = self._all_settings()

        def labels(index: np.ndarray, values: Sequence[Any], kind: pa.DataType | None = None) -> pa.Array:
            values = pa.array(values, kind or pa.string())
            return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), values).dictionary_decode()

        table = pa.table(
            {
                "task_id": self.task_ids,
                "model": labels(blocks, [b.model.name for b in self.blocks]),
                "variant": labels(blocks, [b.variant.label for b in self.blocks]),
                "split": pa.array(self._splits(), pa.int32()),
                "codec": labels(settings, [s.codec for s in all_settings]),
                "codec_params": labels(settings, [s.canonical for s in all_settings]),
                "qp": labels(settings, [s.qp for s in all_settings], pa.int32()),
                "image_id": pa.array(self.image_ids[self.image_index()], pa.int64()),
            }
        )
        return table.replace_schema_metadata({PLAN_DIGEST_KEY: self.digest})


def build_plan(spec: Spec, *, fetch_assets: bool = True, dataset: Dataset | None = None) -> Plan:
    """Everything `validate` and `plan` need; no Ray. Raises the first user error found."""
    written = _codec_settings(spec)
    settings = tuple(s for s, _ in written)
    models = tuple(plan_model(spec, m, i, fetch_assets=fetch_assets) for i, m in enumerate(spec.models))
    _check_split_kinds(spec, models, written)
    _check_frame_sizes(spec, models, written)
    if dataset is None:
        dataset = make_dataset(spec.dataset.config(spec.resolve), spec_file=spec.file)
    _check_sequences(spec, dataset, written)
    records = tuple(dataset.records())
    if not records:
        raise SpecError("the dataset has no images", file=spec.file, key="dataset")
    return Plan(spec, dataset, records, models, settings)


def _check_sequences(spec: Spec, dataset: Dataset, settings: Sequence[tuple[CodecSetting, str]]) -> None:
    """``sequence: true`` codes a video's frames together: only a video dataset has them."""
    for setting, where in settings:
        if is_sequence(setting) and not isinstance(dataset, VideoDataset):
            raise SpecError(
                f"codec {setting.codec!r} with sequence: true codes the frames of a video together, "
                f"but the dataset is not a video",
                file=spec.file,
                key=f"{where}.sequence",
                allowed="sequence: false, or dataset: {type: video, path: FILE}",
            )
