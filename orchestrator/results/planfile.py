"""plan.parquet: the plan a sweep runs, written once per distinct plan (its digest in the
footer) and read back lean — status, resume and the report compare stored rows with it."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.planning.idkeys import Ids, id_words
from orchestrator.results.schema import PLAN_DIGEST_KEY, PLAN_FILE
from orchestrator.results.store import ResultsStore
from tasks.errors import ResultsError

if TYPE_CHECKING:
    from orchestrator.planning.plan import Plan
    from orchestrator.results.lease import Lease

__all__ = ["PLAN_ROW_GROUP", "read_plan", "read_plan_ids", "stored_plan_digest", "reuse_stored_ids", "write_plan"]


def read_plan(store: ResultsStore, columns: list[str] | None = None, *,
              read_dictionary: list[str] | None = None) -> pa.Table | None:
    """plan.parquet, or None where there is none; ResultsError if it is damaged.
    ``read_dictionary``: string columns kept dictionary-encoded (a few distinct values each)."""
    if not store.exists(PLAN_FILE):
        return None
    try:  # read in place (not as one bytes object first): a million-task plan is tens of MB
        table = pq.read_table(store.path(PLAN_FILE), columns=columns, read_dictionary=read_dictionary,
                              filesystem=store.filesystem)
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{PLAN_FILE} is damaged ({type(exc).__name__}: {exc}); `splitsweep run` writes it "
                           "again", file=store.path(PLAN_FILE)) from None
    if "task_id" not in table.column_names:
        raise ResultsError(f"{PLAN_FILE} has no task_id column", file=store.path(PLAN_FILE))
    return table


def read_plan_ids(store: ResultsStore, columns: list[str] | None = None, *,
                  read_dictionary: list[str] | None = None) -> tuple[Ids, pa.Table] | None:
    """plan.parquet's task ids and its other ``columns``, read batch by batch with the ids
    decoded as they come (``idkeys.id_words``: 16 bytes per id, where the whole string
    column read at once costs ~4× that at its peak). None without plan.parquet; ids that are
    not 32 hex digits come back as text. ResultsError if the file is damaged."""
    if not store.exists(PLAN_FILE):
        return None
    path = store.path(PLAN_FILE)
    try:
        with store.filesystem.open_input_file(path) as fh:
            reader = pq.ParquetFile(fh, read_dictionary=read_dictionary, pre_buffer=False, buffer_size=1 << 20)
            if "task_id" not in reader.schema_arrow.names:
                raise ResultsError(f"{PLAN_FILE} has no task_id column", file=path)
            words = np.empty((reader.metadata.num_rows, 2), dtype=np.uint64)
            at, batches = 0, []
            for batch in reader.iter_batches(batch_size=1 << 16, columns=["task_id", *(columns or [])],
                                             use_threads=False):  # fmt: skip
                decoded = id_words(batch.column(0))
                if decoded is None:
                    break
                words[at : at + batch.num_rows] = decoded
                at += batch.num_rows
                batches.append(batch.drop_columns(["task_id"]))
            else:
                rest = pa.Table.from_batches(batches, schema=batches[0].schema) if batches else \
                    reader.schema_arrow.empty_table().select(columns or [])
                return words[:at], rest
    except (OSError, pa.ArrowException) as exc:
        raise ResultsError(f"{PLAN_FILE} is damaged ({type(exc).__name__}: {exc}); `splitsweep run` writes it "
                           "again", file=path) from None
    table = read_plan(store, ["task_id", *(columns or [])], read_dictionary=read_dictionary)
    return table["task_id"], table.drop_columns(["task_id"])


def stored_plan_digest(store: ResultsStore) -> str | None:
    """The digest in plan.parquet's footer (only the footer is read); None without one."""
    try:
        with store.filesystem.open_input_file(store.path(PLAN_FILE)) as fh:
            stored = (pq.read_metadata(fh).metadata or {}).get(PLAN_DIGEST_KEY.encode())
    except (OSError, pa.ArrowException):
        return None  # none yet, or damaged: written again
    return stored.decode() if stored else None


def reuse_stored_ids(store: ResultsStore, plan: Plan) -> bool:
    """When plan.parquet holds this very plan, take its task ids instead of hashing every
    task's key again (a million-task sweep resumes without re-hashing)."""
    if stored_plan_digest(store) != plan.digest:
        return False
    try:
        stored = read_plan_ids(store)
    except ResultsError:
        return False  # damaged: hashed again, and the file written again
    return stored is not None and isinstance(stored[0], np.ndarray) and plan.adopt_ids(stored[0], plan.digest)


PLAN_ROW_GROUP = 1 << 16


def write_plan(store: ResultsStore, plan: Plan, *, lease: Lease | None = None) -> bool:
    """Write plan.parquet unless the stored one is this plan (same digest); True when written."""
    if stored_plan_digest(store) == plan.digest:
        return False
    buf = io.BytesIO()
    table = plan.to_table()
    # task ids are distinct random text: a dictionary only costs time; the labels repeat.
    # Row groups of 64k tasks: readers (status, resume) hold one group's pages at a time.
    pq.write_table(table, buf, use_dictionary=[c for c in table.column_names if c != "task_id"],
                   row_group_size=PLAN_ROW_GROUP)
    if lease is not None:
        lease.verify()
    store.write_bytes(PLAN_FILE, buf.getvalue())
    return True
