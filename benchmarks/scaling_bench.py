"""Throughput at 1, 2, 4, 8 and 16 workers where the machine has the cores ("not measured"
beyond ``os.cpu_count()``), the driver's ceiling, and the seed study's grid projected
from the measured per-task costs.

    python benchmarks/scaling_bench.py                       # float16 and NNCodec grids, driver
    python benchmarks/scaling_bench.py --workers 1 2 4 8 16 --json scaling.json

Per-worker grids: the demo CenterNet (benchmarks/sweep_bench.py's spec: splits 20, 100,
246) with float16, and with NNCodec at 8 QPs; tasks/s is counted from the first row to
the last (Ray and worker start-up reported apart). The driver's ceiling: a sweep of a
tiny 19-node detector (tests/tinydet.py) whose tasks cost well under a millisecond, so the
driver (dispatch, rows to Parquet, progress) is what limits it. Each measurement runs in a
fresh process. The projection: the seed study's grid, 2 models × 7 splits × 9 settings ×
600 frames (+ the unsplit run per model and frame), at the measured NNCodec per-task cost
per worker, on 16 and 128 cores, bounded below by the driver's ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED_GRID = {"models": 2, "splits": 7, "settings": 9, "frames": 600}
GRIDS = {"float16": 12, "nncodec": 2}  # images per grid
DRIVER_IMAGES = 1000


def seed_tasks() -> int:
    g = SEED_GRID
    return g["models"] * g["frames"] * (1 + g["splits"] * g["settings"])


def _grid(grid: str, images: int, workers: int) -> dict:
    from benchmarks.sweep_bench import splitsweep

    r = splitsweep(grid, images, workers)
    steady = r["seconds"] - r["first_rows_s"]
    return {**r, "tasks_per_s": r["tasks"] / r["seconds"], "steady_tasks_per_s": r["tasks"] / max(steady, 1e-9)}


def _driver(workers: int) -> dict:
    """A sweep whose tasks are nearly free: rows per second is the driver's ceiling."""
    import ray

    from orchestrator import load_spec, run_sweep
    from orchestrator.execution.execute import RayOptions, connect
    from orchestrator.execution.sweep import SweepOptions
    from tests.tinydet import tiny_detector, write_coco_folder, write_spec

    root = Path(tempfile.mkdtemp(prefix="driver-bench-"))
    model = root / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(root / "data", n_images=DRIVER_IMAGES)
    codecs = "  none: {}\n  float16: {}\n  uniform: {bits: [2, 3, 4, 5, 6, 7, 8]}\n"
    spec = load_spec(write_spec(root, model=model, images=images, annotations=ann, output=root / "res", codecs=codecs,
                                extra=f"execution: {{workers: {workers}, chunk_tasks: 64}}\n"))  # fmt: skip
    connect(RayOptions(num_cpus=max(workers, os.cpu_count() or 1)))
    t = time.perf_counter()
    result = run_sweep(spec, SweepOptions(stream=open(os.devnull, "w")))
    wall = time.perf_counter() - t
    ray.shutdown()
    tasks = result.stats.rows_ok + result.stats.rows_failed
    steady = result.stats.seconds - (result.stats.first_rows_s or 0)
    return {"tasks": tasks, "seconds": result.stats.seconds, "wall_s": wall, "first_rows_s": result.stats.first_rows_s,
            "tasks_per_s": tasks / result.stats.seconds, "steady_tasks_per_s": tasks / max(steady, 1e-9)}


def _fresh(what: str, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--one", what, "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def project(nncodec_s_per_task: float, driver_tasks_per_s: float, cores: int) -> float:
    """Seconds for the seed grid on ``cores`` one-thread workers: compute spread evenly, but
    never faster than the driver can store rows."""
    n = seed_tasks()
    return max(n * nncodec_s_per_task / cores, n / driver_tasks_per_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--grids", nargs="+", choices=[*GRIDS, "driver"], default=[*GRIDS, "driver"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement in this process
    args = parser.parse_args()
    if args.one:
        w = args.workers[0]
        print(json.dumps(_driver(w) if args.one == "driver" else _grid(args.one, GRIDS[args.one], w)))
        return 0
    from orchestrator.data.assets import ensure_models
    from orchestrator.data.demo_data import ensure_demo_images

    ensure_models()
    ensure_demo_images()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} CPU(s) (os.cpu_count), load {os.getloadavg()[0]:.1f}", flush=True)
    results: dict = {"cpus": cores, "load": os.getloadavg()[0], "runs": {}}
    for grid in args.grids:
        for w in args.workers:
            if w > cores:
                print(f"{grid:8s} {w:2d} worker(s): not measured ({cores} CPU(s) here)", flush=True)
                results["runs"].setdefault(grid, {})[w] = None
                continue
            r = _fresh(grid, w)
            results["runs"].setdefault(grid, {})[w] = r
            print(f"{grid:8s} {w:2d} worker(s): {r['tasks']} tasks in {r['seconds']:.1f} s = {r['tasks_per_s']:.1f} "
                  f"tasks/s ({r['tasks_per_s'] / w:.2f} per worker; {r['steady_tasks_per_s']:.1f} tasks/s after "
                  f"the first rows at {r['first_rows_s']:.1f} s)", flush=True)
    runs = results["runs"]
    nnc = runs.get("nncodec", {}).get(1)
    drv = max((r["steady_tasks_per_s"] for r in runs.get("driver", {}).values() if r), default=None)
    if nnc and drv:
        per_task = 1 / nnc["steady_tasks_per_s"]
        results["projection"] = {c: project(per_task, drv, c) for c in (16, 128)}
        print(f"seed grid ({seed_tasks():,} tasks) at {per_task:.2f} s/task per worker (NNCodec, measured), driver "
              f"{drv:,.0f} tasks/s: " + ", ".join(f"{c} cores {s / 60:.1f} min" for c, s in results["projection"].items()),
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
