"""What the dashboard reads from a results location: a version of its inputs, and cached loads keyed by it."""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import streamlit as st

from orchestrator import build_report, open_results
from orchestrator.reporting.report import load_report
from orchestrator.results.reading import ResultsStore, StoreMeta, detections_by_row, latest_rows
from orchestrator.results.schema import (
    DEVICE_TABLE,
    GROUND_TRUTH_FILE,
    META_FILE,
    PLAN_FILE,
    REPORT_DIR,
    ROWS_DIR,
    SPEC_FILE,
    SPLIT_TABLE,
    VARIANT_TABLE,
    codec_label,
)
from orchestrator.results.status import sweep_status
from tasks.errors import ResultsError, SplitsweepError
from tasks.metrics import COCO_CATEGORIES
from tasks.rows import Detections

__all__ = [
    "Note",
    "Filters",
    "apply_filters",
    "results_version",
    "codec_label",
    "Configs",
    "read_configs",
    "load_configs",
    "Progress",
    "read_progress",
    "load_progress",
    "VariantTables",
    "read_variants",
    "load_variants",
    "read_meta",
    "ImageRows",
    "read_image_rows",
    "load_image_rows",
    "read_image_ids",
    "load_image_ids",
    "GroundTruth",
    "load_ground_truth",
    "LoadedImage",
    "read_image",
    "image_of",
    "load_image",
    "finite",
]

# Everything the report, the progress and the variant views are computed from. The
# report itself is not part of it: the dashboard rewrites it, and it is a function of these.
_VERSION_FILES = (META_FILE, SPEC_FILE, GROUND_TRUTH_FILE, PLAN_FILE, VARIANT_TABLE, SPLIT_TABLE, DEVICE_TABLE)
_PROGRESS_COLUMNS = ("task_id", "model", "variant", "split", "codec", "codec_params", "qp", "status", "error", "finished_at")
_IMAGE_COLUMNS = (
    "task_id", "finished_at", "status", "error", "variant", "split", "codec", "codec_params", "qp",
    "raw_bytes", "coded_bytes", "side_bytes", "feature_psnr", "head_s", "encode_s", "decode_s", "tail_s",
    "image_width", "image_height", "detections",
)  # fmt: skip


@dataclass(frozen=True)
class Note:
    """A message the dashboard shows instead of (or next to) a view: ``level`` is info, warning or error."""

    level: str
    text: str


@dataclass(frozen=True)
class Filters:
    """The sidebar's selection; ``None`` keeps everything. Rows without a QP pass any QP range."""

    models: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    splits: tuple[int, ...] | None = None
    codecs: tuple[str, ...] | None = None
    qp: tuple[int, int] | None = None


def apply_filters(df: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """The rows of ``df`` (a report or a progress frame) that the filters keep."""
    mask = np.ones(len(df), dtype=bool)
    for column, values in (
        ("model", filters.models),
        ("variant", filters.variants),
        ("split", filters.splits),
        ("codec", filters.codecs),
    ):
        if values is not None and column in df.columns:
            mask &= df[column].isin(list(values)).to_numpy()
    if filters.qp is not None and "qp" in df.columns:
        qp = pd.to_numeric(df["qp"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        lo, hi = filters.qp
        mask &= np.isnan(qp) | ((qp >= lo) & (qp <= hi))
    return df[mask]


# -- version -----------------------------------------------------------------------------


def results_version(location: str) -> str:
    """A short digest of the names, sizes and modification times of the part files and
    the small files the views read: it changes whenever the sweep writes anything."""
    store = ResultsStore(location)
    fs = store.filesystem
    infos = [store.path(name) for name in _VERSION_FILES]
    listing = []
    try:
        listing = fs.get_file_info(pafs.FileSelector(store.path(ROWS_DIR), allow_not_found=True))
        singles = fs.get_file_info(infos)
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"
    h = hashlib.sha1()
    for info in sorted((*listing, *singles), key=lambda i: i.path):
        if info.type == pafs.FileType.File and not info.base_name.startswith("."):
            h.update(f"{info.path}|{info.size}|{info.mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# -- configuration table (the report) ----------------------------------------------------


@dataclass(frozen=True, eq=False)
class Configs:
    """The per-configuration report, with a ``label`` and the head / tail MACs per split
    where the variants tables have them; ``table`` is None when there is none to show."""

    table: pd.DataFrame | None
    notes: tuple[Note, ...] = ()
    rescored: int = 0


def _writable(store: ResultsStore) -> bool:
    if not store.is_local:
        return True
    target = store.path(REPORT_DIR) if store.exists(REPORT_DIR) else store.path()
    return os.access(target, os.W_OK)


def read_configs(location: str, *, update: bool = True, include_all: bool = False) -> Configs:
    """The report of ``location``; with ``update`` it is first brought up to date with
    the stored rows (incrementally: only changed configurations are re-scored) and saved
    where the location is writable. Only the current plan's rows count unless
    ``include_all``. Never raises for what a results location can be missing: the notes
    say what is wrong."""
    from orchestrator.results.reading import plan_scope

    try:
        store = open_results(location)
        scope = None if include_all else plan_scope(store)
    except ResultsError as exc:
        return Configs(None, (Note("error", str(exc)),))
    task_ids = None if scope is None else scope.task_ids
    if not store.part_files():
        return Configs(None, (Note("info", "No task rows yet: the sweep has not stored any result here."),))
    notes: list[Note] = []
    if scope is not None and scope.line():
        notes.append(Note("info", scope.line().replace("--all", "start the dashboard with --all")))
    table = None
    rescored = 0
    if update:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                try:
                    result = build_report(location, save=_writable(store), task_ids=task_ids)
                except ResultsError as exc:
                    if "cannot be written" not in exc.message:
                        raise
                    result = build_report(location, save=False, task_ids=task_ids)
                table, rescored = result.table, result.rescored
                if rescored:
                    notes.append(Note("info", f"Report updated: {rescored} of {result.configs} configurations re-scored."))
            except ResultsError as exc:
                notes.append(Note("warning", f"The report could not be brought up to date: {exc}"))
        for message in dict.fromkeys(str(w.message) for w in caught):
            notes.append(Note("warning", message))
    if table is None:
        try:
            table = load_report(location)
            if update:
                notes.append(Note("warning", "Showing the stored report; rows stored after it are not in it."))
        except ResultsError as exc:
            notes.append(Note("error" if update else "info", f"{exc}"))
            return Configs(None, tuple(notes))
    return Configs(_enrich(table, store, store.meta.frame_rate), tuple(notes), rescored)


def _enrich(table: pd.DataFrame, store: ResultsStore | None = None, frame_rate: float | None = None) -> pd.DataFrame:
    """The report as the views draw it: a ``label``; the rate columns (kB, kbps for video)
    and ``delta_noise``; the device's cost per split (head-only latency, head parameters,
    head / tail MACs) where the store has it."""
    from orchestrator.execution.devicecost import device_table
    from orchestrator.reporting.report import with_rates

    table = table.drop(columns=[c for c in ("score_key", "delta_key") if c in table.columns]).copy()
    labels = {
        (c, p): codec_label(c, p) for c, p in table[["codec", "codec_params"]].drop_duplicates().itertuples(index=False)
    }
    table["label"] = [labels[(c, p)] for c, p in zip(table["codec"], table["codec_params"])]
    table["split"] = table["split"].astype("int64")
    table = with_rates(table, frame_rate)
    if store is not None:
        cost = device_table(store)
        extra = [c for c in cost.columns if c not in ("model", "variant", "split") and c not in table.columns]
        if len(cost) and extra:
            table = table.merge(cost[["model", "variant", "split", *extra]], on=["model", "variant", "split"], how="left")
    return table


@st.cache_data(show_spinner="Reading the report…", max_entries=16)
def load_configs(location: str, version: str, update: bool = True, include_all: bool = False) -> Configs:
    """:func:`read_configs`, cached per results ``version`` (part of the cache key only)."""
    return read_configs(location, update=update, include_all=include_all)


# -- progress ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Progress:
    """Where a sweep stands. ``rows``: the latest row of every stored task (model, variant,
    split, codec, codec_params, qp, status, error, finished_at); ``plan``: sweep_status's
    planned / ok / failed / remaining per (model, variant, split, codec setting), or None
    without a plan.parquet."""

    rows: pd.DataFrame
    plan: pd.DataFrame | None
    notes: tuple[Note, ...] = ()
    meta: StoreMeta | None = None


def read_meta(location: str) -> tuple[StoreMeta | None, Note | None]:
    try:
        return open_results(location).meta, None
    except ResultsError as exc:
        return None, Note("error", str(exc))


def read_progress(location: str) -> Progress:
    notes: list[Note] = []
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in _PROGRESS_COLUMNS if c != "task_id"})
    meta, note = read_meta(location)
    if meta is None:
        return Progress(empty, None, (note,) if note else ())
    store = ResultsStore(location)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = latest_rows(store.read_rows(_PROGRESS_COLUMNS))
    notes += [Note("warning", str(w.message)) for w in caught]
    rows = table.drop_columns(["task_id"]).to_pandas()
    rows["split"] = rows["split"].astype("int64")
    for column in ("model", "variant", "codec", "codec_params", "status", "error"):
        rows[column] = rows[column].astype("category")
    plan = None
    if store.exists(PLAN_FILE):
        try:
            status = sweep_status(location)
            plan = _plan_frame(status.rows)
        except ResultsError as exc:
            notes.append(Note("warning", f"Remaining tasks unknown: {exc}"))
        except (OSError, pa.ArrowException) as exc:
            notes.append(Note("warning", f"{PLAN_FILE} unreadable, remaining tasks unknown: {exc}"))
    else:
        notes.append(
            Note("info", f"No {PLAN_FILE} in this location (not written by `splitsweep run`): remaining tasks unknown.")
        )
    return Progress(rows, plan, tuple(notes), meta)


def _plan_frame(status_rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    columns = ["model", "variant", "split", "codec", "codec_params", "label", "qp", "tasks", "ok", "failed", "remaining"]
    out = [{**r, "codec": r["codec_name"], "label": r["codec"]} for r in status_rows]
    frame = pd.DataFrame(out, columns=columns)
    frame["split"] = frame["split"].astype("int64")
    frame["qp"] = pd.to_numeric(frame["qp"], errors="coerce").astype("Float64")
    return frame


@st.cache_data(show_spinner="Reading the sweep's progress…", max_entries=16)
def load_progress(location: str, version: str) -> Progress:
    """:func:`read_progress`, cached per results ``version`` (part of the cache key only)."""
    return read_progress(location)


# -- variants ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VariantTables:
    """RESULTS/variants/variants.parquet and splits.parquet, None where absent."""

    variants: pd.DataFrame | None
    splits: pd.DataFrame | None
    notes: tuple[Note, ...] = ()


def _read_parquet(store: ResultsStore, relpath: str) -> tuple[pd.DataFrame | None, Note | None]:
    try:
        return pq.read_table(io.BytesIO(store.read_bytes(relpath))).to_pandas(), None
    except FileNotFoundError:
        return None, None
    except (OSError, pa.ArrowException) as exc:
        return None, Note("warning", f"{store.path(relpath)} unreadable: {exc}")


def read_variants(location: str) -> VariantTables:
    store = ResultsStore(location)
    variants, n1 = _read_parquet(store, VARIANT_TABLE)
    splits, n2 = _read_parquet(store, SPLIT_TABLE)
    notes = [n for n in (n1, n2) if n is not None]
    if variants is None and n1 is None:
        notes.append(
            Note("info", f"No {VARIANT_TABLE} here (not written by a sweep with variants): sizes and MACs unknown.")
        )
    return VariantTables(variants, splits, tuple(notes))


@st.cache_data(show_spinner=False, max_entries=16)
def load_variants(location: str, version: str) -> VariantTables:
    return read_variants(location)


# -- one image ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageRows:
    """The latest row of one image in each wanted configuration of one model, keyed by
    (variant, split, codec, codec_params); ``detections`` decoded."""

    rows: dict[tuple[str, int, str, str], dict[str, Any]]

    def get(self, variant: str, split: int, codec: str, codec_params: str) -> dict[str, Any] | None:
        return self.rows.get((variant, int(split), codec, codec_params))


def read_image_rows(
    location: str, *, model: str, image_id: int, configs: Sequence[tuple[str, int, str, str]]
) -> ImageRows:
    """Rows of ``image_id`` of ``model`` in ``configs`` ((variant, split, codec, codec_params)
    each): a pyarrow filter pushed down to Parquet, so only this image's rows are decoded."""
    store = ResultsStore(location)
    wanted = {(v, int(s), c, p) for v, s, c, p in configs}
    if not wanted:
        return ImageRows({})
    filt = (pc.field("image_id") == int(image_id)) & (pc.field("model") == model)
    filt = filt & pc.field("variant").isin(sorted({w[0] for w in wanted}))
    filt = filt & pc.field("split").isin(sorted({w[1] for w in wanted}))
    table = latest_rows(store.read_rows(_IMAGE_COLUMNS, filter=filt))
    dets = detections_by_row(table.column("detections"))
    out: dict[tuple[str, int, str, str], dict[str, Any]] = {}
    plain = table.drop_columns(["detections"]).to_pylist()
    for row, d in zip(plain, dets):
        key = (row["variant"], int(row["split"]), row["codec"], row["codec_params"])
        if key in wanted:
            out[key] = {**row, "detections": d}
    return ImageRows(out)


@st.cache_data(show_spinner=False, max_entries=64)
def load_image_rows(
    location: str, version: str, model: str, image_id: int, configs: tuple[tuple[str, int, str, str], ...]
) -> ImageRows:
    return read_image_rows(location, model=model, image_id=image_id, configs=configs)


def read_image_ids(location: str, *, model: str, variant: str, split: int, codec: str, codec_params: str) -> np.ndarray:
    """Sorted image ids stored for one configuration."""
    store = ResultsStore(location)
    filt = (
        (pc.field("model") == model)
        & (pc.field("variant") == variant)
        & (pc.field("split") == int(split))
        & (pc.field("codec") == codec)
        & (pc.field("codec_params") == codec_params)
    )
    table = store.read_rows(["image_id"], filter=filt)
    return np.unique(table.column("image_id").to_numpy())


@st.cache_data(show_spinner=False, max_entries=64)
def load_image_ids(
    location: str, version: str, model: str, variant: str, split: int, codec: str, codec_params: str
) -> np.ndarray:
    return read_image_ids(location, model=model, variant=variant, split=split, codec=codec, codec_params=codec_params)


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """ground_truth.json indexed by image: boxes per image id, image sizes, category names."""

    boxes: dict[int, Detections]
    sizes: dict[int, tuple[int, int]]
    categories: dict[int, str]
    note: Note | None = None
    file_names: dict[int, str] = field(default_factory=dict)


def read_ground_truth(location: str) -> GroundTruth:
    store = ResultsStore(location)
    # Reference evaluation has no ground-truth file; its detections still carry COCO ids.
    coco_names = {c.id: c.name for c in COCO_CATEGORIES}
    if not store.exists(GROUND_TRUTH_FILE):
        return GroundTruth({}, {}, coco_names, Note("info", "No ground_truth.json here (reference evaluation)."))
    try:
        gt = store.load_ground_truth()
    except ResultsError as exc:
        return GroundTruth({}, {}, {}, Note("warning", str(exc)))
    per_image: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        per_image.setdefault(int(ann["image_id"]), []).append(ann)
    boxes = {
        i: Detections(
            np.array([a["bbox"] for a in anns], np.float32),
            np.ones(len(anns), np.float32),
            np.array([a["category_id"] for a in anns], np.int32),
        )
        for i, anns in per_image.items()
    }
    sizes = {int(img["id"]): (int(img.get("width", 0)), int(img.get("height", 0))) for img in gt["images"]}
    categories = {**coco_names, **{int(c["id"]): str(c.get("name", c["id"])) for c in gt.get("categories", [])}}
    file_names = {int(img["id"]): str(img.get("file_name", "")) for img in gt["images"] if img.get("file_name")}
    return GroundTruth(boxes, sizes, categories, file_names=file_names)


@st.cache_resource(show_spinner="Reading the ground truth…", max_entries=4)
def load_ground_truth(location: str, version: str) -> GroundTruth:
    """Shared, read-only: a COCO ground truth of many images is too big to copy per run."""
    return read_ground_truth(location)


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image as RGB uint8, or None with the reason in ``note``."""

    rgb: np.ndarray | None
    note: str | None = None
    source: str | None = None


@st.cache_resource(show_spinner="Opening the dataset…", max_entries=4)
def _dataset_index(location: str, spec_text: str) -> tuple[Any, dict[int, Any]] | str:
    """(dataset, image id → record) of the dataset in RESULTS/spec.yaml, or why not."""
    try:
        from orchestrator.data.datasets import make_dataset
        from orchestrator.planning.spec import parse_spec
    except ImportError as exc:
        return f"this splitsweep cannot read datasets ({exc})"
    store = ResultsStore(location)
    try:
        # The sweep records its dataset with paths already resolved against the spec
        # file's folder; spec.yaml alone would resolve them against the results location.
        config = (store.read_json(META_FILE) or {}).get("dataset")
        if config is None:
            spec = parse_spec(spec_text, file=store.path(SPEC_FILE))
            config = spec.dataset.config(spec.resolve)
        dataset = make_dataset(config, spec_file=store.path(SPEC_FILE))
        return dataset, {int(r.image_id): r for r in dataset.records()}
    except (SplitsweepError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def read_image(location: str, image_id: int) -> LoadedImage:
    """The image ``image_id`` of the dataset named in RESULTS/spec.yaml, decoded to RGB."""
    store = ResultsStore(location)
    try:
        spec_text = store.read_bytes(SPEC_FILE).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return LoadedImage(None, "no spec.yaml in the results location: the dataset is unknown")
    index = _dataset_index(location, spec_text)
    if isinstance(index, str):
        return LoadedImage(None, f"the dataset of spec.yaml cannot be opened: {index}")
    return image_of(*index, image_id)


def image_of(dataset: Any, records: dict[int, Any], image_id: int) -> LoadedImage:
    """Decode ``image_id`` of an opened dataset (``image_bytes(record)``) to RGB uint8."""
    from PIL import Image, UnidentifiedImageError

    record = records.get(int(image_id))
    if record is None:
        return LoadedImage(None, f"image {image_id} is not in the dataset of spec.yaml")
    try:
        data = dataset.image_bytes(record)
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (SplitsweepError, OSError, ValueError, UnidentifiedImageError) as exc:
        return LoadedImage(None, f"image {image_id} cannot be read: {type(exc).__name__}: {exc}")
    return LoadedImage(rgb, None, str(getattr(record, "file_name", "")) or None)


@st.cache_data(show_spinner=False, max_entries=32)
def load_image(location: str, version: str, image_id: int) -> LoadedImage:
    return read_image(location, image_id)


def finite(value: Any) -> float | None:
    """A float, or None for null / NaN (for display)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f

