"""Per-configuration report of a results store (COCO AP, bytes, bpp, ratio, timings), rebuilt incrementally.

One row per configuration (model, variant, split, codec, codec_params), stored as
``RESULTS/report/configs.parquet``. Columns, in order:

    model, variant, split, codec, codec_params, setting, qp
    n_images        ok rows (after re-runs are resolved: the latest row of a task wins)
    n_failed        tasks whose latest row failed
    ap, ap50, ap75, ap_small, ap_medium, ap_large, ar100
                    COCO AP in AP points (0–100) on exactly the images this configuration
                    finished (those also in the ground truth: n_scored)
    miou            fidelity in points (0–100): mean over ground-truth boxes of the best IoU
                    of a same-class detection scoring ≥ the store's reference score
                    threshold (0.5 in ground-truth evaluation; 0 for a missed box; tasks.metrics.matched_iou). In reference
                    evaluation the uncompressed model scores 100 and AP saturates near it;
                    miou keeps resolving, so it is the BD metric there
    n_scored        images scored
    raw_bytes, float32_bytes, coded_bytes, side_bytes
                    mean per image; raw = the cut tensors as the model produced them
                    (float16 in an fp16 variant, 8-bit after a QuantizeLinear);
                    float32_bytes = the same elements at 4 bytes each
    bpp             mean over images of 8 × coded_bytes / (width × height)
    ratio           float32 / coded (NaN where nothing was coded): the compression against
                    float32, so variants that already shrink the cut show it
    saving          1 − coded / float32, a fraction (the seed study's "compression ratio %")
    feature_psnr, head_s, encode_s, decode_s, tail_s   means
    ap_uncompressed the unsplit, uncoded model's AP (split −1, codec none, same model and
                    variant) on the images both finished
    delta_ap        this configuration's AP minus ap_uncompressed, on those same images
    n_common        how many images that comparison used
    ap_low, ap_high, ap50_low, ap50_high, miou_low, miou_high
                    95% bootstrap interval over the configuration's images (orchestrator.reporting.intervals:
                    per-image COCO matching once, re-accumulated on 1,000 seeded resamples)
    delta_ap_low, delta_ap_high
                    95% paired bootstrap interval of delta_ap: the configuration and its
                    baseline re-scored on the same resampled common images; an interval
                    holding 0 means the difference is inside the noise of these images
    score_key, delta_key   fingerprints deciding what must be re-scored next time

Incremental: a configuration's rows are fingerprinted (count, latest finish, XOR of a
hash of every (task_id, finished_at)); only configurations whose fingerprint (or ground
truth) changed are re-scored, and the detections column is read only for them.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from orchestrator.data.datasets import ImageRecord
from orchestrator.reporting import fastcoco
from orchestrator.reporting.fastcoco import FlatDetections
from orchestrator.reporting.intervals import (
    ImageEvaluation,
    evaluate_images,
    interval_from_resamples,
    paired_delta,
    resample_counts,
)
from orchestrator.results.reading import ResultsStore, detection_arrays, latest_rows, open_results, row_keys
from orchestrator.results.schema import (
    BASELINE_CODEC,
    BASELINE_SPLIT,
    CONFIG_KEY,
    GROUND_TRUTH_FILE,
    REPORT_FILE,
    ROWS_DIR,
    SCHEMA_VERSION,
    setting_label,
)
from tasks.errors import ResultsError
from tasks.metrics import GroundTruth, reference_ground_truth
from tasks.rows import Detections

__all__ = ["REPORT_FILE", "REPORT_COLUMNS", "MPEG_COLUMNS", "CSV_FLOAT_FORMAT", "mpeg_columns", "ReportResult",
           "ReportWarning", "build_report", "load_report", "with_kbps", "with_rates"]

# Bump when scoring changes meaning: stored scores of an older format are recomputed.
REPORT_FORMAT = 5  # 2: ratio and saving against float32_bytes; 3: miou; 4: bootstrap intervals;
# 5: intervals from exact (float64) resampled accumulation and resamples drawn as image indices
REFERENCE_VARIANT = "fp32"
MIOU_THRESHOLD = 0.5  # miou's detection threshold in ground-truth evaluation (the reference default)

METRIC_COLUMNS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")
INTERVAL_METRICS = ("ap", "ap50", "miou")
INTERVAL_COLUMNS = tuple(f"{m}_{end}" for m in INTERVAL_METRICS for end in ("low", "high"))
DELTA_INTERVAL_COLUMNS = ("delta_ap_low", "delta_ap_high")
REPORT_COLUMNS = (
    *CONFIG_KEY, "setting", "qp", "n_images", "n_failed", *METRIC_COLUMNS, "miou", "n_scored",
    "raw_bytes", "float32_bytes", "coded_bytes", "side_bytes", "bpp", "ratio", "saving",
    "feature_psnr", "head_s", "encode_s", "decode_s", "tail_s",
    "ap_uncompressed", "delta_ap", "n_common", *INTERVAL_COLUMNS, *DELTA_INTERVAL_COLUMNS, "score_key", "delta_key",
)  # fmt: skip
# Columns that only scoring computes: carried over from the stored report when still valid.
_SCORED_COLUMNS = (
    *METRIC_COLUMNS, "miou", "n_scored", "ap_uncompressed", "delta_ap", "n_common", *INTERVAL_COLUMNS,
    *DELTA_INTERVAL_COLUMNS,
)  # fmt: skip
_MEAN_COLUMNS = (
    "raw_bytes", "float32_bytes", "coded_bytes", "side_bytes", "bpp", "feature_psnr", "head_s", "encode_s", "decode_s", "tail_s",
)  # fmt: skip
# Everything but the detections: enough for every column except AP, and for the fingerprints.
_LIGHT_COLUMNS = (
    "task_id", *CONFIG_KEY, "qp", "image_id", "raw_bytes", "float32_bytes", "coded_bytes", "side_bytes", "feature_psnr",
    "head_s", "encode_s", "decode_s", "tail_s", "image_width", "image_height", "status", "finished_at",
)  # fmt: skip


class ReportWarning(UserWarning):
    """Something in the store makes a number less complete than it looks (e.g. images
    without ground truth, a model without a reference); the report still builds."""


@dataclass(frozen=True, eq=False)
class ReportResult:
    """The configuration table and what this build had to recompute."""

    table: pd.DataFrame
    rescored: int  # configurations whose AP was scored in this build
    delta_rescored: int  # configurations whose delta AP was recomputed (own rows or baseline changed)
    configs: int
    path: str | None  # where the table was saved
    skipped_parts: tuple[str, ...]  # damaged part files left out


# CSV header: the columns MPEG feature-coding reports lead with, then everything else.
MPEG_COLUMNS: dict[str, str] = {
    "model": "model",
    "variant": "variant",
    "split": "split",
    "codec": "codec",
    "qp": "qp",
    "coded_bytes": "bytes",
    "bpp": "bpp",
    "kbps": "kbps",  # video sweeps only: at the video's frame rate
    "ratio": "ratio",
    "ap": "AP",
    "ap50": "AP50",
    "ap_low": "AP_low",  # 95% bootstrap interval over the images (orchestrator.reporting.intervals)
    "ap_high": "AP_high",
    "kB": "kB",  # coded kilobytes (1000 bytes) per image
    "ap50_low": "AP50_low",
    "ap50_high": "AP50_high",
    "ap75": "AP75",
    "ap_small": "APs",
    "ap_medium": "APm",
    "ap_large": "APl",
    "ar100": "AR100",
    "miou": "mIoU",
    "miou_low": "mIoU_low",
    "miou_high": "mIoU_high",
    "delta_ap": "delta_AP",
    "delta_ap_low": "delta_AP_low",  # paired 95% interval against the uncompressed model
    "delta_ap_high": "delta_AP_high",
    "delta_noise": "delta_within_noise",
    "ap_uncompressed": "AP_uncompressed",
    "saving": "saving",
    "raw_bytes": "raw_bytes",
    "side_bytes": "side_bytes",
    "setting": "setting",
    "codec_params": "codec_params",
    "n_images": "n_images",
    "n_failed": "n_failed",
    "n_scored": "n_scored",
    "n_common": "n_common",
    "feature_psnr": "feature_psnr",
    "head_s": "head_s",
    "encode_s": "encode_s",
    "decode_s": "decode_s",
    "tail_s": "tail_s",
    "front_bytes_ap": "pareto",
    "front_noise": "pareto_gain_within_noise",
    "head_only_s": "head_only_s",  # the head model alone, median over a few images (orchestrator.execution.devicecost)
    "head_params": "head_params",
    "head_macs": "head_macs",
    "tail_macs": "tail_macs",
}
# CSV numbers: ten significant digits, so sums of floats print as 100, not 99.99999999999997.
CSV_FLOAT_FORMAT = "%.10g"


def mpeg_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The configuration table with MPEG-style column names and order (for CSV)."""
    present = [c for c in MPEG_COLUMNS if c in table.columns]
    return table[present].rename(columns=MPEG_COLUMNS)



_NO_DETECTIONS = FlatDetections.empty()


def _score_with_intervals(
    gt: GroundTruth, dets: FlatDetections, image_ids: np.ndarray, miou_threshold: float
) -> tuple[ImageEvaluation, dict[str, tuple[float, float]], np.ndarray]:
    """One configuration's COCO stats and mIoU (``evaluation.coco``, ``.miou``: one compiled
    pass, orchestrator.reporting.fastcoco), its bootstrap intervals, and AP on each
    resample (kept: a paired ΔAP on the same images reuses it). One picklable call, for
    the process pool."""
    evaluation = evaluate_images(gt, dets, image_ids, miou_threshold=miou_threshold)
    n = len(evaluation.image_ids)
    if not n:
        return evaluation, {}, np.zeros(0)
    values = evaluation.metrics(resample_counts(n), INTERVAL_METRICS)
    coco = evaluation.coco
    estimates = {"ap": 100.0 * coco.ap, "ap50": 100.0 * coco.ap50, "miou": 100.0 * evaluation.miou}
    intervals = {m: interval_from_resamples(estimates[m], values[m], n_images=n) for m in INTERVAL_METRICS}
    return evaluation, {m: (iv.low, iv.high) for m, iv in intervals.items()}, values["ap"]


def _digest(*parts: object) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _aggregate(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """Cheap per-configuration columns and each configuration's finished image ids."""
    rows["cfg"] = rows.groupby(list(CONFIG_KEY), sort=False, dropna=False).ngroup()
    configs = rows.groupby("cfg", sort=True)[list(CONFIG_KEY)].first()
    configs["qp"] = rows.groupby("cfg")["qp"].max().astype("Int32")
    is_ok = (rows["status"] == "ok").to_numpy()
    ok = rows[is_ok]
    configs["n_images"] = ok.groupby("cfg").size().reindex(configs.index, fill_value=0)
    configs["n_failed"] = rows[~is_ok].groupby("cfg").size().reindex(configs.index, fill_value=0)

    pixels = ok["image_width"].astype("float64") * ok["image_height"].astype("float64")
    ok = ok.assign(bpp=(8.0 * ok["coded_bytes"].astype("float64") / pixels.where(pixels > 0)))
    grouped = ok.groupby("cfg")
    for column in _MEAN_COLUMNS:
        configs[column] = grouped[column].mean().reindex(configs.index).astype("float64")
    # Against float32; rows written before float32_bytes existed fall back to raw_bytes.
    reference = configs["float32_bytes"].fillna(configs["raw_bytes"])
    coded = configs["coded_bytes"]
    configs["ratio"] = (reference / coded.where(coded > 0)).astype("float64")
    configs["saving"] = (1.0 - coded / reference.where(reference > 0)).astype("float64")

    # Fingerprint of exactly the rows that scoring reads: count, latest finish, XOR of row keys.
    order = np.argsort(ok["cfg"].to_numpy(), kind="stable")
    cfg_sorted = ok["cfg"].to_numpy()[order]
    keys_sorted = ok["row_key"].to_numpy()[order]
    finished_sorted = ok["finished_ms"].to_numpy()[order]
    starts = np.flatnonzero(np.r_[True, cfg_sorted[1:] != cfg_sorted[:-1]]) if len(cfg_sorted) else np.array([], int)
    fingerprint = pd.Series("empty", index=configs.index, dtype=object)
    if len(starts):
        xors = np.bitwise_xor.reduceat(keys_sorted, starts)
        latest = np.maximum.reduceat(finished_sorted, starts)
        counts = np.diff(np.r_[starts, len(cfg_sorted)])
        fingerprint.loc[cfg_sorted[starts]] = [
            f"{n}:{int(x):016x}:{int(t)}" for n, x, t in zip(counts, xors, latest)
        ]
    configs["rows_fingerprint"] = fingerprint

    image_sets = {
        int(c): np.unique(ids)
        for c, ids in zip(cfg_sorted[starts], np.split(ok["image_id"].to_numpy()[order], starts[1:]))
    } if len(starts) else {}
    configs["setting"] = [setting_label(c, p) for c, p in zip(configs["codec"], configs["codec_params"])]
    return configs, image_sets


def _load_previous(store: ResultsStore, relpath: str, *, force: bool) -> pd.DataFrame | None:
    if force or not store.exists(relpath):
        return None
    try:
        table = pq.read_table(io.BytesIO(store.read_bytes(relpath)))
    except (OSError, pa.ArrowException) as exc:
        warnings.warn(f"{store.path(relpath)}: stored report unreadable, rebuilding it: {exc}", ReportWarning, stacklevel=3)
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"splitsweep.report_format") != str(REPORT_FORMAT).encode():
        return None
    previous = table.to_pandas()
    if not set(REPORT_COLUMNS) <= set(previous.columns):
        return None
    return previous.set_index(list(CONFIG_KEY))


def _save(table: pd.DataFrame, store: ResultsStore, relpath: str) -> None:
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata(
        {"splitsweep.report_format": str(REPORT_FORMAT), "splitsweep.schema_version": str(SCHEMA_VERSION)}
    )
    buf = io.BytesIO()
    pq.write_table(arrow, buf)
    try:
        store.write_bytes(relpath, buf.getvalue())  # readers see the old table or the new one, never half
    except OSError as exc:
        raise ResultsError(f"report cannot be written: {exc}", file=store.path(relpath)) from None


def _config_filter(configs: pd.DataFrame) -> ds.Expression:
    expr = None
    for row in configs[list(CONFIG_KEY)].itertuples(index=False):
        term = None
        for name, value in zip(CONFIG_KEY, row):
            part = pc.field(name) == (int(value) if name == "split" else value)
            term = part if term is None else term & part
        expr = term if expr is None else expr | term
    return expr


def _read_detections(
    store: ResultsStore, configs: pd.DataFrame, wanted: Sequence[int], ok: pd.DataFrame
) -> dict[int, FlatDetections]:
    """Detections of the winning ok rows of the ``wanted`` configurations, as flat arrays."""
    if not wanted:
        return {}
    filt = pc.field("status") == "ok"
    if len(wanted) < len(configs):
        filt = filt & _config_filter(configs.loc[list(wanted)])
    table = store.read_rows(("task_id", "finished_at", "image_id", "detections"), filter=filt)
    winners = pd.Index(ok["row_key"].to_numpy())
    position = winners.get_indexer(row_keys(table))
    # A row written twice with the same finish time counts once.
    hit = np.flatnonzero(position >= 0)
    _, first = np.unique(position[hit], return_index=True)
    hit = hit[first]
    cfg = ok["cfg"].to_numpy()[position[hit]]
    keep = np.isin(cfg, np.asarray(list(wanted)))
    hit, cfg = hit[keep], cfg[keep]
    order = np.argsort(cfg, kind="stable")
    hit, cfg = hit[order], cfg[order]
    picked = table.take(pa.array(hit, pa.int64()))
    lengths, boxes, scores, cats = detection_arrays(picked.column("detections"))
    image_ids = np.repeat(picked.column("image_id").to_numpy().astype(np.int64), lengths)
    det_cfg = np.repeat(cfg, lengths)
    out: dict[int, FlatDetections] = {}
    for c in wanted:
        a, b = np.searchsorted(det_cfg, [c, c + 1])
        out[int(c)] = FlatDetections(image_ids[a:b], boxes[a:b], scores[a:b], cats[a:b])
    return out


def _reference_ground_truth(
    dets_by_image: Mapping[int, Detections], sizes: Mapping[int, tuple[int, int]], threshold: float
) -> GroundTruth:
    """The reference model's detections scoring ≥ threshold as ground truth, indexed once."""
    records = [ImageRecord(int(i), "", int(w), int(h)) for i, (w, h) in sorted(sizes.items())]
    return GroundTruth.from_dict(reference_ground_truth(dets_by_image, records, score_threshold=threshold))


def _baseline_ids(configs: pd.DataFrame) -> dict[tuple[str, str], int]:
    """(model, variant) → the configuration id of its unsplit, uncoded run."""
    base = configs[(configs["split"] == BASELINE_SPLIT) & (configs["codec"] == BASELINE_CODEC)]
    out: dict[tuple[str, str], int] = {}
    for cfg, model, variant in zip(base.index, base["model"], base["variant"]):
        out.setdefault((model, variant), int(cfg))
    return out


def build_report(
    results_dir: str | os.PathLike[str], *, force: bool = False, save: bool = True, workers: int = 1,
    task_ids: Iterable[str] | None = None,
) -> ReportResult:
    """Build (or bring up to date) the per-configuration table of a results directory.

    Only configurations whose rows or ground truth changed since the stored report are
    re-scored (all of them with ``force``); ``workers`` > 1 scores them in that many
    processes (each then runs the bootstrap kernel on one thread; with 1, the kernel's
    threads use every CPU). With
    ``save`` the table is written to ``RESULTS/report/configs.parquet`` atomically.
    ``task_ids`` keeps only those tasks' rows (the current plan: results.plan_scope).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    store = open_results(results_dir)
    light = store.read_rows(_LIGHT_COLUMNS)
    if light.num_rows == 0:
        raise ResultsError("no task rows in this results directory", file=store.path(ROWS_DIR))
    light = latest_rows(light)
    if task_ids is not None:
        light = light.filter(pc.is_in(light["task_id"], value_set=pa.array(list(task_ids), pa.string())))
        if light.num_rows == 0:
            raise ResultsError("no stored rows belong to the current plan (--all to report every stored row)",
                               file=store.path(ROWS_DIR))
    rows = light.drop_columns(["task_id"]).to_pandas()
    rows["row_key"] = row_keys(light)
    rows["finished_ms"] = pc.cast(light.column("finished_at"), pa.int64()).fill_null(0).to_numpy()
    configs, image_sets = _aggregate(rows)
    job = _Rescore(store, configs, image_sets, rows[(rows["status"] == "ok").to_numpy()])

    report_path = REPORT_FILE
    ap_ids, delta_ids = job.carry_over(_load_previous(store, report_path, force=force))
    job.read(ap_ids, delta_ids)
    job.score(ap_ids, workers=workers)
    job.compare_all(delta_ids)

    table = _finish(configs)
    if save:
        _save(table, store, report_path)
    return ReportResult(
        table=table,
        rescored=len(ap_ids),
        delta_rescored=len(delta_ids),
        configs=len(table),
        path=store.path(report_path) if save else None,
        skipped_parts=tuple(str(p) for p in store.damaged),
    )


class _Rescore:
    """One build's scoring state: fingerprints, what must be re-scored, ground truth, detections."""

    def __init__(self, store: ResultsStore, configs: pd.DataFrame, image_sets: dict[int, np.ndarray], ok: pd.DataFrame):
        self.store = store
        self.configs = configs
        self.image_sets = image_sets
        self.ok = ok
        self.baselines = _baseline_ids(configs)
        self.baseline_of = {
            int(c): self.baselines.get((m, v)) for c, m, v in zip(configs.index, configs["model"], configs["variant"])
        }
        self.reference = store.meta.evaluation == "reference"
        self.gt_by_model: dict[str, GroundTruth] = {}
        self.gt_images: dict[str, np.ndarray] = {}
        self.dets: dict[int, FlatDetections] = {}
        self.evaluations: dict[int, ImageEvaluation] = {}
        self.resampled_ap: dict[int, np.ndarray] = {}  # AP on each resample of all scored images

        # What a score depends on: the configuration's rows and its model's ground truth;
        # a delta also on the baseline's score.
        gt_keys = self._ground_truth_keys()
        configs["score_key"] = [
            _digest(REPORT_FORMAT, gt_keys[m], fp) for m, fp in zip(configs["model"], configs["rows_fingerprint"])
        ]
        configs["delta_key"] = [
            _digest(configs.at[c, "score_key"], "none" if b is None else configs.at[b, "score_key"])
            for c, b in self.baseline_of.items()
        ]

    def _reference_id(self, model: str) -> int | None:
        return self.baselines.get((model, REFERENCE_VARIANT))

    def _ground_truth_keys(self) -> dict[str, str]:
        models = self.configs["model"].unique()
        if not self.reference:
            try:
                key = _digest("ground_truth", hashlib.sha256(self.store.read_bytes(GROUND_TRUTH_FILE)).hexdigest())
            except FileNotFoundError:
                key = "missing"
            return {m: key for m in models}
        keys = {}
        for m in models:
            ref = self._reference_id(m)
            if ref is None:
                keys[m] = "no-reference"
                warnings.warn(
                    f"model {m!r} has no {REFERENCE_VARIANT} split {BASELINE_SPLIT} codec {BASELINE_CODEC} rows: "
                    "reference evaluation cannot score it",
                    ReportWarning,
                    stacklevel=4,
                )
            else:
                threshold = self.store.meta.reference_score_threshold
                keys[m] = _digest("reference", threshold, self.configs.at[ref, "rows_fingerprint"])
        return keys

    def carry_over(self, previous: pd.DataFrame | None) -> tuple[list[int], list[int]]:
        """Copy stored scores whose keys still match; the configurations to re-score
        (AP) and to re-compare (delta AP)."""
        configs = self.configs
        if previous is None:
            for column in _SCORED_COLUMNS:
                configs[column] = np.nan
            ids = [int(c) for c in configs.index]
            return ids, list(ids)
        prev = previous.reindex(configs.set_index(list(CONFIG_KEY)).index)
        needs_ap = prev["score_key"].to_numpy() != configs["score_key"].to_numpy()
        needs_delta = needs_ap | (prev["delta_key"].to_numpy() != configs["delta_key"].to_numpy())
        for column in _SCORED_COLUMNS:
            configs[column] = prev[column].to_numpy()
        return [int(c) for c in configs.index[needs_ap]], [int(c) for c in configs.index[needs_delta]]

    def read(self, ap_ids: Sequence[int], delta_ids: Sequence[int]) -> None:
        """Load the ground truth and the detections that re-scoring needs, nothing else."""
        if not ap_ids and not delta_ids:
            return
        models = {self.configs.at[c, "model"] for c in (*ap_ids, *delta_ids)}
        to_read = set(ap_ids)
        to_read |= {b for c in delta_ids if (b := self.baseline_of[c]) is not None}
        # The paired interval of delta AP re-scores both sides on resampled common images:
        # it needs the configuration's own detections too.
        to_read |= {c for c in delta_ids if self.baseline_of[c] is not None}
        if self.reference:
            to_read |= {ref for m in models if (ref := self._reference_id(m)) is not None}
        self.dets = _read_detections(self.store, self.configs, sorted(to_read), self.ok)

        if self.reference:
            sizes = self.ok.groupby("image_id")[["image_width", "image_height"]].first()
            for m in models:
                ref = self._reference_id(m)
                if ref is None:
                    continue
                ids = self._images(ref)
                self.gt_by_model[m] = _reference_ground_truth(
                    self.dets[ref].by_image(),
                    dict(zip(ids.tolist(), zip(sizes["image_width"].reindex(ids), sizes["image_height"].reindex(ids)))),
                    self.store.meta.reference_score_threshold,
                )
        else:
            gt = GroundTruth.from_dict(self.store.load_ground_truth(), file=self.store.path(GROUND_TRUTH_FILE))
            self.gt_by_model = {m: gt for m in models}
        for m, gt in self.gt_by_model.items():
            self.gt_images[m] = np.fromiter(sorted(gt.image_ids), np.int64)

    def _images(self, c: int) -> np.ndarray:
        return self.image_sets.get(c, np.zeros(0, np.int64))

    def _scored_images(self, c: int) -> np.ndarray:
        model = self.configs.at[c, "model"]
        if model not in self.gt_images:
            return np.zeros(0, np.int64)
        ids = self._images(c)
        return ids[np.isin(ids, self.gt_images[model])]

    def score(self, ap_ids: Sequence[int], *, workers: int) -> None:
        """COCO AP of each configuration on every image it finished (and the GT holds);
        with ``workers`` > 1 configurations are scored in that many processes."""
        configs = self.configs
        jobs: list[tuple[int, GroundTruth, FlatDetections, np.ndarray]] = []
        for c in ap_ids:
            gt = self.gt_by_model.get(configs.at[c, "model"])
            ids = self._scored_images(c)
            configs.at[c, "n_scored"] = len(ids)
            missing = len(self._images(c)) - len(ids)
            if gt is None:
                configs.loc[c, [*METRIC_COLUMNS, "miou"]] = np.nan
                continue
            if missing:
                warnings.warn(
                    f"{_label(configs, c)}: {missing} finished images are not in the ground truth; scored without them",
                    ReportWarning,
                    stacklevel=3,
                )
            jobs.append((c, gt, self.dets.get(c, _NO_DETECTIONS), ids))
        threshold = self.miou_threshold
        if workers > 1 and len(jobs) > 1:
            # fork, not spawn: spawn re-runs the caller's main module (a script or
            # `python -m orchestrator` without a main guard). The children only run
            # numpy and the compiled COCO kernels, never Arrow, whose thread pools fork does not copy.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                     initializer=fastcoco.set_threads, initargs=(1,)) as pool:
                results = list(pool.map(_score_with_intervals, *zip(*(job[1:] for job in jobs)),
                                        [threshold] * len(jobs)))
        else:
            results = [_score_with_intervals(gt, dets, ids, threshold) for _, gt, dets, ids in jobs]
        for (c, _gt, _dets, _ids), (evaluation, intervals, resampled_ap) in zip(jobs, results):
            metrics = evaluation.coco
            for column in METRIC_COLUMNS:
                configs.at[c, column] = 100.0 * getattr(metrics, column)
            configs.at[c, "miou"] = 100.0 * evaluation.miou
            self.evaluations[c] = evaluation
            self.resampled_ap[c] = resampled_ap
            for m, (low, high) in intervals.items():
                configs.at[c, f"{m}_low"], configs.at[c, f"{m}_high"] = low, high

    @property
    def miou_threshold(self) -> float:
        threshold = self.store.meta.reference_score_threshold
        return MIOU_THRESHOLD if threshold is None else threshold

    def _evaluation(self, c: int) -> ImageEvaluation:
        """The per-image evaluation of ``c`` on its scored images (made once per build)."""
        if c not in self.evaluations:
            gt = self.gt_by_model[self.configs.at[c, "model"]]
            self.evaluations[c] = evaluate_images(gt, self.dets.get(c, _NO_DETECTIONS), self._scored_images(c),
                                                  miou_threshold=self.miou_threshold)
        return self.evaluations[c]

    def _resampled_ap(self, c: int) -> np.ndarray:
        """AP of ``c`` on each of the report's resamples of its scored images."""
        if c not in self.resampled_ap:
            ev = self._evaluation(c)
            self.resampled_ap[c] = ev.metrics(resample_counts(len(ev.image_ids)), ("ap",))["ap"]
        return self.resampled_ap[c]

    def _ap_on(self, c: int, images: np.ndarray) -> float:
        """AP (points) of ``c`` on a subset of its scored images: the evaluation re-accumulated
        with those images weighted 1, the others 0 (COCO on that subset)."""
        ev = self._evaluation(c)
        return float(ev.metrics(ev.weights(images), ("ap",))["ap"][0])

    def compare_all(self, ids: Sequence[int]) -> None:
        """:meth:`compare` for each of ``ids``, written into the table column by column."""
        if not len(ids):
            return
        columns = ["ap_uncompressed", "delta_ap", "n_common", *DELTA_INTERVAL_COLUMNS]
        values = np.array([self.compare(c) for c in ids], np.float64).reshape(len(ids), len(columns))
        index = pd.Index(ids)
        for k, column in enumerate(columns):
            self.configs.loc[index, column] = values[:, k]

    def compare(self, c: int) -> tuple[float, float, int, float, float]:
        """AP of ``c`` against its unsplit, uncoded baseline on the images both finished:
        (ap_uncompressed, delta_ap, n_common, delta_ap_low, delta_ap_high)."""
        configs = self.configs
        b = self.baseline_of[c]
        gt = self.gt_by_model.get(configs.at[c, "model"])
        if b is None or gt is None:
            return np.nan, np.nan, 0, np.nan, np.nan
        own = self._scored_images(c)
        base = self._scored_images(b)
        common = own[np.isin(own, self._images(b))]
        if b == c:
            return configs.at[c, "ap"], 0.0, len(common), 0.0, 0.0
        own_ap = configs.at[c, "ap"] if len(common) == len(own) else self._ap_on(c, common)
        # The baseline's own score when the images are the same (current: its key is part of delta_key).
        base_ap = configs.at[b, "ap"] if len(common) == len(base) else self._ap_on(b, common)
        if not len(common):
            low = high = np.nan
        elif len(common) == len(own) == len(base):
            # The same images on both sides, so the same resamples: the paired differences
            # are the differences of the AP each side already has on every resample.
            diff = self._resampled_ap(c) - self._resampled_ap(b)
            interval = interval_from_resamples(own_ap - base_ap, diff, n_images=len(common))
            low, high = interval.low, interval.high
        else:
            interval = paired_delta(gt, self._evaluation(c), self._evaluation(b), common)
            low, high = interval.low, interval.high
        return base_ap, own_ap - base_ap, len(common), low, high


def _label(configs: pd.DataFrame, c: int) -> str:
    row = configs.loc[c]
    return f"{row['model']}/{row['variant']} split {row['split']} {row['codec']} {row['setting']}".rstrip()


def _finish(configs: pd.DataFrame) -> pd.DataFrame:
    table = configs.reset_index(drop=True)
    for column in ("n_images", "n_failed", "n_scored", "n_common"):
        table[column] = table[column].fillna(0).astype("int64")
    table["split"] = table["split"].astype("int32")
    # Settings in numeric order (bits=4 before bits=10), not string order.
    params = sorted(table["codec_params"].unique(), key=_params_order)
    table["_params_rank"] = table["codec_params"].map({p: i for i, p in enumerate(params)})
    table = table.sort_values(["model", "variant", "split", "codec", "qp", "_params_rank"], na_position="last")
    return table[list(REPORT_COLUMNS)].reset_index(drop=True)


def _params_order(codec_params: str) -> tuple[tuple[str, int, float, str], ...]:
    try:
        params = json.loads(codec_params)
    except (TypeError, ValueError):
        return (("", 1, 0.0, str(codec_params)),)
    if not isinstance(params, dict):
        return (("", 1, 0.0, codec_params),)
    return tuple(
        (k, 0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (k, 1, 0.0, str(v))
        for k, v in sorted(params.items())
    )


def with_kbps(table: pd.DataFrame, frame_rate: float | None) -> pd.DataFrame:
    """``table`` with a ``kbps`` column for a video sweep: the mean coded bytes per frame
    sent at the video's frame rate, 8 · coded_bytes · fps / 1000 (every frame coded as the
    sampled ones are). Unchanged for stills (``frame_rate`` None)."""
    if frame_rate is None or "coded_bytes" not in table:
        return table
    out = table.copy()
    kbps = 8.0 * pd.to_numeric(out["coded_bytes"], errors="coerce") * float(frame_rate) / 1000.0
    out.insert(out.columns.get_loc("bpp") + 1 if "bpp" in out else len(out.columns), "kbps", kbps)
    return out


def with_rates(table: pd.DataFrame, frame_rate: float | None) -> pd.DataFrame:
    """``table`` with the rate columns of the field: ``kB`` (coded kilobytes per image,
    10³ bytes), ``bpp`` (already there) and, for a video sweep, ``kbps`` at its frame
    rate (:func:`with_kbps`); and ``delta_noise`` (the paired ΔAP interval holds 0)."""
    from orchestrator.reporting.pareto import delta_noise

    out = with_kbps(table, frame_rate)
    if "coded_bytes" in out and "kB" not in out:
        kb = pd.to_numeric(out["coded_bytes"], errors="coerce") / 1000.0
        out.insert(out.columns.get_loc("coded_bytes") + 1, "kB", kb)
    if "delta_ap_low" in out:
        out["delta_noise"] = delta_noise(out)
    return out


def load_report(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The stored configuration table, without rebuilding it (for readers such as the dashboard)."""
    store = ResultsStore(str(results_dir))
    relpath = REPORT_FILE
    try:
        return pq.read_table(io.BytesIO(store.read_bytes(relpath))).to_pandas()
    except FileNotFoundError:
        raise ResultsError("no report yet: run `splitsweep report` first", file=store.path(relpath)) from None
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"report unreadable: {exc}", file=store.path(relpath)) from None
