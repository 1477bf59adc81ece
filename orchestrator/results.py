"""Read-only access to a results directory: its metadata, its readable part files, its task rows."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from orchestrator.schema import (
    GROUND_TRUTH_FILE,
    META_FILE,
    REPORT_DIR,
    ROW_SCHEMA,
    ROWS_DIR,
    SCHEMA_VERSION,
)
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
    "detections_by_row",
]

# How detections are scored: against the sweep's ground_truth.json, or against the
# unsplit fp32 model's own confident detections (unlabelled data: video, photo folders).
EVALUATION_MODES = ("ground_truth", "reference")


class DamagedPartWarning(UserWarning):
    """A part file cannot be read (truncated, not Parquet); it is skipped, never deleted."""


@dataclass(frozen=True)
class StoreMeta:
    """What meta.json says about a results directory."""

    schema_version: int
    sweep: str
    created_at: str
    evaluation: str = "ground_truth"
    reference_score_threshold: float | None = None


def _read_meta(root: Path) -> StoreMeta:
    path = root / META_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError("not a results directory: meta.json is missing", file=str(path)) from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"meta.json cannot be read: {exc}", file=str(path)) from None
    if not isinstance(raw, dict):
        raise ResultsError("meta.json is not a JSON object", file=str(path))
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"results written under schema version {version!r}; this splitsweep reads version {SCHEMA_VERSION}",
            file=str(path),
            key="schema_version",
            allowed=[SCHEMA_VERSION],
        )
    evaluation = raw.get("evaluation", "ground_truth")
    if evaluation not in EVALUATION_MODES:
        raise ResultsError(
            f"unknown evaluation mode {evaluation!r}", file=str(path), key="evaluation", allowed=EVALUATION_MODES
        )
    threshold = raw.get("reference_score_threshold")
    if evaluation == "reference":
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise ResultsError(
                f"reference evaluation needs a score threshold in [0, 1], got {threshold!r}",
                file=str(path),
                key="reference_score_threshold",
            )
        threshold = float(threshold)
    return StoreMeta(
        schema_version=int(version),
        sweep=str(raw.get("sweep", "")),
        created_at=str(raw.get("created_at", "")),
        evaluation=evaluation,
        reference_score_threshold=threshold if evaluation == "reference" else None,
    )


class ResultsStore:
    """One results directory, opened read-only. Damaged part files are skipped with a
    :class:`DamagedPartWarning` (once per store object) and left on disk for the user."""

    def __init__(self, root: Path, meta: StoreMeta) -> None:
        self.root = root
        self.meta = meta
        self._parts: tuple[Path, ...] | None = None
        self._damaged: dict[Path, str] = {}

    @property
    def rows_dir(self) -> Path:
        return self.root / ROWS_DIR

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def ground_truth_path(self) -> Path:
        return self.root / GROUND_TRUTH_FILE

    @property
    def damaged(self) -> dict[Path, str]:
        """Part files skipped so far, with the reason."""
        return dict(self._damaged)

    def part_files(self) -> tuple[Path, ...]:
        """Readable part files in name order (the footer of each one is checked)."""
        if self._parts is None:
            found = []
            # Temp files of an atomic write in progress start with a dot or end in .tmp.
            candidates = sorted(p for p in self.rows_dir.glob("*.parquet") if not p.name.startswith("."))
            for path in candidates:
                try:
                    meta = pq.read_metadata(path)
                except (OSError, pa.ArrowException) as exc:
                    self._skip(path, exc)
                    continue
                self._check_version(path, meta)
                found.append(path)
            self._parts = tuple(found)
        return tuple(p for p in self._parts if p not in self._damaged)

    def _check_version(self, path: Path, meta: pq.FileMetaData) -> None:
        written = (meta.metadata or {}).get(b"splitsweep.schema_version")
        if written is not None and written.decode() != str(SCHEMA_VERSION):
            raise ResultsError(
                f"part file written under schema version {written.decode()}; "
                f"this splitsweep reads version {SCHEMA_VERSION}",
                file=str(path),
                key="schema_version",
                allowed=[SCHEMA_VERSION],
            )

    def _skip(self, path: Path, exc: BaseException) -> None:
        if path in self._damaged:
            return
        reason = f"{type(exc).__name__}: {exc}"
        self._damaged[path] = reason
        warnings.warn(
            f"{path}: damaged part file skipped (left on disk): {reason}", DamagedPartWarning, stacklevel=3
        )

    def read_rows(self, columns: Sequence[str], *, filter: ds.Expression | None = None) -> pa.Table:
        """The named columns of every readable row (duplicates of re-run tasks included).

        Only these columns are decoded; ``filter`` is pushed down to Parquet. Columns
        missing from older part files read as nulls. A part file that fails while being
        read is skipped with a warning, like one whose footer is broken.
        """
        columns = list(columns)
        empty = ROW_SCHEMA.empty_table().select(columns)
        parts = self.part_files()
        if not parts:
            return empty
        try:
            return ds.dataset([str(p) for p in parts], schema=ROW_SCHEMA, format="parquet").to_table(
                columns=columns, filter=filter
            )
        except (OSError, pa.ArrowException):
            pass  # find the culprit file by file, below
        tables = []
        for path in parts:
            try:
                tables.append(ds.dataset(str(path), schema=ROW_SCHEMA, format="parquet").to_table(
                    columns=columns, filter=filter
                ))
            except (OSError, pa.ArrowException) as exc:
                self._skip(path, exc)
        if not tables:
            return empty
        return pa.concat_tables(tables)

    def load_ground_truth(self) -> dict[str, Any]:
        """The COCO dict of ground_truth.json."""
        path = self.ground_truth_path
        try:
            gt = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ResultsError(
                "ground_truth.json is missing (meta.json does not ask for reference evaluation)",
                file=str(path),
                key="evaluation",
                allowed=EVALUATION_MODES,
            ) from None
        except (OSError, ValueError) as exc:
            raise ResultsError(f"ground truth cannot be read: {exc}", file=str(path)) from None
        if not isinstance(gt, dict) or not isinstance(gt.get("images"), list) or not isinstance(
            gt.get("annotations"), list
        ):
            raise ResultsError("not a COCO dict with images and annotations", file=str(path))
        gt.setdefault("categories", [])
        return gt


def open_results(path: str | os.PathLike[str]) -> ResultsStore:
    """Open a results directory; :class:`ResultsError` if it does not exist, is not one, or
    was written under another schema version."""
    root = Path(path)
    if not root.is_dir():
        raise ResultsError("results directory does not exist", file=str(root))
    return ResultsStore(root, _read_meta(root))


_FINISHED_NS_FACTOR = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio odd constant: spreads timestamps over 64 bits


def row_keys(table: pa.Table) -> np.ndarray:
    """A 64-bit identity of each row's (task_id, finished_at): the same row read twice,
    from any pass or any process, gets the same key."""
    ids = table.column("task_id").to_numpy(zero_copy_only=False)
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object))
    finished = pc.cast(table.column("finished_at"), pa.int64()).fill_null(0).to_numpy()
    return hashed ^ (finished.astype(np.uint64) * _FINISHED_NS_FACTOR)


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per task_id: the latest ``finished_at`` wins (a re-run replaces the old row,
    a failed attempt is superseded by a later success); on equal times ``ok`` wins, then
    the later part file. Needs the columns task_id, finished_at and status."""
    n = table.num_rows
    if n == 0 or pc.count_distinct(table.column("task_id")).as_py() == n:
        return table
    ids = np.asarray(table.column("task_id").to_numpy(zero_copy_only=False), dtype=object)
    finished = pc.cast(table.column("finished_at"), pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    ok = pc.fill_null(pc.equal(table.column("status"), "ok"), False).to_numpy(zero_copy_only=False)
    codes, _ = pd.factorize(ids)
    # lexsort: last key is primary. Within a task, the last row after sorting wins.
    order = np.lexsort((np.arange(n), ok, finished, codes))
    sorted_codes = codes[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
    keep = np.sort(order[last])
    return table.take(pa.array(keep))


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

