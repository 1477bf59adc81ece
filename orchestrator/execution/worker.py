"""The long-lived sweep worker: keeps sessions loaded and turns work units into rows.

A plain class, so it runs and is tested without Ray; orchestrator.execution.execute wraps it as a
Ray actor. Models arrive as bytes (through Ray's object store on a cluster), never as a
path on the driver's disk.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import resource
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from tasks import detectors
from tasks.images import decode_image
from tasks.rows import CodecSetting
from tasks.runtime import SplitRunner
from tasks.sequence import run_sequence
from tasks.work import HeadOutput, TaskOutcome, describe_error, run_head, run_tasks

__all__ = ["ModelPayload", "UnitPayload", "UnitTask", "SequencePayload", "SharedHead", "WorkerStatus", "SweepWorker",
           "failed_rows"]


@dataclass(frozen=True)
class ModelPayload:
    """What a worker needs to run one (model, variant): bytes (or a wrapped object ref)."""

    key: str
    model: str
    variant: str
    source: Any  # bytes, or [ObjectRef] (wrapped so Ray does not fetch it on every call)
    adapter: str
    adapter_settings: Mapping[str, Any]
    splits: tuple[int, ...]  # this variant's node indices of the sweep's splits (mapped by the driver)
    input_shapes: Mapping[str, tuple[int, ...]] | None = None


@dataclass(frozen=True)
class UnitTask:
    """One task of a unit. ``split`` is the sweep's split (fp32 node index, what rows record);
    ``node`` is where this variant is cut for it, fixed by the driver once per (model,
    variant) (variants.map_split_points): the split itself for the unsplit model and remote
    inference, None where the variant has no counterpart."""

    task_id: str
    split: int
    setting: CodecSetting
    node: int | None


@dataclass(frozen=True)
class UnitPayload:
    sweep: str
    model_key: str
    image_id: int
    image_name: str
    tasks: tuple[UnitTask, ...]
    image_hash: str | None = None  # content hash of the image, recorded in every row (resume checks it)


@dataclass(frozen=True)
class WorkerStatus:
    """What ping() reports: the worker's name, resident memory now and at its peak (MB), busy seconds."""

    name: str
    rss_mb: float
    peak_rss_mb: float
    busy_s: float


@dataclass(frozen=True)
class _LoadedModel:
    runner: SplitRunner
    adapter: Any
    payload: ModelPayload


class SharedHead(NamedTuple):
    """One image's head run and the image size: what spread pieces of a unit share."""

    head: HeadOutput
    width: int
    height: int


@dataclass(frozen=True)
class SequencePayload:
    """A sequence unit on the wire: its frames in order (one UnitPayload of one task each,
    the image bytes passed alongside in the same order) and which of them to store."""

    sweep: str
    model_key: str
    split: int
    setting: CodecSetting
    node: int | None  # where this variant is cut for ``split`` (see UnitTask.node)
    frames: tuple[UnitPayload, ...]
    store: frozenset[str]  # task ids to return rows for (resume: the others are stored already)


class SweepWorker:
    """Caches runners per (model, variant) and the last image's head outputs."""

    def __init__(
        self,
        *,
        threads: int = 1,
        optimization: str = "exact",
        memory_mb: float = 400.0,
        fetch: Callable[[Any], bytes] | None = None,
    ) -> None:
        self.threads = threads
        self.optimization = optimization
        self.memory_mb = memory_mb
        self.busy_s = 0.0  # wall time spent in run(): what the benchmark splits into compute and overhead
        self._fetch = fetch or _fetch_ref
        self._models: dict[str, _LoadedModel] = {}
        self._head: tuple[tuple[str, int], SharedHead] | None = None
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ping(self) -> WorkerStatus:
        return WorkerStatus(self.name, _resident_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                            self.busy_s)

    def _load(self, payload: ModelPayload):
        if payload.key not in self._models:
            data = payload.source if isinstance(payload.source, (bytes, bytearray)) else self._fetch(payload.source)
            runner = SplitRunner(
                bytes(data), payload.splits, threads=self.threads, input_shapes=payload.input_shapes,
                optimization=self.optimization, skip_invalid=True,
            )
            adapter = detectors.adapter(payload.adapter, dict(payload.adapter_settings))
            self._models[payload.key] = _LoadedModel(runner, adapter, payload)
        m = self._models[payload.key]
        return m.runner, m.adapter, m.payload

    def run(self, payload: ModelPayload, image: bytes, unit: UnitPayload, head: Any = None) -> list[dict]:
        """Rows for every task of the unit; a failure anywhere becomes failed rows, never lost.

        ``head``: ``[ref]`` of another worker's ``head()`` for this image (a unit spread over
        several workers); fetched once, and the head is run here instead if it cannot be.
        """
        start = time.perf_counter()
        try:
            return self._run(payload, image, unit, head)
        finally:
            self._keep_memory_bounded()
            self.busy_s += time.perf_counter() - start

    def head(self, payload: ModelPayload, image: bytes, unit: UnitPayload) -> SharedHead | None:
        """Run the head for the unit's image, keep it for this worker's own piece, and return
        it for the other workers (Ray stores the return value once in the object store).
        None when it fails: each piece then runs its own head and reports the error in its rows."""
        start = time.perf_counter()
        try:
            runner, adapter, payload = self._load(payload)
            return self._head_for(payload, runner, adapter, image, unit, None)
        except Exception:  # noqa: BLE001 - the pieces run the head themselves and record why it fails
            return None
        finally:
            self.busy_s += time.perf_counter() - start

    def _head_for(self, payload, runner, adapter, image: bytes, unit: UnitPayload, shared: Any) -> SharedHead:
        key = (payload.key, unit.image_id)
        if self._head is not None and self._head[0] == key:
            return self._head[1]
        self._head = None  # free the previous image's tensors before the next run
        got = None
        if shared is not None:
            try:
                got = self._fetch(shared)
            except Exception:  # noqa: BLE001 - lost with its worker or node: run it here
                got = None
        if got is None:
            rgb = decode_image(image, name=unit.image_name)
            got = SharedHead(run_head(runner, adapter, rgb), int(rgb.shape[1]), int(rgb.shape[0]))
        self._head = (key, got)
        return got

    def _run(self, payload: ModelPayload, image: bytes, unit: UnitPayload, shared: Any = None) -> list[dict]:
        try:
            runner, adapter, payload = self._load(payload)
            head, width, height = self._head_for(payload, runner, adapter, image, unit, shared)
            runnable = [t for t in unit.tasks if t.node is not None and t.node not in runner.invalid]
            done = run_tasks(runner, adapter, head, [(t.node, t.setting) for t in runnable])
            seen: dict[int, str | None] = {}
            done = [_check_finite(o, seen) for o in done]
            by_id = {t.task_id: o for t, o in zip(runnable, done)}
            outcomes = [by_id.get(t.task_id) or _no_counterpart(t, payload, runner) for t in unit.tasks]
        except Exception as exc:  # noqa: BLE001 - the unit's rows carry the error
            return failed_rows(unit, payload, describe_error(exc), worker=self.name)
        now = dt.datetime.now(dt.timezone.utc)
        return [
            _row(unit, payload, task, outcome, width=width, height=height, worker=self.name, now=now)
            for task, outcome in zip(unit.tasks, outcomes)
        ]


    def run_sequence(self, payload: ModelPayload, unit: SequencePayload, *images: bytes) -> list[dict]:
        """Rows for the frames of a sequence unit still to store (``unit.store``); see tasks.sequence."""
        start = time.perf_counter()
        try:
            return self._run_sequence(payload, unit, images)
        finally:
            self._keep_memory_bounded()
            self.busy_s += time.perf_counter() - start

    def _run_sequence(self, payload: ModelPayload, unit: SequencePayload, images: Sequence[bytes]) -> list[dict]:
        try:
            runner, adapter, payload = self._load(payload)
            self._head = None  # the sequence runs its own heads: free the cached image's tensors
            split = unit.node
            sizes = []

            def frames():
                for frame, data in zip(unit.frames, images):
                    rgb = decode_image(data, name=frame.image_name)
                    sizes.append(rgb.shape[:2])
                    yield rgb

            if split is None or split in runner.invalid:
                task = unit.frames[0].tasks[0]
                outcomes = [_no_counterpart(task, payload, runner)] * len(unit.frames)
                sizes = [(None, None)] * len(unit.frames)
            else:
                from tasks.codecs import build

                outcomes = run_sequence(runner, adapter, _Lazy(frames(), len(unit.frames)), split, unit.setting,
                                        build(unit.setting))
                sizes += [(None, None)] * (len(unit.frames) - len(sizes))
            seen: dict[int, str | None] = {}
            outcomes = [_check_finite(o, seen) for o in outcomes]
        except Exception as exc:  # noqa: BLE001 - the unit's rows carry the error
            return failed_rows(unit, payload, describe_error(exc), worker=self.name)
        now = dt.datetime.now(dt.timezone.utc)
        rows = []
        for frame, outcome, (height, width) in zip(unit.frames, outcomes, sizes):
            task = frame.tasks[0]
            if task.task_id in unit.store:
                rows.append(_row(frame, payload, task, outcome, width=width, height=height, worker=self.name, now=now))
        return rows

    def _keep_memory_bounded(self) -> None:
        """Above its memory budget, hand freed heap back to the OS.

        glibc keeps the memory of freed activation buffers mapped; a worker holding a head
        and a tail session per split then sits near its peak for good. malloc_trim returns
        it (measured on the demo CenterNet with 3 splits in a Ray actor: 433 → 255 MB
        between units) at the price of re-faulting those pages in the next unit, so it is
        done only when the budget is exceeded.
        """
        if self.memory_mb and _resident_mb() > self.memory_mb:
            _malloc_trim()


def _resident_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return 0.0  # not Linux: nothing to measure, nothing to trim


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _check_finite(outcome: TaskOutcome, seen: dict[int, str | None]) -> TaskOutcome:
    """A task whose model outputs hold NaN or infinity fails with that reason: scoring its
    (meaningless) detections would report AP 0 as if it were a result. ``seen`` memoises
    outputs shared by several tasks (the unsplit run and codec none)."""
    if not outcome.ok or outcome.result is None:
        return outcome
    for name, value in (outcome.result.outputs or {}).items():
        key = id(value)
        if key not in seen:
            seen[key] = _non_finite(name, value)
        if seen[key]:
            return TaskOutcome(outcome.split, outcome.setting, None, None, seen[key])
    return outcome


def _non_finite(name: str, value: Any) -> str | None:
    a = np.asarray(value)
    if not np.issubdtype(a.dtype, np.floating) or not a.size:
        return None
    finite = np.isfinite(a)
    if finite.all():
        return None
    kinds = " and ".join(k for k, hit in (("NaN", np.isnan(a).any()), ("inf", np.isinf(a).any())) if hit)
    return (f"ModelError: model output {name!r} has {int(a.size - finite.sum())} of {a.size} values {kinds} "
            "(no detections scored; check the model, variant or codec)")


def _no_counterpart(task: UnitTask, payload: ModelPayload, runner: SplitRunner) -> TaskOutcome:
    mapped = task.node
    if mapped is None:
        why = f"split {task.split} has no counterpart in variant {payload.variant!r}"
    else:
        why = f"split {task.split} (node {mapped} of variant {payload.variant!r}): {describe_error(runner.invalid[mapped])}"
    return TaskOutcome(task.split, task.setting, None, None, why)


def _fetch_ref(source: Sequence[Any]) -> bytes:
    import ray

    return ray.get(source[0])


def _base(unit: UnitPayload, payload: ModelPayload, task: UnitTask) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "sweep": unit.sweep,
        "model": payload.model,
        "variant": payload.variant,
        "split": task.split,
        "codec": task.setting.codec,
        "codec_params": task.setting.canonical,
        "qp": task.setting.qp,
        "image_id": unit.image_id,
        "image_hash": unit.image_hash,
    }


def _row(unit, payload, task: UnitTask, outcome: TaskOutcome, *, width, height, worker, now) -> dict[str, Any]:
    row = _base(unit, payload, task)
    row.update(image_width=width, image_height=height, worker=worker, finished_at=now)
    if not outcome.ok:
        row.update(status="failed", error=outcome.error, detections=[])
        return row
    r = outcome.result
    row.update(
        raw_bytes=r.raw_bytes,
        float32_bytes=r.float32_bytes,
        coded_bytes=r.coded_bytes,
        side_bytes=r.side_bytes,
        feature_mse=r.feature_mse,
        feature_psnr=r.feature_psnr,
        head_s=r.head_s,
        encode_s=r.encode_s,
        decode_s=r.decode_s,
        tail_s=r.tail_s,
        detections=outcome.detections.to_records(),
        status="ok",
        error=None,
    )
    return row


class _Lazy:
    """The frames of a sequence, decoded one at a time as the coder asks for them; ``len`` known upfront."""

    def __init__(self, frames, count: int) -> None:
        self._frames, self._count = frames, count

    def __iter__(self):
        return iter(self._frames)

    def __len__(self) -> int:
        return self._count


def failed_rows(unit: UnitPayload | SequencePayload, payload: ModelPayload, error: str, *,
                worker: str | None = None) -> list[dict]:
    if isinstance(unit, SequencePayload):
        return [row for frame in unit.frames if frame.tasks[0].task_id in unit.store
                for row in failed_rows(frame, payload, error, worker=worker)]
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for task in unit.tasks:
        row = _base(unit, payload, task)
        row.update(status="failed", error=error, detections=[], worker=worker, finished_at=now)
        rows.append(row)
    return rows
