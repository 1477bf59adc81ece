"""Coded bytes, encode / decode seconds and PSNR of the remote-inference image codecs on a demo photo.

    python benchmarks/image_codecs_bench.py [PHOTO]   (default: astronaut.png of the demo set, 512×512)

Best of 3 runs per setting, one thread (x265 single-threaded as in a sweep).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from orchestrator.data.demo_data import ensure_demo_images
from tasks.codecs import build, label, setting
from tasks.codecs.image import image_psnr

GRID = [
    ("jpeg", {"quality": q}) for q in (10, 30, 50, 75, 90, 100)
] + [("webp", {"quality": q}) for q in (10, 50, 75, 90)] + [("avif", {"quality": q}) for q in (10, 50, 75, 90)] + [
    ("hevc", {"qp": qp}) for qp in (47, 37, 32, 27, 22)
]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ensure_demo_images() / "astronaut.png"
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"))
    print(f"{path.name} {rgb.shape[1]}×{rgb.shape[0]}")
    print(f"{'codec':22} {'bytes':>8} {'bpp':>6} {'encode s':>9} {'decode s':>9} {'PSNR dB':>8}")
    for name, params in GRID:
        codec = build(setting(name, params))
        enc, dec = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            data = codec.encode_image(rgb)
            t1 = time.perf_counter()
            back = codec.decode_image(data)
            enc.append(t1 - t0)
            dec.append(time.perf_counter() - t1)
        bpp = 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
        print(f"{label(codec.setting):22} {len(data):>8,} {bpp:>6.3f} {min(enc):>9.4f} {min(dec):>9.4f} "
              f"{image_psnr(rgb, back)[1]:>8.2f}")


if __name__ == "__main__":
    main()
