"""Confidence intervals for COCO AP, AP50, AP75 and mIoU by a bootstrap over images, and paired ones for ΔAP.

How (the sound and fast way to bootstrap a non-additive metric such as COCO AP):

1. **Evaluate per image once.** COCOeval's matching of detections to ground truth is done
   per (image, category) and never looks at other images; only its *accumulation*
   (sorting all detections of a category by score, cumulating TP / FP, the 101-point
   precision envelope) pools images. :func:`evaluate_images` runs the matching once
   (:mod:`orchestrator.reporting.fastcoco`: pycocotools' protocol compiled, area "all",
   100 detections) and keeps, per category, every detection's image and TP / FP flags
   at the ten IoU thresholds in COCO's score order, and each image's non-ignored boxes.
2. **Re-accumulate on resampled image multisets.** A bootstrap sample is a vector of
   counts (how often each image was drawn, :func:`resample_counts`). Drawing an image
   twice doubles its detections and its boxes, so the accumulation runs on *weighted*
   cumulative sums, in float64 with COCO's exact recall thresholds (a compiled kernel,
   one pass per resample and category from the last detection back). With every weight 1
   it is COCOeval's AP (tested against pycocotools).
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
    ImageEvaluation.metrics(counts, names) -> {metric: ndarray}   (any weights, compiled)
    Interval(estimate, low, high, level, n_images, resamples): .contains(x), .excludes_zero

Coverage, measured on synthetic data (tests/test_intervals.py's generator; 200 samples of
150 images, 1,000 resamples, population ΔAP −11.4): the 95% paired interval covers it in
95% (BC) / 94% (percentile) of the samples, the marginal AP interval in 94% / 92%.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from orchestrator.reporting import fastcoco
from tasks.metrics import CocoMetrics, GroundTruth
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
_T_INDEX = {"ap": slice(None), "ap50": slice(0, 1), "ap75": slice(5, 6)}  # COCO's ten IoU thresholds


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


@dataclass(frozen=True, eq=False)
class ImageEvaluation:
    """COCO matching of one configuration's detections, per image, evaluated once; its
    metrics on any multiset of these images come from :meth:`metrics`.

    Made by :func:`evaluate_images` (``packed`` and ``coco`` filled: the matches as the
    compiled accumulation reads them, and the point stats of the same pass), or from
    ``categories`` by hand (packed on first use)."""

    image_ids: np.ndarray  # (n,) int64, the order every per-image array uses
    categories: tuple[CategoryMatches, ...]
    iou_sum: np.ndarray  # (n,) per image: Σ over GT boxes of the best same-class IoU (mIoU's numerator)
    gt_count: np.ndarray  # (n,) per image: GT boxes (mIoU's denominator)
    packed: fastcoco.Packed | None = None
    coco: CocoMetrics | None = None  # COCO's stats on all these images (fractions), when evaluated here
    miou: float = math.nan  # mIoU on all these images (fraction), when evaluated here

    def positions(self, image_ids: Iterable[int]) -> np.ndarray:
        """Positions of ``image_ids`` in this evaluation (KeyError naming a missing id)."""
        index = {int(i): p for p, i in enumerate(self.image_ids.tolist())}
        try:
            return np.fromiter((index[int(i)] for i in image_ids), np.int64)
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]} was not evaluated") from None

    def weights(self, image_ids: Iterable[int], draws: np.ndarray | None = None) -> np.ndarray:
        """Image weights for :meth:`metrics`: ``draws`` (rows × len(image_ids), e.g. resample
        counts) in those images' columns, every other image 0; without ``draws``, each of
        those images once. All images in evaluation order: ``draws`` itself, not a copy."""
        pos = self.positions(image_ids)
        if draws is None:
            draws = np.ones((1, len(pos)), np.float32)
        if len(pos) == len(self.image_ids) and np.array_equal(pos, np.arange(len(pos))):
            return draws
        out = np.zeros((draws.shape[0], len(self.image_ids)), draws.dtype)
        out[:, pos] = draws
        return out

    def _packed(self) -> fastcoco.Packed:
        if self.packed is None:
            packed = fastcoco.pack((c.image, c.tp, c.fp, c.n_boxes) for c in self.categories)
            object.__setattr__(self, "packed", packed)
        return self.packed  # type: ignore[return-value]

    def metrics(self, counts: np.ndarray, names: Sequence[str] = ("ap",)) -> dict[str, np.ndarray]:
        """Each metric (points, 0–100; NaN where undefined) for each row of ``counts``
        (resamples × n_images: how often each image is in that multiset)."""
        counts = np.atleast_2d(np.asarray(counts))
        if counts.shape[1] != len(self.image_ids):
            raise ValueError(f"counts has {counts.shape[1]} columns, the evaluation {len(self.image_ids)} images")
        unknown = set(names) - set(INTERVAL_METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; allowed: {', '.join(INTERVAL_METRICS)}")
        out: dict[str, np.ndarray] = {}
        ap_names = [n for n in names if n in _T_INDEX]
        if ap_names:
            sums, _, valid = fastcoco.accumulate(self._packed(), counts)  # (B, T) over valid categories, (B,)
            for name in ap_names:
                sl = _T_INDEX[name]
                n = valid * sums[:, sl].shape[1]
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[name] = np.where(n > 0, 100.0 * sums[:, sl].sum(axis=1) / np.maximum(n, 1), np.nan)
        if "miou" in names:
            boxes = fastcoco.weighted_sums(counts, self.gt_count)
            iou = fastcoco.weighted_sums(counts, self.iou_sum)
            with np.errstate(invalid="ignore", divide="ignore"):
                out["miou"] = np.where(boxes > 0, 100.0 * iou / np.maximum(boxes, 1), np.nan)
        return out


def _image_array(value: object) -> np.ndarray:
    return np.asarray(sorted({int(i) for i in value}), np.int64)  # type: ignore[attr-defined]


def evaluate_images(
    gt: GroundTruth,
    detections: Mapping[int, Detections] | fastcoco.FlatDetections,
    image_ids: Iterable[int] | None = None,
    *,
    miou_threshold: float = 0.5,
) -> ImageEvaluation:
    """Run COCO's per-image matching once (bbox, 100 detections per image), with COCO's
    stats and mIoU of the same pass (``.coco``, ``.miou``).

    ``image_ids`` defaults to the images of ``detections``; an image without detections
    counts (its boxes are misses). Detections of categories the ground truth does not
    list are left out, as the report does. ``miou_threshold``: the score a detection
    needs to count in mIoU (the report's reference score threshold).
    """
    if image_ids is None:
        image_ids = (np.unique(detections.image_ids) if isinstance(detections, fastcoco.FlatDetections)
                     else detections.keys())
    ev = fastcoco.evaluate(gt, detections, _image_array(image_ids), miou_threshold=miou_threshold)
    return ImageEvaluation(image_ids=ev.image_ids, categories=(), iou_sum=ev.iou_sum, gt_count=ev.gt_count,
                           packed=ev.matches, coco=ev.metrics, miou=ev.miou)


def resample_counts(n_images: int, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n_images) counts: row b says how often each image is in bootstrap
    sample b (n_images draws with replacement). Seeded: same arguments, same counts.
    Read-only and shared: a report draws them once for all configurations of a size.
    float32 (exact for counts below 2^24), half the memory of float64 on large sets."""
    return _resample_counts(int(n_images), int(resamples), int(seed))


@functools.lru_cache(maxsize=2)
def _resample_counts(n_images: int, resamples: int, seed: int) -> np.ndarray:
    if n_images <= 0:
        out = np.zeros((resamples, 0), np.float32)
    else:
        rng = np.random.default_rng(seed)
        out = np.empty((resamples, n_images), np.float32)
        rows = max(1, 4_000_000 // n_images)  # draws per block: bounds the temporary index array
        for start in range(0, resamples, rows):
            stop = min(resamples, start + rows)
            draws = rng.integers(0, n_images, size=(stop - start, n_images))
            draws += (np.arange(stop - start) * n_images)[:, None]
            out[start:stop] = np.bincount(draws.ravel(), minlength=(stop - start) * n_images).reshape(-1, n_images)
    out.setflags(write=False)
    return out


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
    estimate = ev.metrics(ev.weights(ids), metrics)
    values = ev.metrics(ev.weights(ids, resample_counts(len(ids), resamples=resamples, seed=seed)), metrics)
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
        estimates.append(float(evaluation.metrics(evaluation.weights(ids), (metric,))[metric][0]))
        values.append(evaluation.metrics(evaluation.weights(ids, draws), (metric,))[metric])
    return interval_from_resamples(estimates[0] - estimates[1], values[0] - values[1], level=level, method=method,
                                   n_images=len(ids))
