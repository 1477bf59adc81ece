"""Progress of a sweep from its stored plan and rows (what `status` and the dashboard show)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tasks.errors import ResultsError

from .schema import PLAN_FILE, codec_label, codec_params_dict, codec_sort_key
from .store import ResultsStore, latest_rows

__all__ = ["SweepStatus", "sweep_status"]


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
    store = ResultsStore(location)
    if store.check_meta() is None:
        raise ResultsError("no sweep results here (meta.json missing)", file=location)
    from .results import read_plan

    plan = read_plan(store)
    if plan is None:
        raise ResultsError(f"no {PLAN_FILE}: the sweep never started", file=location)
    rows = latest_rows(store.read_rows(["task_id", "status", "error", "finished_at"]))
    status = dict(zip(rows["task_id"].to_pylist(), rows["status"].to_pylist()))
    counts: Counter = Counter()
    keys = []
    cols = [plan[c].to_pylist() for c in ("task_id", "model", "variant", "split", "codec", "codec_params")]
    for tid, model, variant, split, codec, params in zip(*cols):
        key = (model, variant, split, codec, params or "{}")
        if key not in counts:
            keys.append(key)
        counts[key] += 0
        counts[key + (status.get(tid, "remaining"),)] += 1
    out = []
    for key in sorted(keys, key=lambda k: (k[0], k[1], k[2], codec_sort_key(k[3], k[4]))):
        model, variant, split, codec, params = key
        ok, failed, rem = (counts[key + (s,)] for s in ("ok", "failed", "remaining"))
        qp = (codec_params_dict(params) or {}).get("qp")
        out.append(dict(model=model, variant=variant, split=split, codec=codec_label(codec, params), codec_name=codec,
                        codec_params=params, qp=qp, tasks=ok + failed + rem, ok=ok, failed=failed, remaining=rem))
    totals = {k: sum(r[k] for r in out) for k in ("tasks", "ok", "failed", "remaining")}
    planned = set(cols[0])
    errors = Counter(e for t, s, e in zip(rows["task_id"].to_pylist(), rows["status"].to_pylist(), rows["error"].to_pylist())
                     if s == "failed" and t in planned)
    last = rows["finished_at"].to_pylist()
    last_finished = max((x for x in last if x is not None), default=None)
    return SweepStatus(out, totals, errors.most_common(), last_finished.isoformat(timespec="seconds") if last_finished else None)
