"""COCO bbox evaluation compiled with numba: pycocotools' protocol, once per configuration, with the per-image matches the bootstrap re-accumulates.

Why not faster-coco-eval here: its matching is C++, but it prepares every (image,
category) pair in Python and keeps the per-image matches out of reach, so the report
ran COCO twice per configuration (faster-coco-eval for the numbers, pycocotools for the
matches the intervals resample) plus a per-image Python loop for mIoU: ~0.2 s per
configuration of 400 images before any resampling. Here one pass gives all three.

What is reproduced, step by step as pycocotools 2.0 does it (bbox, ``useCats``, area
ranges all / small / medium / large, 100 detections per image, ten IoU thresholds, 101
recall points):

- ground truth ``ignore`` = ``iscrowd``; a box outside the area range is ignored there;
  per (image, category) the ignored boxes sort last (stable), detections by score
  (descending, stable in input order), the first 100 kept;
- IoU as ``maskApi.c`` ``bbIou`` (a crowd box: intersection over the detection's area);
- greedy matching per threshold: a detection takes the best still-free box (a crowd box
  stays free) with IoU ≥ min(t, 1 − 1e-10), later boxes winning ties, never an ignored
  box once it has a regular one; a detection matched to an ignored box is ignored, an
  unmatched one outside the area range too;
- accumulation per (category, area): detections of all images in image order, sorted by
  score (stable), precision ``tp / (tp + fp + eps)``, its envelope, COCO's recall
  thresholds; AP the mean over categories with a non-ignored box, AR100 the mean recall.

The accumulation kernel takes image weights (how often each image is in a bootstrap
multiset) and needs only the true positives' positions: the precision envelope at a
recall threshold is the largest precision at a true positive at or after the first
position reaching that recall (a false positive's precision is below the last true
positive's before it). With every weight 1 it is COCOeval's AP (tests/test_fastcoco.py
asserts pycocotools' and faster-coco-eval's stats on varied data, crowds, ties and the
100-detection cut).

mIoU (tasks.metrics.matched_iou) comes from the same grouping: per image the sum over
non-crowd boxes of the best same-category IoU of a detection scoring ≥ the threshold.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

from tasks.metrics import CocoMetrics, GroundTruth
from tasks.rows import Detections

__all__ = ["FlatDetections", "CocoEvaluation", "Packed", "evaluate", "accumulate", "pack", "set_threads", "weighted_sums",
           "IOU_THRESHOLDS", "RECALL_THRESHOLDS", "AREA_RANGES", "MAX_DETS"]

# pycocotools' Params (bbox): the same expressions, so the same floating-point values.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0, 1e5**2], [0, 32**2], [32**2, 96**2], [96**2, 1e5**2]], np.float64)  # all, S, M, L
MAX_DETS = 100
_EPS = float(np.spacing(1))


@dataclass(frozen=True, eq=False)
class FlatDetections:
    """Detections of many images as flat arrays (one row per detection), in the order a
    results list would hold them: ``image_ids`` (N,), ``boxes`` float32 (N, 4) x, y, w, h,
    ``scores`` float32 (N,), ``category_ids`` (N,)."""

    image_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray

    @classmethod
    def empty(cls) -> FlatDetections:
        return cls(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_mapping(cls, detections: Mapping[int, Detections]) -> FlatDetections:
        items = [(int(i), d) for i, d in detections.items() if len(d)]
        if not items:
            return cls.empty()
        return cls(
            np.concatenate([np.full(len(d), i, np.int64) for i, d in items]),
            np.concatenate([d.boxes for _, d in items]).astype(np.float32, copy=False),
            np.concatenate([d.scores for _, d in items]).astype(np.float32, copy=False),
            np.concatenate([d.category_ids for _, d in items]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def by_image(self) -> dict[int, Detections]:
        """One :class:`Detections` per image id (in first-seen order)."""
        ids, first, inverse = np.unique(self.image_ids, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(ids) + 1))
        out = {}
        for k in np.argsort(first, kind="stable"):
            rows = order[bounds[k]:bounds[k + 1]]
            out[int(ids[k])] = Detections(self.boxes[rows], self.scores[rows], self.category_ids[rows])
        return out


@dataclass(frozen=True, eq=False)
class CocoEvaluation:
    """One evaluation: COCO's stats, mIoU and the per-image matches (area "all") that
    :mod:`orchestrator.reporting.intervals` resamples.

    ``matches``: area "all" packed for :func:`accumulate` (every category of the ground
    truth, detections after its last true positive dropped). ``iou_sum`` / ``gt_count``
    per image: mIoU's parts.
    """

    image_ids: np.ndarray
    metrics: CocoMetrics  # fractions 0–1, NaN where pycocotools prints -1
    miou: float  # fraction, NaN without boxes
    matches: Packed
    iou_sum: np.ndarray
    gt_count: np.ndarray


@dataclass(frozen=True, eq=False)
class _TruthArrays:
    """A GroundTruth's annotations as arrays, sorted by (image, category), file order within."""

    cat_ids: np.ndarray  # the categories COCO evaluates (the GT's list), sorted
    img: np.ndarray  # per annotation: image id
    cat: np.ndarray  # category id
    box: np.ndarray  # (G, 4) float64
    area: np.ndarray
    crowd: np.ndarray  # uint8


_TRUTH: weakref.WeakKeyDictionary[GroundTruth, _TruthArrays] = weakref.WeakKeyDictionary()


def _truth_arrays(gt: GroundTruth) -> _TruthArrays:
    cached = _TRUTH.get(gt)
    if cached is not None:
        return cached
    anns = gt.coco.dataset["annotations"]
    img = np.fromiter((int(a["image_id"]) for a in anns), np.int64, len(anns))
    cat = np.fromiter((int(a["category_id"]) for a in anns), np.int64, len(anns))
    box = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    area = np.fromiter((float(a["area"]) for a in anns), np.float64, len(anns))
    crowd = np.fromiter((1 if a.get("iscrowd") else 0 for a in anns), np.uint8, len(anns))
    order = np.lexsort((cat, img))  # stable: file order within (image, category), as imgToAnns
    arrays = _TruthArrays(
        cat_ids=np.array(sorted(gt.category_ids), np.int64),
        img=img[order], cat=cat[order], box=box[order], area=area[order], crowd=crowd[order],
    )
    _TRUTH[gt] = arrays
    return arrays


# -- kernels ---------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _bb_iou(d: np.ndarray, g: np.ndarray, crowd: bool) -> float:
    """maskApi.c bbIou for one pair, the same operations in the same order."""
    w = min(d[2] + d[0], g[2] + g[0]) - max(d[0], g[0])
    if w <= 0:
        return 0.0
    h = min(d[3] + d[1], g[3] + g[1]) - max(d[1], g[1])
    if h <= 0:
        return 0.0
    i = w * h
    u = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - i
    return i / u


@njit(cache=True, nogil=True)
def _match(grp_dt0, grp_ndt, grp_gt0, grp_gt1, dt_box, dt_area, gt_box, gt_area, gt_crowd, iou_thr, area_rng):
    """COCO's evaluateImg for every (image, category) group and area range: per detection
    and area the TP and FP bits (bit t: IoU threshold t; neither bit: ignored), per box and
    area whether it is ignored."""
    n_area, n_thr = area_rng.shape[0], iou_thr.shape[0]
    n_dt, n_gt = dt_box.shape[0], gt_box.shape[0]
    tp = np.zeros((n_area, n_dt), np.uint16)
    fp = np.zeros((n_area, n_dt), np.uint16)
    gt_ign = np.zeros((n_area, n_gt), np.uint8)
    for q in range(grp_dt0.shape[0]):
        d0, nd, g0, g1 = grp_dt0[q], grp_ndt[q], grp_gt0[q], grp_gt1[q]
        ng = g1 - g0
        ious = np.zeros((nd, ng))
        for i in range(nd):
            for j in range(ng):
                ious[i, j] = _bb_iou(dt_box[d0 + i], gt_box[g0 + j], gt_crowd[g0 + j] != 0)
        order = np.empty(ng, np.int64)
        ign = np.empty(ng, np.uint8)
        gtm = np.zeros(ng, np.uint8)
        for a in range(n_area):
            lo, hi = area_rng[a, 0], area_rng[a, 1]
            n = 0
            for pass_ign in range(2):  # regular boxes first, then ignored ones, each in file order
                for j in range(ng):
                    g_area = gt_area[g0 + j]
                    flag = 1 if (gt_crowd[g0 + j] != 0 or g_area < lo or g_area > hi) else 0
                    if flag == pass_ign:
                        order[n] = j
                        ign[n] = flag
                        n += 1
            for j in range(ng):
                gt_ign[a, g0 + order[j]] = ign[j]
            for t in range(n_thr):
                gtm[:] = 0
                bit = np.uint16(1 << t)
                for i in range(nd):
                    best = min(iou_thr[t], 1 - 1e-10)
                    m = -1
                    for jj in range(ng):
                        if gtm[jj] != 0 and gt_crowd[g0 + order[jj]] == 0:
                            continue
                        if m > -1 and ign[m] == 0 and ign[jj] == 1:
                            break
                        v = ious[i, order[jj]]
                        if v < best:
                            continue
                        best = v
                        m = jj
                    if m == -1:
                        area = dt_area[d0 + i]
                        if not (area < lo or area > hi):
                            fp[a, d0 + i] |= bit
                        continue
                    gtm[m] = 1
                    if ign[m] == 0:
                        tp[a, d0 + i] |= bit
    return tp, fp, gt_ign


@njit(cache=True, nogil=True)
def _recall_levels(npig: float, rec_thr: np.ndarray, out: np.ndarray) -> None:
    """Per recall threshold j the least true-positive count c with c / npig ≥ r_j, as
    COCO compares (``searchsorted(rc, r_j, "left")`` on rc = tp / npig): the backward pass
    then counts thresholds with integer comparisons, no division per detection."""
    for j in range(rec_thr.shape[0]):
        r = rec_thr[j]
        c = math.ceil(r * npig)
        while c > 0 and (c - 1) / npig >= r:
            c -= 1
        while c / npig < r:
            c += 1
        out[j] = c
    # Recall 0 is reached at the first detection, which in a pass over true positives is
    # the first true positive: a count of 1 (counts are integers).
    out[0] = 1.0


@njit(cache=True, nogil=True)
def _accumulate(counts, cat_off, img, tpm, fpm, plain, agg_off, agg_img, agg_tp, box_off, box_img, box_n, rec_thr):
    """COCO's accumulate on weighted images, for each row of ``counts`` (B, n_images).

    Returns per row and IoU threshold: the sum over categories with a non-ignored box of
    the mean interpolated precision (101 points), the sum of their final recalls, and how
    many categories that was. Weights are integers (image multiplicities), so true
    positive counts are too.

    Per (row, category) one forward pass keeps the detections of non-zero weight with
    their weight and the running count of detections seen; then per IoU threshold one
    backward pass over them keeps the running maximum of precision at true positives
    (the envelope) and gives each true positive the recall thresholds between the
    previous one's recall and its own.
    """
    n_rows = counts.shape[0]
    n_cat = cat_off.shape[0] - 1
    n_thr = agg_tp.shape[1]
    n_rec = rec_thr.shape[0]
    ap = np.zeros((n_rows, n_thr))
    recall = np.zeros((n_rows, n_thr))
    valid = np.zeros(n_rows)
    level = np.zeros(n_rec)
    longest = 0
    for k in range(n_cat):
        longest = max(longest, cat_off[k + 1] - cat_off[k])
    weight = np.zeros(longest)
    seen = np.zeros(longest)  # 1 / (detections seen up to here + eps): precision = true positives × this
    tp_bits = np.zeros(longest, np.uint16)
    counted = np.zeros(longest, np.uint16)
    hits = np.zeros(n_thr)
    for b in range(n_rows):
        w = counts[b]
        for k in range(n_cat):
            npig = 0.0
            for j in range(box_off[k], box_off[k + 1]):
                npig += w[box_img[j]] * box_n[j]
            if npig <= 0:
                continue
            valid[b] += 1
            d0, d1 = cat_off[k], cat_off[k + 1]
            if d1 == d0:
                continue  # boxes, no detection: precision and recall 0
            n = 0
            running = 0.0
            for d in range(d0, d1):  # branch-free: an entry of weight 0 is overwritten
                wd = w[img[d]]
                running += wd
                weight[n] = wd
                seen[n] = 1.0 / (running + _EPS)
                tp_bits[n] = tpm[d]
                n += wd != 0
            if not plain[k]:
                n = 0
                for d in range(d0, d1):
                    counted[n] = tpm[d] | fpm[d]
                    n += w[img[d]] != 0
            # True positives at each threshold: from per-image counts, fewer than detections.
            hits[:] = 0.0
            for e in range(agg_off[k], agg_off[k + 1]):
                we = w[agg_img[e]]
                for t in range(n_thr):
                    hits[t] += we * agg_tp[e, t]
            _recall_levels(npig, rec_thr, level)
            for t in range(n_thr):
                if not plain[k]:
                    # Detections matched to a crowd box are ignored: not counted as seen
                    # at the thresholds where they are.
                    running = 0.0
                    for i in range(n):
                        running += weight[i] * ((counted[i] >> t) & 1)
                        seen[i] = 1.0 / (running + _EPS)
                hit = hits[t]
                recall[b, t] += hit / npig
                if hit <= 0:
                    continue
                above = 0
                while above < n_rec and level[above] <= hit:
                    above += 1
                best, area = 0.0, 0.0
                for i in range(n - 1, -1, -1):
                    if not (tp_bits[i] >> t) & 1:
                        continue
                    best = max(best, hit * seen[i])
                    hit -= weight[i]
                    lower = above
                    while lower > 0 and level[lower - 1] > hit:
                        lower -= 1
                    if lower != above:
                        area += best * (above - lower)
                        above = lower
                ap[b, t] += area / n_rec
    return ap, recall, valid


@njit(cache=True, nogil=True)
def _weighted_sums(counts, values):
    """counts @ values in float64 for every row, without a float64 copy of ``counts``."""
    out = np.zeros(counts.shape[0])
    for b in range(counts.shape[0]):
        total = 0.0
        for i in range(counts.shape[1]):
            total += counts[b, i] * values[i]
        out[b] = total
    return out


def weighted_sums(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Σ_i counts[b, i] · values[i] for each row b (float64)."""
    return _weighted_sums(_as_counts(counts), np.ascontiguousarray(values, np.float64))


def _as_counts(counts: np.ndarray) -> np.ndarray:
    """(rows, images) weights as the kernels take them: C-contiguous float32 or float64."""
    counts = np.atleast_2d(counts)
    if counts.dtype not in (np.float64, np.float32):
        counts = counts.astype(np.float64)
    return np.ascontiguousarray(counts)


@njit(cache=True, nogil=True)
def _miou_parts(grp_img, grp_dt0, grp_dt1, grp_gt0, grp_gt1, dt_box, dt_keep, gt_box32, gt_crowd, n_images):
    """Per image: Σ over non-crowd boxes of the best IoU of a kept same-category detection
    (tasks.metrics.box_iou on float32 boxes), and the number of non-crowd boxes."""
    iou_sum = np.zeros(n_images)
    count = np.zeros(n_images)
    for q in range(grp_img.shape[0]):
        p = grp_img[q]
        for j in range(grp_gt0[q], grp_gt1[q]):
            if gt_crowd[j] != 0:
                continue
            count[p] += 1
            g = gt_box32[j]
            top = 0.0
            for i in range(grp_dt0[q], grp_dt1[q]):
                if not dt_keep[i]:
                    continue
                d = dt_box[i]
                iw = min(g[0] + g[2], d[0] + d[2]) - max(g[0], d[0])
                ih = min(g[1] + g[3], d[1] + d[3]) - max(g[1], d[1])
                iw = max(iw, 0.0)
                ih = max(ih, 0.0)
                inter = iw * ih
                union = g[2] * g[3] + d[2] * d[3] - inter
                v = inter / union if union > 0 else 0.0
                if v > top:
                    top = v
            iou_sum[p] += top
    return iou_sum, count


# -- packing -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Packed:
    """Per-category matches as the accumulation kernel reads them: detections of category
    k at ``cat_off[k]:cat_off[k+1]`` in COCO's order (image positions, TP / FP bit masks;
    ``plain[k]``: none ignored at any threshold; per (category, image) its true positives
    at each threshold, ``agg_*``), the non-ignored boxes at
    ``box_off[k]:box_off[k+1]`` (image positions, counts)."""

    cat_off: np.ndarray
    img: np.ndarray
    tpm: np.ndarray
    fpm: np.ndarray
    box_off: np.ndarray
    box_img: np.ndarray
    box_n: np.ndarray

    def __post_init__(self) -> None:
        # Which categories have no ignored detection: one running count serves all thresholds.
        n_cat, n_thr = len(self.cat_off) - 1, len(IOU_THRESHOLDS)
        cat = np.repeat(np.arange(n_cat), np.diff(self.cat_off))
        plain = np.ones(n_cat, bool)
        plain[cat[(self.tpm | self.fpm).astype(np.int64) != (1 << n_thr) - 1]] = False
        # Per (category, image): true positives at each threshold (the totals a resample weights).
        n_img = int(max(self.img.max(initial=-1), self.box_img.max(initial=-1))) + 1
        keys, inverse = np.unique(cat * n_img + self.img, return_inverse=True)
        agg_tp = np.zeros((len(keys), n_thr))
        for t in range(n_thr):
            agg_tp[:, t] = np.bincount(inverse, weights=(self.tpm >> t) & 1, minlength=len(keys))
        object.__setattr__(self, "plain", plain)
        object.__setattr__(self, "agg_off", np.searchsorted(keys // max(n_img, 1), np.arange(n_cat + 1)))
        object.__setattr__(self, "agg_img", keys % max(n_img, 1))
        object.__setattr__(self, "agg_tp", agg_tp)


def pack(matches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Packed:
    """(image, tp (T, D), fp (T, D), n_boxes) per category → :class:`Packed`."""
    weights = (1 << np.arange(len(IOU_THRESHOLDS), dtype=np.uint16)).astype(np.uint16)
    imgs, tps, fps, cat_lens, box_imgs, box_ns, box_lens = [], [], [], [], [], [], []
    for image, tp, fp, n_boxes in matches:
        imgs.append(np.asarray(image, np.int64))
        tps.append((np.asarray(tp, bool) * weights[:, None]).sum(axis=0).astype(np.uint16))
        fps.append((np.asarray(fp, bool) * weights[:, None]).sum(axis=0).astype(np.uint16))
        cat_lens.append(len(image))
        nb = np.asarray(n_boxes, np.float64)
        nz = np.flatnonzero(nb)
        box_imgs.append(nz.astype(np.int64))
        box_ns.append(nb[nz])
        box_lens.append(len(nz))

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return Packed(
        cat_off=np.concatenate([[0], np.cumsum(cat_lens, dtype=np.int64)]).astype(np.int64),
        img=cat(imgs, np.int64), tpm=cat(tps, np.uint16), fpm=cat(fps, np.uint16),
        box_off=np.concatenate([[0], np.cumsum(box_lens, dtype=np.int64)]).astype(np.int64),
        box_img=cat(box_imgs, np.int64), box_n=cat(box_ns, np.float64),
    )


def accumulate(packed: Packed, counts: np.ndarray, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ap_sums (B, T), recall_sums (B, T), valid (B,)) of the weighted accumulation: AP at
    threshold t of row b is ``ap_sums[b, t] / valid[b]`` (fraction), NaN where valid is 0.
    ``counts``: integer image multiplicities (any float or integer dtype). Rows are split
    over ``threads`` (default :func:`set_threads`'s; the kernel releases the GIL)."""
    counts = _as_counts(counts)
    p = packed

    def run(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _accumulate(rows, p.cat_off, p.img, p.tpm, p.fpm, p.plain, p.agg_off, p.agg_img, p.agg_tp, p.box_off,
                           p.box_img, p.box_n, RECALL_THRESHOLDS)

    n = min(_THREADS if threads is None else threads, len(counts) // _ROWS_PER_THREAD)
    if n <= 1:
        return run(counts)
    bounds = np.linspace(0, len(counts), n + 1).astype(int)
    parts = list(_pool(n).map(run, [counts[a:b] for a, b in zip(bounds[:-1], bounds[1:])]))
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]


_POOL: ThreadPoolExecutor | None = None


def _pool(n: int) -> ThreadPoolExecutor:
    """One thread pool per process, kept (starting threads per call costs milliseconds)."""
    global _POOL
    if _POOL is None or _POOL._max_workers < n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fastcoco")
    return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def set_threads(n: int | None) -> None:
    """Threads :func:`accumulate` uses by default (None: the CPUs this process may use).
    A process pool's children set 1, so that processes × threads stays the CPU count."""
    global _THREADS
    _THREADS = _usable_cpus() if n is None else max(1, int(n))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_ROWS_PER_THREAD = 64  # fewer rows are not worth a thread
_THREADS = _usable_cpus()


# -- evaluation ----------------------------------------------------------------------------------


def _groups(img_pos: np.ndarray, cat_pos: np.ndarray, gt_img: np.ndarray, gt_cat: np.ndarray, n_cats: int):
    """(image, category) groups over detections and boxes, both already sorted by that
    key: per group its image and the detection / box ranges."""
    dkey = img_pos * n_cats + cat_pos
    gkey = gt_img * n_cats + gt_cat
    keys = np.union1d(dkey, gkey)
    return (
        keys // n_cats, keys % n_cats,
        np.searchsorted(dkey, keys, "left"), np.searchsorted(dkey, keys, "right"),
        np.searchsorted(gkey, keys, "left"), np.searchsorted(gkey, keys, "right"),
    )


def evaluate(
    gt: GroundTruth, detections: FlatDetections | Mapping[int, Detections], image_ids: Iterable[int], *,
    miou_threshold: float = 0.5,
) -> CocoEvaluation:
    """COCO bbox stats, mIoU and per-image matches of ``detections`` on ``image_ids``
    (ids must be in the ground truth). Detections of other images, and of categories the
    ground truth does not list, are left out of AP, as the report does."""
    if not isinstance(detections, FlatDetections):
        detections = FlatDetections.from_mapping(detections)
    truth = _truth_arrays(gt)
    ids = np.unique(np.fromiter((int(i) for i in image_ids), np.int64))
    n_img = len(ids)
    nan = math.nan
    if not n_img:
        return CocoEvaluation(ids, CocoMetrics(nan, nan, nan, nan, nan, nan, nan, 0), nan, pack([]), np.zeros(0),
                              np.zeros(0))
    # Category positions: the GT's list first (COCO evaluates those), then any other id
    # seen (such boxes and detections count only in mIoU).
    extra = np.setdiff1d(np.union1d(truth.cat, detections.category_ids), truth.cat_ids)
    all_cats = np.concatenate([truth.cat_ids, extra])
    cat_order = np.argsort(all_cats, kind="stable")
    n_cats, n_known = len(all_cats), len(truth.cat_ids)

    def cat_pos(values: np.ndarray) -> np.ndarray:
        return cat_order[np.searchsorted(all_cats[cat_order], values)]

    # Boxes of the evaluated images, sorted by (image, category), file order within.
    g_sel = np.flatnonzero(np.isin(truth.img, ids))
    g_img = np.searchsorted(ids, truth.img[g_sel])
    g_cat = cat_pos(truth.cat[g_sel])
    g_order = np.lexsort((g_cat, g_img))
    g_sel, g_img, g_cat = g_sel[g_order], g_img[g_order], g_cat[g_order]
    gt_box, gt_area, gt_crowd = truth.box[g_sel], truth.area[g_sel], truth.crowd[g_sel]

    # Detections of those images, by (image, category, score descending), input order in ties.
    d_sel = np.flatnonzero(np.isin(detections.image_ids, ids))
    d_img = np.searchsorted(ids, detections.image_ids[d_sel])
    d_cat = cat_pos(detections.category_ids[d_sel])
    scores = detections.scores[d_sel].astype(np.float64)
    d_order = np.lexsort((-scores, d_cat, d_img))
    d_sel, d_img, d_cat, scores = d_sel[d_order], d_img[d_order], d_cat[d_order], scores[d_order]
    boxes32 = detections.boxes[d_sel]
    dt_box = boxes32.astype(np.float64)
    dt_area = dt_box[:, 2] * dt_box[:, 3]

    grp_img, grp_cat, grp_d0, grp_d1, grp_g0, grp_g1 = _groups(d_img, d_cat, g_img, g_cat, n_cats)
    keep = detections.scores[d_sel] >= np.float32(miou_threshold)  # float32, as tasks.metrics
    iou_sum, gt_count = _miou_parts(grp_img, grp_d0, grp_d1, grp_g0, grp_g1, dt_box, keep,
                                    gt_box.astype(np.float32).astype(np.float64), gt_crowd, n_img)

    # COCO: the GT's categories only, the first 100 detections of each (image, category).
    known = grp_cat < n_known
    rank = np.arange(len(d_sel)) - np.repeat(grp_d0, grp_d1 - grp_d0)
    coco_dt = (rank < MAX_DETS) & (d_cat < n_known)
    tpm, fpm, gt_ign = _match(grp_d0[known], np.minimum(grp_d1 - grp_d0, MAX_DETS)[known], grp_g0[known],
                              grp_g1[known], dt_box, dt_area, gt_box, gt_area, gt_crowd, IOU_THRESHOLDS, AREA_RANGES)

    # Accumulation order: per category, all images' detections by score (stable).
    acc = np.flatnonzero(coco_dt)
    acc = acc[np.lexsort((acc, -scores[acc], d_cat[acc]))]
    acc_cat = d_cat[acc]
    cat_off = np.searchsorted(acc_cat, np.arange(n_known + 1)).astype(np.int64)
    g_known = g_cat < n_known
    sums = {}
    for a in range(len(AREA_RANGES)):
        regular = g_known & (gt_ign[a] == 0)
        key, n_boxes = np.unique(g_cat[regular] * n_img + g_img[regular], return_counts=True)
        packed = Packed(
            cat_off=cat_off, img=d_img[acc].astype(np.int64), tpm=tpm[a, acc], fpm=fpm[a, acc],
            box_off=np.searchsorted(key // n_img, np.arange(n_known + 1)).astype(np.int64),
            box_img=(key % n_img).astype(np.int64), box_n=n_boxes.astype(np.float64),
        )
        ap, rec, valid = accumulate(packed, np.ones((1, n_img)))
        sums[a] = (ap[0], rec[0], valid[0])
        if a == 0:
            matches = _trim(packed)  # area "all": what the bootstrap resamples

    def mean(a: int, t: slice, recall: bool = False) -> float:
        ap, rec, valid = sums[a]
        values = rec if recall else ap
        n = valid * len(values[t])
        return float(values[t].sum() / n) if n > 0 else nan

    every = slice(None)
    metrics = CocoMetrics(
        ap=mean(0, every), ap50=mean(0, slice(0, 1)), ap75=mean(0, slice(5, 6)), ap_small=mean(1, every),
        ap_medium=mean(2, every), ap_large=mean(3, every), ar100=mean(0, every, recall=True), n_images=n_img,
    )
    boxes = gt_count.sum()
    miou = float(iou_sum.sum() / boxes) if boxes > 0 else nan
    return CocoEvaluation(ids, metrics, miou, matches, iou_sum, gt_count)


def _trim(packed: Packed) -> Packed:
    """Detections after a category's last true positive change no interpolated precision
    (recall stops rising, precision only falls): dropped, so a detector's long tail of
    low-score boxes costs no resampling time."""
    n_cat = len(packed.cat_off) - 1
    cat = np.repeat(np.arange(n_cat), np.diff(packed.cat_off))
    last = np.full(n_cat, -1, np.int64)
    hits = np.flatnonzero(packed.tpm)
    np.maximum.at(last, cat[hits], hits)
    keep = np.arange(len(cat)) <= last[cat]
    return Packed(
        cat_off=np.concatenate([[0], np.cumsum(np.bincount(cat[keep], minlength=n_cat))]).astype(np.int64),
        img=packed.img[keep], tpm=packed.tpm[keep], fpm=packed.fpm[keep],
        box_off=packed.box_off, box_img=packed.box_img, box_n=packed.box_n,
    )
