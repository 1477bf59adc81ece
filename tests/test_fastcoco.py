"""The compiled COCO evaluation (orchestrator.reporting.fastcoco) gives pycocotools' stats,
faster-coco-eval's too, and the report's mIoU, on data that exercises every rule of the
protocol: crowd boxes, area ranges, score ties, more than 100 detections per image,
categories the ground truth does not list, images without boxes."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.reporting.fastcoco import FlatDetections, accumulate, evaluate
from tasks.metrics import COCO_CATEGORIES, GroundTruth, coco_categories, coco_metrics, matched_iou
from tasks.rows import Detections

CATS = [c.id for c in COCO_CATEGORIES[:6]]
FIELDS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")


def _hard_case(n_images: int, seed: int, *, crowd: float = 0.1, many: bool = False, ties: bool = True):
    tie = 0.3 if ties else 0.0
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], {}
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        truth = []
        for _ in range(rng.integers(0, 7)):
            scale = rng.choice([12.0, 50.0, 180.0])  # small, medium and large boxes
            w, h = rng.uniform(0.5, 1.5, 2) * scale
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice(CATS[:5]))  # CATS[5] is listed but never annotated
            is_crowd = int(rng.random() < crowd)
            area = w * h * (rng.uniform(0.5, 1.0) if rng.random() < 0.3 else 1.0)  # a segmentation's area
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": is_crowd})
            truth.append((x, y, w, h, cat))
        boxes, scores, cats = [], [], []
        for x, y, w, h, cat in truth:
            for _ in range(rng.integers(0, 3)):  # duplicates make ties for one box
                boxes.append([x, y, w, h] + rng.normal(0, rng.choice([1.0, 6.0]), 4) * [1, 1, 0.5, 0.5])
                cats.append(cat if rng.random() > 0.1 else int(rng.choice(CATS)))
                scores.append(rng.choice([0.9, 0.7, 0.5]) if rng.random() < tie else rng.uniform(0.05, 1))
        n_fp = rng.integers(0, 4) + (rng.integers(100, 130) if many and i % 7 == 0 else 0)
        for _ in range(n_fp):
            w, h = rng.uniform(5, 150, 2)
            boxes.append([rng.uniform(0, 600), rng.uniform(0, 440), w, h])
            cats.append(int(rng.choice(CATS)) if rng.random() > 0.05 else 999)  # 999: not in the GT's list
            scores.append(rng.choice([0.5, 0.3]) if rng.random() < tie else rng.uniform(0, 0.8))
        if boxes or rng.random() < 0.5:
            dets[i] = Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                                 np.asarray(cats, np.int32))
    gt = GroundTruth.from_dict({"images": images, "annotations": anns, "categories": coco_categories(COCO_CATEGORIES[:6])})
    return gt, dets


@pytest.mark.parametrize("seed, crowd, many", [(1, 0.0, False), (2, 0.1, False), (3, 0.25, True), (4, 0.1, True)])
def test_stats_equal_pycocotools_and_faster_coco_eval(seed, crowd, many):
    gt, dets = _hard_case(60, seed, crowd=crowd, many=many)
    ids = sorted(gt.image_ids)
    for subset in (ids, ids[7:41]):
        ours = evaluate(gt, dets, subset)
        ref = coco_metrics(gt, dets, image_ids=subset, unknown_categories="ignore", backend="pycocotools")
        fast = coco_metrics(gt, dets, image_ids=subset, unknown_categories="ignore")
        for field in FIELDS:
            want = getattr(ref, field)
            assert getattr(ours.metrics, field) == pytest.approx(want, abs=1e-12, nan_ok=True), field
            assert getattr(fast, field) == pytest.approx(want, abs=1e-12, nan_ok=True), field
        assert ours.metrics.n_images == len(subset)
        assert ours.miou == pytest.approx(matched_iou(gt, dets, subset, score_threshold=0.5), abs=1e-12)


def test_flat_input_and_thresholds():
    gt, dets = _hard_case(30, 5)
    ids = sorted(gt.image_ids)
    flat = FlatDetections.from_mapping(dets)
    a, b = evaluate(gt, dets, ids), evaluate(gt, flat, ids)
    assert a.metrics == b.metrics and a.miou == b.miou
    for threshold in (0.3, 0.7):
        got = evaluate(gt, flat, ids, miou_threshold=threshold).miou
        assert got == pytest.approx(matched_iou(gt, dets, ids, score_threshold=threshold), abs=1e-12)
    assert evaluate(gt, flat, ids, miou_threshold=0.3).miou != a.miou


def test_no_detections_and_no_images():
    gt, _ = _hard_case(10, 6)
    ids = sorted(gt.image_ids)
    empty = evaluate(gt, {}, ids)
    ref = coco_metrics(gt, {}, image_ids=ids, backend="pycocotools")
    assert empty.metrics.ap == ref.ap == 0.0 and empty.metrics.ar100 == 0.0
    assert empty.miou == 0.0
    none = evaluate(gt, {}, [])
    assert np.isnan(none.metrics.ap) and none.metrics.n_images == 0
    ap, _, valid = accumulate(none.matches, np.ones((3, 0)))  # resampling no images: nothing valid
    assert ap.shape == (3, 10) and not valid.any()


def test_weights_equal_duplicated_images():
    """Weights are image multiplicities: weight 2 is the image listed twice (with its
    boxes), weight 0 the image left out — as COCOeval scores such a set."""
    gt, dets = _hard_case(25, 7, crowd=0.15, ties=False)
    ids = sorted(gt.image_ids)
    ev = evaluate(gt, dets, ids)
    counts = np.ones(len(ids))
    counts[[2, 9]] = 0
    counts[[4, 13]] = 2
    data = gt.coco.dataset
    gone = {ids[2], ids[9]}
    images = [im for im in data["images"] if im["id"] not in gone]
    anns = [a for a in data["annotations"] if a["image_id"] not in gone]
    copies = {i: d for i, d in dets.items() if i not in gone}
    for src in (ids[4], ids[13]):
        new = 1000 + src
        images.append({**next(im for im in data["images"] if im["id"] == src), "id": new})
        anns += [{**a, "id": new * 100 + k, "image_id": new}
                 for k, a in enumerate(a for a in data["annotations"] if a["image_id"] == src)]
        if src in dets:
            copies[new] = dets[src]
    dup = GroundTruth.from_dict({"images": images, "annotations": anns, "categories": data["categories"]})
    ref = coco_metrics(dup, copies, image_ids=[im["id"] for im in images], unknown_categories="ignore",
                       backend="pycocotools")
    ap, _, valid = accumulate(ev.matches, counts[None])
    # Without score ties: COCO orders tied detections by image, the weighted order keeps
    # copies of one detection together (an AP difference of ~1e-4 on this data with ties).
    assert ap[0].sum() / (valid[0] * 10) == pytest.approx(ref.ap, abs=1e-12)
    assert ap[0, 0] / valid[0] == pytest.approx(ref.ap50, abs=1e-12)


def test_threads_split_resamples_without_changing_them():
    gt, dets = _hard_case(40, 8, crowd=0.2)
    ev = evaluate(gt, dets, sorted(gt.image_ids))
    counts = np.random.default_rng(0).multinomial(40, np.full(40, 1 / 40), size=300).astype(np.float32)
    one = accumulate(ev.matches, counts, threads=1)
    three = accumulate(ev.matches, counts, threads=3)
    for a, b in zip(one, three):
        assert np.array_equal(a, b)
    assert one[0].shape == (300, 10) and len(np.unique(one[0][:, 0])) > 10  # resamples differ
