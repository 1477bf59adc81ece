"""Reading a results location: open it checked, identify rows, decode detections fast."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.results.planfile import read_plan, read_plan_ids
from orchestrator.results.schema import CONFIG_KEY, PLAN_FILE
from orchestrator.results.store import EVALUATION_MODES, DamagedPartWarning, ResultsStore, StoreMeta, latest_rows
from tasks.errors import ResultsError
from tasks.rows import Detections

__all__ = [
    "EVALUATION_MODES",
    "StoreMeta",
    "ResultsStore",
    "DamagedPartWarning",
    "open_results",
    "latest_rows",
    "row_keys",
    "detection_arrays",
    "detections_by_row",
    "PLAN_FILE",
    "PlanScope",
    "plan_scope",
    "read_plan",
    "read_plan_ids",
]



def open_results(path: str | os.PathLike[str]) -> ResultsStore:
    """Open a results location for reading; :class:`ResultsError` if it does not exist, is
    not one, or was written under another schema version."""
    store = ResultsStore(str(path))
    if not store.exists():
        raise ResultsError("results directory does not exist", file=store.location)
    store.meta  # noqa: B018 - validates meta.json now, with the file in the message
    return store


@dataclass(frozen=True)
class PlanScope:
    """Which stored rows the current plan (plan.parquet) covers, and what it leaves out."""

    task_ids: frozenset[str] | None  # None: no plan.parquet, every row is in scope
    left_rows: int = 0
    left_configs: int = 0  # stored configurations the plan does not have
    left_images: int = 0  # images of planned configurations that the plan no longer has
    left_other: int = 0  # rows of planned configurations and images under another task id (model file changed)

    def line(self) -> str | None:
        """One line for people, or None when nothing is left out."""
        if not self.left_rows:
            return None
        parts = []
        if self.left_configs:
            parts.append(f"{self.left_configs} stored configuration{'s' * (self.left_configs != 1)}")
        if self.left_images:
            parts.append(f"{self.left_images} image{'s' * (self.left_images != 1)}")
        if self.left_other:
            parts.append(f"{self.left_other} rows of another model file or setting")
        return (f"left out {' and '.join(parts)} not in the current plan ({self.left_rows} stored rows); "
                "--all to include them")


def plan_scope(store: ResultsStore) -> PlanScope:
    """The current plan's task ids, and counts of the stored rows outside it."""
    plan = read_plan(store, ["task_id", *CONFIG_KEY, "image_id"])
    if plan is None:
        return PlanScope(None)
    ids = frozenset(plan["task_id"].to_pylist())
    rows = latest_rows(store.read_rows(["task_id", "finished_at", "status", *CONFIG_KEY, "image_id"]))
    outside = rows.filter(pc.invert(pc.is_in(rows["task_id"], value_set=pa.array(list(ids), pa.string()))))
    if outside.num_rows == 0:
        return PlanScope(ids)
    key = list(CONFIG_KEY)
    planned_configs = set(zip(*(plan[c].to_pylist() for c in key)))
    planned_images = set(plan["image_id"].to_pylist())
    configs, images, other = set(), set(), 0
    for *cfg, image in zip(*(outside[c].to_pylist() for c in key), outside["image_id"].to_pylist()):
        cfg = tuple(cfg)
        if cfg not in planned_configs:
            configs.add(cfg)
        elif image not in planned_images:
            images.add(image)
        else:
            other += 1
    return PlanScope(ids, outside.num_rows, len(configs), len(images), other)


_FINISHED_NS_FACTOR = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant: spreads timestamps over 64 bits


def row_keys(table: pa.Table) -> np.ndarray:
    """A 64-bit identity of each row's (task_id, finished_at): the same row read twice,
    from any pass or any process, gets the same key."""
    ids = table.column("task_id").to_numpy(zero_copy_only=False)
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object))
    finished = pc.cast(table.column("finished_at"), pa.int64()).fill_null(0).to_numpy()
    return hashed ^ (finished.astype(np.uint64) * _FINISHED_NS_FACTOR)


def detection_arrays(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``detections`` column flattened with Arrow kernels: per row its number of
    detections, then all rows' boxes (N, 4) float32, scores float32 and category ids
    int32, row after row (a null list reads as no detections)."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(lists) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
    items = lists.flatten()
    if not len(items):
        return lengths, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    # StructArray.flatten applies the array's offset and validity, unlike .field().
    fields = dict(zip((f.name for f in items.type), items.flatten()))
    cats, bboxes, scores = fields["category_id"], fields["bbox"], fields["score"]
    box_len = pc.list_value_length(bboxes).to_numpy(zero_copy_only=False)
    if not np.all(box_len == 4):
        raise ResultsError("a detection's bbox does not have 4 numbers", key="detections")
    boxes = bboxes.flatten().to_numpy(zero_copy_only=False).reshape(-1, 4).astype(np.float32, copy=False)
    return (lengths, boxes, scores.to_numpy(zero_copy_only=False).astype(np.float32, copy=False),
            cats.to_numpy(zero_copy_only=False).astype(np.int32, copy=False))


def detections_by_row(column: pa.ChunkedArray | pa.Array) -> list[Detections]:
    """The ``detections`` column as one :class:`Detections` per row, decoded with Arrow
    kernels rather than per-record Python (a null list reads as no detections)."""
    lengths, boxes, scores_np, cats_np = detection_arrays(column)
    if len(lengths) == 0:
        return []
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [
        Detections(boxes[a:b], scores_np[a:b], cats_np[a:b]) for a, b in zip(bounds[:-1], bounds[1:])
    ]

