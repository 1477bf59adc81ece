"""Adaptive search: bisection on synthetic rate–accuracy curves picks what the grid picks with
fewer tasks, says so and falls back to the grid where a curve is not monotone, and a killed
search on a real sweep resumes from its stored rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from orchestrator.planning.plan import BASELINE
from orchestrator.planning.search import Evidence, Need, Outcome, Target, image_order, replay, stages
from orchestrator.planning.spec import SearchGoal, SearchSpec, SearchTarget
from orchestrator.reporting.intervals import paired_delta
from tasks import codecs
from tasks.metrics import COCO_CATEGORIES, GroundTruth, coco_categories
from tasks.rows import Detections
from tasks.work import NO_SPLIT

ROOT = Path(__file__).resolve().parent.parent
CATS = [c.id for c in COCO_CATEGORIES[:3]]
QPS = [-38, -26, -18, -14, -10, -6, -4, 0]
N_IMAGES = 16


def _world(seed: int = 0):
    """Ground truth (2–4 boxes an image) and, per image, base boxes and noise that every
    setting shares, so settings differ only by how much distortion they add."""
    rng = np.random.default_rng(seed)
    images, anns, base = [], [], {}
    for i in range(1, N_IMAGES + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 320, "height": 240})
        boxes, cats = [], []
        for _ in range(rng.integers(2, 5)):
            w, h = rng.uniform(30, 120, 2)
            x, y = rng.uniform(0, 320 - w), rng.uniform(0, 240 - h)
            cat = int(rng.choice(CATS))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            boxes.append([x, y, w, h])
            cats.append(cat)
        base[i] = (np.asarray(boxes, np.float32), np.asarray(cats, np.int32), rng.normal(0, 1, (len(boxes), 4)),
                   rng.uniform(0.5, 1.0, len(boxes)), rng.random(len(boxes)))
    gt = GroundTruth.from_dict({"images": images, "annotations": anns, "categories": coco_categories(COCO_CATEGORIES[:3])})
    return gt, base


def _detections(base, distortion: float) -> dict[int, Detections]:
    """Boxes jittered by ``distortion`` (pixels of noise) and missed when the image's draw
    falls below it: AP falls steadily as distortion grows."""
    out = {}
    for i, (boxes, cats, noise, scores, draw) in base.items():
        keep = draw >= distortion / 40.0
        b = boxes[keep] + (1.0 + distortion) * noise[keep]
        out[i] = Detections(b.astype(np.float32), scores[keep].astype(np.float32), cats[keep])
    return out


class Curve:
    """A synthetic sweep: per QP a distortion (→ detections) and coded bytes; rows appear
    only when the search asks for them, and every task it runs is counted."""

    def __init__(self, distortions, *, coded=None, goal=None, seed=0):
        self.gt, self.base = _world(seed)
        self.settings = tuple(codecs.setting("nncodec", {"qp": q}) for q in QPS)
        self.dets = {s: _detections(self.base, d) for s, d in zip(self.settings, distortions)}
        self.coded = dict(zip(self.settings, coded or [100_000 // (k + 1) for k in range(len(QPS))]))
        self.target = Target("m", "fp32", 20, "nncodec", "qp", self.settings, goal or SearchGoal(within=1.0))
        self.rows: dict = {}
        none = _none()
        for i in self.base:
            self.rows[("m", "fp32", NO_SPLIT, none, i)] = (_detections(self.base, 0.0)[i], 0)
        self.ran = Counter()

    def run(self, need: Need) -> None:
        for i in need.image_ids:
            key = (need.model, need.variant, need.split, need.setting, i)
            assert key not in self.rows, "the search asked for a row it already has"
            self.rows[key] = (self.dets[need.setting][i], self.coded[need.setting])
            self.ran[need.setting.params["qp"]] += 1

    def evidence(self) -> Evidence:
        return Evidence(rows=dict(self.rows), pixels={i: 320 * 240 for i in self.base}, gt=self.gt)

    def search(self, cfg: SearchSpec, *, stop_after: int | None = None) -> Outcome | None:
        order = image_order(list(self.base), cfg.seed)
        rounds = 0
        while True:
            step = replay(self.target, self.evidence(), order, cfg)
            if isinstance(step, Outcome):
                return step
            if stop_after is not None and rounds == stop_after:
                return None
            self.run(step)
            rounds += 1

    def grid_choice(self, within: float) -> tuple[int | None, list[float]]:
        """What the exhaustive grid picks: the cheapest QP whose ΔAP on all images ≥ -within."""
        base = _detections(self.base, 0.0)
        deltas = [paired_delta(self.gt, self.dets[s], base, resamples=100).estimate for s in self.settings]
        passing = [q for q, d in zip(QPS, deltas) if d >= -within]
        return (max(passing) if passing else None), deltas


def _none():
    return BASELINE


CFG = SearchSpec(targets=[SearchTarget(codec="nncodec", goal=SearchGoal(within=1.0))], subset=4, resamples=100)


def test_stages_double_up_to_all_images():
    assert stages(24, 4) == [4, 8, 16, 24]
    assert stages(16, 4) == [4, 8, 16]
    assert stages(14, 4) == [4, 8, 14]
    assert stages(3, 4) == [3]


@pytest.mark.parametrize("distortions", [
    [0, 0.2, 0.5, 1, 2, 4, 8, 16],  # passes up to the middle
    [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # every setting passes: the cheapest is chosen
    [6, 8, 10, 12, 14, 16, 18, 20],  # none passes
])
def test_monotone_curve_picks_the_grids_setting_with_fewer_tasks(distortions):
    curve = Curve(distortions)
    outcome = curve.search(CFG)
    grid, deltas = curve.grid_choice(1.0)
    assert outcome.chosen == grid, (deltas, outcome.probes)
    assert not outcome.fallback
    assert outcome.tasks == sum(curve.ran.values())  # every row it read, it asked for
    assert outcome.tasks < outcome.grid_tasks / 2 == len(QPS) * N_IMAGES / 2
    if grid is not None:
        # the chosen setting was widened to all images; its interval is reported
        assert outcome.probe.images == N_IMAGES and curve.ran[grid] == N_IMAGES
        assert outcome.probe.low <= outcome.probe.estimate <= outcome.probe.high
        assert outcome.probe.estimate == pytest.approx(deltas[QPS.index(grid)], abs=1e-9)
    else:
        assert outcome.note == "no setting meets the goal"


def test_a_setting_failing_on_the_subset_stops_early():
    curve = Curve([0, 0.2, 0.5, 1, 8, 12, 16, 20])
    outcome = curve.search(CFG)
    early = [p for p in outcome.probes if p.decision == "fail" and p.images < N_IMAGES]
    assert early and all(p.high < -1.0 for p in early)  # its interval excluded the goal
    assert all(curve.ran[p.value] == p.images for p in early)


def test_non_monotone_curve_says_so_and_falls_back_to_the_grids_rule():
    # QP -14 (the first probe) fails; QP -26, probed next, is far worse still although it is
    # the more expensive setting: bisection's assumption is visibly broken. The grid's rule
    # (the cheapest setting passing on all images) finds QP -6; the search gets there by
    # scanning from the cheapest setting, whose failing neighbours stop on a subset.
    curve = Curve([0, 16, 0.01, 4, 0.02, 0.03, 8, 12])
    outcome = curve.search(CFG)
    grid, deltas = curve.grid_choice(1.0)
    assert outcome.fallback
    assert "assumption does not hold" in outcome.note and "qp=-26" in outcome.note, outcome.note
    assert grid == -6 and outcome.chosen == grid, deltas
    assert curve.ran[-6] == N_IMAGES and outcome.probe.images == N_IMAGES
    assert 0 < curve.ran[0] < N_IMAGES and 0 < curve.ran[-4] < N_IMAGES  # failed early, on a subset
    assert curve.ran[-10] == 0  # more accurate than the chosen: never needed
    assert outcome.tasks == sum(curve.ran.values()) < len(QPS) * N_IMAGES / 2


def test_an_inversion_on_the_first_stage_is_confirmed_on_more_images_before_the_fallback():
    # QP -14 is lossless on the first stage's 4 images (and poor elsewhere), so on those 4
    # the more expensive QP -26 looks far worse than it: an inversion on the first stage
    # only. Both settings are widened to 2·subset images, where it is gone; bisection's
    # answer stands and no fallback runs.
    order = image_order(list(range(1, N_IMAGES + 1)), CFG.seed)
    curve = Curve([0, 0.5, 0.5, 6, 8, 10, 12, 14])
    lossless = _detections(curve.base, 0.0)
    s14 = curve.settings[QPS.index(-14)]
    first = order[:CFG.subset]
    curve.dets[s14] = {i: lossless[i] if i in first else d for i, d in curve.dets[s14].items()}
    outcome = curve.search(CFG)
    assert curve.ran[-14] >= 2 * CFG.subset and curve.ran[-26] == 2 * CFG.subset, curve.ran  # widened to confirm
    assert not outcome.fallback, outcome.note
    grid, deltas = curve.grid_choice(1.0)
    assert outcome.chosen == grid == -38, deltas


@pytest.mark.parametrize("damage", [1.0, 2.0])
def test_no_setting_meets_the_goal_only_when_the_most_accurate_fails_on_all_images(damage):
    # On a first stage of 2 images both happen to lose accuracy at QP -38, each more than
    # the goal of 5 points (8-22 and 47-51 here), so every resample does and its interval
    # excludes the goal; on all images it meets it. "None" would be wrong: the grid picks
    # QP -38.
    cfg = CFG.model_copy(update={"subset": 2})
    order = image_order(list(range(1, N_IMAGES + 1)), cfg.seed)
    curve = Curve([0, 6, 8, 10, 12, 14, 16, 18], goal=SearchGoal(within=5.0))
    worse = _detections(curve.base, damage)
    s38 = curve.settings[0]
    curve.dets[s38] = {i: worse[i] if i in order[:2] else d for i, d in curve.dets[s38].items()}
    outcome = curve.search(cfg)
    grid, deltas = curve.grid_choice(5.0)
    early = [p for p in outcome.probes if p.value == -38 and p.images == 2]
    assert early and early[0].decision == "fail" and early[0].high < -5.0, outcome.probes  # the subset said no
    assert outcome.chosen == grid == -38, deltas
    assert outcome.probe.images == N_IMAGES and outcome.note != "no setting meets the goal"


def test_bytes_not_falling_with_qp_is_a_violation_too():
    coded = [1000, 900, 800, 700, 600, 500, 400, 300]
    coded[3] = 2000  # QP -14 codes more than QP -38
    curve = Curve([0, 0.2, 0.5, 1, 2, 4, 8, 16], coded=coded)
    outcome = curve.search(CFG)
    assert outcome.fallback and "codes more bytes" in outcome.note


def test_rate_budget_picks_the_most_accurate_setting_that_fits():
    coded = [8000, 5000, 3000, 2000, 1500, 1000, 700, 500]  # bytes per image of 320×240
    budget = 8 * 1800 / (320 * 240)
    curve = Curve([0, 0.2, 0.5, 1, 2, 4, 8, 16], coded=coded, goal=SearchGoal(bpp=budget))
    outcome = curve.search(CFG)
    assert outcome.chosen == -10  # 1500 B fits, 2000 B does not
    assert outcome.tasks < outcome.grid_tasks


def test_a_killed_search_resumes_from_its_rows_and_runs_nothing_twice():
    distortions = [0, 0.2, 0.5, 1, 2, 4, 8, 16]
    whole = Curve(distortions)
    expected = whole.search(CFG)
    killed = Curve(distortions)
    assert killed.search(CFG, stop_after=2) is None  # "killed" after two rounds
    done_before = sum(killed.ran.values())
    assert 0 < done_before < expected.tasks
    resumed = killed.search(CFG)  # a new search on the same rows (Curve.run asserts no row twice)
    assert resumed.chosen == expected.chosen and resumed.tasks == expected.tasks
    assert killed.ran == whole.ran


# ----------------------------------------------------------------------------- real sweeps

SEARCH = """search:
  subset: 2
  resamples: 200
  targets:
    - {codec: nncodec, goal: {within: 2.0}}
"""
QP_CODECS = "  nncodec: {qp: [-30, -26, -22, -18, -14, -10, -6, -2]}\n"


def _tiny_search_spec(tmp_path, name: str, *, size: int = 64, extra: str = ""):
    from tests.tinydet import tiny_detector, write_coco_folder, write_spec

    model = tmp_path / "tinydet.onnx"
    if not model.exists():
        model.write_bytes(tiny_detector(size=size).SerializeToString())
    images, annotations = write_coco_folder(tmp_path / "data", n_images=8)
    return write_spec(tmp_path, model=model, images=images, annotations=annotations,
                      output=tmp_path / name, codecs=QP_CODECS, splits="[3, 9]", size=size, name=f"{name}.yaml",
                      extra=SEARCH + extra)


def test_spec_errors_name_file_line_key_and_allowed(tmp_path):
    from orchestrator.planning.plan import build_plan
    from orchestrator.planning.search import targets_for
    from orchestrator.planning.spec import load_spec
    from tasks.errors import SpecError

    path = _tiny_search_spec(tmp_path, "bad")
    path.write_text(path.read_text().replace("{codec: nncodec,", "{codec: uniform,"))
    spec = load_spec(path)
    with pytest.raises(SpecError) as info:
        targets_for(build_plan(spec), spec.search)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "codec: uniform" in text)
    assert str(info.value).startswith(f"{path}:{line}: search.targets[0].codec: codec 'uniform' is not under `codecs`")
    assert "allowed: nncodec" in str(info.value)
    path.write_text(path.read_text().replace("goal: {within: 2.0}", "goal: {within: 2.0, bpp: 1}"))
    with pytest.raises(SpecError, match=r"search\.targets\[0\]\.goal: give exactly one of"):
        load_spec(path)


@pytest.mark.slow
def test_search_on_a_real_sweep_stores_grid_rows_and_a_summary(tmp_path):
    """Real Ray, real NNCodec: the rows are the grid's own tasks, and a grid run afterwards
    re-uses every one of them."""
    import json

    from orchestrator.planning.plan import build_plan
    from orchestrator.planning.spec import load_spec
    from orchestrator.results.store import ResultsStore

    path = _tiny_search_spec(tmp_path, "res")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(path)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Adaptive search (done)" in run.stdout and "search round 1:" in run.stderr
    summary = json.loads((tmp_path / "res" / "search.json").read_text())
    plan = build_plan(load_spec(path))
    ids = ResultsStore(str(tmp_path / "res")).read_rows(["task_id"])["task_id"].to_pylist()
    assert len(ids) == len(set(ids)) == summary["tasks_run"] < len(plan.tasks)
    assert set(ids) <= {t.task_id for t in plan.tasks}
    # One worker pool for every round (models loaded once): the rows of all rounds come from
    # at most as many worker processes as one round has.
    rounds = run.stderr.count("search round ")
    names = set(ResultsStore(str(tmp_path / "res")).read_rows(["worker"])["worker"].to_pylist())
    assert rounds >= 2 and len(names) <= max(1, os.cpu_count() or 1), (rounds, names)
    assert [t["split"] for t in summary["targets"]] == [3, 9]
    for t in summary["targets"]:
        assert t["chosen"] is None or t["chosen"] in t["values"]
        assert t["grid_tasks"] == 8 * 8
        assert t["tasks"] < t["grid_tasks"] or t["fallback"], t  # the grid only where bisection cannot be trusted
    # The report shows the search section.
    report = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(tmp_path / "res")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0 and "Adaptive search (done)" in report.stdout, report.stderr[-2000:]
    # The grid afterwards re-uses every stored row.
    grid = tmp_path / "grid.yaml"
    grid.write_text(path.read_text().split("search:")[0])
    full = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(grid)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    assert f"resume: {len(ids)} of {len(plan.tasks)} tasks already stored" in full.stderr


@pytest.mark.slow
def test_search_killed_mid_round_resumes_to_the_uninterrupted_result(tmp_path):
    import json

    from orchestrator.results.store import ResultsStore

    extra = "execution: {workers: 1, flush_seconds: 0.2, chunk_tasks: 2}\n"
    killed = _tiny_search_spec(tmp_path, "killed", size=160, extra=extra)
    whole = _tiny_search_spec(tmp_path, "whole", size=160, extra=extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(killed)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    store = ResultsStore(str(tmp_path / "killed"))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        summary = store.read_json("search.json") if store.exists("search.json") else None
        if summary and summary["tasks_run"] > summary["baseline_tasks"] and len(store.part_files()) >= 3:
            break  # the search is past its baseline, in the middle of probing
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(store.read_rows(["task_id"]))
    resumed = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(killed)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "orchestrator", "run", str(whole)], env=env, check=True,
                   capture_output=True, timeout=600)
    a = json.loads((tmp_path / "killed" / "search.json").read_text())
    b = json.loads((tmp_path / "whole" / "search.json").read_text())
    assert a["targets"] == b["targets"] and a["tasks_run"] == b["tasks_run"]
    ids = store.read_rows(["task_id"])["task_id"].to_pylist()
    assert 0 < partial < len(ids) == len(set(ids)) == a["tasks_run"]  # nothing run twice, nothing lost


def test_report_text_and_dashboard_show_the_chosen_setting_per_split(tmp_path):
    import json

    from orchestrator.planning.search import format_search
    from tests.test_dashboard import app, frame_with, make_results, no_exception

    location = make_results(tmp_path / "results")
    curve = Curve([0, 0.2, 0.5, 1, 2, 4, 8, 16])
    outcome = curve.search(CFG)
    from orchestrator.planning.search import summary_record

    summary = summary_record([outcome], [curve.target], tasks_run=outcome.tasks + N_IMAGES,
                             grid_tasks=outcome.grid_tasks + N_IMAGES, baseline_tasks=N_IMAGES, state="done")
    (location / "search.json").write_text(json.dumps(summary))
    text = format_search(summary)
    assert f"{outcome.tasks + N_IMAGES:,} tasks run of {outcome.grid_tasks + N_IMAGES:,}" in text
    assert f"qp={outcome.chosen:g}" in text and f"[{outcome.probe.low:+.2f}, {outcome.probe.high:+.2f}]" in text
    at = no_exception(app(location, "Split points"))
    table = frame_with(at, "chosen")
    assert table["chosen"].tolist() == [outcome.chosen] and table["split"].tolist() == ["20"]
    assert table["tasks run"].tolist() == [outcome.tasks]
