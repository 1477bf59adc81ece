"""Bootstrap intervals: the point estimate is COCOeval's AP, intervals are seeded, and a
95% paired interval covers a known ΔAP at its nominal rate on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.reporting.intervals import (
    CategoryMatches,
    ImageEvaluation,
    Interval,
    bootstrap_ap,
    evaluate_images,
    interval_from_resamples,
    paired_delta,
    resample_counts,
)
from tasks.metrics import COCO_CATEGORIES, GroundTruth, coco_categories, coco_metrics, matched_iou
from tasks.rows import Detections

CATS = [c.id for c in COCO_CATEGORIES[:4]]


def _synthetic_coco(n_images: int, seed: int) -> tuple[GroundTruth, dict[int, Detections], dict[int, Detections]]:
    """Ground truth with 0–4 boxes of four categories per image, and two detectors: a
    good one (small jitter, few false positives) and a worse one (more jitter, misses)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    good, bad = {}, {}
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        boxes, cats = [], []
        for _ in range(rng.integers(0, 5)):
            w, h = rng.uniform(20, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice(CATS))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            boxes.append([x, y, w, h])
            cats.append(cat)
        for out, jitter, miss in ((good, 4.0, 0.05), (bad, 14.0, 0.25)):
            keep = rng.random(len(boxes)) >= miss
            b = np.asarray(boxes, np.float32).reshape(-1, 4)[keep] + rng.normal(0, jitter, (int(keep.sum()), 4))
            c = np.asarray(cats, np.int32)[keep]
            n_fp = rng.integers(0, 3)
            fp = np.column_stack([rng.uniform(0, 500, (n_fp, 2)), rng.uniform(20, 120, (n_fp, 2))])
            out[i] = Detections(
                np.vstack([b, fp]).astype(np.float32),
                np.concatenate([rng.uniform(0.3, 1.0, len(b)), rng.uniform(0.0, 0.7, n_fp)]).astype(np.float32),
                np.concatenate([c, rng.choice(CATS, n_fp)]).astype(np.int32),
            )
    gt = GroundTruth.from_dict({"images": images, "annotations": anns, "categories": coco_categories(COCO_CATEGORIES[:4])})
    return gt, good, bad


@pytest.fixture(scope="module")
def coco_case():
    return _synthetic_coco(40, seed=3)


def test_estimate_is_cocoeval(coco_case):
    """With every image once, the re-accumulation reproduces faster-coco-eval's AP, AP50,
    AP75 and the report's mIoU (also on a subset of the images)."""
    gt, good, bad = coco_case
    for dets in (good, bad):
        for ids in (sorted(dets), sorted(dets)[5:31]):
            ref = coco_metrics(gt, dets, image_ids=ids)
            iv = bootstrap_ap(gt, dets, ids, metrics=("ap", "ap50", "ap75", "miou"), resamples=50)
            assert iv["ap"].estimate == pytest.approx(100 * ref.ap, abs=1e-9)
            assert iv["ap50"].estimate == pytest.approx(100 * ref.ap50, abs=1e-9)
            assert iv["ap75"].estimate == pytest.approx(100 * ref.ap75, abs=1e-9)
            assert iv["miou"].estimate == pytest.approx(100 * matched_iou(gt, dets, ids, score_threshold=0.5), abs=1e-9)
            for m in ("ap", "ap50", "miou"):
                assert iv[m].low <= iv[m].estimate <= iv[m].high
                assert iv[m].high - iv[m].low > 0.5  # 26-40 images: an interval of several points


def test_weighted_counts_equal_duplicated_images(coco_case):
    """An image drawn twice counts as two copies of it: the weighted accumulation equals
    COCOeval run on a ground truth where that image really is duplicated."""
    gt, good, _ = coco_case
    ev = evaluate_images(gt, good)
    counts = np.ones(len(ev.image_ids))
    counts[[0, 7]] = 0
    counts[[3, 11]] = 2
    # The same multiset made explicit: copies of images 4 and 12 under new ids.
    data = gt.coco.dataset
    images = [im for im in data["images"] if im["id"] not in (1, 8)]
    anns = [a for a in data["annotations"] if a["image_id"] not in (1, 8)]
    dets = {i: d for i, d in good.items() if i not in (1, 8)}
    for src, new in ((4, 1004), (12, 1012)):
        images.append({**next(im for im in data["images"] if im["id"] == src), "id": new})
        copies = [a for a in data["annotations"] if a["image_id"] == src]
        anns += [{**a, "id": new * 100 + k, "image_id": new} for k, a in enumerate(copies)]
        dets[new] = good[src]
    dup = GroundTruth.from_dict({"images": images, "annotations": anns, "categories": data["categories"]})
    ref = coco_metrics(dup, dets)
    got = ev.metrics(counts[None], ("ap", "ap50"))
    # Copies sit next to each other in the weighted order, COCO may interleave exact score
    # ties differently; the synthetic scores are continuous, so none tie here.
    assert got["ap"][0] == pytest.approx(100 * ref.ap, abs=1e-9)
    assert got["ap50"][0] == pytest.approx(100 * ref.ap50, abs=1e-9)


def test_seeded_and_paired(coco_case):
    gt, good, bad = coco_case
    a = paired_delta(gt, bad, good, resamples=300, seed=7)
    b = paired_delta(gt, bad, good, resamples=300, seed=7)
    c = paired_delta(gt, bad, good, resamples=300, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    ap_bad = coco_metrics(gt, bad, image_ids=sorted(good)).ap
    ap_good = coco_metrics(gt, good, image_ids=sorted(good)).ap
    assert a.estimate == pytest.approx(100 * (ap_bad - ap_good), abs=1e-9)
    assert a.high < 0 and a.excludes_zero  # the worse detector is worse beyond the noise
    # Paired: both sides re-accumulated on the same resampled images.
    counts = resample_counts(40, resamples=300, seed=7)
    diff = evaluate_images(gt, bad).metrics(counts)["ap"] - evaluate_images(gt, good).metrics(counts)["ap"]
    assert interval_from_resamples(a.estimate, diff, n_images=40) == a
    # A configuration against itself: exactly zero, every resample.
    same = paired_delta(gt, good, good, resamples=100)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero


def test_resample_counts():
    c = resample_counts(17, resamples=200, seed=1)
    assert c.shape == (200, 17) and (c.sum(axis=1) == 17).all()
    assert np.array_equal(c, resample_counts(17, resamples=200, seed=1))
    assert abs(c.mean() - 1.0) < 1e-12 and c.max() >= 3  # with replacement


# -- coverage on synthetic per-image matches -------------------------------------------------

def _synthetic_matches(latent: np.ndarray, shift: float, rng: np.random.Generator) -> ImageEvaluation:
    """One category, one box per image. A detection's IoU with its box is the image's
    latent quality minus ``shift`` plus noise; it is a TP at every COCO IoU threshold it
    clears. A second, false detection appears on 40% of the images. Same latent for two
    configurations = paired images."""
    n = len(latent)
    thresholds = np.linspace(0.5, 0.95, 10)
    iou = np.clip(latent - shift + rng.normal(0, 0.05, n), 0, 1)
    score = np.clip(iou + rng.normal(0, 0.15, n), 0, 1)
    fp_on = rng.random(n) < 0.4
    fp_score = rng.uniform(0, 0.9, n)
    scores = np.concatenate([score, fp_score[fp_on]])
    image = np.concatenate([np.arange(n), np.flatnonzero(fp_on)])
    tp = np.concatenate([iou[None, :] >= thresholds[:, None], np.zeros((10, int(fp_on.sum())), bool)], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    cat = CategoryMatches(image=image[order], tp=tp[:, order], fp=~tp[:, order], n_boxes=np.ones(n))
    return ImageEvaluation(image_ids=np.arange(n, dtype=np.int64), categories=(cat,),
                           iou_sum=iou.copy(), gt_count=np.ones(n))


def test_paired_interval_covers_known_difference_at_nominal_rate():
    """Draw many samples of 120 images from one population; the 95% paired interval of
    ΔAP must cover the population's ΔAP (computed on 200,000 images) in 95% of them, within
    three binomial standard errors. Marginal AP intervals too."""
    rng = np.random.default_rng(2026)
    pop_latent = rng.beta(6, 2, 200_000)
    pop_a = _synthetic_matches(pop_latent, 0.0, np.random.default_rng(1))
    pop_b = _synthetic_matches(pop_latent, 0.06, np.random.default_rng(2))
    ones = np.ones((1, len(pop_latent)))
    true_a = pop_a.metrics(ones)["ap"][0]
    true_delta = pop_b.metrics(ones)["ap"][0] - true_a
    assert -15 < true_delta < -1  # a real, known difference

    trials, n, covered, covered_ap = 200, 120, 0, 0
    for trial in range(trials):
        latent = rng.beta(6, 2, n)
        a = _synthetic_matches(latent, 0.0, rng)
        b = _synthetic_matches(latent, 0.06, rng)
        iv = paired_delta(None, b, a, resamples=250, seed=trial)  # type: ignore[arg-type]
        covered += iv.contains(true_delta)
        covered_ap += bootstrap_ap(a, resamples=250, seed=trial)["ap"].contains(true_a)
    se = math.sqrt(0.95 * 0.05 / trials)
    assert abs(covered / trials - 0.95) <= 3 * se, covered / trials
    assert abs(covered_ap / trials - 0.95) <= 3 * se, covered_ap / trials


def test_interval_api():
    iv = Interval(1.0, -0.5, 2.5)
    assert iv.level == 0.95 and iv.contains(0) and not iv.excludes_zero
    assert Interval(-3.0, -4.0, -1.0).excludes_zero
    assert not Interval(math.nan, math.nan, math.nan).excludes_zero
