"""Adaptive search: per (model, variant, split, codec) the cheapest setting that meets a goal, with a fraction of the grid.

The spec's ``search:`` section names targets (a codec, its ordered parameter, a goal). For
each (model, variant, split) the codec applies to, the search bisects over the codec's
values listed under ``codecs`` (most accurate first, cheapest last):

- A probe of one setting runs it on the first ``subset`` images of a seeded image order,
  then on twice as many, … up to all images. At every stage the paired-bootstrap ΔAP
  interval (orchestrator.reporting.intervals) against the reference decides early where it can:
  its upper bound below ``-within`` → the setting fails, stop; its lower bound at or above
  → it passes (bisection moves on). On all images the point estimate decides, which is
  the rule the full grid applies, so both pick the same setting.
- The final candidate is always widened to all images; if it then fails, bisection
  continues below it. "No setting meets the goal" is decided the same way: the most
  accurate setting fails on all images.
- Bisection assumes accuracy falls and bytes fall along the order. After it converges the
  probes are checked (an accuracy inversion seen on fewer than 2·subset images is first
  widened to 2·subset and counts only if it stays): a more expensive setting
  significantly (paired interval) worse than a cheaper one by more than the goal's margin,
  or one coding more bytes than a more expensive one, means the assumption does not hold;
  the search says so and falls back to the grid's rule for that target without running
  the grid: the settings are scanned from the cheapest on (each staged, stopped early when its
  interval excludes the goal) and the first passing on all images is chosen.

Nothing is kept but rows: every probe is a set of ordinary tasks (the grid's task ids),
and the search is a pure function of the stored rows (:func:`replay`), re-run after each
round of execution. A killed search therefore resumes where it stopped, and a later full
grid re-uses every row. ``search.json`` in the results location is the summary the report
and the dashboard show; it is rewritten after every round and never read back by the search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.planning.plan import BASELINE
from orchestrator.planning.spec import SearchGoal, SearchSpec
from orchestrator.reporting.intervals import evaluate_images, interval_from_resamples, paired_delta, resample_counts
from orchestrator.results.schema import SEARCH_FILE
from tasks import codecs as codec_registry
from tasks.errors import SpecError
from tasks.metrics import GroundTruth
from tasks.rows import CodecSetting, Detections
from tasks.work import INPUT_SPLIT, NO_SPLIT

__all__ = [
    "ORDERED_PARAMS",
    "SEARCH_FILE",
    "ANCHOR_CODECS",
    "Target",
    "Probe",
    "Outcome",
    "Evidence",
    "Need",
    "targets_for",
    "replay",
    "read_search",
    "search_frame",
    "format_search",
]

# codec → (ordered parameter, +1 when a larger value codes fewer bytes, -1 when a smaller one does)
ORDERED_PARAMS: dict[str, tuple[str, int]] = {
    "nncodec": ("qp", +1),
    "hevc": ("qp", +1),
    "uniform": ("bits", -1),
    "jpeg": ("quality", -1),
    "webp": ("quality", -1),
    "avif": ("quality", -1),
}
ANCHOR_CODECS = ("hevc", "avif", "webp", "jpeg")  # the remote-inference anchor, as orchestrator.reporting.bdrate picks it


@dataclass(frozen=True)
class Target:
    """One searched line: a codec's settings at one (model, variant, split), most accurate first."""

    model: str
    variant: str
    split: int
    codec: str
    param: str
    settings: tuple[CodecSetting, ...]
    goal: SearchGoal

    @property
    def values(self) -> list[Any]:
        return [s.params[self.param] for s in self.settings]

    @property
    def order(self) -> tuple[CodecSetting, ...]:
        """The bisection order: settings whose passing is a prefix. For a rate budget the
        cheap ones fit, so the order is reversed (cheapest first)."""
        return self.settings[::-1] if self.goal.bpp is not None else self.settings


@dataclass(frozen=True)
class Probe:
    """What one setting showed on the images it ran on."""

    value: Any
    images: int
    decision: str  # pass | fail
    estimate: float  # ΔAP (points) or bpp
    low: float
    high: float


@dataclass
class Outcome:
    """A target's result: the chosen value (None: no setting meets the goal) and its interval on all images."""

    target: Target
    chosen: Any | None
    probe: Probe | None  # the chosen setting's probe on all images
    probes: list[Probe]
    tasks: int  # distinct (setting, image) tasks the search read for this target
    grid_tasks: int
    note: str = ""
    fallback: bool = False


@dataclass(frozen=True)
class Need:
    """Rows the search must have before it can go on: (split, setting, image ids)."""

    model: str
    variant: str
    split: int
    setting: CodecSetting
    image_ids: tuple[int, ...]


class _Missing(Exception):
    def __init__(self, need: Need) -> None:
        self.need = need


@dataclass
class Evidence:
    """The stored rows the search reads: per (model, variant, split, setting) and image,
    the detections (None: the task failed) and coded bytes; image sizes; the ground truth."""

    rows: Mapping[tuple[str, str, int, CodecSetting, int], tuple[Detections | None, int]]
    pixels: Mapping[int, int]
    gt: GroundTruth | None
    anchors: Mapping[tuple[str, str], tuple[CodecSetting, ...]] = field(default_factory=dict)
    read: set = field(default_factory=set)  # keys looked at (tasks the search needed)

    def get(self, model: str, variant: str, split: int, setting: CodecSetting, image_ids: Sequence[int]) -> dict:
        missing = [i for i in image_ids if (model, variant, split, setting, i) not in self.rows]
        if missing:
            raise _Missing(Need(model, variant, split, setting, tuple(missing)))
        self.read.update((model, variant, split, setting, i) for i in image_ids)
        return {i: self.rows[(model, variant, split, setting, i)] for i in image_ids}


def stages(n_images: int, subset: int) -> list[int]:
    """Image counts of a probe's stages: subset, 2·subset, … and all."""
    out, n = [], max(1, subset)
    while n < n_images:
        out.append(n)
        n *= 2
    return out + [n_images]


def image_order(image_ids: Sequence[int], seed: int) -> list[int]:
    """A seeded shuffle: the first stage is a random, reproducible subset."""
    ids = sorted(int(i) for i in image_ids)
    return [ids[k] for k in np.random.default_rng(seed).permutation(len(ids))]


def targets_for(plan, spec_search: SearchSpec) -> list[Target]:
    """The spec's search targets expanded over the plan's (model, variant, split); SpecError
    (file:line, key, allowed) when a target names a codec or parameter the grid cannot search."""
    spec = plan.spec
    out: list[Target] = []
    for t_index, entry in enumerate(spec_search.targets):
        where = ("search", "targets", t_index)
        key = f"search.targets[{t_index}]"
        listed = sorted({s.codec for s in plan.settings})
        if entry.codec not in listed:
            raise SpecError(f"codec {entry.codec!r} is not under `codecs`", file=spec.where(*where, "codec"),
                            key=f"{key}.codec", allowed=listed)
        default_param, _ = ORDERED_PARAMS.get(entry.codec, (None, 0))
        param = entry.param or default_param
        if param is None or ORDERED_PARAMS.get(entry.codec, (None,))[0] != param:
            allowed = [f"{c}: {p}" for c, (p, _) in ORDERED_PARAMS.items() if c in listed] or list(ORDERED_PARAMS)
            raise SpecError(f"{entry.codec!r} has no ordered parameter {param!r} the search knows", file=spec.where(
                *where, "param" if entry.param else "codec"), key=f"{key}.param", allowed=allowed)
        if entry.goal.of == "remote" and entry.goal.within is not None and codec_registry.is_image_codec(entry.codec):
            raise SpecError("the remote-inference anchor is the image codecs themselves; use of: unsplit",
                            file=spec.where(*where, "goal", "of"), key=f"{key}.goal.of", allowed=["unsplit"])
        direction = ORDERED_PARAMS[entry.codec][1]
        groups: dict[str, list[CodecSetting]] = {}
        for s in plan.settings:
            if s.codec != entry.codec:
                continue
            value = s.params.get(param)
            if entry.range is not None and not (min(entry.range) <= value <= max(entry.range)):
                continue
            rest = {k: v for k, v in s.params.items() if k != param}
            groups.setdefault(repr(sorted(rest.items())), []).append(s)
        if not groups or max(len(g) for g in groups.values()) < 2:
            raise SpecError(f"the search needs at least two values of {entry.codec} {param} under `codecs`"
                            + (" inside `range`" if entry.range else ""),
                            file=spec.where(*where, "range" if entry.range else "codec"), key=f"{key}.range")
        models = {m.name for m in plan.models}
        for name in entry.models or ():
            if name not in models:
                raise SpecError(f"unknown model {name!r}", file=spec.where(*where, "models"), key=f"{key}.models",
                                allowed=sorted(models))
        for m in plan.models:
            if entry.models and m.name not in entry.models:
                continue
            labels = [v.label for v in m.variants]
            for name in entry.variants or ():
                if name not in labels:
                    raise SpecError(f"model {m.name} has no variant {name!r}", file=spec.where(*where, "variants"),
                                    key=f"{key}.variants", allowed=labels)
            if entry.goal.of == "remote" and entry.goal.within is not None and not _anchor_settings(plan, m.remote):
                raise SpecError(f"of: remote needs the split `input` of model {m.name} with one of "
                                f"{', '.join(ANCHOR_CODECS)} at ≥ 4 settings", file=spec.where(*where, "goal", "of"),
                                key=f"{key}.goal.of", allowed=["unsplit"])
            splits = (INPUT_SPLIT,) if codec_registry.is_image_codec(entry.codec) else m.splits
            if codec_registry.is_image_codec(entry.codec) and not m.remote:
                continue
            for v in m.variants:
                if entry.variants and v.label not in entry.variants:
                    continue
                for group in groups.values():
                    # most accurate first: descending in the direction that codes fewer bytes
                    ordered = tuple(sorted(group, key=lambda s: direction * s.params[param]))
                    for split in splits:
                        out.append(Target(m.name, v.label, split, entry.codec, param, ordered, entry.goal))
    return out


def _anchor_settings(plan, remote: bool) -> tuple[CodecSetting, ...]:
    if not remote:
        return ()
    for codec in ANCHOR_CODECS:
        found = tuple(s for s in plan.settings if s.codec == codec)
        if len(found) >= 4:
            return found
    return ()


# ----------------------------------------------------------------------------- measuring


def _dets(found: Mapping[int, tuple[Detections | None, int]]) -> dict[int, Detections] | None:
    """Detections by image, or None when a task of the probe failed (the setting fails)."""
    if any(d is None for d, _ in found.values()):
        return None
    return {i: d for i, (d, _) in found.items()}


def _bpp(found: Mapping[int, tuple[Detections | None, int]], pixels: Mapping[int, int], ids: Sequence[int]) -> float:
    return 8.0 * sum(found[i][1] for i in ids) / max(1, sum(pixels[i] for i in ids))


def _measure(target: Target, setting: CodecSetting, ids: Sequence[int], ev: Evidence, cfg: SearchSpec) -> tuple[float, float, float] | None:
    """(estimate, low, high) of the goal's quantity on ``ids``; None when a task failed."""
    found = ev.get(target.model, target.variant, target.split, setting, ids)
    goal = target.goal
    if goal.bpp is not None:
        bits = np.array([8.0 * found[i][1] for i in ids])
        px = np.array([float(ev.pixels[i]) for i in ids])
        counts = resample_counts(len(ids), resamples=cfg.resamples, seed=cfg.seed)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = (counts @ bits) / (counts @ px)
        iv = interval_from_resamples(float(bits.sum() / px.sum()), values, level=cfg.level, n_images=len(ids))
        return iv.estimate, iv.low, iv.high
    dets = _dets(found)
    if dets is None:
        return None
    if goal.of == "remote":
        return _versus_anchor(target, dets, _bpp(found, ev.pixels, ids), ids, ev, cfg)
    base = _dets(ev.get(target.model, target.variant, NO_SPLIT, BASELINE, ids))
    if base is None:
        return None
    iv = paired_delta(ev.gt, dets, base, ids, metric=goal.metric, level=cfg.level, resamples=cfg.resamples,
                      seed=cfg.seed)
    return iv.estimate, iv.low, iv.high


def _versus_anchor(target: Target, dets: Mapping[int, Detections], bpp: float, ids: Sequence[int], ev: Evidence,
                   cfg: SearchSpec) -> tuple[float, float, float] | None:
    """ΔAP against the remote-inference anchor curve at the setting's rate: the anchor's AP
    interpolated linearly in log-rate between its two settings around ``bpp`` (clamped at the
    ends), every AP re-accumulated on the same resampled images (a paired bootstrap)."""
    anchors = ev.anchors[(target.model, target.variant)]
    rates, evaluations = [], []
    for s in anchors:
        found = ev.get(target.model, target.variant, INPUT_SPLIT, s, ids)
        a = _dets(found)
        if a is None:
            continue
        rates.append(math.log(_bpp(found, ev.pixels, ids)))
        evaluations.append(evaluate_images(ev.gt, a, ids))
    if len(rates) < 2:
        return None
    order = np.argsort(rates)
    rates = [rates[k] for k in order]
    evaluations = [evaluations[k] for k in order]
    x = min(max(math.log(bpp), rates[0]), rates[-1])
    k = int(np.clip(np.searchsorted(rates, x) - 1, 0, len(rates) - 2))
    w = 0.0 if rates[k + 1] == rates[k] else (x - rates[k]) / (rates[k + 1] - rates[k])
    mine = evaluate_images(ev.gt, dets, ids)
    draws = resample_counts(len(ids), resamples=cfg.resamples, seed=cfg.seed)
    full = np.ones((1, len(ids)))
    metric = target.goal.metric

    def values(e, counts):
        return e.metrics(e.weights(ids, counts), (metric,))[metric]

    def delta(counts):
        anchor = (1 - w) * values(evaluations[k], counts) + w * values(evaluations[k + 1], counts)
        return values(mine, counts) - anchor

    iv = interval_from_resamples(float(delta(full)[0]), delta(draws), level=cfg.level, n_images=len(ids))
    return iv.estimate, iv.low, iv.high


def _passes(target: Target, value: float, bound: float | None = None) -> bool:
    goal = target.goal
    x = value if bound is None else bound
    if goal.bpp is not None:
        return x <= goal.bpp
    return x >= -float(goal.within)


# ----------------------------------------------------------------------------- the search


def replay(target: Target, ev: Evidence, order: Sequence[int], cfg: SearchSpec) -> Outcome | Need:
    """The search on the stored rows: the next rows it needs, or its outcome. Deterministic,
    so running it again after more rows are stored continues where it stopped."""
    stage_sizes = stages(len(order), cfg.subset)
    settings = target.order
    memo: dict[tuple[int, bool], Probe] = {}

    def probe(index: int, final: bool) -> Probe:
        if (index, final) in memo:
            return memo[(index, final)]
        setting = settings[index]
        value = setting.params[target.param]
        for n in stage_sizes if not final else stage_sizes[-1:]:
            ids = list(order[:n])
            m = _measure(target, setting, ids, ev, cfg)
            if m is None:
                result = Probe(value, n, "fail", math.nan, math.nan, math.nan)
                break
            est, low, high = m
            last = n == len(order)
            if last:
                result = Probe(value, n, "pass" if _passes(target, est) else "fail", est, low, high)
                break
            # Early decisions: the interval lies wholly on one side of the goal.
            fail_bound = low if target.goal.bpp is not None else high
            pass_bound = high if target.goal.bpp is not None else low
            if not _passes(target, est, fail_bound):
                result = Probe(value, n, "fail", est, low, high)
                break
            if _passes(target, est, pass_bound) and not final:
                result = Probe(value, n, "pass", est, low, high)
                break
        memo[(index, final)] = result
        return result

    try:
        forced: set[int] = set()
        while True:
            lo, hi = -1, len(settings)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mid not in forced and probe(mid, False).decision == "pass":
                    lo = mid
                else:
                    hi = mid
            if lo < 0:
                # "no setting meets the goal" is an answer too, so it is decided where the grid
                # decides it: the most accurate setting on all images (on a small first stage
                # its interval may exclude the goal by chance)
                if probe(0, True).decision == "pass":
                    lo = 0
                break
            if probe(lo, True).decision == "pass":
                break
            forced.add(lo)  # passed on a subset, failed on all images
        chosen = None if lo < 0 else lo
        widened: dict[int, int] = {}  # settings run on more images to confirm an inversion
        while True:
            seen = dict(widened)
            for (index, _final), p in memo.items():
                seen[index] = max(seen.get(index, 0), p.images)
            note, widen = _monotone_violation(target, seen, order, ev, cfg)
            if not widen:
                break
            for index in widen:
                widened[index] = min(2 * max(1, cfg.subset), len(order))
        fallback = bool(note)
        if fallback:
            # The grid's rule without the grid: from the far end of the order (the cheapest
            # setting; for a rate budget the most accurate) towards the other, the first
            # setting that passes on all images. Settings whose interval already excludes the
            # goal on a subset stop there, as in bisection.
            chosen = None
            for i in reversed(range(len(settings))):
                if probe(i, False).decision == "pass" and probe(i, True).decision == "pass":
                    chosen = i
                    break
            scanned = len(settings) - (0 if chosen is None else chosen)
            note = f"bisection's assumption does not hold ({note}): {scanned} of {len(settings)} settings scanned " \
                   f"from the {'cheapest' if target.goal.bpp is None else 'most accurate'} on"
        elif chosen is None:
            note = "no setting meets the goal"
        elif chosen == len(settings) - 1:
            note = "the cheapest setting meets the goal" if target.goal.bpp is None else "the most accurate setting fits"
    except _Missing as missing:
        return missing.need
    tasks = {k for k in ev.read if k[:3] == (target.model, target.variant, target.split) and k[3] in settings}
    probes = [memo[k] for k in sorted(memo, key=lambda k: (target.values.index(memo[k].value), k[1]))]
    return Outcome(
        target=target,
        chosen=None if chosen is None else settings[chosen].params[target.param],
        probe=None if chosen is None else memo[(chosen, True)],
        probes=probes,
        tasks=len(tasks),
        grid_tasks=len(settings) * len(order),
        note=note,
        fallback=fallback,
    )


def _monotone_violation(target: Target, seen: Mapping[int, int], order: Sequence[int], ev: Evidence,
                        cfg: SearchSpec) -> tuple[str, tuple[int, ...]]:
    """Why the probes contradict monotonicity ('' when they do not), and the settings to
    widen before it can be told. ``seen``: images each probed setting ran on (its index in
    the order → count). Only differences larger than the goal's margin count, so noise far
    below what the goal can resolve is ignored; an accuracy inversion seen on fewer than
    2·subset images is noise too often (the first stage's few images), so its two settings
    are widened to 2·subset images and it counts only if it is still there."""
    settings = target.order
    position = {i: target.settings.index(settings[i]) for i in seen}
    cost = sorted(seen, key=position.__getitem__)  # most accurate first
    enough = min(2 * max(1, cfg.subset), len(order))
    for k, a in enumerate(cost):
        for b in cost[k + 1:]:
            n = min(seen[a], seen[b])
            ids = list(order[:n])
            sa, sb = settings[a], settings[b]
            fa = ev.get(target.model, target.variant, target.split, sa, ids)
            fb = ev.get(target.model, target.variant, target.split, sb, ids)
            label_a = f"{target.param}={sa.params[target.param]}"
            label_b = f"{target.param}={sb.params[target.param]}"
            if sum(fb[i][1] for i in ids) > sum(fa[i][1] for i in ids):  # bytes: no noise to wait out
                return f"{label_b} codes more bytes than {label_a} on {n} images", ()
            if target.goal.bpp is not None or target.goal.of == "remote" or ev.gt is None:
                continue
            da, db = _dets(fa), _dets(fb)
            if da is None or db is None:
                continue
            iv = paired_delta(ev.gt, da, db, ids, metric=target.goal.metric, level=cfg.level,
                              resamples=cfg.resamples, seed=cfg.seed)
            if iv.high < -max(float(target.goal.within or 0.0), 0.1):
                if n < enough:
                    return "", (a, b)
                return (f"{label_a} is {-iv.estimate:.1f} AP points below the cheaper {label_b} on {n} images "
                        f"(paired interval {iv.low:+.1f} … {iv.high:+.1f})"), ()
    return "", ()


# ----------------------------------------------------------------------------- summary


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    t = outcome.target
    goal = {k: v for k, v in t.goal.model_dump().items() if v is not None}
    p = outcome.probe
    return {
        "model": t.model,
        "variant": t.variant,
        "split": t.split,
        "codec": t.codec,
        "param": t.param,
        "values": t.values,
        "goal": goal,
        "chosen": outcome.chosen,
        "estimate": None if p is None else _finite(p.estimate),
        "low": None if p is None else _finite(p.low),
        "high": None if p is None else _finite(p.high),
        "images": None if p is None else p.images,
        "tasks": outcome.tasks,
        "grid_tasks": outcome.grid_tasks,
        "fallback": outcome.fallback,
        "note": outcome.note,
        "probes": [{k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(q).items()} for q in outcome.probes],
    }


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def read_search(store) -> dict[str, Any] | None:
    """search.json of a results location, or None where no search ran there."""
    if not store.exists(SEARCH_FILE):
        return None
    return store.read_json(SEARCH_FILE)


def search_frame(summary: Mapping[str, Any] | None) -> pd.DataFrame:
    """search.json as a table: one row per target with the chosen value, its interval and tasks."""
    columns = ["model", "variant", "split", "codec", "param", "goal", "chosen", "estimate", "low", "high", "images",
               "tasks", "grid_tasks", "fallback", "note"]
    if not summary or not summary.get("targets"):
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(summary["targets"])
    frame["goal"] = [_goal_text(g) for g in frame["goal"]]
    return frame[columns]


def _goal_text(goal: Mapping[str, Any]) -> str:
    if goal.get("bpp") is not None:
        return f"bpp ≤ {goal['bpp']:g}"
    return f"Δ{goal.get('metric', 'ap').upper()} ≥ -{goal['within']:g} vs {goal.get('of', 'unsplit')}"


def format_search(summary: Mapping[str, Any] | None) -> str:
    """The report's search section: per split the chosen setting, its interval, tasks run vs the grid."""
    frame = search_frame(summary)
    if frame.empty:
        return ""
    from orchestrator.results.schema import split_label

    lines = [f"Adaptive search ({summary.get('state', 'done')}): {summary['tasks_run']:,} tasks run of "
             f"{summary['grid_tasks']:,} in the grid ({summary['grid_tasks'] / max(1, summary['tasks_run']):.1f}× fewer)",
             f"{'model':<10} {'variant':<8} {'split':>7} {'codec':<8} {'goal':<26} {'chosen':>8} "
             f"{'estimate':>9} {'interval':>17} {'tasks':>9}  note"]
    for r in frame.itertuples():
        chosen = "-" if r.chosen is None or (isinstance(r.chosen, float) and math.isnan(r.chosen)) else \
            f"{r.param}={r.chosen:g}"
        est = "" if r.estimate is None or pd.isna(r.estimate) else f"{r.estimate:+.2f}"
        iv = "" if r.low is None or pd.isna(r.low) else f"[{r.low:+.2f}, {r.high:+.2f}]"
        lines.append(f"{r.model:<10} {r.variant:<8} {split_label(r.split):>7} {r.codec:<8} {r.goal:<26} {chosen:>8} "
                     f"{est:>9} {iv:>17} {r.tasks:>4}/{r.grid_tasks:<4}  {r.note}")
    return "\n".join(lines)


def summary_record(outcomes: Sequence[Outcome | Need], targets: Sequence[Target], *, tasks_run: int, grid_tasks: int,
                   baseline_tasks: int, state: str) -> dict[str, Any]:
    return {
        "state": state,
        "tasks_run": tasks_run,
        "grid_tasks": grid_tasks,
        "baseline_tasks": baseline_tasks,
        "targets": [outcome_record(o) for o in outcomes if isinstance(o, Outcome)],
        "open": [f"{t.model} {t.variant} {t.split} {t.codec}" for t, o in zip(targets, outcomes) if isinstance(o, Need)],
    }


# ----------------------------------------------------------------------------- the driver


@dataclass
class SearchRun:
    """What :func:`run_search` did: the summary written to search.json, and the rounds it took."""

    summary: dict[str, Any]
    rounds: int


def stored_evidence(store, plan, targets: Sequence[Target], *, mode: str, threshold: float) -> Evidence:
    """The rows of the plan's tasks as the search reads them (latest row per task wins)."""
    from orchestrator.results.reading import detections_by_row
    from orchestrator.results.store import latest_rows
    from tasks.metrics import reference_ground_truth

    keys = {t.task_id: (t.model, t.variant, t.split, t.setting, t.image_id) for t in plan.tasks}
    table = latest_rows(store.read_rows(["task_id", "status", "coded_bytes", "detections", "finished_at"]))
    ids = table.column("task_id").to_pylist()
    status = table.column("status").to_pylist()
    coded = table.column("coded_bytes").to_pylist()
    dets = detections_by_row(table.column("detections"))
    rows = {}
    for tid, st, b, d in zip(ids, status, coded, dets):
        if tid in keys:
            rows[keys[tid]] = (d if st == "ok" else None, int(b or 0))
    pixels = {r.image_id: r.width * r.height for r in plan.records}
    if mode == "ground-truth":
        gt = GroundTruth.from_dict(plan.dataset.ground_truth())
    else:  # the unsplit model's own detections (its first variant) are the ground truth
        first = plan.models[0]
        base = {k[4]: v[0] for k, v in rows.items()
                if k[:4] == (first.name, first.variants[0].label, NO_SPLIT, BASELINE) and v[0] is not None}
        gt = GroundTruth.from_dict(reference_ground_truth(base, plan.records, score_threshold=threshold)) if base else None
    anchors = {(m.name, v.label): _anchor_settings(plan, m.remote) for m in plan.models for v in m.variants}
    return Evidence(rows=rows, pixels=pixels, gt=gt, anchors=anchors)


def run_search(plan, store, *, execute: Callable[[list], None], mode: str, threshold: float = 0.5,
               lease=None, out=None) -> SearchRun:
    """Round after round: replay every target on the stored rows, run the rows they need
    (all targets' needs at once, so an image's head runs once per round), until none needs more."""
    import sys

    out = out or sys.stderr
    cfg: SearchSpec = plan.spec.search
    targets = targets_for(plan, cfg)
    order = image_order([r.image_id for r in plan.records], cfg.seed)
    index = {(t.model, t.variant, t.split, t.setting, t.image_id): t for t in plan.tasks}
    wanted = {(t.model, t.variant) for t in targets}
    baseline = [t for t in plan.tasks if t.split == NO_SPLIT and (t.model, t.variant) in wanted]
    if mode != "ground-truth":
        first = plan.models[0]
        baseline += [t for t in plan.tasks if t.split == NO_SPLIT and (t.model, t.variant) == (first.name,
                     first.variants[0].label) and t not in baseline]
    rounds = 0
    stalled = None
    while True:
        ev = stored_evidence(store, plan, targets, mode=mode, threshold=threshold)
        todo = [t for t in baseline if (t.model, t.variant, t.split, t.setting, t.image_id) not in ev.rows]
        results: list[Outcome | Need] = []
        if not todo:
            results = [replay(t, ev, order, cfg) for t in targets]
            for need in (r for r in results if isinstance(r, Need)):
                for image_id in need.image_ids:
                    task = index[(need.model, need.variant, need.split, need.setting, image_id)]
                    if task not in todo:
                        todo.append(task)
        used = {k for k in ev.read}
        used |= {(t.model, t.variant, t.split, t.setting, t.image_id) for t in baseline}
        summary = summary_record(results, targets, tasks_run=len(used), grid_tasks=len(plan.tasks),
                                 baseline_tasks=len(baseline), state="running" if todo else "done")
        if lease is not None:
            lease.verify()
        store.write_json(SEARCH_FILE, summary)
        if not todo:
            return SearchRun(summary, rounds)
        if stalled is not None and stalled == todo:
            summary["state"] = "stalled"
            store.write_json(SEARCH_FILE, summary)
            out.write(f"search: {len(todo)} tasks were run but not stored; stopping (see `splitsweep status`)\n")
            return SearchRun(summary, rounds)
        stalled = todo
        rounds += 1
        open_targets = sum(isinstance(r, Need) for r in results) if results else len(targets)
        out.write(f"search round {rounds}: {len(todo)} tasks for {open_targets} of {len(targets)} targets "
                  f"({len(used)} of {len(plan.tasks)} grid tasks used so far)\n")
        # image-major order: every split's tasks of one image share a head run
        execute(sorted(todo, key=lambda t: (t.model, t.variant, t.image_id)))
