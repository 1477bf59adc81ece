"""Metrics: COCO AP equals pycocotools called directly; per-image numbers match hand arithmetic."""

from __future__ import annotations

import contextlib
import copy
import io
import math
from dataclasses import dataclass

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.errors import DataError
from tasks.metrics import (
    COCO_CATEGORIES,
    GroundTruth,
    box_iou,
    coco_categories,
    coco_metrics,
    gt_boxes,
    per_image_ap,
    per_image_aps,
    per_image_metrics,
    reference_ground_truth,
    select_images,
)
from tasks.rows import Detections

PERSON, CAR, DOG, CUP = 1, 3, 18, 47


def _ann(n, image_id, cat, bbox, *, crowd=0):
    return {
        "id": n,
        "image_id": image_id,
        "category_id": cat,
        "bbox": list(bbox),
        "area": bbox[2] * bbox[3],
        "iscrowd": crowd,
    }


@pytest.fixture
def gt() -> dict:
    """Four images, three categories with boxes (plus one listed without any), a crowd
    region, and small (< 32²), medium and large (> 96²) boxes."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (11, 12, 13, 14)]
    anns = [
        _ann(1, 11, PERSON, (10, 10, 100, 200)),  # large
        _ann(2, 11, CAR, (300, 300, 60, 40)),  # medium
        _ann(3, 11, CAR, (400, 50, 20, 15)),  # small
        _ann(4, 12, DOG, (50, 60, 150, 120)),  # large
        _ann(5, 12, PERSON, (0, 200, 640, 280), crowd=1),  # crowd region
        _ann(6, 12, PERSON, (500, 100, 40, 90)),  # medium
        _ann(7, 13, PERSON, (100, 100, 25, 25)),  # small
        _ann(8, 13, PERSON, (200, 100, 30, 70)),  # medium
        # image 14 has no boxes at all
    ]
    cats = [
        {"id": c, "name": n, "supercategory": "x"}
        for c, n in ((PERSON, "person"), (CAR, "car"), (DOG, "dog"), (CUP, "cup"))
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def _dets(rows):
    if not rows:
        return Detections.empty()
    return Detections(
        np.array([r[0] for r in rows], np.float32),
        np.array([r[1] for r in rows], np.float32),
        np.array([r[2] for r in rows], np.int32),
    )


@pytest.fixture
def detections() -> dict[int, Detections]:
    return {
        11: _dets(
            [
                ((12, 8, 98, 205), 0.95, PERSON),  # good
                ((302, 298, 55, 45), 0.80, CAR),  # good
                ((395, 55, 30, 14), 0.40, CAR),  # small, loose
                ((200, 200, 50, 50), 0.70, CAR),  # false positive
                ((10, 10, 100, 200), 0.30, DOG),  # wrong class
            ]
        ),
        12: _dets(
            [
                ((55, 65, 140, 110), 0.90, DOG),
                ((100, 300, 60, 120), 0.85, PERSON),  # inside the crowd region: ignored, not FP
                ((505, 102, 38, 85), 0.60, PERSON),
                ((0, 0, 30, 30), 0.50, CUP),  # GT lists cup but has none: ignored
            ]
        ),
        13: _dets([((201, 105, 28, 60), 0.75, PERSON)]),  # the small person is missed
        14: _dets([((10, 10, 50, 50), 0.65, PERSON)]),  # on an image without boxes: FP
    }


def _pycocotools_stats(gt: dict, detections: dict[int, Detections], image_ids) -> list[float]:
    """pycocotools used the documented way: loadRes + COCOeval.summarize."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        results = [r for i, d in detections.items() for r in d.to_coco(i)]
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def _as_coco_stats(m) -> list[float]:
    return [-1.0 if math.isnan(v) else v for v in (m.ap, m.ap50, m.ap75, m.ap_small, m.ap_medium, m.ap_large, m.ar100)]


def test_coco_ap_equals_pycocotools_directly(gt, detections):
    ours = coco_metrics(gt, detections, image_ids=[11, 12, 13, 14])
    ref = _pycocotools_stats(gt, detections, [11, 12, 13, 14])
    assert _as_coco_stats(ours) == pytest.approx([ref[i] for i in (0, 1, 2, 3, 4, 5, 8)], abs=1e-12)
    assert ours.n_images == 4
    assert 0.3 < ours.ap < 0.9  # a real mix of hits, misses and false positives


def test_only_the_given_images_are_scored(gt, detections):
    ours = coco_metrics(gt, detections, image_ids=[12, 13])
    ref = _pycocotools_stats(gt, detections, [12, 13])
    assert _as_coco_stats(ours) == pytest.approx([ref[i] for i in (0, 1, 2, 3, 4, 5, 8)], abs=1e-12)
    assert ours.n_images == 2
    assert ours.ap != pytest.approx(coco_metrics(gt, detections, image_ids=[11, 12, 13, 14]).ap)


def test_default_images_are_those_with_detections(gt, detections):
    subset = {i: detections[i] for i in (11, 13)}
    assert coco_metrics(gt, subset) == coco_metrics(gt, subset, image_ids=[11, 13])


def test_a_prepared_ground_truth_gives_the_same_numbers(gt, detections):
    truth = GroundTruth.from_dict(gt)
    assert coco_metrics(truth, detections) == coco_metrics(gt, detections)
    assert coco_metrics(truth, detections) == coco_metrics(truth, detections)  # reusable


def test_ground_truth_dict_is_not_modified(gt, detections):
    before = copy.deepcopy(gt)
    coco_metrics(gt, detections)
    assert gt == before


def test_no_detections_give_zero_not_a_crash(gt):
    m = coco_metrics(gt, {}, image_ids=[11, 12, 13])
    assert m.ap == 0.0 and m.ap50 == 0.0 and m.ar100 == 0.0
    assert m.n_images == 3
    empty = coco_metrics(gt, {i: Detections.empty() for i in (11, 12, 13)})
    assert empty.ap == 0.0


def test_size_bucket_without_ground_truth_is_nan(gt, detections):
    m = coco_metrics(gt, detections, image_ids=[12])  # only a large dog and a medium person
    assert math.isnan(m.ap_small)
    assert not math.isnan(m.ap_large)


def test_unknown_detection_category_is_a_data_error(gt, detections):
    bad = dict(detections)
    bad[13] = _dets([((0, 0, 10, 10), 0.9, 99), ((0, 0, 10, 10), 0.9, 5)])
    with pytest.raises(DataError, match="5, 99") as info:
        coco_metrics(gt, bad)
    assert info.value.key == "category_id"


def test_unknown_categories_can_be_ignored(gt, detections):
    extra = dict(detections)
    extra[13] = _dets([*zip(detections[13].boxes, detections[13].scores, detections[13].category_ids),
                       ((0, 0, 10, 10), 0.99, 99), ((100, 100, 25, 25), 0.98, 5)])
    assert coco_metrics(gt, extra, unknown_categories="ignore") == coco_metrics(gt, detections)


def test_categories_without_ground_truth_boxes_do_not_count(gt, detections):
    extra = dict(detections)
    extra[13] = _dets([((201, 105, 28, 60), 0.75, PERSON), ((300, 300, 20, 20), 0.99, CUP)])
    assert coco_metrics(gt, extra) == coco_metrics(gt, detections)


def test_unknown_image_id_is_a_data_error(gt, detections):
    with pytest.raises(DataError, match="999"):
        coco_metrics(gt, detections, image_ids=[11, 999])


def test_category_subset(gt, detections):
    only_cars = coco_metrics(gt, detections, category_ids=[CAR])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes([r for i, d in detections.items() for r in d.to_coco(i)]), "bbox")
        ev.params.imgIds = [11, 12, 13, 14]
        ev.params.catIds = [CAR]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert only_cars.ap == pytest.approx(ev.stats[0], abs=1e-12)


def test_coco_categories_are_the_official_80():
    ids = [c.id for c in COCO_CATEGORIES]
    assert len(ids) == 80 and len(set(ids)) == 80
    assert ids[0] == 1 and ids[-1] == 90
    assert sorted(set(range(1, 91)) - set(ids)) == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    names = {c.id: c.name for c in COCO_CATEGORIES}
    assert (names[1], names[3], names[18], names[37], names[47], names[90]) == (
        "person", "car", "dog", "sports ball", "cup", "toothbrush",
    )  # fmt: skip
    assert coco_categories()[2] == {"id": 3, "name": "car", "supercategory": "vehicle"}


# -- per-image metrics ------------------------------------------------------------------

A, B, C = (0, 0, 10, 10), (20, 0, 10, 10), (0, 20, 10, 10)
GT3 = _dets([(A, 1, PERSON), (B, 1, PERSON), (C, 1, CAR)])
PREDS = _dets(
    [
        ((0, 0, 10, 10), 0.9, PERSON),  # p1 = A exactly: IoU 1
        ((25, 0, 10, 10), 0.8, PERSON),  # p2 vs B: overlap 5×10 = 50, union 100+100−50 = 150 → 1/3
        ((0, 0, 10, 5), 0.7, PERSON),  # p3 vs A: overlap 50, union 100+50−50 = 100 → 0.5
        ((0, 20, 10, 10), 0.6, PERSON),  # p4 = C's box but person: 0 with classes, 1 without
        ((0, 20, 10, 10), 0.3, CAR),  # p5 = C, below the 0.5 score threshold
    ]
)


def test_per_image_metrics_by_hand_category_aware():
    m = per_image_metrics(GT3, PREDS, iou=0.5, score_threshold=0.5)
    # kept: p1..p4. Best IoU per prediction: 1, 1/3, 0.5, 0 → mean 1.8333/4
    assert m.mean_iou_pred == pytest.approx((1 + 1 / 3 + 0.5 + 0) / 4)
    # best IoU per GT box: A 1 (p1), B 1/3 (p2), C 0 → mean 1.3333/3
    assert m.mean_iou_gt == pytest.approx((1 + 1 / 3 + 0) / 3)
    # matching by score: p1→A (1.0); p2: B at 1/3 < 0.5; p3: A taken, others 0; p4: nothing
    assert (m.n_pred, m.n_gt, m.tp) == (4, 3, 1)
    assert m.precision == pytest.approx(1 / 4)
    assert m.recall == pytest.approx(1 / 3)


def test_per_image_metrics_by_hand_class_agnostic():
    m = per_image_metrics(GT3, PREDS, iou=0.5, score_threshold=0.5, category_aware=False)
    # p4 now overlaps C fully: best IoUs 1, 1/3, 0.5, 1 → 2.8333/4; GT: 1, 1/3, 1 → 2.3333/3
    assert m.mean_iou_pred == pytest.approx((1 + 1 / 3 + 0.5 + 1) / 4)
    assert m.mean_iou_gt == pytest.approx((1 + 1 / 3 + 1) / 3)
    # p1→A, p4→C: tp 2 of 4 predictions and 3 GT boxes
    assert (m.tp, m.precision, m.recall) == (2, pytest.approx(0.5), pytest.approx(2 / 3))


def test_per_image_metrics_score_threshold():
    m = per_image_metrics(GT3, PREDS, score_threshold=0.2)
    # p5 (car, 0.3) now counts and matches C: tp 2 (p1→A, p5→C) of 5 predictions
    assert (m.n_pred, m.tp) == (5, 2)
    assert m.precision == pytest.approx(2 / 5)
    assert m.mean_iou_pred == pytest.approx((1 + 1 / 3 + 0.5 + 0 + 1) / 5)
    assert m.mean_iou_gt == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_iou_threshold_is_inclusive_and_matching_is_one_to_one():
    only_p3 = _dets([((0, 0, 10, 5), 0.7, PERSON)])
    assert per_image_metrics(GT3, only_p3, iou=0.5).tp == 1  # IoU exactly 0.5 matches
    assert per_image_metrics(GT3, only_p3, iou=0.51).tp == 0
    twice = _dets([(A, 0.9, PERSON), (A, 0.8, PERSON)])
    m = per_image_metrics(GT3, twice)
    assert m.tp == 1 and m.precision == 0.5  # the duplicate is a false positive


def test_per_image_metrics_empty_cases():
    none = Detections.empty()
    no_preds = per_image_metrics(GT3, none)
    assert (no_preds.n_pred, no_preds.n_gt, no_preds.tp) == (0, 3, 0)
    assert math.isnan(no_preds.precision) and no_preds.recall == 0.0
    assert math.isnan(no_preds.mean_iou_pred) and no_preds.mean_iou_gt == 0.0

    no_gt = per_image_metrics(none, PREDS)
    assert (no_gt.n_pred, no_gt.n_gt, no_gt.tp) == (4, 0, 0)
    assert no_gt.precision == 0.0 and math.isnan(no_gt.recall)
    assert no_gt.mean_iou_pred == 0.0 and math.isnan(no_gt.mean_iou_gt)

    neither = per_image_metrics(none, none)
    assert (neither.n_pred, neither.n_gt, neither.tp) == (0, 0, 0)
    assert all(math.isnan(v) for v in (neither.precision, neither.recall, neither.mean_iou_pred, neither.mean_iou_gt))


def test_box_iou_matches_pycocotools():
    rng = np.random.default_rng(3)
    a = np.column_stack([rng.uniform(0, 100, (20, 2)), rng.uniform(1, 60, (20, 2))])
    b = np.column_stack([rng.uniform(0, 100, (15, 2)), rng.uniform(1, 60, (15, 2))])
    expected = mask_utils.iou(a.tolist(), b.tolist(), [0] * len(b))
    assert np.allclose(box_iou(a, b), expected, atol=1e-9)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 15)


def test_gt_boxes_skip_crowd_regions(gt):
    boxes = gt_boxes(gt, 12)
    assert len(boxes) == 2
    assert sorted(boxes.category_ids.tolist()) == [PERSON, DOG]
    assert len(gt_boxes(gt, 14)) == 0


# -- reference mode ---------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    image_id: int
    file_name: str
    width: int
    height: int


RECORDS = [Record(i, f"frame{i:03d}.png", 320, 240) for i in (1, 2, 3, 4)]


@pytest.fixture
def reference() -> dict[int, Detections]:
    rng = np.random.default_rng(7)
    out = {}
    for i in (1, 2, 3):  # frame 4: the reference model found nothing
        n = 6
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(20, 100, (n, 2))
        scores = np.concatenate([rng.uniform(0.55, 1.0, 4), rng.uniform(0.05, 0.45, 2)])
        out[i] = Detections(np.column_stack([xy, wh]), scores, rng.choice([PERSON, CAR], n))
    return out


def test_reference_ground_truth_keeps_confident_detections(reference):
    gt = reference_ground_truth(reference, RECORDS, score_threshold=0.5)
    assert [im["id"] for im in gt["images"]] == [1, 2, 3, 4]
    assert gt["images"][0] == {"id": 1, "file_name": "frame001.png", "width": 320, "height": 240}
    assert len(gt["annotations"]) == 12  # 4 of 6 per frame are ≥ 0.5
    assert all(a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in gt["annotations"])
    assert len({a["id"] for a in gt["annotations"]}) == 12
    assert len(gt["categories"]) == 80


def test_reference_detections_score_ap_one(reference):
    gt = reference_ground_truth(reference, RECORDS, score_threshold=0.5)
    m = coco_metrics(gt, reference, image_ids=[1, 2, 3, 4])
    # Every confident detection is its own GT box (IoU 1) and outranks the low-score ones.
    assert m.ap == pytest.approx(1.0)
    assert m.ap75 == pytest.approx(1.0)


def test_jittered_detections_score_lower(reference):
    gt = reference_ground_truth(reference, RECORDS, score_threshold=0.5)
    rng = np.random.default_rng(11)
    jittered = {
        i: Detections(d.boxes + rng.normal(0, 6, d.boxes.shape).astype(np.float32), d.scores, d.category_ids)
        for i, d in reference.items()
    }
    m = coco_metrics(gt, jittered, image_ids=[1, 2, 3, 4])
    assert 0.05 < m.ap < 0.9
    assert m.ap50 > m.ap75


def test_reference_errors(reference):
    with pytest.raises(DataError, match="not in the dataset"):
        reference_ground_truth({**reference, 9: reference[1]}, RECORDS)
    odd = {1: Detections(np.array([[0, 0, 5, 5]]), np.array([0.9]), np.array([12]))}  # 12: no COCO category
    with pytest.raises(DataError, match="category 12"):
        reference_ground_truth(odd, RECORDS)


# -- image selection --------------------------------------------------------------------


def test_select_images_keeps_first_n_qualifying_in_order():
    aps = {1: 0.9, 2: 0.2, 3: float("nan"), 4: 0.6, 5: 0.95, 6: 0.7, 7: 0.5}
    order = [5, 4, 3, 2, 1, 8, 6, 7]  # 8 has no AP
    assert select_images(aps, min_ap=0.5, first=3, order=order) == [5, 4, 1]
    assert select_images(aps, min_ap=0.5, first=10, order=order) == [5, 4, 1, 6, 7]  # 0.5 ≥ 0.5
    assert select_images(aps, min_ap=0.91, first=10, order=order) == [5]
    assert select_images(aps, min_ap=0.0, first=0, order=order) == []


def test_per_image_ap(gt, detections):
    perfect = _dets([((200, 100, 30, 70), 0.9, PERSON), ((100, 100, 25, 25), 0.8, PERSON)])
    assert per_image_ap(gt, perfect, 13) == pytest.approx(1.0)
    assert math.isnan(per_image_ap(gt, detections[14], 14))  # no GT on image 14
    aps = per_image_aps(gt, detections)
    assert set(aps) == {11, 12, 13, 14}
    assert aps[13] == pytest.approx(coco_metrics(gt, {13: detections[13]}).ap)
    chosen = select_images(aps, min_ap=0.3, first=2, order=[11, 12, 13, 14])
    assert chosen == [i for i in (11, 12, 13, 14) if aps[i] >= 0.3][:2]
