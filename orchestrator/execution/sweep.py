"""One sweep run: plan, store set-up, model variants, optional image selection, execution."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.execution.devicecost import measure_sweep
from orchestrator.execution.execute import (
    ExecutionStats,
    PoolOptions,
    RayOptions,
    UnitInputs,
    WorkerPool,
    cluster_cpus,
    connect,
    run_units,
)
from orchestrator.execution.progress import Progress
from orchestrator.execution.worker import ModelPayload, SequencePayload, UnitPayload, UnitTask, failed_rows
from orchestrator.planning.plan import Plan, SequenceUnit, WorkUnit, build_plan
from orchestrator.planning.spec import Spec
from orchestrator.planning.variants import VariantBuild, build_variants
from orchestrator.results.lease import Lease
from orchestrator.results.planfile import reuse_stored_ids, write_plan
from orchestrator.results.schema import GROUND_TRUTH_FILE
from orchestrator.results.store import ResultsStore
from tasks.errors import SpecError
from tasks.work import INPUT_SPLIT, NO_SPLIT

__all__ = ["SweepOptions", "SweepResult", "SweepRun", "Terminated", "run_sweep", "evaluation_mode"]

SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class SweepOptions:
    address: str | None = None
    workers: int | None = None
    retry_failed: bool = False
    num_cpus: int | None = None  # local Ray only (tests start a smaller one)
    stream: TextIO | None = None
    on_rows: Callable[[list[dict]], None] | None = None  # called as each unit's rows are stored


@dataclass
class SweepResult:
    location: str
    plan_counts: dict[str, int]
    skipped: int
    stats: ExecutionStats
    variants: dict[str, VariantBuild] = field(default_factory=dict)
    planned: pa.Array | None = None  # task ids of the (final) plan
    search: dict | None = None  # the adaptive search's summary (search.json) when the spec has `search:`


def evaluation_mode(spec: Spec, plan: Plan) -> str:
    if spec.evaluation.mode:
        return spec.evaluation.mode
    return "ground-truth" if plan.dataset.ground_truth() is not None else "reference"


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM, Kubernetes, `ray stop`): handled exactly like Ctrl-C; the CLI exits 143."""


def _install_sigterm() -> Any:
    # SIGTERM ends the sweep like Ctrl-C: buffered rows are flushed, workers stopped.
    # ray.init installs its own SIGTERM handler (a C++ stack dump, exit 1), so this is
    # installed again once Ray is up.
    def handler(signum, frame):
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def run_sweep(spec: Spec, options: SweepOptions = SweepOptions()) -> SweepResult:
    return SweepRun.open(spec, options).run()


@dataclass
class _RunStats(ExecutionStats):
    skipped: int = 0


@dataclass
class SweepRun:
    """One run of a sweep: what it needs (spec, plan, store, lease, options) and, once Ray
    is up, the workers, the built variants and their payloads. ``open`` plans and takes the
    store's lease; ``run`` does the rest and always gives the lease back."""

    spec: Spec
    plan: Plan
    store: ResultsStore
    lease: Lease
    options: SweepOptions
    mode: str
    out: TextIO
    workers: int = 1
    variants: dict[str, VariantBuild] = field(default_factory=dict)
    payloads: dict[str, ModelPayload] = field(default_factory=dict)
    _stored: pa.Table | None = field(default=None, repr=False)  # the first execute's resume state, read early
    _workers: WorkerPool | None = field(default=None, repr=False)  # kept across the executes of a search

    @classmethod
    def open(cls, spec: Spec, options: SweepOptions = SweepOptions()) -> SweepRun:
        out = options.stream or sys.stderr
        plan = build_plan(spec)
        mode = evaluation_mode(spec, plan)
        if mode == "ground-truth" and plan.dataset.ground_truth() is None:
            raise SpecError(
                "ground-truth evaluation needs a dataset with annotations",
                file=spec.file, key="evaluation.mode", allowed=["reference"],
            )
        store = ResultsStore(spec.output_location)
        lease = store.open_for_sweep(
            sweep=spec.sweep,
            extra_meta={
                "evaluation": mode,
                "reference_score_threshold": spec.evaluation.score_threshold,
                # resolved paths: what the dashboard opens for image drill-down
                "dataset": spec.dataset.config(spec.resolve),
                "spec_file": str(Path(spec.file).resolve()) if spec.file else None,
                # video: the frame rate (CAP_PROP_FPS) the report's kbps are counted at
                "frame_rate": plan.dataset.frame_rate(),
            },
            out=out,
        )
        return cls(spec, plan, store, lease, options, mode, out)

    def run(self) -> SweepResult:
        spec, options, store, out = self.spec, self.options, self.store, self.out
        previous = _install_sigterm()
        started = False
        try:
            reuse_stored_ids(store, self.plan)
            store.save_spec(spec.text or "", run=self.lease.run)
            if self.mode == "ground-truth":
                store.write_json(GROUND_TRUTH_FILE, self.plan.dataset.ground_truth())
            # Task ids, plan.parquet, the stored rows' resume state, image checks and hashes
            # are done while Ray starts (seconds each on a million-task plan; ray.init mostly
            # waits on the processes it starts).
            problems: list[tuple[str, str]] = []
            prepared = _in_background(lambda p: self._prepare(problems), self.plan)
            started = connect(RayOptions(address=options.address or spec.execution.address, num_cpus=options.num_cpus))
            if previous is not None:
                _install_sigterm()  # ray.init replaced it
            workers = options.workers or spec.execution.workers
            if workers == "auto":
                workers = max(1, cluster_cpus() // spec.execution.threads)
            self.workers = workers
            self.variants = build_variants(self.plan, store, out=out)
            self.payloads = _payloads(self.plan, self.variants)
            prepared()
            for file, reason in problems:
                out.write(f"warning: {file}: {reason} (its tasks will fail; the others run)\n")
            # The device's cost per split (head model alone, a few images): once per variant.
            measure_sweep(self.plan, store, self.variants, threads=spec.execution.threads, out=out)

            if spec.evaluation.select is not None:
                self.plan = self.select_images()
            write_plan(store, self.plan, lease=self.lease)

            if spec.search is not None:
                stats, search = self.search()
            else:
                stats, search = self.execute(self.plan), None
            state = self.plan.state(store.stored_tasks())
            return SweepResult(store.location, self.plan.counts(state), stats.skipped, stats, self.variants,
                               self.plan.task_ids, search)
        finally:
            try:
                if started:
                    import ray

                    ray.shutdown()
            finally:
                self.lease.release()
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)

    def _prepare(self, problems: list[tuple[str, str]]) -> None:
        plan = self.plan
        problems += plan.dataset.problems()
        if plan.spec.evaluation.select is None:  # else the plan shrinks to the selected images first
            plan.id_words  # noqa: B018 - computed (or read back from plan.parquet) and cached
            write_plan(self.store, plan, lease=self.lease)
            # nothing else writes rows before the first execute: its resume state, read now
            self._stored = self.store.stored_tasks()
        for record in plan.records:
            plan.dataset.content_hash(record)

    def pool(self) -> PoolOptions:
        execution = self.spec.execution
        return PoolOptions(workers=self.workers, threads=execution.threads, optimization=execution.optimization,
                           memory_mb=execution.worker_memory_mb, max_in_flight=execution.max_in_flight,
                           retries=execution.retries)  # fmt: skip

    def node(self, model: str, variant: str, split: int) -> int | None:
        """The variant's node a sweep split is cut at (mapped once per (model, variant) when
        the variant was built): the split itself for the unsplit model and remote
        inference, None where the variant has no counterpart."""
        build = self.variants.get(_payload_key(model, variant))
        if split in _WHOLE_MODEL or build is None:
            return split
        return build.split_map.get(split)

    def unit_payload(self, plan: Plan, unit: WorkUnit | SequenceUnit) -> UnitPayload | SequencePayload:
        """The unit as a worker gets it: each task with the variant's node it is cut at."""
        if isinstance(unit, SequenceUnit):
            return self._sequence_payload(plan, unit)
        record = plan.record(unit.image_id)
        return UnitPayload(
            sweep=plan.spec.sweep,
            model_key=_payload_key(unit.model, unit.variant),
            image_id=unit.image_id,
            image_name=plan.dataset.source(record),
            image_hash=plan.dataset.content_hash(record),
            tasks=tuple(UnitTask(t.task_id, t.split, t.setting, self.node(unit.model, unit.variant, t.split))
                        for t in unit.tasks),
        )

    def _sequence_payload(self, plan: Plan, unit: SequenceUnit) -> SequencePayload:
        node = self.node(unit.model, unit.variant, unit.split)
        frames = tuple(
            UnitPayload(
                sweep=plan.spec.sweep,
                model_key=_payload_key(unit.model, unit.variant),
                image_id=t.image_id,
                image_name=plan.dataset.source(plan.record(t.image_id)),
                image_hash=plan.dataset.content_hash(plan.record(t.image_id)),
                tasks=(UnitTask(t.task_id, t.split, t.setting, node),),
            )
            for t in unit.frames
        )
        return SequencePayload(
            sweep=plan.spec.sweep,
            model_key=_payload_key(unit.model, unit.variant),
            split=unit.split,
            setting=unit.setting,
            node=node,
            frames=frames,
            store=frozenset(t.task_id for t in unit.tasks),
        )

    def execute(self, plan: Plan, only: np.ndarray | None = None) -> _RunStats:
        """Run what of `plan` is not stored yet. Rows are published only while the lease is
        ours: when another driver takes it, the writer raises LeaseLostError, which stops
        dispatching (run_units kills the workers) and reaches the CLI (exit 4)."""
        spec, store, out, variants, payloads = self.spec, self.store, self.out, self.variants, self.payloads
        hashes = [plan.dataset.content_hash(r) for r in plan.records]
        stored, self._stored = self._stored if self._stored is not None and plan is self.plan else store.stored_tasks(), None
        done, changed = plan.resume(stored, image_hashes=hashes, retry_failed=self.options.retry_failed)
        del stored
        if only is not None:  # a subset of the plan (adaptive-search rounds): the rest is not run now
            done, changed = done | ~only, changed & only
        writer = store.writer(run=self.lease.run, flush_seconds=spec.execution.flush_seconds, lease=self.lease)
        units = [*plan.units(skip=done, chunk_tasks=spec.execution.chunk_tasks), *plan.sequence_units(skip=done)]
        skipped = int(done.sum()) if only is None else int((done & only).sum())
        if changed.any():
            images = len(np.unique(plan.image_index()[changed]))
            out.write(f"resume: {int(changed.sum())} stored tasks of {images} image(s) whose content changed since "
                      "they ran are run again\n")
        if skipped:
            total = plan.size if only is None else int(only.sum())
            out.write(f"resume: {skipped} of {total} tasks already stored, {total - skipped} to run\n")
        # Tasks of a variant that could not be built are stored as failed, with its reason.
        failed = [u for u in units
                  if (build := variants.get(_payload_key(u.model, u.variant))) is not None and build.error]
        for unit in failed:
            key = _payload_key(unit.model, unit.variant)
            writer.add(failed_rows(self.unit_payload(plan, unit), payloads[key], variants[key].error))
        failed_ids = {id(u) for u in failed}
        units = [u for u in units if id(u) not in failed_ids]
        remaining = sum(u.size for u in units)
        progress = Progress(remaining, stream=out)
        inputs = UnitInputs(payloads=payloads, unit_payload=lambda u: self.unit_payload(plan, u),
                            image_bytes=lambda image_id: plan.dataset.image_bytes(plan.record(image_id)))
        try:
            stats = run_units(units, inputs, pool=self.pool(), writer=writer, progress=progress,
                              on_rows=self.options.on_rows, keep=self._workers)
        finally:
            progress.close()
        result = _RunStats(**stats.__dict__)
        result.skipped = skipped
        return result

    def search(self) -> tuple[_RunStats, dict]:
        """The adaptive search (orchestrator.planning.search): rounds of ordinary task execution, each a
        subset of the grid's own tasks, until every target has its setting."""
        from orchestrator.planning.search import run_search

        plan = self.plan
        total = _RunStats()

        def execute(tasks) -> None:
            ids = pa.array([t.task_id for t in tasks], pa.string())
            only = pc.is_in(plan.task_ids, value_set=ids).to_numpy(zero_copy_only=False)
            stats = self.execute(plan, only=only)
            for name in ("units", "rows_ok", "rows_failed", "lost_workers", "retried_units", "seconds", "worker_busy_s"):
                setattr(total, name, getattr(total, name) + getattr(stats, name))
            total.interrupted = total.interrupted or stats.interrupted
            total.workers = sorted(set(total.workers) | set(stats.workers))

        self._workers = WorkerPool()  # one pool for every round: models stay loaded between them
        try:
            result = run_search(plan, self.store, execute=execute, mode=self.mode,
                                threshold=plan.spec.evaluation.score_threshold, lease=self.lease, out=self.out)
        finally:
            self._workers.close()
            self._workers = None
        return total, result.summary

    def select_images(self) -> Plan:
        """The seed study's selection: run the unsplit model on the candidates, keep the first
        N images whose AP reaches the threshold. Stored, so a resumed sweep keeps the same images."""
        from tasks.metrics import per_image_ap, select_images
        from tasks.rows import Detections

        spec, plan, store, out = self.spec, self.plan, self.store, self.out
        select = spec.evaluation.select
        wanted = {"min_ap": select.min_ap, "first": select.first, "model": select.model}
        saved = store.read_json(SELECTION_FILE)
        if saved and saved.get("select") == wanted:
            return plan.subset(images=saved["image_ids"])
        model = select.model or plan.models[0].name
        if model not in {m.name for m in plan.models}:
            raise SpecError(f"unknown model {model!r}", file=spec.file, key="evaluation.select.model",
                            allowed=[m.name for m in plan.models])
        base = plan.subset(model=model, variant=plan.model(model).variants[0].label, baseline_only=True)
        out.write(f"selection: running the unsplit {model} on {len(base.records)} candidate images\n")
        self.execute(base)
        rows = store.read_rows(["task_id", "image_id", "detections", "status", "finished_at"])
        ids = set(base.task_ids.to_pylist())
        dets = {}
        for tid, image_id, d, status in zip(rows["task_id"].to_pylist(), rows["image_id"].to_pylist(),
                                             rows["detections"].to_pylist(), rows["status"].to_pylist()):
            if tid in ids and status == "ok":
                dets[image_id] = Detections.from_records(d)
        gt = plan.dataset.ground_truth()
        order = [r.image_id for r in plan.records]
        aps = {i: per_image_ap(gt, dets[i], i) for i in order if i in dets}
        chosen = select_images(aps, min_ap=select.min_ap, first=select.first, order=order)
        self.lease.verify()
        store.write_json(SELECTION_FILE, {"select": wanted, "image_ids": chosen, "candidates": len(order)})
        out.write(f"selection: kept {len(chosen)} of {len(order)} images (AP ≥ {select.min_ap})\n")
        return plan.subset(images=chosen)


# Splits that run the whole model, so no variant node map applies: the unsplit model and remote inference.
_WHOLE_MODEL = (NO_SPLIT, INPUT_SPLIT)


def _in_background(fn: Callable[[Plan], None], plan: Plan) -> Callable[[], None]:
    """Run ``fn(plan)`` in a thread; the returned function waits for it and re-raises its error."""
    error: list[BaseException] = []

    def target() -> None:
        try:
            fn(plan)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)

    thread = threading.Thread(target=target, name="splitsweep-prepare", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if error:
            raise error[0]

    return wait


def _payload_key(model: str, variant: str) -> str:
    return f"{model}/{variant}"


def _payloads(plan: Plan, variants: Mapping[str, VariantBuild]) -> dict[str, ModelPayload]:
    out = {}
    for m in plan.models:
        for v in m.variants:
            key = _payload_key(m.name, v.label)
            build = variants[key]
            out[key] = ModelPayload(
                key=key,
                model=m.name,
                variant=v.label,
                source=build.model_bytes or b"",
                adapter=m.spec.adapter_type,
                adapter_settings=m.spec.adapter_settings,
                splits=tuple(build.split_map[k] for k in m.splits if k in build.split_map),
                input_shapes={k: tuple(s) for k, s in (m.spec.input_shapes or {}).items()} or None,
            )
    return out
