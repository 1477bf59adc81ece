"""Render the demo photos with their hand-drawn boxes (and optionally a coordinate grid) to PNGs.

This is how the boxes in orchestrator/demo/instances.json were drawn and checked: render a photo
with a labelled pixel grid, read off tight box corners, write them into the json, render
the overlay, look again, repeat. No detector is involved at any step.

    python scripts/annotate_overlay.py                      # every photo, boxes, → /tmp/splitsweep-overlay
    python scripts/annotate_overlay.py messi5.jpg --grid 25 # one photo with a 25-px grid
    python scripts/annotate_overlay.py messi5.jpg --grid 10 --crop 300 50 460 340
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.data.demo_data import ANNOTATIONS_FILE, ensure_demo_images  # noqa: E402
from tasks.images import decode_image  # noqa: E402

_COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (240, 50, 230)]


def render(
    rgb: np.ndarray,
    annotations: list[dict],
    names: dict[int, str],
    *,
    grid: int = 0,
    crop: tuple[int, int, int, int] | None = None,
    scale: float | None = None,
    boxes: bool = True,
) -> np.ndarray:
    """An RGB image: the photo (cropped, scaled up), its grid and its boxes in image coordinates."""
    x0, y0, x1, y1 = crop or (0, 0, rgb.shape[1], rgb.shape[0])
    view = rgb[y0:y1, x0:x1]
    if scale is None:
        scale = max(1.0, min(4.0, 1000 / max(view.shape[:2])))
    out = cv2.resize(
        view, (round(view.shape[1] * scale), round(view.shape[0] * scale)), interpolation=cv2.INTER_NEAREST
    )
    out = np.ascontiguousarray(out)

    def px(x: float, y: float) -> tuple[int, int]:
        return round((x - x0) * scale), round((y - y0) * scale)

    if grid:
        for gx in range((x0 // grid) * grid, x1 + 1, grid):
            major = gx % (grid * 2) == 0
            cv2.line(out, px(gx, y0), px(gx, y1), (255, 255, 0) if major else (0, 255, 255), 1)
            for gy in range((y0 // grid) * grid, y1, grid * 4):
                cv2.putText(out, str(gx), px(gx + 1, gy + 2) if gy > y0 else px(gx + 1, y0), 0, 0.35, (255, 255, 0), 1)
        for gy in range((y0 // grid) * grid, y1 + 1, grid):
            major = gy % (grid * 2) == 0
            cv2.line(out, px(x0, gy), px(x1, gy), (255, 255, 0) if major else (0, 255, 255), 1)
            for gx in range((x0 // grid) * grid, x1, grid * 4):
                cv2.putText(out, str(gy), px(max(gx, x0) + 1, gy - 1), 0, 0.35, (255, 0, 255), 1)
    if boxes:
        for i, ann in enumerate(annotations):
            x, y, w, h = ann["bbox"]
            colour = _COLOURS[i % len(_COLOURS)]
            cv2.rectangle(out, px(x, y), px(x + w, y + h), colour, 2 if not ann.get("iscrowd") else 1)
            label = f"{ann['id']}:{names[ann['category_id']]}" + (" crowd" if ann.get("iscrowd") else "")
            tx, ty = px(x, y)
            cv2.putText(out, label, (tx + 2, max(ty - 4, 12)), 0, 0.5, colour, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help="file names in instances.json (default: all)")
    parser.add_argument("--grid", type=int, default=0, help="grid step in image pixels (0: none)")
    parser.add_argument("--crop", type=int, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    parser.add_argument("--scale", type=float)
    parser.add_argument("--no-boxes", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/splitsweep-overlay"))
    parser.add_argument("--cache", type=Path, help="cache folder (default: $SPLITSWEEP_CACHE or ~/.cache/splitsweep)")
    args = parser.parse_args(argv)

    gt = json.loads(ANNOTATIONS_FILE.read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}
    photos = ensure_demo_images(args.cache)
    wanted = set(args.images) or {im["file_name"] for im in gt["images"]}
    args.out.mkdir(parents=True, exist_ok=True)
    for image in gt["images"]:
        if image["file_name"] not in wanted:
            continue
        rgb = decode_image((photos / image["file_name"]).read_bytes(), name=image["file_name"])
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        drawn = render(rgb, anns, names, grid=args.grid, crop=args.crop, scale=args.scale, boxes=not args.no_boxes)
        suffix = f"_crop{'_'.join(map(str, args.crop))}" if args.crop else ""
        path = args.out / f"{Path(image['file_name']).stem}{suffix}.png"
        cv2.imwrite(str(path), drawn[:, :, ::-1])
        print(path, f"{len(anns)} boxes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
