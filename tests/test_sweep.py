"""The sweep on real Ray: every task stored exactly once, resume, changed specs, failures,
a simulated multi-node cluster losing a node, and a driver killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.execution.sweep import SweepOptions, run_sweep
from orchestrator.planning.plan import build_plan
from orchestrator.planning.spec import load_spec
from orchestrator.results.store import ResultsStore, latest_rows
from tests.tinydet import tiny_detector, write_coco_folder, write_spec

ROOT = Path(__file__).resolve().parent.parent
CHEAP = "  none: {}\n  float16: {}\n  uniform: {bits: [8, 2]}\n"


@pytest.fixture
def sweep_dir(tmp_path):
    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=4, corrupt=(3,))
    return tmp_path, model, images, ann


def stored(location: str):
    store = ResultsStore(location)
    rows = store.read_rows()
    return rows, Counter(rows["task_id"].to_pylist())


def test_sweep_stores_every_task_once_and_resumes(ray_local, sweep_dir):
    tmp, model, images, ann = sweep_dir
    out = tmp / "res"
    spec = load_spec(write_spec(tmp, model=model, images=images, annotations=ann, output=out, codecs=CHEAP))
    plan = build_plan(spec)
    # 4 images × (baseline + 3 splits × 4 codec settings)
    assert len(plan.tasks) == 4 * (1 + 3 * 4)
    assert len({t.task_id for t in plan.tasks}) == len(plan.tasks)

    result = run_sweep(spec, SweepOptions(workers=2))
    rows, counts = stored(str(out))
    assert set(counts) == {t.task_id for t in plan.tasks}
    assert max(counts.values()) == 1
    status = dict(Counter(rows["status"].to_pylist()))
    # image 3 is a truncated PNG: its 13 tasks fail with the reason, the rest are ok
    assert status == {"ok": 39, "failed": 13}
    errors = {e for e, i in zip(rows["error"].to_pylist(), rows["image_id"].to_pylist()) if i == 3}
    assert len(errors) == 1 and "DataError" in errors.pop()
    assert result.plan_counts == {"tasks": 52, "units": 4, "ok": 39, "failed": 13, "remaining": 0}

    ok = [r for r in rows.to_pylist() if r["status"] == "ok"]
    by = {(r["split"], r["codec"], r["codec_params"]): r for r in ok if r["image_id"] == 1}
    none, f16 = by[(3, "none", '{"zstd":0}')], by[(3, "float16", '{"zstd":0}')]
    assert none["feature_mse"] == 0 and f16["coded_bytes"] < none["coded_bytes"]
    assert f16["raw_bytes"] == none["raw_bytes"] > 0
    baseline = by[(-1, "none", "{}")]
    assert none["detections"] == baseline["detections"]  # the none codec re-uses the full output
    assert all(r["worker"] and r["finished_at"] for r in ok)

    # Run again: nothing to do, nothing duplicated.
    again = run_sweep(spec, SweepOptions(workers=2))
    assert again.skipped == 52 and again.stats.rows_ok + again.stats.rows_failed == 0
    assert max(stored(str(out))[1].values()) == 1

    # Retry the failed ones: they fail again (same corrupt file) and supersede the old rows.
    retry = run_sweep(spec, SweepOptions(workers=2, retry_failed=True))
    assert retry.stats.rows_failed == 13 and retry.stats.rows_ok == 0
    rows, counts = stored(str(out))
    assert latest_rows(rows).num_rows == 52


def test_changed_spec_runs_only_new_tasks(ray_local, sweep_dir):
    tmp, model, images, ann = sweep_dir
    out = tmp / "res"
    spec = load_spec(write_spec(tmp, model=model, images=images, annotations=ann, output=out, codecs="  none: {}\n"))
    run_sweep(spec, SweepOptions(workers=2))
    first = set(stored(str(out))[1])
    spec2 = load_spec(write_spec(tmp, model=model, images=images, annotations=ann, output=out,
                                 codecs="  none: {}\n  bfloat16: {}\n"))
    result = run_sweep(spec2, SweepOptions(workers=2))
    assert result.skipped == len(first)
    assert result.stats.rows_ok + result.stats.rows_failed == 4 * 3  # 3 splits × 4 images of bfloat16
    rows, counts = stored(str(out))
    assert max(counts.values()) == 1 and first < set(counts)
    assert ResultsStore(str(out)).read_bytes("specs/run-0002.yaml") == (tmp / "spec.yaml").read_bytes()


def _sweep_rows(location: str) -> dict:
    rows = latest_rows(ResultsStore(location).read_rows()).to_pylist()
    return {r["task_id"]: (r["status"], r["coded_bytes"], r["feature_mse"], r["detections"]) for r in rows}


@pytest.mark.slow
def test_simulated_cluster_losing_a_node_stores_every_task_once(sweep_dir, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    tmp, model, images, ann = sweep_dir
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    ray.shutdown()  # a local Ray of another test in this process must not take the cluster's place
    out = tmp / "res"
    spec = load_spec(write_spec(tmp, model=model, images=images, annotations=ann, output=out,
                                codecs=CHEAP + "  nncodec: {qp: [-30, -20]}\n"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        lost = []

        def lose_a_node(rows):
            if not lost:
                lost.append(nodes[0])
                cluster.remove_node(nodes[0], allow_graceful=False)

        result = run_sweep(spec, SweepOptions(address=cluster.address, workers=3, on_rows=lose_a_node))
        assert lost
        assert ray.get_runtime_context().gcs_address == cluster.address  # it ran on the cluster
        rows, counts = stored(str(out))
        planned = {t.task_id for t in build_plan(spec).tasks}
        assert set(counts) == planned and max(counts.values()) == 1
        assert result.plan_counts["remaining"] == 0
        assert dict(Counter(latest_rows(rows)["status"].to_pylist())) == {"ok": 4 * 19 - 19, "failed": 19}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_two_images_keep_six_workers_on_three_nodes_busy(tmp_path, monkeypatch):
    """Fewer units than workers: each image's tasks are spread over 3 workers, the head
    runs once per image and reaches the others through the object store; every worker
    stores rows, every row once. Then a node is lost mid-sweep: its pieces run again
    elsewhere (running the head themselves where the shared one was lost), nothing twice."""
    import ray
    from ray.cluster_utils import Cluster

    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector(size=128).SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=2)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        spec = load_spec(write_spec(tmp_path, model=model, images=images, annotations=ann, output=tmp_path / "a",
                                    codecs=CHEAP, size=128, name="a.yaml"))  # fmt: skip
        result = run_sweep(spec, SweepOptions(address=cluster.address, workers=6))
        rows, counts = stored(str(tmp_path / "a"))
        planned = set(build_plan(spec).task_ids.to_pylist())
        assert set(counts) == planned and max(counts.values()) == 1 and len(planned) == 2 * 13
        assert set(rows["status"].to_pylist()) == {"ok"}
        assert result.stats.units == 6 and result.stats.shared_heads == 2
        assert len(set(rows["worker"].to_pylist())) == 6  # every worker stored rows

        lost = []

        def lose_a_node(_rows):
            if not lost:
                lost.append(nodes[0])
                cluster.remove_node(nodes[0], allow_graceful=False)

        spec = load_spec(write_spec(tmp_path, model=model, images=images, annotations=ann, output=tmp_path / "b",
                                    codecs=CHEAP + "  nncodec: {qp: [-30, -26, -22]}\n", size=128, name="b.yaml"))
        result = run_sweep(spec, SweepOptions(address=cluster.address, workers=6, on_rows=lose_a_node))
        assert lost and result.stats.lost_workers >= 1
        rows, counts = stored(str(tmp_path / "b"))
        planned = set(build_plan(spec).task_ids.to_pylist())
        assert set(counts) == planned and max(counts.values()) == 1
        assert set(rows["status"].to_pylist()) == {"ok"} and result.plan_counts["remaining"] == 0
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_matches_uninterrupted_run(tmp_path):
    size = 192  # cut tensors of ~300 KB: a sweep that lasts long enough to be killed
    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector(size=size).SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=8)
    codecs = CHEAP + "  nncodec: {qp: [-30, -26, -22, -18, -14]}\n"
    extra = "execution: {workers: 1, flush_seconds: 0.2, chunk_tasks: 4}\n"

    def spec(name):
        return write_spec(tmp_path, model=model, images=images, annotations=ann, output=tmp_path / name,
                          codecs=codecs, extra=extra, size=size, name=f"{name}.yaml")

    killed, whole = spec("killed"), spec("whole")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(killed)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    store = ResultsStore(str(tmp_path / "killed"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists("rows") and len(store.part_files()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    partial = _sweep_rows(str(tmp_path / "killed"))
    total = len(build_plan(load_spec(killed)).tasks)
    assert 0 < len(partial) < total

    resumed = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(killed)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "already stored" in resumed.stderr, resumed.stderr[-2000:]
    subprocess.run([sys.executable, "-m", "orchestrator", "run", str(whole)], env=env, check=True,
                   capture_output=True, timeout=600)
    a, b = _sweep_rows(str(tmp_path / "killed")), _sweep_rows(str(tmp_path / "whole"))
    assert set(a) == set(b) and len(a) == total
    ids = ResultsStore(str(tmp_path / "killed")).read_rows(["task_id"])["task_id"].to_pylist()
    assert len(ids) == len(set(ids)) == total  # nothing lost, nothing duplicated
    assert a == b  # the same values: every codec here is deterministic


def test_joining_another_cluster_while_ray_runs_is_refused():
    import ray

    from orchestrator.execution.execute import RayOptions, connect
    from tasks.errors import ResultsError

    started = connect(RayOptions(num_cpus=2))  # a test before this one may have shut Ray down
    try:
        assert ray.is_initialized()
        with pytest.raises(ResultsError, match="already running in this process.*cannot join 10.0.0.1:6379"):
            connect(RayOptions(address="10.0.0.1:6379"))
        assert connect(RayOptions()) is False  # no address: the running Ray is used
    finally:
        if started:
            ray.shutdown()
