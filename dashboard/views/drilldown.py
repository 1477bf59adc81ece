"""Image drill-down: one image's ground truth and detections, uncompressed and in a chosen configuration, side by side."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from orchestrator.results.schema import BASELINE_CODEC, BASELINE_SPLIT, split_label
from tasks.rows import Detections

from ..data import (
    finite,
    load_ground_truth,
    load_image,
    load_image_ids,
    load_image_rows,
)
from . import ViewContext, no_configs

__all__ = ["TITLE", "DEFAULT_SIZE", "config_name", "draw_boxes", "image_numbers", "image_title", "image_scores", "render"]

TITLE = "Image drill-down"
DEFAULT_SIZE = (640, 480)
_MAX_SELECT = 1000  # more image ids than this: a number field instead of a list
GT_COLOR = (0, 200, 0)
DET_COLOR = (230, 30, 30)
BASE_COLOR = (30, 90, 230)  # the uncompressed model's detections when both are drawn on one image


def image_title(image_id: int, *, file_name: str | None = None, frame_rate: float | None = None) -> str:
    """How an image reads in the picker: its id with the file name, or for a video the
    frame index and its time (image ids of a video are frame index + 1)."""
    if frame_rate:
        frame = int(image_id) - 1
        return f"{image_id} · frame {frame} · t = {frame / frame_rate:.2f} s"
    return f"{image_id} · {file_name}" if file_name else str(image_id)


def image_scores(gt: Detections | None, dets: Detections | None, *, threshold: float, size: tuple[int, int]) -> dict:
    """Per-image AP (COCO AP@[.5:.95] of this one image) and, at IoU 0.5 and the score
    threshold, TP / FP / FN."""
    from tasks.metrics import COCO_CATEGORIES, coco_categories, coco_metrics, per_image_metrics

    empty = {"AP (this image)": None, "TP": None, "FP": None, "FN": None}
    if gt is None or dets is None:
        return empty
    m = per_image_metrics(gt, dets, iou=0.5, score_threshold=threshold)
    truth = {
        "images": [{"id": 1, "width": int(size[0]), "height": int(size[1])}],
        "annotations": [
            {"id": n + 1, "image_id": 1, "category_id": int(c), "bbox": [float(v) for v in b],
             "area": float(b[2] * b[3]), "iscrowd": 0}
            for n, (b, c) in enumerate(zip(gt.boxes.tolist(), gt.category_ids.tolist()))
        ],
        "categories": coco_categories(COCO_CATEGORIES),
    }
    ap = coco_metrics(truth, {1: dets}, image_ids=[1], unknown_categories="ignore").ap if len(gt) else float("nan")
    return {"AP (this image)": None if np.isnan(ap) else round(100 * ap, 2), "TP": m.tp, "FP": m.n_pred - m.tp,
            "FN": m.n_gt - m.tp}


def config_name(model: str, variant: str, split: int, label: str) -> str:
    return f"{model} / {variant} / split {split_label(split)} / {label}"


def draw_boxes(
    rgb: np.ndarray | None,
    size: tuple[int, int],
    *,
    ground_truth: Detections | None,
    detections: Detections | None,
    threshold: float,
    categories: Mapping[int, str] | None = None,
    baseline: Detections | None = None,
) -> np.ndarray:
    """The image (or a blank grey canvas of ``size`` = (width, height)) with ground-truth
    boxes in green and the detections scoring ≥ ``threshold`` in red with their score;
    ``baseline``: a second setting's detections, in blue, on the same picture."""
    if rgb is None:
        canvas = Image.new("RGB", (max(1, int(size[0])), max(1, int(size[1]))), (235, 235, 235))
    else:
        canvas = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 320))
    names = categories or {}
    if ground_truth is not None:
        for x, y, w, h in ground_truth.boxes.tolist():
            # Thicker than a detection's, drawn first: a perfect hit still shows green inside the red.
            draw.rectangle([x, y, x + w, y + h], outline=GT_COLOR, width=2 * width + 1)
    for dets, color, below in ((baseline, BASE_COLOR, True), (detections, DET_COLOR, False)):
        if dets is None:
            continue
        keep = dets.scores >= threshold
        for (x, y, w, h), score, cat in zip(
            dets.boxes[keep].tolist(), dets.scores[keep].tolist(), dets.category_ids[keep].tolist()
        ):
            draw.rectangle([x, y, x + w, y + h], outline=color, width=width)
            # Labels of the second set go under the box's top edge, so the two never overlap.
            draw.text((x + 2, y + 2 if below else max(0, y - 12)), f"{names.get(cat, cat)} {score:.2f}", fill=color)
    return np.asarray(canvas)


def image_numbers(name: str, row: Mapping | None, *, threshold: float) -> dict:
    """One line of the per-image table."""
    if row is None:
        return {"configuration": name, "status": "no row", "coded_bytes": None, "raw_bytes": None,
                "feature_psnr": None, "detections": None, "shown": None, "error": None}  # fmt: skip
    dets: Detections = row["detections"]
    return {
        "configuration": name,
        "status": row["status"],
        "coded_bytes": row["coded_bytes"],
        "raw_bytes": row["raw_bytes"],
        "feature_psnr": finite(row["feature_psnr"]),
        "detections": len(dets),
        "shown": int((dets.scores >= threshold).sum()),
        "error": row["error"],
    }


def _baseline_params(configs: pd.DataFrame, model: str, variant: str) -> str | None:
    base = configs[
        (configs["model"] == model) & (configs["variant"] == variant)
        & (configs["split"] == BASELINE_SPLIT) & (configs["codec"] == BASELINE_CODEC)
    ]  # fmt: skip
    return None if base.empty else str(base["codec_params"].iloc[0])


def render(ctx: ViewContext) -> None:
    if no_configs(ctx):
        return
    shown = ctx.shown
    names = {
        config_name(m, v, s, lab): (m, v, int(s), c, p)
        for m, v, s, c, p, lab in shown[["model", "variant", "split", "codec", "codec_params", "label"]].itertuples(index=False)
    }
    ordered = list(names)
    # Default to the first coded configuration: the baseline is on the left anyway.
    default = next((i for i, n in enumerate(ordered) if names[n][2] != BASELINE_SPLIT), 0)
    c1, c2, c3 = st.columns([3, 1, 1])
    choice = c1.selectbox("Configuration", ordered, index=default, key="drill_config")
    model, variant, split, codec, params = names[choice]
    ids = load_image_ids(ctx.location, ctx.version, model, variant, split, codec, params)
    if len(ids) == 0:
        st.info("This configuration has no stored rows.")
        return
    gt_index = load_ground_truth(ctx.location, ctx.version)
    frame_rate = ctx.meta.frame_rate if ctx.meta is not None else None
    if len(ids) <= _MAX_SELECT:
        image_id = c2.selectbox(
            "Image", [int(i) for i in ids], key="drill_image",
            format_func=lambda i: image_title(i, file_name=gt_index.file_names.get(int(i)), frame_rate=frame_rate),
        )
    else:
        image_id = int(c2.number_input("Image id", min_value=int(ids[0]), max_value=int(ids[-1]), value=int(ids[0]),
                                       step=1, key="drill_image_number"))  # fmt: skip
        if image_id not in set(ids.tolist()):
            st.warning(f"Image {image_id} has no row in this configuration.")
    threshold = c3.slider("Score ≥", 0.0, 1.0, 0.3, 0.05, key="drill_threshold")

    base_params = _baseline_params(ctx.configs, model, variant)
    wanted = [(variant, split, codec, params)]
    if base_params is not None:
        wanted.append((variant, BASELINE_SPLIT, BASELINE_CODEC, base_params))
    reference = ctx.meta is not None and ctx.meta.evaluation == "reference"
    ref_params = _baseline_params(ctx.configs, model, "fp32") if reference else None
    if ref_params is not None:
        wanted.append(("fp32", BASELINE_SPLIT, BASELINE_CODEC, ref_params))
    rows = load_image_rows(ctx.location, ctx.version, model, int(image_id), tuple(dict.fromkeys(wanted)))
    chosen = rows.get(variant, split, codec, params)
    baseline = rows.get(variant, BASELINE_SPLIT, BASELINE_CODEC, base_params) if base_params is not None else None

    if reference:
        ref_row = rows.get("fp32", BASELINE_SPLIT, BASELINE_CODEC, ref_params) if ref_params is not None else None
        cut = ctx.meta.reference_score_threshold or 0.0
        if ref_row is None:
            gt, gt_note = None, "reference evaluation, and the unsplit fp32 model has no row for this image: no boxes to score against"
        else:
            d = ref_row["detections"]
            keep = d.scores >= cut
            gt = Detections(d.boxes[keep], d.scores[keep], d.category_ids[keep])
            gt_note = f"reference evaluation: green boxes are the unsplit fp32 model's detections scoring ≥ {cut:g}"
    else:
        gt = gt_index.boxes.get(int(image_id))
        gt_note = gt_index.note.text if gt_index.note else None
    if gt_note:
        st.caption(gt_note)

    size = None
    for row in (chosen, baseline):
        if row is not None and row.get("image_width") and row.get("image_height"):
            size = (int(row["image_width"]), int(row["image_height"]))
            break
    size = size or gt_index.sizes.get(int(image_id)) or DEFAULT_SIZE
    loaded = load_image(ctx.location, ctx.version, int(image_id))
    if loaded.rgb is None:
        st.info(f"Boxes drawn on a blank {size[0]}×{size[1]} canvas: {loaded.note}")

    left, right = st.columns(2)
    base_name = config_name(model, variant, BASELINE_SPLIT, "none (uncompressed)")
    for column, name, row in ((left, base_name, baseline), (right, choice, chosen)):
        with column:
            st.markdown(f"**{name}**")
            if row is None:
                st.info("No row for this image in this configuration.")
                continue
            picture = draw_boxes(loaded.rgb, size, ground_truth=gt, detections=row["detections"], threshold=threshold,
                                 categories=gt_index.categories)  # fmt: skip
            st.image(picture, caption=f"image {image_id}: green ground truth, red detections ≥ {threshold:.2f}")
    if baseline is not None and chosen is not None:
        st.image(
            draw_boxes(loaded.rgb, size, ground_truth=gt, detections=chosen["detections"], threshold=threshold,
                       categories=gt_index.categories, baseline=baseline["detections"]),
            caption=f"both settings on image {image_id}: green ground truth, blue uncompressed, red {choice}",
        )
    table = pd.DataFrame([
        {**image_numbers(name, row, threshold=threshold),
         **image_scores(gt, None if row is None else row["detections"], threshold=threshold, size=size)}
        for name, row in ((base_name, baseline), (choice, chosen))
    ])
    st.caption("AP (this image): COCO AP@[.5:.95] of this image alone; TP / FP / FN at IoU 0.5 and the score "
               "threshold above.")
    st.dataframe(table, hide_index=True, width="stretch", key="drill_numbers", column_config={
        "coded_bytes": st.column_config.NumberColumn("coded bytes", format="localized"),
        "raw_bytes": st.column_config.NumberColumn("raw bytes", format="localized"),
        "feature_psnr": st.column_config.NumberColumn("PSNR dB", format="%.1f"),
    })
    if chosen is not None and len(chosen["detections"]):
        d = chosen["detections"]
        order = np.argsort(-d.scores)[:100]
        st.dataframe(
            pd.DataFrame(
                {
                    "score": d.scores[order],
                    "category": [str(gt_index.categories.get(int(c), int(c))) for c in d.category_ids[order]],
                    "x": d.boxes[order, 0], "y": d.boxes[order, 1], "w": d.boxes[order, 2], "h": d.boxes[order, 3],
                }
            ),
            hide_index=True,
            key="drill_detections",
        )  # fmt: skip
