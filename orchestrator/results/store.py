"""The results store: Parquet part files written atomically, read back for resume and report."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.planning.idkeys import factorize, id_words
from orchestrator.results.lease import LEASE_FILE, Lease, pid_alive, this_host
from orchestrator.results.schema import GROUND_TRUTH_FILE, META_FILE, ROW_SCHEMA, ROWS_DIR, SCHEMA_VERSION, SPEC_FILE
from tasks.errors import ResultsError

__all__ = ["ResultsStore", "StoreMeta", "EVALUATION_MODES", "PartWriter", "DamagedPartWarning", "latest_rows"]

# How detections are scored: against the sweep's ground_truth.json, or against the
# unsplit fp32 model's own confident detections (unlabelled data: video, photo folders).
EVALUATION_MODES = ("ground-truth", "reference")

_PART = re.compile(r"^part-r(\d+)-(\d+)\.parquet$")
# Hidden temp files name their writer: .<name>.tmp-<host>-<pid>-<random>
_TEMP = re.compile(r"^\..+\.tmp-(?:(?P<host>.+)-(?P<pid>\d+)-)?[0-9a-f]{8}$")
TEMP_ORPHAN_S = 3600.0  # a temp file of a writer we cannot check (another host) is an orphan after this


class DamagedPartWarning(UserWarning):
    """A part file could not be read; it is skipped (its tasks run again) and left on disk."""


@dataclass(frozen=True)
class StoreMeta:
    """What meta.json says about a results location."""

    schema_version: int
    sweep: str
    created_at: str
    evaluation: str = "ground-truth"
    reference_score_threshold: float | None = None
    frame_rate: float | None = None  # video datasets: frames per second (kbps = 8 · bytes per frame · fps / 1000)

    @classmethod
    def parse(cls, raw: Any, *, file: str) -> StoreMeta:
        if not isinstance(raw, dict):
            raise ResultsError("meta.json is not a JSON object", file=file)
        evaluation = raw.get("evaluation", "ground-truth")
        if evaluation not in EVALUATION_MODES:
            raise ResultsError(f"unknown evaluation mode {evaluation!r}", file=file, key="evaluation", allowed=EVALUATION_MODES)
        threshold = raw.get("reference_score_threshold")
        if evaluation == "reference":
            if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
                raise ResultsError(
                    f"reference evaluation needs a score threshold in [0, 1], got {threshold!r}",
                    file=file,
                    key="reference_score_threshold",
                )
        return cls(
            schema_version=int(raw["schema_version"]),
            sweep=str(raw.get("sweep", "")),
            created_at=str(raw.get("created_at", "")),
            evaluation=evaluation,
            reference_score_threshold=float(threshold) if evaluation == "reference" else None,
            frame_rate=_frame_rate(raw.get("frame_rate")),
        )


def _frame_rate(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    return None


@dataclass(frozen=True)
class _Location:
    fs: pafs.FileSystem
    root: str
    local: bool


def _open_location(location: str) -> _Location:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        try:
            fs, root = pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise ResultsError(f"cannot open results location: {exc}", file=location) from None
        return _Location(fs, root.rstrip("/"), isinstance(fs, pafs.LocalFileSystem))
    return _Location(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location)), True)


class ResultsStore:
    """One sweep's output location: a local directory or any pyarrow filesystem URI.

    Layout (orchestrator/results/schema.py): meta.json, spec.yaml (+ specs/run-N.yaml),
    ground_truth.json, plan.parquet, rows/part-rNNNN-NNNNNN.parquet, report/.
    Local writes go to a hidden temp file renamed into place, so a crash never leaves a
    half-written visible file; object stores (s3://…) publish an object only when its
    upload completes, so there the final name is written directly.
    """

    def __init__(self, location: str) -> None:
        self.location = str(location)
        self._loc = _open_location(self.location)
        self._damaged: dict[str, str] = {}
        self._checked: set[str] = set()

    # -- paths and small files -------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self._loc.root, *parts])

    @property
    def is_local(self) -> bool:
        return self._loc.local

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._loc.fs

    def exists(self, *parts: str) -> bool:
        return self._loc.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Atomically replace `relpath` with `data`."""
        final = self.path(relpath)
        self._loc.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if self._loc.local:
            head, tail = final.rsplit("/", 1)
            tmp = f"{head}/.{tail}.tmp-{this_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        else:
            with self._loc.fs.open_output_stream(final) as out:
                out.write(data)

    def read_bytes(self, relpath: str) -> bytes:
        """The file's bytes; FileNotFoundError if absent, ResultsError if the location is not a directory."""
        try:
            with self._loc.fs.open_input_file(self.path(relpath)) as fh:
                return fh.read()
        except NotADirectoryError:
            raise ResultsError("not a results directory (it is a file)", file=self.location) from None
        except IsADirectoryError:
            raise ResultsError("is a directory, expected a file", file=self.path(relpath)) from None

    def write_json(self, relpath: str, obj: Any) -> None:
        self.write_bytes(relpath, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())

    def read_json(self, relpath: str) -> Any:
        try:
            return json.loads(self.read_bytes(relpath))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise ResultsError(f"damaged JSON file: {exc}", file=self.path(relpath)) from None

    # -- lifecycle -------------------------------------------------------------------
    def open_for_sweep(
        self, *, sweep: str, extra_meta: Mapping[str, Any] | None = None, out: Any = None
    ) -> Lease:
        """Take this location's lease, then create or check meta.json.

        Refuses (touching nothing) another schema version, another sweep name, another
        driver holding the lease, and an existing non-empty directory that is not a
        splitsweep results location. The caller releases the returned lease.
        """
        meta = self.check_meta()
        if meta is None:
            self.refuse_foreign()
        elif meta.get("sweep") != sweep:
            raise ResultsError(
                f"this results location holds sweep {meta.get('sweep')!r}, not {sweep!r}; "
                "use another output location or the same sweep name",
                file=self.location,
                key="sweep",
            )
        try:
            self._loc.fs.create_dir(self.path(ROWS_DIR), recursive=True)
        except OSError as exc:
            raise ResultsError(f"cannot create the results directory: {exc}", file=self.location) from None
        if self._loc.local and not os.access(self.path(ROWS_DIR), os.W_OK):
            raise ResultsError("the results directory is not writable", file=self.location)
        lease = Lease.acquire(self, next_run=self.next_run, out=out)
        try:
            meta = self.check_meta()  # again: another driver may have created it meanwhile
            if meta is None:
                meta = {
                    "schema_version": SCHEMA_VERSION,
                    "sweep": sweep,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                }
            meta.update(extra_meta or {})
            self.write_json(META_FILE, meta)
            self._remove_stale_temp_files()
        except BaseException:
            lease.release()
            raise
        return lease

    def refuse_foreign(self) -> None:
        """An existing, non-empty directory without our meta.json is someone else's: refuse it."""
        info = self._loc.fs.get_file_info(self._loc.root)
        if info.type == pafs.FileType.NotFound:
            return
        if info.type != pafs.FileType.Directory:
            raise ResultsError("the output location exists and is not a directory", file=self.location, key="output")
        entries = self._loc.fs.get_file_info(pafs.FileSelector(self._loc.root, allow_not_found=True))
        names = sorted(e.base_name for e in entries)
        if names and names != [ROWS_DIR] and set(names) - {ROWS_DIR, LEASE_FILE}:
            raise ResultsError(
                f"the output directory is not empty and is not a splitsweep results location (no {META_FILE}; "
                f"holds {_first_names(names)}); nothing was changed: choose an empty or new directory",
                file=self.location,
                key="output",
            )

    def check_meta(self) -> dict | None:
        meta = self.read_json(META_FILE)
        if meta is None:
            return None
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"results written with schema version {version}; this splitsweep reads and writes "
                f"version {SCHEMA_VERSION}. Use a new output location (nothing here was changed)",
                file=self.path(META_FILE),
                key="schema_version",
                allowed=[SCHEMA_VERSION],
            )
        return meta

    def _remove_stale_temp_files(self) -> None:
        """Remove hidden temp files of writers that are gone (they never held visible data).

        A temp file names its writer (host, pid): one of a live process is left alone
        (it may be a report being saved), one of another host only once it is older
        than TEMP_ORPHAN_S.
        """
        if not self._loc.local:
            return  # object stores publish whole objects: no temp files
        host, now = this_host(), time.time()
        for dirpath in (self._loc.root, self.path(ROWS_DIR), self.path("report")):
            try:
                names = os.listdir(dirpath)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                m = _TEMP.match(name)
                if m is None:
                    continue
                path = os.path.join(dirpath, name)
                if m.group("host") == host:
                    dead = not pid_alive(int(m.group("pid")))
                else:
                    try:
                        dead = now - os.stat(path).st_mtime > TEMP_ORPHAN_S
                    except OSError:
                        continue
                if dead:
                    try:
                        os.remove(path)
                    except OSError:
                        pass

    def save_spec(self, text: str, *, run: int) -> None:
        self.write_bytes(SPEC_FILE, text.encode())
        self.write_bytes(f"specs/run-{run:04d}.yaml", text.encode())

    # -- part files ------------------------------------------------------------------
    @property
    def meta(self) -> StoreMeta:
        """meta.json, checked: ResultsError if absent, damaged or of another schema version."""
        raw = self.check_meta()
        if raw is None:
            raise ResultsError("not a splitsweep results location: meta.json is missing", file=self.path(META_FILE))
        return StoreMeta.parse(raw, file=self.path(META_FILE))

    @property
    def damaged(self) -> dict[str, str]:
        """Part files skipped so far, with the reason."""
        return dict(self._damaged)

    def part_files(self) -> list[str]:
        """Readable part files in name order; each footer is checked once, damaged ones skipped."""
        selector = pafs.FileSelector(self.path(ROWS_DIR), allow_not_found=True)
        names = [info.base_name for info in self._loc.fs.get_file_info(selector) if info.type == pafs.FileType.File]
        found = []
        for path in sorted(self.path(ROWS_DIR, n) for n in names if _PART.match(n)):
            if path in self._damaged:
                continue
            if path not in self._checked:
                try:
                    with self._loc.fs.open_input_file(path) as fh:
                        meta = pq.read_metadata(fh)
                except (OSError, pa.ArrowException) as exc:
                    self._skip(path, exc)
                    continue
                foreign = _foreign_columns(meta.schema.to_arrow_schema())
                if foreign:
                    raise ResultsError(
                        f"not a task-row part file ({'; '.join(foreign[:3])}): move it out of {ROWS_DIR}/",
                        file=path,
                    )
                written = (meta.metadata or {}).get(b"splitsweep.schema_version")
                if written is not None and written.decode() != str(SCHEMA_VERSION):
                    raise ResultsError(
                        f"part file written under schema version {written.decode()}; "
                        f"this splitsweep reads version {SCHEMA_VERSION}",
                        file=path,
                        key="schema_version",
                        allowed=[SCHEMA_VERSION],
                    )
                self._checked.add(path)
            found.append(path)
        return found

    def _skip(self, path: str, exc: BaseException) -> None:
        if path in self._damaged:
            return
        reason = f"{type(exc).__name__}: {exc}"
        self._damaged[path] = reason
        warnings.warn(
            f"{path}: damaged part file skipped (left on disk; its tasks count as not done): {reason}",
            DamagedPartWarning,
            stacklevel=3,
        )

    def next_run(self) -> int:
        selector = pafs.FileSelector(self.path(ROWS_DIR), allow_not_found=True)
        runs = [int(m.group(1)) for i in self._loc.fs.get_file_info(selector) if (m := _PART.match(i.base_name))]
        specs = self._loc.fs.get_file_info(pafs.FileSelector(self.path("specs"), allow_not_found=True))
        runs += [int(m.group(1)) for i in specs if (m := re.match(r"run-(\d+)\.yaml$", i.base_name))]
        return max(runs, default=0) + 1

    def writer(self, *, run: int, flush_seconds: float = 5.0, flush_rows: int = 5000, lease: Lease | None = None) -> PartWriter:
        writer = PartWriter(self, run=run, flush_seconds=flush_seconds, flush_rows=flush_rows, lease=lease)
        # A run may execute in several steps (image selection, adaptive-search rounds), each
        # with its own writer: number on after this run's parts so a step never replaces another's.
        selector = pafs.FileSelector(self.path(ROWS_DIR), allow_not_found=True)
        seqs = [int(m.group(2)) for i in self._loc.fs.get_file_info(selector)
                if (m := _PART.match(i.base_name)) and int(m.group(1)) == run]
        writer._seq = max(seqs, default=0)
        return writer

    def read_rows(self, columns: Sequence[str] | None = None, *, filter: ds.Expression | None = None) -> pa.Table:
        """The named columns of every readable row (re-run tasks appear more than once;
        see latest_rows). Only these columns are decoded and ``filter`` is pushed down to
        Parquet; columns missing from older part files read as nulls."""
        columns = list(columns) if columns else list(ROW_SCHEMA.names)
        empty = ROW_SCHEMA.empty_table().select(columns)
        parts = self.part_files()
        if not parts:
            return empty
        try:
            return ds.dataset(parts, schema=ROW_SCHEMA, format="parquet", filesystem=self._loc.fs).to_table(
                columns=columns, filter=filter
            )
        except (OSError, pa.ArrowException):
            pass  # a file broke while being read: find it, file by file
        tables = []
        for path in parts:
            try:
                tables.append(
                    ds.dataset(path, schema=ROW_SCHEMA, format="parquet", filesystem=self._loc.fs).to_table(
                        columns=columns, filter=filter
                    )
                )
            except (OSError, pa.ArrowException) as exc:
                self._skip(path, exc)
        return pa.concat_tables(tables) if tables else empty

    def load_ground_truth(self) -> dict[str, Any]:
        """The COCO dict of ground_truth.json."""
        path = self.path(GROUND_TRUTH_FILE)
        try:
            gt = json.loads(self.read_bytes(GROUND_TRUTH_FILE))
        except FileNotFoundError:
            raise ResultsError(
                "ground_truth.json is missing (meta.json does not ask for reference evaluation)",
                file=path,
                key="evaluation",
                allowed=EVALUATION_MODES,
            ) from None
        except (OSError, ValueError) as exc:
            raise ResultsError(f"ground truth cannot be read: {exc}", file=path) from None
        if not isinstance(gt, dict) or not isinstance(gt.get("images"), list) or not isinstance(gt.get("annotations"), list):
            raise ResultsError("not a COCO dict with images and annotations", file=path)
        gt.setdefault("categories", [])
        return gt

    def stored_tasks(self, columns: Sequence[str] = ("status", "image_hash")) -> pa.Table:
        """The latest row of each stored task, reading only task_id, finished_at and ``columns``
        (what resume, plan and status need; a million rows stay Arrow columns).

        ``task_id`` holds each id's 128 bits (``binary(16)``, the form ``idkeys`` matches
        without decoding text again), decoded batch by batch as the parts are read: 16
        bytes per row instead of a 36-byte string column; ``image_hash`` is
        dictionary-encoded (a few distinct values per image). Where some stored id is not
        32 hex digits the column stays text; ``idkeys`` takes either form."""
        names = ["task_id", "finished_at", *[c for c in columns if c not in ("task_id", "finished_at")]]
        compact = self._read_compact(names)
        return latest_rows(compact if compact is not None else self.read_rows(names))

    def _read_compact(self, names: list[str]) -> pa.Table | None:
        """``read_rows(names)`` with task_id as binary(16) words; None where an id is not 32
        hex digits or a part cannot be read (read_rows then finds it, file by file)."""
        parts = self.part_files()
        if not parts:
            return None
        schema = pa.schema([pa.field("task_id", pa.binary(16)), *(
            pa.field(n, pa.dictionary(pa.int32(), pa.string())) if n == "image_hash" else ROW_SCHEMA.field(n)
            for n in names[1:])])  # fmt: skip
        batches = []
        try:  # file by file, a row group's pages at a time (a dataset scan reads ahead: ~2× the memory)
            for path in parts:
                with self._loc.fs.open_input_file(path) as fh:
                    reader = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
                    present = [n for n in names if n in reader.schema_arrow.names]
                    if "task_id" not in present:
                        return None
                    for batch in reader.iter_batches(batch_size=1 << 16, columns=present, use_threads=False):
                        words = id_words(batch.column("task_id"))
                        if words is None:
                            return None
                        columns = [pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(words),
                                                                        [None, pa.py_buffer(words)])]  # fmt: skip
                        for field in list(schema)[1:]:  # columns older parts lack read as nulls, as in read_rows
                            column = batch.column(field.name) if field.name in present else pa.nulls(batch.num_rows)
                            if pa.types.is_dictionary(field.type):
                                column = pc.dictionary_encode(column.cast(field.type.value_type))
                            columns.append(column.cast(field.type))
                        batches.append(pa.record_batch(columns, schema=schema))
        except (OSError, pa.ArrowException):
            return None
        return pa.Table.from_batches(batches, schema=schema)

    def task_status(self) -> dict[str, str]:
        """task_id → status of its latest row."""
        table = latest_rows(self.read_rows(["task_id", "status", "finished_at"]))
        return dict(zip(table["task_id"].to_pylist(), table["status"].to_pylist()))

    def task_images(self) -> dict[str, tuple[str, str | None]]:
        """task_id → (status, image_hash) of its latest row."""
        table = latest_rows(self.read_rows(["task_id", "status", "finished_at", "image_hash"]))
        return dict(zip(table["task_id"].to_pylist(), zip(table["status"].to_pylist(), table["image_hash"].to_pylist())))

    def done_ids(self, *, retry_failed: bool = False) -> set[str]:
        """Tasks not to run again: every stored task, or only the ok ones with retry_failed."""
        return self.resume_state(retry_failed=retry_failed)[0]

    def resume_state(
        self, *, retry_failed: bool = False, image_hashes: Mapping[str, str] | None = None
    ) -> tuple[set[str], set[str]]:
        """Tasks not to run again — every stored task, or only the ok ones with retry_failed —
        and the stored tasks run again because their image's content changed.

        ``image_hashes`` maps task_id → the content hash of its image now; a stored row
        that recorded another hash is not reused.
        """
        done, changed = set(), set()
        for task, (status, stored_hash) in self.task_images().items():
            if retry_failed and status != "ok":
                continue
            if image_hashes is not None and task in image_hashes and stored_hash != image_hashes[task]:
                changed.add(task)
                continue
            done.add(task)
        return done, changed


def _first_names(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _foreign_columns(schema: pa.Schema) -> list[str]:
    """What makes a part file's schema not the task-row schema (columns may be missing: older files)."""
    if "task_id" not in schema.names:
        return ["no task_id column"]
    return [
        f"column {f.name} is {f.type}, expected {ROW_SCHEMA.field(f.name).type}"
        for f in schema
        if f.name in ROW_SCHEMA.names and not f.type.equals(ROW_SCHEMA.field(f.name).type)
    ]


def latest_rows(table: pa.Table) -> pa.Table:
    """One row per task_id: the latest ``finished_at`` wins (a re-run replaces the old row,
    a failed attempt is superseded by a later success); on equal times ``ok`` wins, then
    the later part file. Needs the columns task_id, finished_at and status."""
    n = table.num_rows
    if n == 0:
        return table
    codes, distinct = factorize(table.column("task_id"))
    if distinct == n:
        return table
    finished = pc.cast(table.column("finished_at"), pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
    ok = pc.fill_null(pc.equal(table.column("status"), "ok"), False).to_numpy(zero_copy_only=False)
    # lexsort: the last key is primary. Within a task, the last row after sorting wins.
    order = np.lexsort((np.arange(n), ok, finished, codes))
    sorted_codes = codes[order]
    last = np.ones(n, dtype=bool)
    last[:-1] = sorted_codes[1:] != sorted_codes[:-1]
    return table.take(pa.array(np.sort(order[last])))


class PartWriter:
    """Buffers rows and writes them as numbered part files of one run.

    Flushes when `flush_seconds` have passed since the first buffered row or `flush_rows`
    are buffered, and on close. Part names are deterministic (run, sequence number), so
    a retried write replaces rather than duplicates.

    With a `lease`, every part is published only after the lease is read back as ours;
    once it is lost, `add`, `due` and `flush` raise LeaseLostError (the caller stops
    dispatching) and `close` drops what is buffered: nothing more is written.
    """

    def __init__(self, store: ResultsStore, *, run: int, flush_seconds: float, flush_rows: int,
                 lease: Lease | None = None) -> None:
        self._store = store
        self._lease = lease
        self.rows_dropped = 0
        self.run = run
        self._seq = 0
        self._rows: list[dict] = []
        self._since: float | None = None
        self._flush_seconds = flush_seconds
        self._flush_rows = flush_rows
        self._lock = threading.Lock()
        self.rows_written = 0
        self.parts_written = 0

    def _guard(self) -> None:
        if self._lease is not None and self._lease.lost:
            self._lease.verify()  # raises, naming the new holder

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._guard()
        with self._lock:
            for row in rows:
                self._rows.append(dict(row))
            if self._rows and self._since is None:
                self._since = time.monotonic()
        if self.due():
            self.flush()

    def due(self) -> bool:
        self._guard()
        return bool(self._rows) and (
            len(self._rows) >= self._flush_rows
            or (self._since is not None and time.monotonic() - self._since >= self._flush_seconds)
        )

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self) -> None:
        with self._lock:
            if not self._rows:
                return
            if self._lease is not None:
                try:
                    self._lease.verify()
                except ResultsError:
                    self.rows_dropped += len(self._rows)
                    self._rows, self._since = [], None
                    raise
            rows, self._rows, self._since = self._rows, [], None
            self._seq += 1
            table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            self._store.write_bytes(f"{ROWS_DIR}/part-r{self.run:04d}-{self._seq:06d}.parquet", buf.getvalue())
            self.rows_written += len(rows)
            self.parts_written += 1

    def close(self) -> None:
        if self._lease is not None and self._lease.lost:
            self.rows_dropped += len(self._rows)  # another driver holds the location now
            self._rows, self._since = [], None
            return
        self.flush()
