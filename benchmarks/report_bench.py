"""Cold ``build_report`` (every configuration scored) on synthetic results stores.

    python benchmarks/report_bench.py                     # both stores, 1 scoring process
    python benchmarks/report_bench.py --workers 2 --repeat 3
    python benchmarks/report_bench.py --threads 1        # the bootstrap kernel on one thread
    PYTHONPATH=/path/to/older/checkout python benchmarks/report_bench.py   # an older scorer

Two stores, written once under ``--dir`` by tests/fixtures_results.py and reused:

- ``72k``: 181 configurations × 400 images (72,400 rows), the shape of a wide grid;
- ``200k``: 8 configurations × 25,000 images (200,000 rows), the dashboard benchmark's store.

Each measurement runs ``build_report(force=True, save=False)`` in a fresh process (imports
excluded; the compiled kernels load from numba's cache, compiled once per install) and
prints wall seconds, the process's CPU seconds (all its threads; with ``--workers`` > 1 the
children's CPU is not in it), peak RSS and the mean AP (equal across scorers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORES = {"72k": (400, 181), "200k": (25_000, 8)}

_CHILD = """
import json, resource, sys, time
from orchestrator import build_report
if sys.argv[3] != "all":  # an older checkout (PYTHONPATH) has no threads to set
    from orchestrator.reporting import fastcoco
    fastcoco.set_threads(int(sys.argv[3]))
t, cpu = time.perf_counter(), time.process_time()
result = build_report(sys.argv[1], force=True, save=False, workers=int(sys.argv[2]))
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "configs": result.configs,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "mean_ap": float(result.table["ap"].mean())}))
"""


def ensure_store(root: Path, *, images: int, configs: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures_results import bench_configs, write_store

    marker = root / f".bench-{images}x{configs}"
    if marker.exists():
        return root
    t = time.perf_counter()
    write_store(root, bench_configs(configs), n_images=images, rows_per_part=5_000)
    marker.write_text("ok\n")
    print(f"wrote {images * configs:,} rows to {root} in {time.perf_counter() - t:.1f} s", flush=True)
    return root


def measure(store: Path, *, workers: int, threads: str) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store), str(workers), threads],
        env=env, cwd="/", capture_output=True, text=True, check=True,  # cwd: PYTHONPATH picks the code
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/splitsweep-report-bench"))
    parser.add_argument("--stores", nargs="+", choices=sorted(STORES), default=sorted(STORES))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", default="all",
                        help="threads of the bootstrap kernel (default: every CPU the process may use)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    for name in args.stores:
        images, configs = STORES[name]
        store = ensure_store(args.dir / name, images=images, configs=configs)
        runs = [measure(store, workers=args.workers, threads=args.threads) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        every = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(
            f"{name}: {images * configs:,} rows, {best['configs']} configurations, workers={args.workers}, "
            f"threads={args.threads}: "
            f"{best['seconds']:.2f} s (best of {len(runs)}; all: {every}), "
            f"CPU {best['cpu_s']:.2f} s, peak RSS {best['rss_mb']:.0f} MB, mean AP {best['mean_ap']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
