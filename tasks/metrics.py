"""Detection metrics: COCO AP (faster-coco-eval; pycocotools as the reference), per-image IoU / precision / recall, reference mode, image selection."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Protocol

import faster_coco_eval
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .detectors.coco import COCO80
from .errors import DataError
from .rows import Detections

__all__ = [
    "Category",
    "COCO_CATEGORIES",
    "coco_categories",
    "GroundTruth",
    "CocoMetrics",
    "COCO_BACKENDS",
    "coco_metrics",
    "PerImageMetrics",
    "per_image_metrics",
    "gt_boxes",
    "box_iou",
    "reference_ground_truth",
    "per_image_ap",
    "per_image_aps",
    "select_images",
    "matched_iou",
]


@dataclass(frozen=True)
class Category:
    """One COCO category: official id (1…90 with gaps), name, supercategory."""

    id: int
    name: str
    supercategory: str


# The 80 categories of COCO 2017 detection with their official ids (instances_*.json):
# the one table, tasks.detectors.coco's, as records.
COCO_CATEGORIES: tuple[Category, ...] = tuple(Category(*row) for row in COCO80)


def coco_categories(categories: Sequence[Category] = COCO_CATEGORIES) -> list[dict[str, Any]]:
    """The ``categories`` list of a COCO json."""
    return [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in categories]


# -- ground truth -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """A COCO ground-truth dict indexed once, for many evaluations (one per configuration).

    Build it with :meth:`from_dict`; the caller's dict is copied, never modified
    (COCOeval writes an ``ignore`` key into every annotation it sees).
    """

    coco: COCO
    image_ids: frozenset[int]
    category_ids: frozenset[int]

    @classmethod
    def from_dict(cls, gt: Mapping[str, Any], *, file: str | None = None) -> GroundTruth:
        for key in ("images", "annotations", "categories"):
            if not isinstance(gt.get(key), list):
                raise DataError(
                    f"ground truth has no {key!r} list", file=file, key=key, allowed="images, annotations, categories"
                )
        dataset = {
            "images": [dict(im) for im in gt["images"]],
            "annotations": [dict(a) for a in gt["annotations"]],
            "categories": [dict(c) for c in gt["categories"]],
        }
        for ann in dataset["annotations"]:
            if "area" not in ann:  # hand-made bbox-only files often lack it; COCO uses w*h then
                ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
            ann.setdefault("iscrowd", 0)
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            coco.createIndex()
        return cls(
            coco=coco,
            image_ids=frozenset(int(im["id"]) for im in dataset["images"]),
            category_ids=frozenset(int(c["id"]) for c in dataset["categories"]),
        )

    @cached_property
    def fast(self) -> faster_coco_eval.COCO:
        """The same ground truth indexed by faster-coco-eval (built on first use, then kept)."""
        coco = faster_coco_eval.COCO()
        coco.dataset = {key: [dict(item) for item in self.coco.dataset[key]] for key in ("images", "annotations", "categories")}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco


def _ground_truth(gt: Mapping[str, Any] | GroundTruth) -> GroundTruth:
    return gt if isinstance(gt, GroundTruth) else GroundTruth.from_dict(gt)


# -- COCO AP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CocoMetrics:
    """COCO bbox metrics of one configuration over ``n_images`` images.

    ``ap`` is AP@[.50:.95] (COCO's mAP), ``ar100`` the average recall at 100 detections
    per image. A size bucket with no ground-truth box in these images is NaN
    (pycocotools prints -1 there).
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar100: float
    n_images: int


# "faster": faster-coco-eval's C++ evaluation (the default, 7-10x faster on thousands of
# images); "pycocotools": the reference implementation. The tests assert that both give
# the same stats.
COCO_BACKENDS = ("faster", "pycocotools")
Backend = Literal["faster", "pycocotools"]


def coco_metrics(
    gt: Mapping[str, Any] | GroundTruth,
    detections: Mapping[int, Detections],
    *,
    image_ids: Iterable[int] | None = None,
    category_ids: Iterable[int] | None = None,
    unknown_categories: Literal["error", "ignore"] = "error",
    backend: Backend = "faster",
) -> CocoMetrics:
    """COCOeval (bbox) of ``detections`` against ``gt`` on exactly ``image_ids``.

    ``backend`` picks the evaluator: faster-coco-eval (default) or pycocotools; both
    compute COCO's protocol and give the same numbers (tests/test_metrics.py).

    ``image_ids`` defaults to the images that have detections (the images a
    configuration finished); ground truth of other images is ignored, and so are
    detections of images outside ``image_ids``. An image with no detections counts
    (all its boxes are misses), so no detections at all give AP 0, not an error.

    Categories: detections in a category that the GT lists but has no box of in
    these images are ignored, as pycocotools does (no false positives without a
    ground-truth class to miss). A category id that the GT does not list at all is a
    DataError: the detector's label map does not fit the annotations — unless
    ``unknown_categories="ignore"``, which drops those detections as pycocotools would
    (the report does this: a person-only annotation file scores a COCO-80 detector on
    persons). The reverse —
    GT categories the model can never produce — stay in the mean with AP 0, which is
    the honest COCO number; pass ``category_ids`` to evaluate a subset instead.
    """
    truth = _ground_truth(gt)
    ids = sorted(int(i) for i in (detections.keys() if image_ids is None else image_ids))
    unknown_images = [i for i in ids if i not in truth.image_ids]
    if unknown_images:
        raise DataError(
            f"{len(unknown_images)} image id(s) not in the ground truth: {_first(unknown_images)}", key="image_ids"
        )
    results = _results(detections, set(ids))
    unknown_cats = sorted({r["category_id"] for r in results} - truth.category_ids)
    if unknown_cats and unknown_categories == "ignore":
        results = [r for r in results if r["category_id"] in truth.category_ids]
    elif unknown_cats:
        raise DataError(
            f"detections use category ids the ground truth does not list: {_first(unknown_cats)}",
            key="category_id",
            allowed=_first(sorted(truth.category_ids), 90),
        )
    if not ids:
        nan = float("nan")
        return CocoMetrics(nan, nan, nan, nan, nan, nan, nan, 0)
    stats = _evaluate(truth, results, ids, None if category_ids is None else sorted(set(category_ids)), backend)
    return CocoMetrics(
        ap=stats[0],
        ap50=stats[1],
        ap75=stats[2],
        ap_small=stats[3],
        ap_medium=stats[4],
        ap_large=stats[5],
        ar100=stats[8],
        n_images=len(ids),
    )


def _results(detections: Mapping[int, Detections], wanted: set[int]) -> list[dict[str, Any]]:
    """COCO result records (what ``loadRes`` takes) of the wanted images, built from the
    concatenated arrays: one conversion to Python numbers instead of one per value."""
    picked = [(int(i), d) for i, d in detections.items() if int(i) in wanted and len(d)]
    if not picked:
        return []
    image_ids = np.concatenate([np.full(len(d), i, np.int64) for i, d in picked]).tolist()
    boxes = np.concatenate([d.boxes for _, d in picked]).astype(np.float64).tolist()
    scores = np.concatenate([d.scores for _, d in picked]).astype(np.float64).tolist()
    cats = np.concatenate([d.category_ids for _, d in picked]).tolist()
    return [
        {"category_id": c, "bbox": b, "score": s, "image_id": i} for i, b, s, c in zip(image_ids, boxes, scores, cats)
    ]


def _evaluate(
    truth: GroundTruth, results: list[dict[str, Any]], ids: list[int], cats: list[int] | None, backend: Backend = "faster"
) -> list[float]:
    if backend not in COCO_BACKENDS:
        raise ValueError(f"unknown COCO backend {backend!r}; allowed: {', '.join(COCO_BACKENDS)}")
    fast = backend == "faster"
    dt = faster_coco_eval.COCO() if fast else COCO()
    # Built by hand rather than with COCO.loadRes: loadRes fails on an empty result list.
    for n, r in enumerate(results, start=1):
        x, y, w, h = r["bbox"]
        r.update(id=n, area=float(w) * float(h), iscrowd=0)
    dt.dataset = {
        "images": truth.coco.dataset["images"],
        "categories": truth.coco.dataset["categories"],
        "annotations": results,
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and the table
        dt.createIndex()
        if fast:
            ev = faster_coco_eval.COCOeval_faster(truth.fast, dt, iouType="bbox", print_function=_quiet)
        else:
            ev = COCOeval(truth.coco, dt, iouType="bbox")
        ev.params.imgIds = ids
        if cats is not None:
            ev.params.catIds = cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float("nan") if v < 0 else float(v) for v in ev.stats]


def _quiet(*_args: object, **_kwargs: object) -> None:
    """faster-coco-eval's print function: the summary table is not wanted in a report."""


def _first(values: Sequence[object], n: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (f", … ({len(values)} in all)" if len(values) > n else "")


# -- per-image metrics (the seed quantization study) ------------------------------------


@dataclass(frozen=True)
class PerImageMetrics:
    """Matching of one image's predictions to its ground-truth boxes.

    Counts are kept so that callers can pool images (sum ``tp``, ``n_pred``, ``n_gt``)
    instead of averaging ratios.
    """

    n_pred: int  # predictions with score ≥ the threshold
    n_gt: int  # non-crowd ground-truth boxes
    tp: int  # one-to-one matches at IoU ≥ the threshold
    precision: float  # tp / n_pred; NaN when n_pred == 0
    recall: float  # tp / n_gt; NaN when n_gt == 0
    mean_iou_pred: float  # mean over predictions of their best IoU with any GT box; NaN if n_pred == 0
    mean_iou_gt: float  # mean over GT boxes of their best IoU with any prediction; NaN if n_gt == 0


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of COCO ``x, y, w, h`` boxes (continuous coordinates, as pycocotools)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih
    union = (a[:, 2:3] * a[:, 3:4]) + (b[:, 2] * b[:, 3]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def gt_boxes(gt: Mapping[str, Any] | GroundTruth, image_id: int) -> Detections:
    """The non-crowd ground-truth boxes of one image as ``Detections`` (score 1)."""
    coco = _ground_truth(gt).coco
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[int(image_id)])) if not a.get("iscrowd")]
    return Detections(
        np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
        np.ones(len(anns), np.float32),
        np.array([a["category_id"] for a in anns], np.int32),
    )


def per_image_metrics(
    gt_boxes: Detections,
    detections: Detections,
    *,
    iou: float = 0.5,
    score_threshold: float = 0.5,
    category_aware: bool = True,
) -> PerImageMetrics:
    """IoU, precision and recall of one image, as in the seed car-detection study.

    Predictions are the detections with ``score ≥ score_threshold``; ground truth is
    every box of ``gt_boxes`` (its scores are ignored; pass non-crowd boxes, see
    :func:`gt_boxes`). With ``category_aware`` a prediction and a GT box only overlap
    when their category ids are equal (IoU 0 otherwise); without it classes are ignored.

    - ``mean_iou_pred``: for each prediction its highest IoU with any GT box, averaged
      over predictions (a prediction with no GT at all scores 0).
    - ``mean_iou_gt``: for each GT box its highest IoU with any prediction, averaged
      over GT boxes (a missed box scores 0).
    - ``tp``: greedy one-to-one matching, predictions in descending score order (ties:
      input order), each taking the unmatched GT box of highest IoU if that IoU ≥ ``iou``
      (as COCO does at one IoU threshold).
    - ``precision = tp / n_pred`` and ``recall = tp / n_gt``.

    Empty cases: no predictions → precision and ``mean_iou_pred`` NaN (undefined), recall
    0 if there is GT; no GT → recall and ``mean_iou_gt`` NaN, precision 0 if there are
    predictions; neither → all ratios NaN, counts 0.
    """
    keep = detections.scores >= score_threshold
    p_boxes = detections.boxes[keep]
    p_scores = detections.scores[keep]
    p_cats = detections.category_ids[keep]
    g_boxes, g_cats = gt_boxes.boxes, gt_boxes.category_ids
    n_pred, n_gt = len(p_boxes), len(g_boxes)

    ious = box_iou(p_boxes, g_boxes)
    if category_aware:
        ious = np.where(p_cats[:, None] == g_cats[None, :], ious, 0.0)

    nan = float("nan")
    mean_iou_pred = float(ious.max(axis=1).mean()) if n_pred and n_gt else (0.0 if n_pred else nan)
    mean_iou_gt = float(ious.max(axis=0).mean()) if n_pred and n_gt else (0.0 if n_gt else nan)

    tp = 0
    matched = np.zeros(n_gt, bool)
    for p in np.argsort(-p_scores, kind="stable"):
        if not n_gt:
            break
        candidates = np.where(matched, -1.0, ious[p])
        g = int(np.argmax(candidates))
        if candidates[g] >= iou:
            matched[g] = True
            tp += 1
    return PerImageMetrics(
        n_pred=n_pred,
        n_gt=n_gt,
        tp=tp,
        precision=tp / n_pred if n_pred else nan,
        recall=tp / n_gt if n_gt else nan,
        mean_iou_pred=mean_iou_pred,
        mean_iou_gt=mean_iou_gt,
    )


# -- reference mode ---------------------------------------------------------------------


class ImageInfo(Protocol):
    """What reference mode needs of an image record (orchestrator.data.datasets.ImageRecord fits)."""

    image_id: int
    file_name: str
    width: int
    height: int


def reference_ground_truth(
    detections_by_image: Mapping[int, Detections],
    records: Iterable[ImageInfo],
    *,
    score_threshold: float = 0.5,
    categories: Sequence[Category] = COCO_CATEGORIES,
) -> dict[str, Any]:
    """A COCO ground-truth dict made of the reference (uncompressed) model's own detections.

    For videos and unlabelled folders: every detection with ``score ≥ score_threshold``
    becomes a non-crowd box; the compressed configurations are then scored against what
    the uncompressed model saw, so AP measures the damage done by compression, not the
    model's own accuracy. Images of ``records`` without detections are kept (with no
    boxes); detections of images not in ``records`` are a DataError, as are category
    ids outside ``categories``.
    """
    records = list(records)
    known = {int(r.image_id) for r in records}
    stray = sorted(set(int(i) for i in detections_by_image) - known)
    if stray:
        raise DataError(f"reference detections for images not in the dataset: {_first(stray)}", key="image_id")
    cat_ids = {c.id for c in categories}
    annotations: list[dict[str, Any]] = []
    for record in records:
        dets = detections_by_image.get(int(record.image_id))
        if dets is None:
            continue
        for box, score, cat in zip(dets.boxes, dets.scores, dets.category_ids):
            if score < score_threshold:
                continue
            if int(cat) not in cat_ids:
                raise DataError(
                    f"reference detection of category {int(cat)} is not among the categories",
                    key="category_id",
                    allowed=_first(sorted(cat_ids), 90),
                )
            x, y, w, h = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": int(record.image_id),
                    "category_id": int(cat),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"reference ground truth: detections with score >= {score_threshold}"},
        "images": [
            {"id": int(r.image_id), "file_name": r.file_name, "width": int(r.width), "height": int(r.height)}
            for r in records
        ],
        "annotations": annotations,
        "categories": coco_categories(categories),
    }


# -- image selection --------------------------------------------------------------------


def per_image_ap(gt: Mapping[str, Any] | GroundTruth, detections: Detections, image_id: int) -> float:
    """COCO AP@[.50:.95] of one image; NaN when the image has no (non-crowd) ground truth."""
    return coco_metrics(gt, {int(image_id): detections}, image_ids=[int(image_id)]).ap


def per_image_aps(
    gt: Mapping[str, Any] | GroundTruth, detections_by_image: Mapping[int, Detections]
) -> dict[int, float]:
    """:func:`per_image_ap` of every image in ``detections_by_image`` (the GT is indexed once)."""
    truth = _ground_truth(gt)
    return {int(i): per_image_ap(truth, d, int(i)) for i, d in detections_by_image.items()}


def select_images(per_image_ap: Mapping[int, float], *, min_ap: float, first: int, order: Sequence[int]) -> list[int]:
    """The first ``first`` image ids, in ``order``, whose reference AP is ≥ ``min_ap``.

    As in the seed study ("keep the first 50 images where the reference model's AP ≥ x"):
    images are taken in dataset order, not best-first, so the selection does not depend
    on how good the other images are. Ids missing from ``per_image_ap`` and NaN APs
    (images without ground truth) never qualify. Fewer than ``first`` ids come back
    when not enough images qualify.
    """
    if first < 0:
        raise ValueError(f"first must be >= 0, got {first}")
    chosen: list[int] = []
    for image_id in order:
        if len(chosen) >= first:
            break
        ap = per_image_ap.get(int(image_id))
        if ap is not None and not math.isnan(ap) and ap >= min_ap:
            chosen.append(int(image_id))
    return chosen


# -- fidelity that keeps resolving near lossless -----------------------------------------


def matched_iou(
    gt: Mapping[str, Any] | GroundTruth,
    detections: Mapping[int, Detections],
    image_ids: Iterable[int],
    *,
    score_threshold: float,
) -> float:
    """Mean over the ground-truth boxes of ``image_ids`` of the best IoU of a same-category
    detection scoring ≥ ``score_threshold``; a box no such detection overlaps counts 0.

    A fraction 0–1 (NaN without ground-truth boxes): the mean IoU of the matched boxes
    times the fraction of boxes kept, pooled over boxes, not images. Unlike AP it does not
    saturate before the detections are identical: in reference evaluation, where the
    ground truth is the uncompressed model's detections above the same threshold, the
    uncompressed model scores exactly 1 and every shifted box or lost detection lowers it.
    """
    truth = _ground_truth(gt)
    total, n = 0.0, 0
    for image_id in image_ids:
        boxes = gt_boxes(truth, int(image_id))
        if not len(boxes):
            continue
        dets = detections.get(int(image_id))
        n += len(boxes)
        if dets is None or not len(dets):
            continue
        keep = dets.scores >= score_threshold
        ious = box_iou(boxes.boxes, dets.boxes[keep])
        ious = np.where(boxes.category_ids[:, None] == dets.category_ids[keep][None, :], ious, 0.0)
        if ious.size:
            total += float(ious.max(axis=1).sum())
    return total / n if n else float("nan")
