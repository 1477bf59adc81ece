"""Coded size and encode/decode time of every codec on synthetic ReLU activations.

    python benchmarks/codecs_bench.py            # 1×256×38×38 and 1×64×256×256
    python benchmarks/codecs_bench.py --small    # only 1×256×38×38
    python benchmarks/codecs_bench.py --repeat 5
    python benchmarks/codecs_bench.py --hevc     # only nncodec and hevc, on an 8 MB cut too

hevc packs the tensor into one 10-bit monochrome frame (tasks/codecs/hevc.py) and is run
at presets 0 (ultrafast), 2 (veryfast) and 5 (medium): the encode seconds per cut and
preset say whether HEVC coding dominates a sweep more than NNCodec does.

The activation is the ReLU of a spatially smoothed Gaussian field with per-channel gain
and bias (fixed seed; ``tests.graphs.relu_activation``, which tests/test_nncodec.py uses
too). Times are the best of ``--repeat`` runs in this process, one thread; sizes are
``len(encode(...))``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.codecs import build, setting  # noqa: E402
from tests.graphs import relu_activation  # noqa: E402

SETTINGS = [
    ("none", {}),
    ("none", {"zstd": 3}),
    ("float16", {}),
    ("float16", {"zstd": 3}),
    ("bfloat16", {}),
    ("uniform", {"bits": 8}),
    ("uniform", {"bits": 8, "zstd": 3}),
    ("uniform", {"bits": 4}),
    ("uniform", {"bits": 2}),
    *[("nncodec", {"qp": qp, "use_dq": dq}) for qp in (-38, -18, 0) for dq in (True, False)],
    *[("hevc", {"qp": qp, "preset": preset}) for preset in (0, 2, 5) for qp in (22, 32, 42)],
]
SHAPES = {"small": (1, 256, 38, 38), "cut8mb": (1, 128, 128, 128), "large": (1, 64, 256, 256)}

# FACTS.md, measured with nncodec.tensor.encode on a (different) ReLU activation 1×256×38×38
FACTS = {-38: 272_595, -18: 150_950, 0: 40_228}


def best_of(repeat: int, fn):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run(shape, repeat: int, only: tuple[str, ...] = ()) -> None:
    x = relu_activation(shape)
    arrays = {"act": x}
    print(
        f"\n== 1×{'×'.join(map(str, shape[1:]))}: {x.nbytes:,} raw bytes, "
        f"{(x == 0).mean():.0%} zeros, max {x.max():.2f}, mean {x.mean():.3f}"
    )
    print(f"{'codec':<10} {'settings':<18} {'coded B':>11} {'ratio':>7} {'bit/val':>8} "
          f"{'enc s':>7} {'dec s':>7} {'enc MB/s':>9} {'max err':>9} {'PSNR dB':>8}")
    for name, params in SETTINGS:
        if only and name not in only:
            continue
        codec = build(setting(name, params))
        enc_s, data = best_of(repeat, lambda codec=codec: codec.encode(arrays))
        dec_s, out = best_of(repeat, lambda codec=codec, data=data: codec.decode(data))
        diff = out["act"].astype(np.float64) - x
        err = float(np.abs(diff).max())
        mse = float(np.mean(diff**2))
        psnr = 10 * np.log10(float(x.max()) ** 2 / mse) if mse else float("inf")
        label = " ".join(f"{k}={v}" for k, v in params.items() if k != "use_dq") or "-"
        if name == "nncodec":
            label += " DQ" if params["use_dq"] else " no DQ"
        print(f"{name:<10} {label:<18} {len(data):>11,} {x.nbytes / len(data):>7.2f} "
              f"{8 * len(data) / x.size:>8.3f} {enc_s:>7.3f} {dec_s:>7.3f} "
              f"{x.nbytes / enc_s / 1e6:>9.1f} {err:>9.2g} {psnr:>8.1f}")
    if shape == (1, 256, 38, 38):
        print("FACTS.md (nncodec.tensor.encode, DQ on, another activation): "
              + ", ".join(f"QP {qp}: {b:,} B" for qp, b in FACTS.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="only the 1×256×38×38 tensor")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--hevc", action="store_true",
                    help="only nncodec and hevc, on 1×256×38×38 and an 8 MB cut 1×128×128×128 (as CenterNet's split 246)")
    args = ap.parse_args()
    if args.hevc:
        for shape in (SHAPES["small"], SHAPES["cut8mb"]):
            run(shape, args.repeat, only=("nncodec", "hevc"))
        return
    shapes = [SHAPES["small"]] + ([] if args.small else [SHAPES["large"]])
    for shape in shapes:
        run(shape, args.repeat)


if __name__ == "__main__":
    main()
