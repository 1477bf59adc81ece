"""Confidence intervals for COCO AP, AP50, AP75 and mIoU by a bootstrap over images, and paired ones for ΔAP.

How (the sound and fast way to bootstrap a non-additive metric such as COCO AP):

1. **Evaluate per image once.** COCOeval's matching of detections to ground truth is done
   per (image, category) and never looks at other images; only its *accumulation*
   (sorting all detections of a category by score, cumulating TP / FP, the 101-point
   precision envelope) pools images. :func:`evaluate_images` runs the matching once
   (pycocotools' ``evaluate``: the per-image records of COCO's protocol, area "all",
   100 detections) and keeps, per category, every detection's score, image, TP / FP
   flags at the ten IoU thresholds, and each image's count of non-ignored boxes.
2. **Re-accumulate on resampled image multisets.** A bootstrap sample is a vector of
   counts (how often each image was drawn, :func:`resample_counts`). Drawing an image
   twice doubles its detections and its boxes, so the accumulation runs on *weighted*
   cumulative sums: one sort per category, then ``cumsum(weight[image] · tp)`` for all
   resamples at once (numpy, chunked), the same precision envelope and recall thresholds
   as COCO. With every weight 1 this reproduces COCOeval's AP exactly (tested).
   Copies of one detection are adjacent in the score order; COCO would interleave exact
   score ties of different detections differently, which moves AP by far less than the
   interval's width.
3. **Bias-corrected percentile interval** (Efron's BC; plain percentiles with
   ``method="percentile"``) of the resampled values, 95% by default. For ΔAP the
   configuration and its baseline are re-accumulated on the *same* resamples
   (:func:`paired_delta`), so the variance the two share — hard and easy images — cancels.

mIoU (tasks.metrics.matched_iou) is a ratio of per-image sums (IoU summed over boxes,
boxes counted), so its resampled value is ``Σ w·iou_sum / Σ w·n_boxes``.

Everything is seeded (``seed``): the same inputs give the same intervals. The API is
stable; other modules (the report, adaptive search) build on it:

    evaluate_images(gt, detections, image_ids, *, miou_threshold=0.5) -> ImageEvaluation
    resample_counts(n_images, *, resamples=1000, seed=0) -> ndarray (resamples, n_images)
    bootstrap_ap(gt_or_evaluation, detections=None, image_ids=None, *, metrics=("ap", "ap50"),
                 level=0.95, resamples=1000, seed=0, method="bc") -> dict[metric, Interval]
    paired_delta(gt, detections, baseline, image_ids=None, *, metric="ap",
                 level=0.95, resamples=1000, seed=0, method="bc") -> Interval
    interval_from_resamples(estimate, values, *, level=0.95, method="bc") -> Interval
    ImageEvaluation.metrics(counts, names) -> {metric: ndarray}   (any weights, vectorised)

Coverage, measured on synthetic data (tests/test_intervals.py): 200 samples of 150 images,
population ΔAP −11.4: the 95% paired interval covers it in 92.5% (BC) / 93.5%
(percentile) of the samples, the marginal AP interval in 93.5% / 92%.
    Interval(estimate, low, high, level, n_images, resamples): .contains(x), .excludes_zero
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval
from scipy.special import ndtr, ndtri

from tasks.metrics import GroundTruth, box_iou, gt_boxes
from tasks.rows import Detections

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "INTERVAL_METRICS",
    "Interval",
    "ImageEvaluation",
    "CategoryMatches",
    "evaluate_images",
    "resample_counts",
    "bootstrap_ap",
    "paired_delta",
    "interval_from_resamples",
    "METHODS",
]

DEFAULT_LEVEL = 0.95
DEFAULT_RESAMPLES = 1000
INTERVAL_METRICS = ("ap", "ap50", "ap75", "miou")
METHODS = ("bc", "percentile")
_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's ten IoU thresholds
_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # COCO's 101 recall points
_T_INDEX = {"ap": slice(None), "ap50": slice(0, 1), "ap75": slice(5, 6)}
_MAX_DETS = 100
# Elements of one (resamples × thresholds × detections) block: bounds memory to ~100 MB.
_BLOCK = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate (the metric on the images as they are) and its bootstrap
    percentile interval at ``level``; NaN bounds when it cannot be computed."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL
    n_images: int = 0
    resamples: int = 0

    def contains(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    @property
    def excludes_zero(self) -> bool:
        """For a difference: True when 0 is outside the interval (the difference is not noise)."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high) and not self.low <= 0.0 <= self.high)


@dataclass(frozen=True, eq=False)
class CategoryMatches:
    """One category's detections over all images, in COCO's score order (descending,
    stable), with what accumulation needs."""

    image: np.ndarray  # (D,) image position of each detection
    tp: np.ndarray  # (T, D) bool: matched and not ignored at each IoU threshold
    fp: np.ndarray  # (T, D) bool: unmatched and not ignored
    n_boxes: np.ndarray  # (n_images,) non-ignored ground-truth boxes of this category per image

    @property
    def no_ignored(self) -> bool:
        """Every detection is a TP or an FP at every threshold (none matched a crowd region)."""
        return bool((self.tp | self.fp).all())


@dataclass(frozen=True, eq=False)
class ImageEvaluation:
    """COCO matching of one configuration's detections, per image, evaluated once; its
    metrics on any multiset of these images come from :meth:`metrics`."""

    image_ids: np.ndarray  # (n,) int64, the order every per-image array uses
    categories: tuple[CategoryMatches, ...]
    iou_sum: np.ndarray  # (n,) per image: Σ over GT boxes of the best same-class IoU (mIoU's numerator)
    gt_count: np.ndarray  # (n,) per image: GT boxes (mIoU's denominator)

    def positions(self, image_ids: Iterable[int]) -> np.ndarray:
        """Positions of ``image_ids`` in this evaluation (KeyError naming a missing id)."""
        index = {int(i): p for p, i in enumerate(self.image_ids.tolist())}
        try:
            return np.fromiter((index[int(i)] for i in image_ids), np.int64)
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]} was not evaluated") from None

    def metrics(self, counts: np.ndarray, names: Sequence[str] = ("ap",)) -> dict[str, np.ndarray]:
        """Each metric (points, 0–100; NaN where undefined) for each row of ``counts``
        (resamples × n_images: how often each image is in that multiset)."""
        counts = np.atleast_2d(np.asarray(counts, np.float64))
        if counts.shape[1] != len(self.image_ids):
            raise ValueError(f"counts has {counts.shape[1]} columns, the evaluation {len(self.image_ids)} images")
        out: dict[str, np.ndarray] = {}
        ap_names = [n for n in names if n in _T_INDEX]
        if ap_names:
            per_t = self._precision_means(counts)  # (B, T) sums over valid categories, and counts
            sums, valid = per_t
            for name in ap_names:
                sl = _T_INDEX[name]
                total = sums[:, sl].sum(axis=1)
                n = valid[:, sl].sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[name] = np.where(n > 0, 100.0 * total / np.maximum(n, 1), np.nan)
        if "miou" in names:
            boxes = counts @ self.gt_count
            with np.errstate(invalid="ignore", divide="ignore"):
                out["miou"] = np.where(boxes > 0, 100.0 * (counts @ self.iou_sum) / np.maximum(boxes, 1), np.nan)
        unknown = set(names) - set(out)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; allowed: {', '.join(INTERVAL_METRICS)}")
        return out

    def _precision_means(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per resample and IoU threshold: the sum over valid categories of the mean
        interpolated precision, and how many categories were valid (had a box)."""
        b_total, n_t = counts.shape[0], len(_IOU_THRESHOLDS)
        sums = np.zeros((b_total, n_t))
        valid = np.zeros((b_total, n_t))
        for cat in self.categories:
            npig = counts @ cat.n_boxes  # (B,)
            has = npig > 0
            valid += has[:, None]
            d = len(cat.image)
            if d == 0:
                continue  # boxes but no detection: precision 0 (COCO's too)
            step = max(1, _BLOCK // (n_t * d))
            for start in range(0, b_total, step):
                block = slice(start, start + step)
                sums[block] += np.where(has[block, None], _mean_precision(counts[block], cat, npig[block]), 0.0)
        return sums, valid


def _mean_precision(counts: np.ndarray, cat: CategoryMatches, npig: np.ndarray) -> np.ndarray:
    """COCO's accumulate for one category on a block of resamples: (B, T) mean of the
    interpolated precision at the 101 recall thresholds.

    One row (the estimate) is computed exactly as pycocotools does, in float64 with exact
    threshold comparisons. Resample blocks run in float32 (integer counts stay exact up to
    2^24) and find recall thresholds arithmetically: a recall within float32 rounding of a
    threshold may count on either side, which moves a resample's AP by < 0.01 points.
    """
    b = counts.shape[0]
    exact = b == 1
    dtype = np.float64 if exact else np.float32
    w = counts[:, cat.image].astype(dtype)  # (B, D)
    tp = np.cumsum(w[:, None, :] * cat.tp[None], axis=2, dtype=dtype)  # (B, T, D)
    if cat.no_ignored:
        seen = np.cumsum(w, axis=1, dtype=dtype)[:, None, :]  # every detection counts: tp + fp
    else:
        seen = tp + np.cumsum(w[:, None, :] * cat.fp[None], axis=2, dtype=dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = tp / np.where(npig > 0, npig, np.inf).astype(dtype)[:, None, None]
    pr = tp / (seen + dtype(np.spacing(1)))  # as pycocotools
    envelope = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]
    _, t, d = rc.shape
    rows = b * t
    n_thr = len(_RECALL_THRESHOLDS)
    # COCO's searchsorted(rc, recall thresholds, "left") for every row at once: k = how many
    # thresholds each recall reaches; the first index reaching threshold j is the number of
    # recalls reaching ≤ j thresholds (rows are sorted).
    flat = rc.reshape(rows, d)
    if exact:
        k = np.searchsorted(_RECALL_THRESHOLDS, flat, side="right")  # (rows, D) in 0..101
    else:
        k = np.minimum(np.floor(flat * np.float32(n_thr - 1) + np.float32(1e-4)).astype(np.int64) + 1, n_thr)
    hist = np.bincount((np.arange(rows)[:, None] * (n_thr + 1) + k).ravel(), minlength=rows * (n_thr + 1))
    found = hist.reshape(rows, n_thr + 1).cumsum(axis=1)[:, :n_thr]  # (rows, 101) first index ≥ threshold
    inside = found < d
    picked = envelope.reshape(rows, d)[np.arange(rows)[:, None], np.minimum(found, d - 1)]
    q = np.where(inside, picked, 0.0)
    return q.mean(axis=1, dtype=np.float64).reshape(b, t)


def _image_array(value: object) -> np.ndarray:
    return np.asarray(sorted({int(i) for i in value}), np.int64)  # type: ignore[attr-defined]


def evaluate_images(
    gt: GroundTruth,
    detections: Mapping[int, Detections],
    image_ids: Iterable[int] | None = None,
    *,
    miou_threshold: float = 0.5,
) -> ImageEvaluation:
    """Run COCO's per-image matching once (bbox, area "all", 100 detections per image).

    ``image_ids`` defaults to the images of ``detections``; an image without detections
    counts (its boxes are misses). Detections of categories the ground truth does not
    list are left out, as the report does. ``miou_threshold``: the score a detection
    needs to count in mIoU (the report's reference score threshold).
    """
    ids = _image_array(detections.keys() if image_ids is None else image_ids)
    if not len(ids):
        return ImageEvaluation(image_ids=ids, categories=(), iou_sum=np.zeros(0), gt_count=np.zeros(0))
    known = gt.category_ids
    wanted = set(ids.tolist())
    picked = {int(i): d for i, d in detections.items() if int(i) in wanted}
    results = []
    for image_id, d in picked.items():
        for box, score, cat in zip(d.boxes.tolist(), d.scores.tolist(), d.category_ids.tolist()):
            if int(cat) in known:
                results.append((image_id, box, score, int(cat)))
    ev = _coco_evaluate(gt, results, ids.tolist())
    position = {int(i): p for p, i in enumerate(ids.tolist())}
    cat_ids = list(ev.params.catIds)
    n_area, n_img = len(ev.params.areaRng), len(ids)
    categories = []
    for k, _cat in enumerate(cat_ids):
        records = [ev.evalImgs[k * n_area * n_img + i] for i in range(n_img)]  # area "all" comes first
        n_boxes = np.zeros(n_img)
        scores, images, matched, ignored = [], [], [], []
        for i, rec in enumerate(records):
            if rec is None:
                continue
            n_boxes[i] = np.count_nonzero(np.asarray(rec["gtIgnore"]) == 0)
            s = np.asarray(rec["dtScores"])[:_MAX_DETS]
            if len(s):
                scores.append(s)
                images.append(np.full(len(s), position[int(rec["image_id"])], np.int64))
                matched.append(np.asarray(rec["dtMatches"])[:, :_MAX_DETS] != 0)
                ignored.append(np.asarray(rec["dtIgnore"])[:, :_MAX_DETS] != 0)
        if not n_boxes.any() and not scores:
            continue
        if scores:
            all_scores = np.concatenate(scores)
            order = np.argsort(-all_scores, kind="mergesort")  # COCO's order
            m = np.concatenate(matched, axis=1)[:, order]
            ig = np.concatenate(ignored, axis=1)[:, order]
            image = np.concatenate(images)[order]
        else:
            m = ig = np.zeros((len(_IOU_THRESHOLDS), 0), bool)
            image = np.zeros(0, np.int64)
        tp, fp = m & ~ig, ~m & ~ig
        # Detections after the last true positive (at any IoU threshold) change no
        # interpolated precision: recall stops rising there and their precision only
        # falls. Dropping them is exact, and a detector's long tail of low-score boxes
        # (CenterNet keeps 100 an image) no longer costs resampling time.
        hits = np.flatnonzero(tp.any(axis=0))
        end = int(hits[-1]) + 1 if len(hits) else 0
        categories.append(CategoryMatches(image=image[:end], tp=tp[:, :end], fp=fp[:, :end], n_boxes=n_boxes))
    iou_sum, gt_count = _miou_parts(gt, detections, ids, miou_threshold)
    return ImageEvaluation(image_ids=ids, categories=tuple(categories), iou_sum=iou_sum, gt_count=gt_count)


def _coco_evaluate(gt: GroundTruth, results: list[tuple[int, list[float], float, int]], ids: list[int]) -> COCOeval:
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {
        "images": gt.coco.dataset["images"],
        "categories": gt.coco.dataset["categories"],
        "annotations": [
            {"id": n, "image_id": i, "bbox": b, "score": s, "category_id": c, "area": float(b[2]) * float(b[3]), "iscrowd": 0}
            for n, (i, b, s, c) in enumerate(results, start=1)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
        ev = COCOeval(gt.coco, dt, iouType="bbox")
        ev.params.imgIds = ids
        # Area "all" only: the other ranges (small / medium / large) are not resampled.
        ev.params.areaRng, ev.params.areaRngLbl = [ev.params.areaRng[0]], ["all"]
        ev.evaluate()
    return ev


def _miou_parts(
    gt: GroundTruth, detections: Mapping[int, Detections], ids: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: Σ best same-class IoU over its GT boxes, and its GT box count (tasks.metrics.matched_iou)."""
    iou_sum = np.zeros(len(ids))
    count = np.zeros(len(ids))
    for p, image_id in enumerate(ids.tolist()):
        boxes = gt_boxes(gt, image_id)
        count[p] = len(boxes)
        dets = detections.get(image_id)
        if not len(boxes) or dets is None or not len(dets):
            continue
        keep = dets.scores >= threshold
        ious = box_iou(boxes.boxes, dets.boxes[keep])
        ious = np.where(boxes.category_ids[:, None] == dets.category_ids[keep][None, :], ious, 0.0)
        if ious.size:
            iou_sum[p] = float(ious.max(axis=1).sum())
    return iou_sum, count


def resample_counts(n_images: int, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n_images) counts: row b says how often each image is in bootstrap
    sample b (n_images draws with replacement). Seeded: same arguments, same counts."""
    if n_images <= 0:
        return np.zeros((resamples, 0))
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples).astype(np.float64)


def interval_from_resamples(
    estimate: float, values: np.ndarray, *, level: float = DEFAULT_LEVEL, method: str = "bc", n_images: int = 0
) -> Interval:
    """The bootstrap interval of ``values`` (NaN resamples left out) around ``estimate``.

    ``method="bc"`` (default): Efron's bias-corrected percentile interval — the
    percentiles are shifted by how far the estimate sits from the resamples' median,
    which corrects the small-sample bias of AP (its precision envelope is a maximum;
    on 150 synthetic images AP runs about one point above the population's).
    ``method="percentile"``: the plain percentiles.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; allowed: {', '.join(METHODS)}")
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not len(finite) or not math.isfinite(estimate):
        return Interval(float(estimate), math.nan, math.nan, level, n_images, len(finite))
    if finite.max() - finite.min() <= 1e-9 * max(1.0, abs(estimate)):
        # Every resample gives the same value (identical images, a lossless setting): the
        # sums differ from the estimate's only in the last bits.
        return Interval(float(estimate), float(estimate), float(estimate), level, n_images, len(finite))
    alpha = (1.0 - level) / 2.0
    quantiles = np.array([alpha, 1.0 - alpha])
    if method == "bc":
        below = (np.count_nonzero(finite < estimate) + 0.5 * np.count_nonzero(finite == estimate)) / len(finite)
        bound = 0.5 / len(finite)
        z0 = ndtri(min(max(below, bound), 1.0 - bound))
        quantiles = ndtr(2.0 * z0 + ndtri(quantiles))
    low, high = np.quantile(finite, quantiles)
    return Interval(float(estimate), float(low), float(high), level, n_images, len(finite))


def _evaluation(
    gt: GroundTruth | ImageEvaluation, detections: Mapping[int, Detections] | ImageEvaluation | None,
    image_ids: Iterable[int] | None, miou_threshold: float,
) -> ImageEvaluation:
    if isinstance(detections, ImageEvaluation):
        return detections
    if isinstance(gt, ImageEvaluation):
        return gt
    if detections is None:
        raise TypeError("detections are required with a GroundTruth")
    return evaluate_images(gt, detections, image_ids, miou_threshold=miou_threshold)


def bootstrap_ap(
    gt: GroundTruth | ImageEvaluation,
    detections: Mapping[int, Detections] | ImageEvaluation | None = None,
    image_ids: Iterable[int] | None = None,
    *,
    metrics: Sequence[str] = ("ap", "ap50"),
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    miou_threshold: float = 0.5,
    method: str = "bc",
) -> dict[str, Interval]:
    """Bootstrap intervals (points, 0–100) of a configuration's metrics over its images.

    Pass the ground truth and the detections (evaluated here), or an
    :class:`ImageEvaluation` made once by :func:`evaluate_images`. ``image_ids``: the
    images resampled (default: all evaluated ones). ``metrics``: any of ap, ap50, ap75, miou.
    """
    ev = _evaluation(gt, detections, image_ids, miou_threshold)
    ids = ev.image_ids if image_ids is None else _image_array(image_ids)
    pos = ev.positions(ids)
    full = np.zeros((1, len(ev.image_ids)))
    full[0, pos] = 1.0
    estimate = ev.metrics(full, metrics)
    counts = np.zeros((resamples, len(ev.image_ids)))
    counts[:, pos] = resample_counts(len(ids), resamples=resamples, seed=seed)
    values = ev.metrics(counts, metrics)
    return {
        m: interval_from_resamples(float(estimate[m][0]), values[m], level=level, method=method, n_images=len(ids))
        for m in metrics
    }


def paired_delta(
    gt: GroundTruth | ImageEvaluation,
    detections: Mapping[int, Detections] | ImageEvaluation,
    baseline: Mapping[int, Detections] | ImageEvaluation,
    image_ids: Iterable[int] | None = None,
    *,
    metric: str = "ap",
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    miou_threshold: float = 0.5,
    method: str = "bc",
) -> Interval:
    """Paired bootstrap interval of ``metric(detections) − metric(baseline)`` (points):
    both are re-accumulated on the same resampled images. ``image_ids`` defaults to the
    images both evaluations have. The estimate is the difference on the images as they are.
    """
    if isinstance(gt, ImageEvaluation):
        raise TypeError("paired_delta needs the GroundTruth (or two ImageEvaluations as detections and baseline)")
    ev = _evaluation(gt, detections, image_ids, miou_threshold)
    base = _evaluation(gt, baseline, image_ids, miou_threshold)
    if image_ids is None:
        ids = np.intersect1d(ev.image_ids, base.image_ids)
    else:
        ids = _image_array(image_ids)
    draws = resample_counts(len(ids), resamples=resamples, seed=seed)
    values, estimates = [], []
    for evaluation in (ev, base):
        pos = evaluation.positions(ids)
        full = np.zeros((1, len(evaluation.image_ids)))
        full[0, pos] = 1.0
        counts = np.zeros((resamples, len(evaluation.image_ids)))
        counts[:, pos] = draws
        estimates.append(float(evaluation.metrics(full, (metric,))[metric][0]))
        values.append(evaluation.metrics(counts, (metric,))[metric])
    return interval_from_resamples(estimates[0] - estimates[1], values[0] - values[1], level=level, method=method,
                                   n_images=len(ids))
