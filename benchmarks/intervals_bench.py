"""Cost of the report's bootstrap intervals (orchestrator.reporting.intervals) on synthetic COCO data.

    python benchmarks/intervals_bench.py --images 100 500 --resamples 1000

Per size: the per-image COCO matching done once (pycocotools' evaluate), the 1,000-resample
re-accumulation of AP / AP50 / mIoU, and a paired ΔAP interval on the same evaluations.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.reporting.intervals import bootstrap_ap, evaluate_images, paired_delta  # noqa: E402
from tests.test_intervals import _synthetic_coco  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print("images  detections  evaluate_s  bootstrap_s(ap,ap50,miou)  paired_s")
    for n in args.images:
        gt, good, bad = _synthetic_coco(n, seed=1)
        dets = sum(len(d) for d in good.values())
        t0 = time.perf_counter()
        ev_good = evaluate_images(gt, good)
        ev_bad = evaluate_images(gt, bad)
        t1 = time.perf_counter()
        bootstrap_ap(ev_good, metrics=("ap", "ap50", "miou"), resamples=args.resamples)
        t2 = time.perf_counter()
        paired_delta(gt, ev_bad, ev_good, resamples=args.resamples)
        t3 = time.perf_counter()
        print(f"{n:6d}  {dets:10d}  {(t1 - t0) / 2:10.3f}  {t2 - t1:25.3f}  {t3 - t2:8.3f}")


if __name__ == "__main__":
    main()
