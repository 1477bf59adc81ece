"""A tiny but real detector and a COCO-format photo folder, for sweep tests that must run fast.

The detector is a small conv net whose scores and box offsets depend on the image, so
coding its cut tensors changes its detections; it decodes itself (boxes, labels, scores)
and runs through the `boxes-labels-scores` adapter like a torchvision export would.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

from tests.graphs import Builder, f32

SIZE = 64
ANCHORS = np.array(
    [[4, 4, 30, 40], [34, 6, 60, 30], [10, 36, 40, 60], [36, 34, 62, 62], [20, 20, 44, 44], [2, 30, 20, 62]],
    np.float32,
)
LABELS = np.array([1, 3, 18, 1, 62, 44], np.int64)  # person, car, dog, person, chair, bottle

def adapter_settings(size: int = SIZE) -> dict:
    return {
        "type": "boxes-labels-scores",
        "input_size": [size, size],
        "boxes": "boxes",
        "labels": "labels",
        "scores": "scores",
        "score_threshold": 0.0,
    }


ADAPTER = adapter_settings()


def adapter_spec(size: int = SIZE) -> dict:
    """The adapter as a spec names it: {name: {settings}}."""
    settings = adapter_settings(size)
    return {settings.pop("type"): settings}


def tiny_detector(seed: int = 0, *, size: int = SIZE, depth: int = 0) -> onnx.ModelProto:
    """images (1,3,size,size) → boxes (K,4) xyxy input pixels, labels (K,), scores (K,).

    A larger `size` makes every cut tensor (and so every codec call) bigger: slower work;
    `depth` adds that many conv + ReLU layers (two split points each) to the backbone."""
    b = Builder(seed=seed)
    k = len(ANCHORS)
    x = b.node("Relu", [b.conv("images", 3, 8, "c1", stride=2)], "r1")
    x = b.node("Relu", [b.conv(x, 8, 8, "c2", stride=2)], "r2")
    for i in range(depth):
        x = b.node("Relu", [b.conv(x, 8, 8, f"d{i}")], f"dr{i}")
    y = b.node("Relu", [b.conv(x, 8, 8, "c3")], "r3")
    x = b.node("Add", [x, y], "skip")  # a residual: some cuts carry two tensors
    x = b.conv(x, 8, 4, "c4")
    g = b.node("GlobalAveragePool", [x], "gap")
    g = b.node("Flatten", [g], "flat")
    w = b.weight("score.w", (b.rng.standard_normal((4, k)) * 2.0).astype(np.float32))
    s = b.node("MatMul", [g, w], "score_mm")
    s = b.node("Sigmoid", [s], "score_sig")
    shape_k = b.weight("shape_k", np.array([k], np.int64))
    b.node("Reshape", [s, shape_k], "scores", outputs=["scores"])
    w2 = b.weight("box.w", (b.rng.standard_normal((4, k * 4)) * 3.0).astype(np.float32))
    o = b.node("Tanh", [b.node("MatMul", [g, w2], "box_mm")], "box_tanh")
    shape_k4 = b.weight("shape_k4", np.array([k, 4], np.int64))
    o = b.node("Reshape", [o, shape_k4], "box_offsets")
    scale = b.weight("box.scale", np.array(3.0, np.float32))
    o = b.node("Mul", [o, scale], "box_scaled")
    anchors = b.weight("anchors", ANCHORS * np.float32(size / SIZE))
    b.node("Add", [anchors, o], "boxes", outputs=["boxes"])
    labels = b.weight("labels.const", LABELS)
    b.node("Identity", [labels], "labels", outputs=["labels"])
    return b.model(
        [f32("images", [1, 3, size, size])],
        [f32("boxes", [k, 4]), helper.make_tensor_value_info("labels", TensorProto.INT64, [k]), f32("scores", [k])],
        "tinydet",
    )


def photo(seed: int, *, width: int = 96, height: int = 80) -> np.ndarray:
    """A smooth random RGB image with a few rectangles: varied enough to vary the scores."""
    rng = np.random.default_rng(seed)
    base = rng.random((height // 8 + 1, width // 8 + 1, 3))
    img = np.kron(base, np.ones((8, 8, 1)))[:height, :width]
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.random(3)
    return (img * 255).astype(np.uint8)


def write_coco_folder(root: Path, n_images: int = 4, *, corrupt: tuple[int, ...] = ()) -> tuple[Path, Path]:
    """images/ with PNGs and instances.json whose boxes are the anchors in image pixels."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": int(c), "name": f"c{c}"} for c in sorted(set(LABELS.tolist()))]}
    for i in range(1, n_images + 1):
        rgb = photo(i)
        h, w = rgb.shape[:2]
        name = f"img{i:03d}.png"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG")
        data = buf.getvalue()
        if i in corrupt:
            data = data[: len(data) // 3]  # a truncated file: one failed image, the rest go on
        (images / name).write_bytes(data)
        coco["images"].append({"id": i, "file_name": name, "width": w, "height": h})
        for j in (i % len(ANCHORS), (i + 2) % len(ANCHORS)):
            x0, y0, x1, y1 = ANCHORS[j] * np.array([w / SIZE, h / SIZE, w / SIZE, h / SIZE])
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": int(LABELS[j]),
                 "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                 "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0}
            )
    ann = root / "instances.json"
    ann.write_text(json.dumps(coco))
    return images, ann


def write_spec(root: Path, *, model: Path, images: Path, annotations: Path, output: Path, codecs: str,
               splits: str = "[3, 5, 9]", extra: str = "", sweep: str = "tiny", size: int = SIZE, name: str = "spec.yaml") -> Path:
    spec = root / name
    spec.write_text(
        f"""sweep: {sweep}
output: {output}
dataset: {{type: coco, images: {images}, annotations: {annotations}}}
models:
  - name: tinydet
    path: {model}
    adapter: {json.dumps(adapter_spec(size))}
    splits: {splits}
codecs:
{codecs}
{extra}"""
    )
    return spec
