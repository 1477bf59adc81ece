"""Datasets a sweep runs on: a COCO folder + instances json, an unlabelled folder, a video, the demo set."""

from __future__ import annotations

import hashlib
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tasks.errors import DataError, SpecError, nearest

__all__ = [
    "ImageRecord",
    "Dataset",
    "CocoDataset",
    "FolderDataset",
    "VideoDataset",
    "demo_dataset",
    "make_dataset",
    "DATASET_KEYS",
    "IMAGE_SUFFIXES",
    "path_image_id",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The fields of a COCO annotation that bbox evaluation reads; segmentations (most of
# instances_val2017.json's 25 MB) are dropped. "area" is kept as given: COCO's size
# buckets use the mask area, not the box area.
_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: its COCO id, a file name, and its size in pixels."""

    image_id: int
    file_name: str
    width: int
    height: int


class Dataset(ABC):
    """A deterministic list of images, their encoded bytes and (if labelled) COCO ground truth.

    An image's id never depends on what else is in the dataset (COCO: the annotation
    file's id; folder: its relative path; video: its frame index), and
    :meth:`content_hash` says whether the image behind an id is still the same.
    """

    name: str

    @abstractmethod
    def records(self) -> list[ImageRecord]:
        """The images, always in the same order."""

    @abstractmethod
    def image_bytes(self, record: ImageRecord) -> bytes:
        """The encoded image (what is shipped to workers); decode with tasks.images.decode_image."""

    def ground_truth(self) -> dict[str, Any] | None:
        """COCO dict (images, annotations, categories) for exactly ``records()``; None if unlabelled."""
        return None

    @abstractmethod
    def source(self, record: ImageRecord) -> str:
        """Where the image comes from, for people: a path, or a path and a frame number."""

    def content_hash(self, record: ImageRecord) -> str:
        """A hash of the image's content (what resume compares with the stored rows)."""
        cache = self.__dict__.setdefault("_hashes", {})
        if record.image_id not in cache:
            cache[record.image_id] = self._content_hash(record)
        return cache[record.image_id]

    def _content_hash(self, record: ImageRecord) -> str:
        return hashlib.sha256(self.image_bytes(record)).hexdigest()[:32]

    def frame_rate(self) -> float | None:
        """Frames per second of a video dataset (what kbps is counted at); None for stills."""
        return None

    def problems(self) -> list[tuple[str, str]]:
        """(file, reason) of images that will fail to decode, as far as a header check finds
        (what `validate` warns about; their tasks fail at run time, the rest go on)."""
        return []

    def __len__(self) -> int:
        return len(self.records())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


# -- COCO -------------------------------------------------------------------------------


class CocoDataset(Dataset):
    """A folder of images and a COCO ``instances_*.json`` (e.g. ``val2017/`` + ``instances_val2017.json``).

    ``image_ids`` keeps only those images, ``limit`` then the first N in the json's order
    (the seed study's "first 50 images"). Only the kept images' annotations are held.
    Every kept image must exist in ``images_dir``.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        annotations_json: str | os.PathLike[str],
        *,
        limit: int | None = None,
        image_ids: Iterable[int] | None = None,
        name: str | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotations_json = Path(annotations_json)
        self.name = name or f"coco:{self.images_dir.name}"
        if not self.images_dir.is_dir():
            raise DataError("image folder not found", file=str(self.images_dir))
        data = _load_coco_json(self.annotations_json)
        file = str(self.annotations_json)

        images = data["images"]
        if image_ids is not None:
            wanted = [int(i) for i in image_ids]
            present = {int(im["id"]) for im in images}
            absent = [i for i in wanted if i not in present]
            if absent:
                raise DataError(
                    f"{len(absent)} requested image id(s) not in the annotations: {_first(absent)}",
                    file=file,
                    key="image_ids",
                )
            keep = set(wanted)
            images = [im for im in images if int(im["id"]) in keep]
        if limit is not None:
            images = images[:limit]

        records = []
        for n, im in enumerate(images):
            try:
                records.append(ImageRecord(int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"])))
            except (KeyError, TypeError, ValueError):
                raise DataError(
                    f"images[{n}] lacks a valid id, file_name, width or height: {str(im)[:120]}",
                    file=file,
                    key="images",
                ) from None
        ids = [r.image_id for r in records]
        if len(set(ids)) != len(ids):
            raise DataError("image ids repeat in the annotations", file=file, key="images")
        missing = [r.file_name for r in records if not (self.images_dir / r.file_name).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(records)} images named in the annotations are missing from "
                f"{self.images_dir}: {_first(missing)}",
                file=file,
            )
        self._records = records
        kept = set(ids)
        self._images = [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in images]
        self._annotations = [
            {k: a[k] for k in _ANNOTATION_FIELDS if k in a} for a in data["annotations"] if a.get("image_id") in kept
        ]
        self._categories = [dict(c) for c in data["categories"]]

    def records(self) -> list[ImageRecord]:
        return list(self._records)

    def image_bytes(self, record: ImageRecord) -> bytes:
        path = self.images_dir / record.file_name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DataError("image file disappeared", file=str(path)) from None

    def _content_hash(self, record: ImageRecord) -> str:
        return _file_hash(self.images_dir / record.file_name)

    def problems(self) -> list[tuple[str, str]]:
        found = []
        for r in self._records:
            reason = _header_problem(self.images_dir / r.file_name)
            if reason:
                found.append((str(self.images_dir / r.file_name), reason))
        return found

    def ground_truth(self) -> dict[str, Any]:
        return {
            "images": [dict(im) for im in self._images],
            "annotations": [{**a, "bbox": list(a["bbox"])} for a in self._annotations],
            "categories": [dict(c) for c in self._categories],
        }

    def source(self, record: ImageRecord) -> str:
        return str(self.images_dir / record.file_name)


def _load_coco_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DataError("annotation file not found", file=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file is not valid JSON: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise DataError(
            "annotation file is not a COCO object (expected images, annotations, categories)", file=str(path)
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"annotation file has no {key!r} list", file=str(path), key=key)
    return data


def _first(values: Sequence[object], n: int = 5) -> str:
    return ", ".join(str(v) for v in values[:n]) + (", …" if len(values) > n else "")


# -- unlabelled folder ------------------------------------------------------------------


class FolderDataset(Dataset):
    """Unlabelled images (jpg, png, bmp, webp) of one folder, in sorted file-name order.

    An image's id is derived from its file name (:func:`path_image_id`), so adding,
    removing or renaming other files never changes it. An image whose header cannot be
    read stays in the dataset with size 0 × 0: its tasks fail with the reason, the
    others run (``problems()`` lists it). For reference mode: the uncompressed model's
    detections become the ground truth.
    """

    def __init__(self, directory: str | os.PathLike[str], *, limit: int | None = None, name: str | None = None) -> None:
        self.directory = Path(directory)
        self.name = name or f"folder:{self.directory.name}"
        if not self.directory.is_dir():
            raise DataError("image folder not found", file=str(self.directory))
        files = sorted(p.name for p in self.directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError("no images in the folder", file=str(self.directory), allowed=", ".join(IMAGE_SUFFIXES))
        if limit is not None:
            files = files[:limit]
        self._problems: list[tuple[str, str]] = []
        self._records = [self._record(f) for f in files]
        ids: dict[int, str] = {}
        for r in self._records:
            if r.image_id in ids:  # 1 in ~10^9 for 10^4 files; never silently merged
                raise DataError(f"file names {ids[r.image_id]!r} and {r.file_name!r} map to the same image id; "
                                "rename one", file=str(self.directory))
            ids[r.image_id] = r.file_name

    def _record(self, file_name: str) -> ImageRecord:
        path = self.directory / file_name
        width = height = 0
        reason = _header_problem(path)
        if reason:
            self._problems.append((str(path), reason))
        else:
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
        return ImageRecord(path_image_id(file_name), file_name, width, height)

    def records(self) -> list[ImageRecord]:
        return list(self._records)

    def problems(self) -> list[tuple[str, str]]:
        return list(self._problems)

    def image_bytes(self, record: ImageRecord) -> bytes:
        path = self.directory / record.file_name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DataError("image file disappeared", file=str(path)) from None

    def _content_hash(self, record: ImageRecord) -> str:
        return _file_hash(self.directory / record.file_name)

    def source(self, record: ImageRecord) -> str:
        return str(self.directory / record.file_name)


def path_image_id(relative_path: str) -> int:
    """A folder image's id: the first 52 bits of the SHA-256 of its relative path (POSIX
    separators), plus one. Stable whatever else the folder holds; below 2^53, so it
    survives JSON and JavaScript (the dashboard) exactly."""
    digest = hashlib.sha256(relative_path.replace(os.sep, "/").encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 12) + 1


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except FileNotFoundError:
        return "missing"  # the task fails with the reason when the file is read
    return h.hexdigest()[:32]


def _header_problem(path: Path) -> str | None:
    """Why the image's header cannot be read (empty, unknown format), or None."""
    try:
        if path.stat().st_size == 0:
            return "image is empty (0 bytes)"
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header is parsed by open
    except FileNotFoundError:
        return "file not found"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image: {exc}"
    return None


# -- video ------------------------------------------------------------------------------


class VideoDataset(Dataset):
    """Frames of a video read with OpenCV; ``image_id`` = frame index + 1, bytes = PNG (RGB).

    A frame's content hash is that of its decoded pixels, taken while the video is
    scanned (only kept frames are decoded in full).

    ``step`` keeps every step-th frame (0, step, 2·step, …), ``limit`` the first N of
    those. Frames are counted by reading the video once (container frame counts can be
    wrong). Reading frames in record order decodes the video once; any other order
    re-opens it and skips forward, which is correct but slower.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, limit: int | None = None, step: int = 1, name: str | None = None
    ) -> None:
        self.path = Path(path)
        self.name = name or f"video:{self.path.stem}"
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if not self.path.is_file():
            raise DataError("video file not found", file=str(self.path))
        self.step = step
        self.limit = limit
        self._records: list[ImageRecord] | None = None
        self._capture: Any = None
        self._next_frame = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)  # an open cv2.VideoCapture cannot be pickled (Ray)
        state.update(_capture=None, _next_frame=0)
        return state

    def records(self) -> list[ImageRecord]:
        if self._records is None:
            self._records = self._scan()
        return list(self._records)

    def _open(self) -> Any:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DataError("OpenCV cannot open this video (unknown container or codec)", file=str(self.path))
        return capture

    def _scan(self) -> list[ImageRecord]:
        import cv2

        capture = self._open()
        try:
            width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            records: list[ImageRecord] = []
            index = 0
            while self.limit is None or len(records) < self.limit:
                if not capture.grab():  # grab() decodes without the colour conversion of read()
                    break
                if index % self.step == 0:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        break
                    records.append(ImageRecord(index + 1, f"{self.path.stem}_frame{index:06d}.png", width, height))
                    self.__dict__.setdefault("_hashes", {})[index + 1] = _pixel_hash(bgr)
                index += 1
        finally:
            capture.release()
        if not records:
            raise DataError("the video has no readable frames", file=str(self.path))
        return records

    def image_bytes(self, record: ImageRecord) -> bytes:
        from tasks.images import encode_png

        frame = record.image_id - 1
        if self._capture is None or frame < self._next_frame:
            if self._capture is not None:
                self._capture.release()
            self._capture = self._open()
            self._next_frame = 0
        while self._next_frame < frame:
            if not self._capture.grab():
                raise DataError(f"video ends before frame {frame}", file=str(self.path))
            self._next_frame += 1
        ok, bgr = self._capture.read()
        if not ok:
            raise DataError(f"cannot decode frame {frame}", file=str(self.path))
        self._next_frame += 1
        return encode_png(bgr[:, :, ::-1])

    def frame_rate(self) -> float | None:
        """The container's frame rate (OpenCV ``CAP_PROP_FPS``); None where it gives none."""
        import cv2

        if "_fps" not in self.__dict__:
            capture = self._open()
            try:
                fps = float(capture.get(cv2.CAP_PROP_FPS))
            finally:
                capture.release()
            self._fps = fps if math.isfinite(fps) and fps > 0 else None
        return self._fps

    def content_hash(self, record: ImageRecord) -> str:
        self.records()  # the scan hashes every kept frame
        return super().content_hash(record)

    def _content_hash(self, record: ImageRecord) -> str:
        from tasks.images import decode_image

        return _pixel_hash(decode_image(self.image_bytes(record), name=self.source(record))[:, :, ::-1])

    def source(self, record: ImageRecord) -> str:
        return f"{self.path} frame {record.image_id - 1}"


def _pixel_hash(pixels: Any) -> str:
    import numpy as np

    a = np.ascontiguousarray(pixels)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()[:32]


# -- demo -------------------------------------------------------------------------------


def demo_dataset(*, limit: int | None = None, cache: str | os.PathLike[str] | None = None) -> CocoDataset:
    """The demo photo set with its hand-drawn COCO boxes (photos fetched into the cache on first use)."""
    from orchestrator.data.demo_data import ANNOTATIONS_FILE, ensure_demo_images

    return CocoDataset(ensure_demo_images(cache), ANNOTATIONS_FILE, limit=limit, name="demo")


# -- from a spec ------------------------------------------------------------------------

DATASET_KEYS: dict[str, tuple[str, ...]] = {
    "coco": ("type", "images", "annotations", "limit", "image_ids", "name"),
    "folder": ("type", "path", "limit", "name"),
    "video": ("type", "path", "limit", "step", "name"),
    "demo": ("type", "limit"),
}
_REQUIRED = {"coco": ("images", "annotations"), "folder": ("path",), "video": ("path",), "demo": ()}


def make_dataset(config: Mapping[str, Any], *, spec_file: str | os.PathLike[str] | None = None) -> Dataset:
    """Build the dataset of a spec's ``dataset:`` mapping.

    ``{type: coco, images: DIR, annotations: JSON, limit:, image_ids:}``,
    ``{type: folder, path: DIR, limit:}``, ``{type: video, path: FILE, limit:, step:}``,
    ``{type: demo, limit:}``. Relative paths are relative to the spec file's folder
    (to the working directory without a spec file). Unknown keys and types and wrong
    value types raise SpecError; missing files DataError.
    """
    file = None if spec_file is None else str(spec_file)
    if not isinstance(config, Mapping):
        raise SpecError(f"dataset must be a mapping, got {type(config).__name__}", file=file, key="dataset")
    kind = config.get("type")
    if kind not in DATASET_KEYS:
        hint = nearest(str(kind), DATASET_KEYS) if isinstance(kind, str) else None
        what = (
            "missing"
            if kind is None
            else f"unknown dataset type {kind!r}" + (f"; did you mean {hint!r}?" if hint else "")
        )
        raise SpecError(what, file=file, key="dataset.type", allowed=list(DATASET_KEYS))
    allowed = DATASET_KEYS[kind]
    for key in config:
        if key not in allowed:
            hint = nearest(str(key), allowed)
            raise SpecError(
                f"unknown key for a {kind} dataset" + (f"; did you mean {hint!r}?" if hint else ""),
                file=file,
                key=f"dataset.{key}",
                allowed=allowed,
            )
    for key in _REQUIRED[kind]:
        if config.get(key) is None:
            raise SpecError(f"a {kind} dataset needs {key!r}", file=file, key=f"dataset.{key}", allowed=allowed)

    base = Path(spec_file).resolve().parent if spec_file is not None else Path.cwd()
    limit = _positive_int(config, "limit", file)
    name = config.get("name")
    if name is not None and not isinstance(name, str):
        raise SpecError("must be a string", file=file, key="dataset.name")

    if kind == "coco":
        ids = config.get("image_ids")
        if ids is not None and not (
            isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise SpecError("must be a list of integer image ids", file=file, key="dataset.image_ids")
        images = _path(config, "images", base, file)
        annotations = _path(config, "annotations", base, file)
        if not images.is_dir():
            raise DataError("image folder not found", file=str(images), key="dataset.images")
        if not annotations.is_file():
            raise DataError("annotation file not found", file=str(annotations), key="dataset.annotations")
        return CocoDataset(images, annotations, limit=limit, image_ids=ids, name=name)
    if kind == "folder":
        path = _path(config, "path", base, file)
        if not path.is_dir():
            raise DataError("image folder not found", file=str(path), key="dataset.path")
        return FolderDataset(path, limit=limit, name=name)
    if kind == "video":
        step = _positive_int(config, "step", file) or 1
        path = _path(config, "path", base, file)
        if not path.is_file():
            raise DataError("video file not found", file=str(path), key="dataset.path")
        return VideoDataset(path, limit=limit, step=step, name=name)
    return demo_dataset(limit=limit)


def _positive_int(config: Mapping[str, Any], key: str, file: str | None) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"must be a positive integer, got {value!r}", file=file, key=f"dataset.{key}")
    return value


def _path(config: Mapping[str, Any], key: str, base: Path, file: str | None) -> Path:
    value = config[key]
    if not isinstance(value, (str, os.PathLike)):
        raise SpecError(f"must be a path, got {value!r}", file=file, key=f"dataset.{key}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
