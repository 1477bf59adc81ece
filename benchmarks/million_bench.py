"""A 1,085,000-task sweep spec (5,000 images × (1 + 27 splits × 8 settings)) and the driver's
costs on it: validate, plan, run to its first dispatch, and status on 1M stored rows.

    python benchmarks/million_bench.py                    # writes the spec once, measures all
    python benchmarks/million_bench.py --only plan status
    PYTHONPATH=/path/to/older/checkout python benchmarks/million_bench.py   # an older driver

Everything is written under ``--dir`` once and reused: a 51-node tiny detector
(tests/tinydet.py with 16 extra conv layers), 5,000 small photos with COCO boxes, and the
spec. ``status`` needs rows: the first measurement of it writes one ``ok`` row per planned
task (synthetic values, the real row schema) into the results directory.

Each step runs the real CLI (``python -m orchestrator …``) in a fresh process and reports
wall seconds and the driver process's peak RSS. ``run`` starts the sweep on an empty results
location (a copy of the spec pointing at ``results-fresh``, emptied first) and is measured
to the first progress line, printed once the first work units are handed to Ray, then
stopped; ``resume`` is ``run`` again on the store where every task is stored, to its
``resume: N of N tasks already stored`` line (plan, task ids read back from plan.parquet,
Ray start, the stored rows' task-id columns), then stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 5_000
N_SPLITS = 27
TRACE = False  # --trace: each line the CLI prints, with its time
CODECS = "  float16: {}\n  uniform: {bits: [2, 3, 4, 5, 6, 7, 8]}\n"  # 8 settings


def write_inputs(root: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tasks.graph import SplitGraph
    from tests.tinydet import tiny_detector, write_coco_folder, write_spec

    spec = root / "million.yaml"
    if spec.exists():
        return spec
    root.mkdir(parents=True, exist_ok=True)
    model = root / "deep-tinydet.onnx"
    model.write_bytes(tiny_detector(depth=16).SerializeToString())
    valid = SplitGraph(str(model)).valid_splits()
    splits = valid[:N_SPLITS]
    assert len(splits) == N_SPLITS, f"only {len(valid)} valid splits"
    t = time.perf_counter()
    images, ann = write_coco_folder(root / "data", n_images=N_IMAGES)
    print(f"wrote {N_IMAGES} photos in {time.perf_counter() - t:.1f} s", flush=True)
    write_spec(root, model=model, images=images, annotations=ann, output=root / "results", codecs=CODECS,
               splits=json.dumps(splits), name=spec.name, extra="execution: {workers: 1}\n")  # fmt: skip
    return spec


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def fresh_spec(spec: Path) -> Path:
    """The spec with an empty results location of its own (``results-fresh``)."""
    import shutil

    fresh = spec.parent / "results-fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    out = spec.parent / "million-fresh.yaml"
    text = spec.read_text().replace(f"output: {spec.parent / 'results'}", f"output: {fresh}")
    assert str(fresh) in text, "the spec's output line was not found"
    out.write_text(text)
    return out


def _peak_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed(cmd: list[str], *, until: str | None = None, timeout: float = 600) -> tuple[float, float, int]:
    """Wall seconds, the driver's peak RSS in MB (VmHWM, sampled every 20 ms), and the exit
    code (-1 when stopped at ``until``)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _peak_rss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = None
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if TRACE:
            print(f"    {time.perf_counter() - t:6.2f} s  {line.rstrip()[:120]}", flush=True)
        if until and until in line:
            seconds = time.perf_counter() - t
            peak[0] = max(peak[0], _peak_rss_mb(proc.pid))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = -1
            break
        if time.perf_counter() - t > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{cmd} ran past {timeout} s")
    if code is None:
        code = proc.wait()
        seconds = time.perf_counter() - t
        if until:
            raise RuntimeError(f"{' '.join(cmd)} ended without printing {until!r}:\n{''.join(seen[-20:])}")
    done.set()
    sampler.join()
    return seconds, peak[0], code


def store_rows(spec: Path) -> Path:
    """One ok row per planned task, written as the sweep would (part files of 100k rows)."""
    sys.path.insert(0, str(ROOT))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestrator.results.schema import ROW_SCHEMA

    results = spec.parent / "results"
    marker = results / ".bench-rows"
    if marker.exists():
        return results
    plan = pq.read_table(results / "plan.parquet")
    # each image's real content hash, so that a resumed run finds every task done
    from orchestrator import build_plan, load_spec

    dataset = build_plan(load_spec(spec)).dataset
    hashes = {r.image_id: dataset.content_hash(r) for r in dataset.records()}
    image_hash = pa.array([hashes[i] for i in plan.column("image_id").to_pylist()], pa.string())
    rows_dir = results / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    n = plan.num_rows
    columns = {}
    for field in ROW_SCHEMA:
        if field.name in plan.column_names:
            columns[field.name] = plan.column(field.name).cast(field.type)
        elif field.name == "image_hash":
            columns[field.name] = image_hash
        elif field.name == "status":
            columns[field.name] = pa.array(["ok"] * n, field.type)
        elif field.name == "detections":
            columns[field.name] = pa.array([[]] * n, field.type)
        elif field.name == "finished_at":
            columns[field.name] = pa.array([1_700_000_000_000] * n, pa.int64()).cast(field.type)
        elif pa.types.is_string(field.type):
            columns[field.name] = pa.nulls(n, field.type) if field.name == "error" else pa.array(["bench"] * n, field.type)
        elif pa.types.is_integer(field.type):
            columns[field.name] = pa.array([64] * n, field.type)
        else:
            columns[field.name] = pa.array([0.0] * n, field.type)
    table = pa.table(columns, schema=ROW_SCHEMA)
    step = 100_000
    for i in range(0, n, step):
        pq.write_table(table.slice(i, step), rows_dir / f"part-r0001-{i // step:06d}.parquet")
    marker.write_text("ok\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/splitsweep-million"))
    parser.add_argument("--only", nargs="+", choices=["validate", "plan", "run", "status", "resume"],
                        default=["validate", "plan", "run", "status", "resume"])  # fmt: skip
    parser.add_argument("--trace", action="store_true", help="show each line the CLI prints, with its time")
    args = parser.parse_args()
    global TRACE
    TRACE = args.trace
    measure(args, write_inputs(args.dir))


def measure(args, spec: Path) -> None:
    for step in args.only:
        if step == "validate":
            s, mb, code = timed(_cli("validate", str(spec)))
        elif step == "plan":
            s, mb, code = timed(_cli("plan", str(spec)))
        elif step == "run":
            s, mb, code = timed(_cli("run", str(fresh_spec(spec))), until="tasks (")
        else:
            if not (args.dir / "results" / "plan.parquet").exists():
                timed(_cli("run", str(spec)), until="tasks (")
            store_rows(spec)
            if step == "status":
                s, mb, code = timed(_cli("status", str(args.dir / "results")))
            else:  # every task stored: run reads the resume state and has nothing to do
                s, mb, code = timed(_cli("run", str(spec)), until="resume:")
        print(f"{step}: {s:.2f} s, peak RSS {mb:.0f} MB, exit {code}", flush=True)


if __name__ == "__main__":
    main()
