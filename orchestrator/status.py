"""Progress of a sweep from its stored plan and rows (what `status` and the dashboard show)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tasks.errors import ResultsError

from .store import ResultsStore, latest_rows

__all__ = ["SweepStatus", "sweep_status"]


@dataclass(frozen=True)
class SweepStatus:
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
        raise ResultsError("no plan.parquet: the sweep never started", file=location)
    rows = latest_rows(store.read_rows(["task_id", "status", "error", "finished_at"]))
    status = dict(zip(rows["task_id"].to_pylist(), rows["status"].to_pylist()))
    counts: Counter = Counter()
    keys = []
    cols = [plan[c].to_pylist() for c in ("task_id", "model", "variant", "split", "codec", "codec_params")]
    for tid, model, variant, split, codec, params in zip(*cols):
        label = codec if params in ("{}", None) else f"{codec} {params}"
        key = (model, variant, split, label)
        if key not in counts:
            keys.append(key)
        counts[key] += 0
        counts[key + (status.get(tid, "remaining"),)] += 1
    out = []
    for key in sorted(keys, key=lambda k: (k[0], k[1], k[2], k[3])):
        ok, failed, rem = (counts[key + (s,)] for s in ("ok", "failed", "remaining"))
        out.append(dict(zip(("model", "variant", "split", "codec"), key), tasks=ok + failed + rem, ok=ok, failed=failed, remaining=rem))
    totals = {k: sum(r[k] for r in out) for k in ("tasks", "ok", "failed", "remaining")}
    planned = set(cols[0])
    errors = Counter(e for t, s, e in zip(rows["task_id"].to_pylist(), rows["status"].to_pylist(), rows["error"].to_pylist())
                     if s == "failed" and t in planned)
    last = rows["finished_at"].to_pylist()
    last_finished = max((x for x in last if x is not None), default=None)
    return SweepStatus(out, totals, errors.most_common(), last_finished.isoformat(timespec="seconds") if last_finished else None)
