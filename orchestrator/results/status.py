"""Progress of a sweep from its stored plan and rows (what `status` and the dashboard show)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.planning.idkeys import index_in
from orchestrator.results.schema import PLAN_FILE, codec_label, codec_params_dict, codec_sort_key
from orchestrator.results.store import ResultsStore
from tasks.errors import ResultsError

__all__ = ["SweepStatus", "sweep_status"]

_CONFIG = ["model", "variant", "split", "codec", "codec_params"]


@dataclass(frozen=True)
class SweepStatus:
    """``rows``: one dict per configuration (model, variant, split, codec: its label,
    codec_name, codec_params, qp, tasks, ok, failed, remaining), sorted by model, variant,
    numeric split and numeric setting values."""

    rows: list[dict]
    totals: dict[str, int]
    errors: list[tuple[str, int]]
    last_finished: str | None


def sweep_status(location: str) -> SweepStatus:
    """Counts per configuration, joined and grouped in Arrow: a million planned tasks and
    rows take about a second, with strings kept dictionary-encoded."""
    store = ResultsStore(location)
    if store.check_meta() is None:
        raise ResultsError("no sweep results here (meta.json missing)", file=location)
    from orchestrator.results.planfile import read_plan_ids

    read = read_plan_ids(store, _CONFIG, read_dictionary=["model", "variant", "codec", "codec_params"])
    if read is None:
        raise ResultsError(f"no {PLAN_FILE}: the sweep never started", file=location)
    plan_ids, plan = read
    pool = pa.default_memory_pool()
    pool.release_unused()  # what reading cached: numpy's tables below cannot re-use it
    rows = store.stored_tasks(("status", "error"))
    pool.release_unused()
    # each planned task's status: its latest row's, or "remaining"
    where = index_in(plan_ids, rows["task_id"])
    status = pc.fill_null(rows["status"].take(pa.array(where, mask=where < 0)), "remaining")
    grouped = (
        plan.append_column("status", status)
        .unify_dictionaries()  # row groups decode to dictionaries of their own
        .group_by([*_CONFIG, "status"], use_threads=False)
        .aggregate([([], "count_all")])
    )
    counts: dict[tuple, dict[str, int]] = {}
    for model, variant, split, codec, params, state, n in zip(*(grouped[c].to_pylist() for c in grouped.column_names)):
        key = (model, variant, split, codec, params or "{}")
        counts.setdefault(key, {"ok": 0, "failed": 0, "remaining": 0})
        counts[key][state if state in ("ok", "failed") else "remaining"] += n
    out = []
    for key in sorted(counts, key=lambda k: (k[0], k[1], k[2], codec_sort_key(k[3], k[4]))):
        model, variant, split, codec, params = key
        c = counts[key]
        qp = (codec_params_dict(params) or {}).get("qp")
        out.append(dict(model=model, variant=variant, split=split, codec=codec_label(codec, params), codec_name=codec,
                        codec_params=params, qp=qp, tasks=sum(c.values()), **c))
    totals = {k: sum(r[k] for r in out) for k in ("tasks", "ok", "failed", "remaining")}
    failed = rows.filter(pc.equal(rows["status"], "failed"))
    failed = failed.filter(pa.array(index_in(failed["task_id"], plan_ids) >= 0))
    errors: list[tuple[str, int]] = []
    if failed.num_rows:
        tally = pc.value_counts(failed["error"]).to_pylist()  # in order of first appearance
        errors = sorted(((t["values"], t["counts"]) for t in tally), key=lambda e: -e[1])
    last = pc.max(rows["finished_at"]).as_py() if rows.num_rows else None
    return SweepStatus(out, totals, errors, last.isoformat(timespec="seconds") if last else None)
