"""Reading a results location: open it checked, identify rows, decode detections fast."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import ResultsError
from tasks.rows import Detections

from .store import EVALUATION_MODES, DamagedPartWarning, ResultsStore, StoreMeta, latest_rows

__all__ = [
    "EVALUATION_MODES",
    "StoreMeta",
    "ResultsStore",
    "DamagedPartWarning",
    "open_results",
    "latest_rows",
    "row_keys",
    "detections_by_row",
]


def open_results(path: str | os.PathLike[str]) -> ResultsStore:
    """Open a results location for reading; :class:`ResultsError` if it does not exist, is
    not one, or was written under another schema version."""
    store = ResultsStore(str(path))
    if not store.exists():
        raise ResultsError("results directory does not exist", file=store.location)
    store.meta  # noqa: B018 - validates meta.json now, with the file in the message
    return store


_FINISHED_NS_FACTOR = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant: spreads timestamps over 64 bits


def row_keys(table: pa.Table) -> np.ndarray:
    """A 64-bit identity of each row's (task_id, finished_at): the same row read twice,
    from any pass or any process, gets the same key."""
    ids = table.column("task_id").to_numpy(zero_copy_only=False)
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object))
    finished = pc.cast(table.column("finished_at"), pa.int64()).fill_null(0).to_numpy()
    return hashed ^ (finished.astype(np.uint64) * _FINISHED_NS_FACTOR)


def detections_by_row(column: pa.ChunkedArray | pa.Array) -> list[Detections]:
    """The ``detections`` column as one :class:`Detections` per row, decoded with Arrow
    kernels rather than per-record Python (a null list reads as no detections)."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(lists)
    if n == 0:
        return []
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
    items = lists.flatten()
    if len(items):
        # StructArray.flatten applies the array's offset and validity, unlike .field().
        fields = dict(zip((f.name for f in items.type), items.flatten()))
        cats, bboxes, scores = fields["category_id"], fields["bbox"], fields["score"]
        box_len = pc.list_value_length(bboxes).to_numpy(zero_copy_only=False)
        if not np.all(box_len == 4):
            raise ResultsError("a detection's bbox does not have 4 numbers", key="detections")
        boxes = bboxes.flatten().to_numpy(zero_copy_only=False).reshape(-1, 4)
        scores_np = scores.to_numpy(zero_copy_only=False)
        cats_np = cats.to_numpy(zero_copy_only=False)
    else:
        boxes = np.zeros((0, 4), np.float32)
        scores_np = np.zeros(0, np.float32)
        cats_np = np.zeros(0, np.int32)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [
        Detections(boxes[a:b], scores_np[a:b], cats_np[a:b]) for a, b in zip(bounds[:-1], bounds[1:])
    ]

