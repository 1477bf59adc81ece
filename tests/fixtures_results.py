"""Writes SYNTHETIC results directories (real Parquet, ROW_SCHEMA) whose COCO AP is known by construction.

Every image holds the same layout of 100×100 ground-truth boxes, alternating between
two categories. A configuration's detections are derived from that ground truth:

- ``exact``: a copy of every box (scores 0.9, 0.8, …)           → AP 100, AP50 100, AP75 100
- ``drop_half``: the last half of each image's boxes removed;
  every category keeps exactly half of its boxes, all true positives,
  so precision is 1 up to recall 0.5 and there are no points above  → AP = AP50 = AP75 = 100·51/101
- ``shift``: every box moved 23.5 px right: IoU = 76.5/123.5 = 0.619,
  a hit at IoU thresholds 0.50, 0.55, 0.60 and a miss at the other 7 → AP 30, AP50 100, AP75 0
- ``none``: no detections                                          → AP 0

With ``low_score_extras`` a box of category 1 at score 0.05 is added where no ground
truth is (a false positive ranked after every hit: AP unchanged; below any reference
threshold ≥ 0.05, so it never becomes reference ground truth).

Run as a module to write a large store for timing the report:
``python -m tests.fixtures_results DIR --images 25000 --configs 8``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.results.schema import (
    DETECTION_TYPE,
    GROUND_TRUTH_FILE,
    META_FILE,
    ROW_SCHEMA,
    ROWS_DIR,
    SCHEMA_VERSION,
    SPEC_FILE,
)
from tasks.rows import canonical_json

__all__ = [
    "KNOWN_AP",
    "SynthConfig",
    "SynthStore",
    "make_ground_truth",
    "make_detections",
    "config_rows",
    "write_part",
    "write_store",
    "damage",
]

WIDTH, HEIGHT = 640, 480
BOX = 100.0
SHIFT = 23.5
BASE_TIME = datetime(2025, 1, 1, tzinfo=timezone.utc)

# (AP, AP50, AP75) in AP points, from the construction in the module docstring.
KNOWN_AP: dict[str, tuple[float, float, float]] = {
    "exact": (100.0, 100.0, 100.0),
    "drop_half": (100 * 51 / 101, 100 * 51 / 101, 100 * 51 / 101),
    "shift": (30.0, 100.0, 0.0),
    "none": (0.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class SynthConfig:
    """One configuration of a synthetic sweep and how its rows are made."""

    model: str = "toy"
    variant: str = "fp32"
    split: int = -1
    codec: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)
    detections: str = "exact"
    raw_bytes: int = 0
    coded_bytes: int = 0
    side_bytes: int = 0
    feature_psnr: float = float("inf")
    failed_images: tuple[int, ...] = ()  # rows written with status "failed"
    skipped_images: tuple[int, ...] = ()  # no row at all (not run yet)
    low_score_extras: bool = False
    minutes: int = 0  # finished_at offset, to order re-runs

    @property
    def codec_params(self) -> str:
        return canonical_json(self.params)


@dataclass(frozen=True)
class SynthStore:
    root: Path
    ground_truth: dict[str, Any]
    image_ids: tuple[int, ...]


def make_ground_truth(n_images: int, *, boxes_per_image: int = 4, first_id: int = 1) -> dict[str, Any]:
    """A COCO dict: ``n_images`` images of 640×480, each with the same box layout."""
    images, annotations = [], []
    for i in range(n_images):
        image_id = first_id + i
        images.append({"id": image_id, "width": WIDTH, "height": HEIGHT, "file_name": f"{image_id}.jpg"})
        for box, cat in _layout(boxes_per_image):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cat),
                    "bbox": [float(v) for v in box],
                    "area": BOX * BOX,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _layout(boxes_per_image: int) -> list[tuple[np.ndarray, int]]:
    out = []
    for b in range(boxes_per_image):
        x = 10 + (b % 4) * 155
        y = 20 + (b // 4) * 150
        out.append((np.array([x, y, BOX, BOX], np.float32), 1 if b % 2 == 0 else 3))
    return out


def make_detections(kind: str, *, boxes_per_image: int = 4, low_score_extras: bool = False):
    """(boxes, scores, category_ids) of one image for a perturbation kind."""
    layout = _layout(boxes_per_image)
    boxes = np.array([b for b, _ in layout], np.float32).reshape(-1, 4)
    cats = np.array([c for _, c in layout], np.int32)
    scores = np.linspace(0.9, 0.5, len(layout)).astype(np.float32)
    if kind == "exact":
        pass
    elif kind == "drop_half":
        keep = len(layout) // 2  # alternating categories: each keeps exactly half of its boxes
        boxes, scores, cats = boxes[:keep], scores[:keep], cats[:keep]
    elif kind == "shift":
        boxes = boxes.copy()
        boxes[:, 0] += SHIFT
    elif kind == "none":
        boxes, scores, cats = boxes[:0], scores[:0], cats[:0]
    else:
        raise ValueError(f"unknown perturbation {kind!r}")
    if low_score_extras:
        boxes = np.vstack([boxes, [[10, 400, 50, 50]]]).astype(np.float32)
        scores = np.append(scores, np.float32(0.05))
        cats = np.append(cats, np.int32(1))
    return boxes, scores, cats


def _detections_array(n_rows: int, boxes: np.ndarray, scores: np.ndarray, cats: np.ndarray) -> pa.Array:
    """The same per-image detections repeated on ``n_rows`` rows, built with Arrow offsets."""
    k = len(scores)
    offsets = np.arange(n_rows + 1, dtype=np.int32) * k
    bbox = pa.ListArray.from_arrays(
        pa.array(np.arange(k * n_rows + 1, dtype=np.int32) * 4),
        pa.array(np.tile(boxes.reshape(-1), n_rows).astype(np.float32)),
    )
    items = pa.StructArray.from_arrays(
        [pa.array(np.tile(cats, n_rows).astype(np.int32)), bbox, pa.array(np.tile(scores, n_rows).astype(np.float32))],
        fields=list(DETECTION_TYPE.value_type),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), items).cast(
        DETECTION_TYPE
    )


def task_id(config: SynthConfig, image_id: int) -> str:
    key = f"{config.model}|{config.variant}|{config.split}|{config.codec}|{config.codec_params}|{image_id}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def config_rows(
    config: SynthConfig,
    image_ids: Sequence[int],
    *,
    boxes_per_image: int = 4,
    sweep: str = "synthetic",
) -> pa.Table:
    """The task rows of one configuration over ``image_ids`` (minus skipped images)."""
    ids = np.array([i for i in image_ids if i not in set(config.skipped_images)], dtype=np.int64)
    n = len(ids)
    failed = np.isin(ids, np.array(config.failed_images, dtype=np.int64))
    boxes, scores, cats = make_detections(
        config.detections, boxes_per_image=boxes_per_image, low_score_extras=config.low_score_extras
    )
    dets = _detections_array(n, boxes, scores, cats)
    if failed.any():
        dets = pa.array([None if f else d for f, d in zip(failed, dets.to_pylist())], DETECTION_TYPE)
    start = BASE_TIME + timedelta(minutes=config.minutes)
    finished = np.datetime64(start.replace(tzinfo=None), "ms") + np.arange(n).astype("timedelta64[ms]")

    def const(value, dtype):
        return np.full(n, value, dtype=dtype)

    columns = {
        "task_id": [task_id(config, int(i)) for i in ids],
        "sweep": [sweep] * n,
        "model": [config.model] * n,
        "variant": [config.variant] * n,
        "split": const(config.split, np.int32),
        "codec": [config.codec] * n,
        "codec_params": [config.codec_params] * n,
        "qp": pa.nulls(n, pa.int32()) if config.params.get("qp") is None else const(config.params["qp"], np.int32),
        "image_id": ids,
        "image_hash": [f"synthetic-{int(i)}" for i in ids],
        "raw_bytes": const(config.raw_bytes, np.int64),
        "float32_bytes": const(config.raw_bytes, np.int64),  # synthetic cuts are float32
        "coded_bytes": const(config.coded_bytes, np.int64),
        "side_bytes": const(config.side_bytes, np.int64),
        "feature_mse": const(0.0, np.float64),
        "feature_psnr": const(config.feature_psnr, np.float64),
        "head_s": const(0.010, np.float64),
        "encode_s": const(0.002, np.float64),
        "decode_s": const(0.001, np.float64),
        "tail_s": const(0.005, np.float64),
        "detections": dets,
        "image_width": const(WIDTH, np.int32),
        "image_height": const(HEIGHT, np.int32),
        "status": np.where(failed, "failed", "ok").tolist(),
        "error": [("synthetic failure" if f else None) for f in failed],
        "worker": ["w0"] * n,
        "finished_at": pa.array(finished, pa.timestamp("ms", tz="UTC")),
    }
    arrays = {
        f.name: columns[f.name] if isinstance(columns[f.name], pa.Array) else pa.array(columns[f.name], f.type)
        for f in ROW_SCHEMA
    }
    return pa.table(arrays, schema=ROW_SCHEMA)


def write_part(root: Path, table: pa.Table, name: str) -> Path:
    """Write one part file atomically, as the store does."""
    rows = Path(root) / ROWS_DIR
    rows.mkdir(parents=True, exist_ok=True)
    path = rows / name
    tmp = rows / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_store(
    root: Path,
    configs: Sequence[SynthConfig],
    *,
    n_images: int = 6,
    boxes_per_image: int = 4,
    rows_per_part: int = 10_000,
    run: str = "r0",
    evaluation: str = "ground-truth",
    reference_score_threshold: float | None = None,
) -> SynthStore:
    """A results directory holding ``configs`` over ``n_images`` synthetic images."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    gt = make_ground_truth(n_images, boxes_per_image=boxes_per_image)
    image_ids = tuple(img["id"] for img in gt["images"])
    meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "sweep": "synthetic", "created_at": BASE_TIME.isoformat()}
    if evaluation == "reference":
        meta.update(evaluation="reference", reference_score_threshold=reference_score_threshold)
    else:
        (root / GROUND_TRUTH_FILE).write_text(json.dumps(gt))
    (root / META_FILE).write_text(json.dumps(meta))
    (root / SPEC_FILE).write_text("sweep: synthetic\n")
    (root / ROWS_DIR).mkdir(exist_ok=True)
    if not configs:
        return SynthStore(root, gt, image_ids)
    table = pa.concat_tables([config_rows(c, image_ids, boxes_per_image=boxes_per_image) for c in configs])
    for seq, start in enumerate(range(0, table.num_rows, rows_per_part)):
        write_part(root, table.slice(start, rows_per_part), f"part-{run}-{seq:05d}.parquet")
    return SynthStore(root, gt, image_ids)


def damage(path: Path) -> None:
    """Truncate a Parquet file to half its size, as a crash or a full disk might."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def bench_configs(n_configs: int) -> list[SynthConfig]:
    """A mix of perturbations over one model: the baseline and ``n_configs - 1`` coded points."""
    kinds = ["exact", "drop_half", "shift"]
    out = [SynthConfig()]
    for i in range(n_configs - 1):
        out.append(
            SynthConfig(
                split=3,
                codec="nncodec",
                params={"qp": -30 + 4 * i},
                detections=kinds[i % 3],
                raw_bytes=1_478_656,
                coded_bytes=300_000 // (i + 1),
                feature_psnr=40.0 - i,
            )
        )
    return out


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=25_000)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--rows-per-part", type=int, default=5_000)
    args = parser.parse_args()
    store = write_store(args.root, bench_configs(args.configs), n_images=args.images, rows_per_part=args.rows_per_part)
    print(f"{store.root}: {args.images * args.configs} rows")


if __name__ == "__main__":
    _main()
