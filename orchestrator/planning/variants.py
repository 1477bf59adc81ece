"""Builds each model variant once per sweep (cached by content hash in the results store),
maps the sweep's split points onto each variant's nodes, and records what each costs."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import onnx
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.results.schema import SPLIT_TABLE, VARIANT_TABLE, VARIANTS_DIR
from tasks import detectors
from tasks import variants as variant_registry
from tasks.errors import SplitsweepError
from tasks.images import decode_image
from tasks.macs import count_macs, split_macs
from tasks.work import describe_error

__all__ = ["VariantBuild", "SplitMapping", "build_variants", "map_splits", "map_split_points", "VARIANT_TABLE", "SPLIT_TABLE"]



@dataclass
class VariantBuild:
    """A built variant: its ONNX bytes, how sweep split points map onto its nodes, its cost."""

    key: str
    model_bytes: bytes | None
    split_map: dict[int, int] = field(default_factory=dict)
    split_errors: dict[int, str] = field(default_factory=dict)  # sweep splits the variant cannot take, and why
    cost: dict[str, Any] = field(default_factory=dict)
    splits: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class _Pending:
    """One variant of one model on its way to a VariantBuild: a Ray build in flight
    (``ref``), or its bytes already at hand (fp32, or found in the store)."""

    model: Any  # plan.ModelPlan
    variant: Any  # plan.VariantRef
    base: onnx.ModelProto
    digest: str
    ref: Any = None
    data: bytes | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    """What a build task returns: the variant's ONNX bytes and cost info, or the error text."""

    model_bytes: bytes = b""
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


_SEARCH = 8  # how many fp32 nodes past a split to look for a tensor the variant kept


@dataclass(frozen=True)
class SplitMapping:
    """Sweep split points mapped onto one variant: its node index per split, or why none."""

    index: dict[int, int]
    errors: dict[int, str]


def map_splits(base: onnx.ModelProto, variant: onnx.ModelProto, splits: list[int]) -> dict[int, int]:
    """Sweep split k (a node index of the fp32 model) → the variant's node index (see map_split_points)."""
    return map_split_points(base, variant, splits).index


def map_split_points(base: onnx.ModelProto, variant: onnx.ModelProto, splits: list[int]) -> SplitMapping:
    """Sweep split k (a node index of the fp32 model) → the variant's node index, or the reason there is none.

    Variants keep tensor names but not node indices (fp16 adds Casts, QDQ adds hundreds
    of nodes, the quantizer re-sorts Constant nodes), so the cut follows a *tensor*: the
    newest tensor of the fp32 cut (the one produced last; a split at a Constant node,
    which exporters emit by the hundred, is the cut of the last computing node before
    it). Where a variant dropped that tensor (the quantizer folds a Clip into the op
    before it, renaming its output), the cut moves to the first of the next few fp32
    nodes whose tensor survives. Where that tensor's only reader in the variant is a
    QuantizeLinear, the cut moves after it: the device sends the 8-bit tensor, as a
    quantized deployment would. The result is checked against the variant's own split
    table: a split without a valid counterpart fails only its own tasks, with the reason.
    """
    base_graph = _split_graph(base)
    if variant is base:  # fp32: the sweep's own indices
        valid = set(base_graph.valid_splits()) if base_graph else set(splits)
        return SplitMapping({k: k for k in splits if k in valid},
                            {k: f"split {k} is not a valid split of the model" for k in splits if k not in valid})
    variant_graph = _split_graph(variant)
    producer = {out: i for i, node in enumerate(variant.graph.node) for out in node.output if out}
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(variant.graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(i)
    valid = set(variant_graph.valid_splits()) if variant_graph else set()
    index: dict[int, int] = {}
    errors: dict[int, str] = {}
    for k in splits:
        try:
            cut = base_graph.cut(k) if base_graph else None
        except SplitsweepError as exc:
            errors[k] = f"split {k} is not valid in the fp32 model: {exc}"
            continue
        base_producer = base_graph.producer_index if base_graph else {}
        anchor = max((base_producer[t] for t in cut.tensors if t in base_producer), default=k) if cut else k
        found: list[int] = []
        for j in range(anchor, min(anchor + _SEARCH, len(base.graph.node))):
            found = [producer[n] for n in base.graph.node[j].output if n and n in producer]
            if found:
                break
        if not found:
            errors[k] = (
                f"split {k}: the variant keeps none of the tensors of fp32 nodes {anchor}..{anchor + _SEARCH - 1}"
            )
            continue
        j = max(found)
        consumers = readers.get(variant.graph.node[j].output[0], [])
        if len(consumers) == 1 and variant.graph.node[consumers[0]].op_type == "QuantizeLinear":
            j = consumers[0]
        if variant_graph is not None and j not in valid:
            near = sorted(valid, key=lambda v: abs(v - j))[:3]
            errors[k] = (
                f"split {k} maps to variant node {j} ({variant.graph.node[j].op_type} "
                f"{variant.graph.node[j].name!r}), which is not a valid split there"
                + (f" (nearest valid: {', '.join(map(str, sorted(near)))})" if near else "")
            )
            continue
        index[k] = j
    return SplitMapping(index, errors)


def _split_graph(model: onnx.ModelProto):
    from tasks.graph import SplitGraph

    try:
        return SplitGraph(model)
    except SplitsweepError:
        return None


def build_variants(plan, store, *, out: TextIO) -> dict[str, VariantBuild]:
    """fp32 is the model file itself; the others are built as Ray tasks (in parallel, on
    the cluster's CPUs), or taken from the store when this content was built before."""
    import ray

    pending: dict[str, _Pending] = {}
    builds: dict[str, VariantBuild] = {}
    records = list(plan.records)
    for m in plan.models:
        data = Path(m.path).read_bytes()
        base = onnx.load_from_string(data)
        model_ref = None
        for v in m.variants:
            key = f"{m.name}/{v.label}"
            v_obj = variant_registry.variant(v.name, v.params)
            calib = v_obj.calibration_used([r.image_id for r in records]) if v_obj.uses_calibration else []
            digest = variant_registry.variant_key(data, v.name, v.params, calib)
            cached = f"{VARIANTS_DIR}/{digest}.onnx"
            meta_file = f"{VARIANTS_DIR}/{digest}.json"
            if v.name == "fp32":
                pending[key] = _Pending(m, v, base, digest, data=data)
                continue
            if store.exists(cached) and store.exists(meta_file):
                info = store.read_json(meta_file)
                pending[key] = _Pending(m, v, base, digest, data=store.read_bytes(cached), info=info)
                continue
            if model_ref is None:
                model_ref = ray.put(data)
            images = [plan.dataset.image_bytes(r) for r in records if r.image_id in set(calib)]
            out.write(f"variants: building {m.name} {v.label}" + (f" (calibration: {len(images)} images)" if images else "") + "\n")
            ref = _build_task().remote(model_ref, v.name, dict(v.params), m.spec.adapter_type, dict(m.spec.adapter_settings), images)
            pending[key] = _Pending(m, v, base, digest, ref=ref)
    for key, p in pending.items():
        data, info = p.data, p.info
        if p.ref is not None:
            result: BuildResult = ray.get(p.ref)
            if result.error is not None:
                cost = {"model": p.model.name, "variant": p.variant.label, "error": result.error}
                builds[key] = VariantBuild(key, None, error=result.error, cost=cost)
                out.write(f"variants: {key} failed: {result.error}\n")
                continue
            data, info = result.model_bytes, result.info
            store.write_bytes(f"{VARIANTS_DIR}/{p.digest}.onnx", data)
            store.write_json(f"{VARIANTS_DIR}/{p.digest}.json", info)
        assert data is not None
        builds[key] = _finish(key, p.model, p.variant, p.base, data, info, p.digest)
    _write_tables(store, builds)
    return builds


def _finish(key, m, v, base: onnx.ModelProto, data: bytes, info: dict, digest: str) -> VariantBuild:
    model = base if v.name == "fp32" else onnx.load_from_string(data)
    mapping = map_split_points(base, model, list(m.splits))
    split_map = mapping.index
    input_shapes = {k: tuple(s) for k, s in (m.spec.input_shapes or {}).items()} or None
    macs_note = None
    try:
        try:
            cost = count_macs(model, input_shapes=input_shapes)
        except SplitsweepError:  # an exporter graph: shapes behind an in-graph resize, measured on a sample
            from tasks.cutsizes import mac_shapes

            cost = count_macs(model, input_shapes=input_shapes,
                              known_shapes=mac_shapes(model, input_shapes=input_shapes))
            macs_note = "MACs counted with shapes measured on a synthetic input (data-dependent parts for that input)"
        macs = cost.total_macs
        per_split = {k: split_macs(cost, idx) for k, idx in split_map.items()}
    except SplitsweepError:
        macs, per_split = None, {}
    splits = [
        {"model": m.name, "variant": v.label, "split": k, "variant_split": split_map.get(k),
         "head_macs": per_split[k].head_macs if k in per_split else None,
         "tail_macs": per_split[k].tail_macs if k in per_split else None,
         "error": mapping.errors.get(k)}
        for k in m.splits
    ]
    row = {
        "model": m.name, "variant": v.label, "family": v.name, "settings": v.canonical, "key": digest,
        "file_bytes": info.get("file_bytes", len(data)),
        "transmission_bytes": info.get("transmission_bytes", len(_zlib(data))),
        "transmission": info.get("transmission", "zlib-6"),
        "params": info.get("params"), "nonzero_params": info.get("nonzero_params"),
        "macs": macs, "build_s": info.get("build_s", 0.0), "notes": "; ".join(info.get("notes", [])), "error": None,
    }
    if v.name == "fp32":
        from tasks.macs import count_params

        p = count_params(model)
        row.update(params=p.params, nonzero_params=p.nonzero_params)
    if macs_note:
        row["notes"] = "; ".join(filter(None, [row["notes"], macs_note]))
    if mapping.errors:
        row["notes"] = "; ".join(filter(None, [row["notes"], f"{len(mapping.errors)} split(s) without a counterpart"]))
    return VariantBuild(key, data, split_map, mapping.errors, row, splits)


def _zlib(data: bytes) -> bytes:
    import zlib

    return zlib.compress(data, 6)


def _write_tables(store, builds: dict[str, VariantBuild]) -> None:
    rows = [b.cost for b in builds.values()]
    split_rows = [s for b in builds.values() for s in b.splits]
    for relpath, table_rows in ((VARIANT_TABLE, rows), (SPLIT_TABLE, split_rows)):
        if not table_rows:
            continue
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(table_rows), buf)
        store.write_bytes(relpath, buf.getvalue())


def _build_one(
    model_bytes: bytes, name: str, settings: dict, adapter: str, adapter_settings: dict, images: list[bytes]
) -> BuildResult:
    """Runs on a Ray worker: the variant's bytes and cost info, or the error text."""
    try:
        v = variant_registry.variant(name, settings)
        calibration = None
        if images:
            ad = detectors.adapter(adapter, adapter_settings)
            calibration = [dict(ad.preprocess(decode_image(img, name=f"calibration image {i}")).feeds) for i, img in enumerate(images)]
        built = v.build(model_bytes, calibration=calibration)
    except Exception as exc:  # noqa: BLE001 - a variant that cannot be built fails alone
        return BuildResult(error=describe_error(exc))
    info = {
        "file_bytes": built.file_bytes, "transmission_bytes": built.transmission_bytes, "transmission": built.transmission,
        "params": built.params, "nonzero_params": built.nonzero_params, "macs": built.macs,
        "build_s": built.build_s, "notes": list(built.notes),
    }
    return BuildResult(built.model_bytes, info)


@functools.cache
def _build_task():
    """The Ray task, made on first use so that importing this module needs no Ray."""
    import ray

    return ray.remote(num_cpus=1)(_build_one)
