"""Runs work units on Ray: a pool of long-lived worker actors, bounded in-flight work,
replacement of lost workers, and rows handed to the store as they arrive."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.execution.progress import Progress
from orchestrator.execution.worker import ModelPayload, SequencePayload, SweepWorker, UnitPayload, failed_rows
from orchestrator.results.store import PartWriter
from tasks.errors import ResultsError

__all__ = ["RayOptions", "connect", "ExecutionStats", "PoolOptions", "UnitInputs", "WorkerPool", "run_units", "cluster_cpus",
           "spread_units"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray on this machine
    num_cpus: int | None = None  # local Ray only


def connect(options: RayOptions) -> bool:
    """Start or join Ray; True when this call started a local instance (to shut it down)."""
    import ray

    address = options.address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto") and address.split("://")[-1] != current:
            raise ResultsError(
                f"Ray is already running in this process, connected to {current}; cannot join {address} "
                "(call ray.shutdown() first)",
                key="execution.address",
            )
        return False
    kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=True, include_dashboard=False)
    if address is None:
        # Local Ray: workers are started from this interpreter's environment; make sure
        # they import this checkout's packages even when it is not pip-installed.
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH", "")
        if root not in path.split(os.pathsep):
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
        with _loopback_only():
            ray.init(num_cpus=options.num_cpus, **kwargs)
        return True
    ray.init(address=address, **kwargs)
    return False


@contextlib.contextmanager
def _loopback_only():
    """A local Ray listens on 127.0.0.1 only (GCS, raylet, agents, workers).

    Ray 2.60 binds every server to the node IP it detects, and maps an explicit
    ``_node_ip_address="127.0.0.1"`` back to that routable address; only its
    single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS
    and Windows) takes 127.0.0.1 as the node IP. Set for this start only: the env var
    for the processes Ray starts, the constant for this process, which read it at import.
    """
    from ray._private import ray_constants

    env_key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_constant = os.environ.get(env_key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[env_key] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant
        if saved_env is None:
            os.environ.pop(env_key, None)
        else:
            os.environ[env_key] = saved_env


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


@dataclass
class ExecutionStats:
    units: int = 0
    rows_ok: int = 0
    rows_failed: int = 0
    lost_workers: int = 0
    retried_units: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    workers: list[str] = field(default_factory=list)
    first_rows_s: float | None = None  # start-up: workers started, models loaded, first unit done
    worker_rss_mb: float = 0.0  # largest resident memory of a worker at the end
    worker_maxrss_mb: float = 0.0  # largest peak resident memory of a worker
    worker_busy_s: float = 0.0  # wall time the workers spent in units, summed
    shared_heads: int = 0  # head runs sent through the object store to the pieces of a spread unit


def spread_units(units: Sequence, workers: int) -> list:
    """Every worker busy: with fewer units than workers, cut units into pieces (in proportion
    to their size) until there are as many as workers; pieces of one head run share it
    (``shared_head``): it runs once and reaches the other workers through the object store.
    With as many units as workers or more, units are kept whole (each worker keeps its
    image's head locally, nothing crosses the network)."""
    units = list(units)
    if workers <= 1 or not units or len(units) >= workers:
        return units
    n = [1] * len(units)
    # one more piece at a time to the unit with the most tasks per piece
    while sum(n) < workers:
        i = max(range(len(units)), key=lambda k: units[k].size / n[k] if n[k] < units[k].size else -1.0)
        if n[i] >= units[i].size:
            break  # one task per piece everywhere
        n[i] += 1
    out = []
    for unit, k in zip(units, n):
        out += unit.pieces(k) if k > 1 else [unit]
    per_key: dict[tuple, int] = {}
    for u in out:
        per_key[u.head_key] = per_key.get(u.head_key, 0) + 1
    return [u if u.shared_head or per_key[u.head_key] == 1 else replace(u, shared_head=True) for u in out]


@dataclass
class _Slot:
    handle: Any
    inflight: int = 0
    last_head: tuple | None = None
    alive: bool = True
    busy_s: float = 0.0  # the worker's busy seconds at its last ping


@dataclass(frozen=True)
class PoolOptions:
    """The worker pool of one run_units call: its size and each worker's settings."""

    workers: int
    threads: int = 1  # onnxruntime intra-op threads (and Ray CPUs) per worker
    optimization: str = "exact"
    memory_mb: float = 400.0
    max_in_flight: int | None = None  # None: two units per worker
    retries: int = 2  # times a unit whose worker was lost runs again


class WorkerPool:
    """Workers kept across run_units calls (the rounds of an adaptive search): started once,
    their loaded models and sessions kept, instead of a new pool per call. ``close`` ends them."""

    def __init__(self) -> None:
        self.slots: list[_Slot] = []

    def close(self) -> None:
        _kill(self.slots)
        self.slots = []


def _kill(slots: Sequence[_Slot]) -> None:
    import ray

    for slot in slots:
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass


@dataclass(frozen=True)
class UnitInputs:
    """Where a unit's inputs come from: its model payload, its tasks, its image's bytes."""

    payloads: Mapping[str, ModelPayload]
    unit_payload: Callable[[Any], UnitPayload]
    image_bytes: Callable[[int], bytes]


def run_units(
    units: Sequence,  # plan.WorkUnit
    inputs: UnitInputs,
    *,
    pool: PoolOptions,
    writer: PartWriter,
    progress: Progress,
    on_rows: Callable[[list[dict]], None] | None = None,
    keep: WorkerPool | None = None,
) -> ExecutionStats:
    """Run every unit once; rows reach `writer` as units finish. With ``keep`` the workers
    are its (started on first use) and stay up afterwards; without, they end with the call.

    A unit whose worker dies (process crash, node lost) goes back to the queue and runs
    again elsewhere, up to `retries` times; its rows are written only from the one call
    that returned, so nothing is stored twice. After that it is stored as failed.
    """
    payloads, unit_payload, image_bytes = inputs.payloads, inputs.unit_payload, inputs.image_bytes
    workers, threads, retries = pool.workers, pool.threads, pool.retries
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

    actor_cls = ray.remote(SweepWorker)
    options = dict(num_cpus=threads, max_restarts=0, max_concurrency=1)
    per_worker = 2  # one computing, one queued behind it: hides dispatch latency
    max_in_flight = pool.max_in_flight or per_worker * workers
    units = spread_units(units, workers)
    stats = ExecutionStats(units=len(units))
    start = time.monotonic()

    def new_slot() -> _Slot:
        return _Slot(actor_cls.options(**options).remote(threads=threads, optimization=pool.optimization,
                                                           memory_mb=pool.memory_mb))

    finished = False
    if keep is not None:
        keep.slots[:] = [s for s in keep.slots if s.alive]
        for slot in keep.slots:
            slot.inflight, slot.last_head = 0, None
        keep.slots += [new_slot() for _ in range(workers - len(keep.slots))]
        slots = keep.slots
    else:
        slots = [new_slot() for _ in range(workers)]
    queue: deque = deque(units)
    attempts: dict[int, int] = {}
    inflight: dict[Any, tuple[Any, _Slot]] = {}
    image_refs: dict[int, Any] = {}
    image_users: dict[int, int] = {}
    head_refs: dict[tuple, Any] = {}  # head_key → ref of the one head() run its pieces share
    head_users: dict[tuple, int] = {}
    for u in units:
        for image_id in _image_ids(u):
            image_users[image_id] = image_users.get(image_id, 0) + 1
        if getattr(u, "shared_head", False):
            head_users[u.head_key] = head_users.get(u.head_key, 0) + 1
    payload_refs: dict[str, ModelPayload] = {}

    def model_payload(key: str) -> ModelPayload:
        if key not in payload_refs:
            p = payloads[key]
            source = p.source
            if isinstance(source, (bytes, bytearray)):
                source = [ray.put(bytes(source))]  # wrapped: fetched once per worker, by the worker
            payload_refs[key] = ModelPayload(**{**p.__dict__, "source": source})
        return payload_refs[key]

    def image_ref(image_id: int):
        if image_id not in image_refs:
            image_refs[image_id] = ray.put(image_bytes(image_id))
        return image_refs[image_id]

    def release_image(unit) -> None:
        for image_id in _image_ids(unit):
            image_users[image_id] -= 1
            if image_users[image_id] <= 0:
                image_refs.pop(image_id, None)

    def release_head(unit) -> None:
        if unit.shared_head:
            head_users[unit.head_key] -= 1
            if head_users[unit.head_key] <= 0:
                head_refs.pop(unit.head_key, None)

    def pick(unit) -> _Slot | None:
        live = [s for s in slots if s.alive and s.inflight < per_worker]
        if not live:
            return None
        same = [s for s in live if s.last_head == unit.head_key]
        if unit.shared_head:  # pieces go to the least busy worker; the head follows through the object store
            return min(live, key=lambda s: (s.inflight, s.last_head != unit.head_key))
        return same[0] if same else min(live, key=lambda s: s.inflight)

    def dispatch(unit, slot: _Slot):
        up = unit_payload(unit)
        if isinstance(up, SequencePayload):
            return _submit(slot.handle, unit, model_payload(up.model_key), up, image_ref)
        model, image = model_payload(up.model_key), image_ref(unit.image_id)
        if not unit.shared_head:
            return slot.handle.run.remote(model, image, up)
        if unit.head_key not in head_refs:
            head_refs[unit.head_key] = slot.handle.head.remote(model, image, up)
            stats.shared_heads += 1
        # wrapped in a list: the worker fetches it itself, and runs the head when it was lost
        return slot.handle.run.remote(model, image, up, [head_refs[unit.head_key]])

    def store(rows: list[dict]) -> None:
        if stats.first_rows_s is None:
            stats.first_rows_s = time.monotonic() - start
        ok = sum(r["status"] == "ok" for r in rows)
        stats.rows_ok += ok
        stats.rows_failed += len(rows) - ok
        writer.add(rows)
        if on_rows:
            on_rows(rows)
        progress.update(ok=ok, failed=len(rows) - ok)

    try:
        while queue or inflight:
            while queue and len(inflight) < max_in_flight:
                slot = pick(queue[0])
                if slot is None:
                    break
                unit = queue.popleft()
                ref = dispatch(unit, slot)
                slot.inflight += 1
                slot.last_head = unit.head_key
                inflight[ref] = (unit, slot)
            if not inflight:
                if not any(s.alive for s in slots):
                    raise ResultsError("every worker was lost and none can be started: is the Ray cluster up?")
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                unit, slot = inflight.pop(ref)
                slot.inflight -= 1
                try:
                    rows = ray.get(ref)
                except (RayActorError, ActorUnavailableError) as exc:
                    if slot.alive:
                        slot.alive = False
                        stats.lost_workers += 1
                        progress.lost_workers += 1
                        _replace(slots, slot, new_slot, threads)
                    n = attempts.get(id(unit), 0) + 1
                    attempts[id(unit)] = n
                    if n <= retries:
                        stats.retried_units += 1
                        queue.appendleft(unit)
                        continue
                    up = unit_payload(unit)
                    rows = failed_rows(up, payloads[up.model_key], f"worker lost {n} times: {type(exc).__name__}")
                except RayTaskError as exc:  # the worker's own code raised outside a task: a bug
                    up = unit_payload(unit)
                    rows = failed_rows(up, payloads[up.model_key], f"{type(exc.cause).__name__}: {exc.cause}")
                release_image(unit)
                release_head(unit)
                store(rows)
            if writer.due():
                writer.flush()
            progress.render()
        pings = []
        for slot in slots:  # one at a time: a worker lost while idle is only found out here
            if slot.alive:
                try:
                    ping = ray.get(slot.handle.ping.remote())
                except (RayActorError, ActorUnavailableError):
                    slot.alive = False
                    stats.lost_workers += 1
                    continue
                pings.append(ping)
                stats.worker_busy_s += ping.busy_s - slot.busy_s  # a kept worker's total counts on
                slot.busy_s = ping.busy_s
        stats.workers = sorted(p.name for p in pings)
        stats.worker_rss_mb = max((p.rss_mb for p in pings), default=0.0)
        stats.worker_maxrss_mb = max((p.peak_rss_mb for p in pings), default=0.0)
        finished = True
    except KeyboardInterrupt:
        stats.interrupted = True
        raise
    finally:
        writer.close()
        if keep is None or not finished:  # stopped by an error or Ctrl-C: nothing may keep running
            _kill(slots)
            if keep is not None:
                keep.slots = []  # killed: a later call starts new ones
        stats.seconds = time.monotonic() - start
    return stats


def _image_ids(unit) -> tuple[int, ...]:
    """The images a unit reads: one for a work unit, every frame for a sequence unit."""
    ids = getattr(unit, "image_ids", None)
    return tuple(ids) if ids is not None else (unit.image_id,)


def _submit(handle, unit, model: ModelPayload, up, image_ref: Callable[[int], Any]):
    """Start a unit on a worker: ``run`` for a work unit, ``run_sequence`` (all frames' images
    as top-level arguments, so Ray resolves them) for a sequence unit."""
    if isinstance(up, SequencePayload):
        return handle.run_sequence.remote(model, up, *[image_ref(i) for i in _image_ids(unit)])
    return handle.run.remote(model, image_ref(unit.image_id), up)


def _replace(slots: list[_Slot], dead: _Slot, new_slot: Callable[[], _Slot], threads: int) -> None:
    """Start a replacement where the cluster still has room; a smaller pool otherwise."""
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    if free >= threads:
        slots.append(new_slot())
