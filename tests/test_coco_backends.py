"""The report's compiled evaluator (orchestrator.reporting.fastcoco) and faster-coco-eval
(tasks.metrics) give pycocotools' COCO stats: on a synthetic 1,000-image set with every
COCO corner case, and on every configuration of a real sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.reporting import fastcoco
from orchestrator.results.reading import detections_by_row, latest_rows, open_results
from tasks.metrics import COCO_BACKENDS, GroundTruth, coco_metrics, matched_iou
from tasks.rows import Detections

STATS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100", "n_images")
CATEGORY_IDS = (1, 3, 18, 44, 90)  # with gaps, as COCO's


def _same(a, b) -> None:
    for name in STATS:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and math.isnan(x):
            assert math.isnan(y), name
        else:
            assert x == pytest.approx(y, abs=1e-12), name


def _synthetic(n_images: int = 1000, seed: int = 0):
    """Ground truth with crowd boxes, empty images and all three size buckets; detections
    that hit, miss, duplicate and confuse categories."""
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], {}
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        boxes, scores, cats = [], [], []
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(4, 220, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            cat = int(rng.choice(CATEGORY_IDS))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                "area": w * h, "iscrowd": int(rng.random() < 0.05),
            })  # fmt: skip
            for _ in range(rng.integers(0, 3)):  # 0 = a miss, 2 = a duplicate
                boxes.append([x + rng.normal(0, 4), y + rng.normal(0, 4), w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)])
                scores.append(rng.random())
                cats.append(cat if rng.random() < 0.85 else int(rng.choice(CATEGORY_IDS)))
        for _ in range(rng.integers(0, 4)):  # false positives
            boxes.append([*rng.uniform(0, 400, 2), *rng.uniform(3, 120, 2)])
            scores.append(rng.random())
            cats.append(int(rng.choice(CATEGORY_IDS)))
        detections[image_id] = Detections(
            np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(cats, np.int32)
        )
    categories = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def test_backends_are_the_two_evaluators():
    assert COCO_BACKENDS == ("faster", "pycocotools")
    gt, dets = _synthetic(5)
    with pytest.raises(ValueError, match="unknown COCO backend"):
        coco_metrics(gt, dets, backend="detectron")


def test_faster_equals_pycocotools_on_1000_synthetic_images():
    gt, dets = _synthetic()
    truth = GroundTruth.from_dict(gt)
    every = sorted(dets)
    cases = [
        dict(),
        dict(image_ids=every[::7]),
        dict(image_ids=every[:40], category_ids=[1, 44]),
    ]
    for kwargs in cases:
        fast = coco_metrics(truth, dets, **kwargs)
        reference = coco_metrics(truth, dets, backend="pycocotools", **kwargs)
        _same(fast, reference)
        if "category_ids" not in kwargs:  # the report scores every category
            compiled = fastcoco.evaluate(truth, dets, kwargs.get("image_ids", every))
            _same(compiled.metrics, reference)
            ids = kwargs.get("image_ids", every)
            assert compiled.miou == pytest.approx(matched_iou(truth, dets, ids, score_threshold=0.5), abs=1e-12)
    assert 0.05 < fast.ap < 0.95  # a number that tells a good detector from a bad one
    # No detections at all, and an image subset without any box of one size bucket.
    empty = {i: Detections.empty() for i in every[:30]}
    _same(coco_metrics(truth, empty), coco_metrics(truth, empty, backend="pycocotools"))
    _same(fastcoco.evaluate(truth, empty, every[:30]).metrics, coco_metrics(truth, empty, backend="pycocotools"))
    assert coco_metrics(truth, empty).ap == 0.0


def test_faster_leaves_the_ground_truth_reusable():
    gt, dets = _synthetic(50, seed=3)
    truth = GroundTruth.from_dict(gt)
    first = coco_metrics(truth, dets)
    coco_metrics(truth, {i: Detections.empty() for i in dets}, image_ids=list(dets)[:5])
    assert coco_metrics(truth, dets) == first


def test_faster_equals_pycocotools_on_every_configuration_of_a_real_sweep(sweep_results):
    store = open_results(sweep_results)
    rows = latest_rows(
        store.read_rows(["task_id", "finished_at", "model", "variant", "split", "codec", "codec_params", "image_id",
                         "status", "detections"])
    )  # fmt: skip
    ok = rows.filter(rows.column("status").to_numpy(zero_copy_only=False) == "ok")
    truth = GroundTruth.from_dict(store.load_ground_truth())
    frame = ok.select(["model", "variant", "split", "codec", "codec_params", "image_id"]).to_pandas()
    frame["dets"] = detections_by_row(ok.column("detections"))
    compared = 0
    for _, group in frame.groupby(["model", "variant", "split", "codec", "codec_params"]):
        dets = {int(i): d for i, d in zip(group["image_id"], group["dets"]) if int(i) in truth.image_ids}
        fast = coco_metrics(truth, dets, unknown_categories="ignore")
        reference = coco_metrics(truth, dets, unknown_categories="ignore", backend="pycocotools")
        _same(fast, reference)
        compiled = fastcoco.evaluate(truth, dets, sorted(dets))
        _same(compiled.metrics, reference)
        assert compiled.miou == pytest.approx(matched_iou(truth, dets, sorted(dets), score_threshold=0.5), abs=1e-12)
        compared += 1
    assert compared >= 20  # 2 variants × (1 + 3 splits × 10 settings), whatever finished
