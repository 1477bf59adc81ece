"""The demo photo set and the vtest.avi video: fetched from packages into the cache, sha256-checked.

Nothing here is downloaded from a model or data hub: the photos are files shipped inside
ordinary packages (scikit-image and matplotlib wheels from PyPI, Debian's ``opencv-doc``),
pinned and listed with their checksums and licences in ``orchestrator/demo/sources.json``.
Only our own files (hand-drawn annotations, the source list) are in the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.data.cache import cache_dir, sha256_file
from tasks.errors import AssetError, DataError

__all__ = [
    "DEMO_DIR",
    "SOURCES_FILE",
    "ANNOTATIONS_FILE",
    "DemoPhoto",
    "demo_photos",
    "ensure_demo_images",
    "ensure_video",
]

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
SOURCES_FILE = DEMO_DIR / "sources.json"
ANNOTATIONS_FILE = DEMO_DIR / "instances.json"

_PHOTOS_SUBDIR = "demo/photos"
_VIDEO_SUBDIR = "demo/video"


@dataclass(frozen=True)
class DemoPhoto:
    """One photo of the demo set and where it comes from."""

    file_name: str
    package: str  # key into sources.json "packages"
    member: str  # path inside the wheel / the .deb
    sha256: str | None  # of the extracted file; None for video frames (decoder-dependent pixels)
    frame: int | None  # 0-based frame index when the photo is a frame of the video
    licence: str


def _sources() -> dict[str, Any]:
    try:
        return json.loads(SOURCES_FILE.read_text())
    except FileNotFoundError:
        raise DataError("the demo's source list is missing from this checkout", file=str(SOURCES_FILE)) from None


def demo_photos() -> list[DemoPhoto]:
    """The photos of the demo set, in the order of ``sources.json``."""
    return [
        DemoPhoto(
            file_name=p["file_name"],
            package=p["package"],
            member=p["member"],
            sha256=p.get("sha256"),
            frame=p.get("frame"),
            licence=p["licence"],
        )
        for p in _sources()["photos"]
    ]


def ensure_demo_images(cache: str | os.PathLike[str] | None = None) -> Path:
    """Make sure every demo photo is in ``<cache>/demo/photos`` (checked); return that folder.

    Idempotent: files already there with the right sha256 are kept and nothing is
    fetched. Missing ones are extracted from the pinned packages, checked, and written
    atomically (temp file + rename), so an interrupted run leaves no half file.
    """
    root = cache_dir(cache)
    photos_dir = root / _PHOTOS_SUBDIR
    sources = _sources()
    missing = [p for p in demo_photos() if not _present(photos_dir / p.file_name, p.sha256)]
    if not missing:
        return photos_dir
    photos_dir.mkdir(parents=True, exist_ok=True)
    frames = [p for p in missing if p.frame is not None]
    video = sources["video"]
    video_path = root / _VIDEO_SUBDIR / video["file_name"]
    # The video comes from the same .deb as some photos: fetch it in the same download.
    need_video = bool(frames) and not _present(video_path, video["sha256"])
    by_package: dict[str, list[DemoPhoto]] = {video["package"]: []} if need_video else {}
    for photo in missing:
        if photo.frame is None:
            by_package.setdefault(photo.package, []).append(photo)
    for package, photos in by_package.items():
        spec = sources["packages"][package]
        wanted = {p.member for p in photos} | (
            {video["member"]} if need_video and package == video["package"] else set()
        )
        members = _fetch_members(package, spec, wanted, root)
        for photo in photos:
            data = members[photo.member]
            _check_sha(data, photo.sha256, f"{package} {spec['version']}: {photo.member}")
            _write_atomic(photos_dir / photo.file_name, data)
        if video["member"] in wanted:
            _check_sha(members[video["member"]], video["sha256"], f"{package} {spec['version']}: {video['member']}")
            video_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(video_path, members[video["member"]])
    if frames:
        _write_frames(ensure_video(root), photos_dir, frames)
    return photos_dir


def ensure_video(cache: str | os.PathLike[str] | None = None) -> Path:
    """Make sure ``vtest.avi`` (795 frames, 768×576, pedestrians) is in the cache; return its path."""
    video = _sources()["video"]
    path = cache_dir(cache) / _VIDEO_SUBDIR / video["file_name"]
    if _present(path, video["sha256"]):
        return path
    spec = _sources()["packages"][video["package"]]
    data = _fetch_members(video["package"], spec, {video["member"]}, cache_dir(cache))[video["member"]]
    _check_sha(data, video["sha256"], f"{video['package']} {spec['version']}: {video['member']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data)
    return path


# -- fetching ---------------------------------------------------------------------------


def _fetch_members(package: str, spec: Mapping[str, Any], members: set[str], root: Path) -> dict[str, bytes]:
    registry = spec["registry"]
    if registry == "pypi":
        return _wheel_members(package, spec, members)
    if registry == "debian":
        return _deb_members(package, spec, members, root)
    raise ValueError(f"sources.json: unknown registry {registry!r} for {package}")  # our file: a bug


def _wheel_members(package: str, spec: Mapping[str, Any], members: set[str]) -> dict[str, bytes]:
    # One fixed platform wheel, whatever this machine is: the data files are identical in
    # every wheel of a release, and a fixed wheel makes the download the same everywhere.
    wheel = spec["wheel"]
    with tempfile.TemporaryDirectory(prefix="splitsweep-demo-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", f"{package}=={spec['version']}",
            "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
            "--platform", wheel["platform"], "--python-version", wheel["python_version"],
            "--implementation", "cp", "--abi", wheel["abi"], "-d", tmp,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not files:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise AssetError(
                f"could not download {package}=={spec['version']} from PyPI for the demo photos: {last}",
                file=" ".join(cmd[2:5]),
            )
        with zipfile.ZipFile(files[0]) as zf:
            names = set(zf.namelist())
            absent = sorted(members - names)
            if absent:
                raise AssetError(f"{files[0].name} lacks {', '.join(absent)}", file=files[0].name)
            return {m: zf.read(m) for m in members}


def _deb_members(package: str, spec: Mapping[str, Any], members: set[str], root: Path) -> dict[str, bytes]:
    found = _installed_members(members)
    if found is not None:
        return found
    howto = (
        f"on Debian/Ubuntu `apt-get download {package}` needs no root (run `sudo apt-get update` "
        f"first if apt knows no {package}); elsewhere copy {', '.join(sorted(Path(m).name for m in members))} "
        f"from OpenCV's samples/data into {_PHOTOS_SUBDIR}/ (photos) or {_VIDEO_SUBDIR}/ (vtest.avi) "
        "of the cache folder named in this message"
    )
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise AssetError(f"apt-get/dpkg-deb not found, cannot fetch {package}; {howto}", file=str(root))
    with tempfile.TemporaryDirectory(prefix="splitsweep-demo-") as tmp:
        # The pinned version first; if this distribution has another one, take it: the
        # sha256 check below decides whether its files are the ones we annotated.
        for wanted in (f"{package}={spec['version']}", package):
            done = subprocess.run(["apt-get", "download", wanted], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob("*.deb"))
            if done.returncode == 0 and debs:
                break
        else:
            last = (done.stderr.strip().splitlines() or ["no .deb downloaded"])[-1]
            raise AssetError(f"`apt-get download {package}` failed: {last}; {howto}", file=str(root))
        return _extract_from_deb(debs[0], members)


def _installed_members(members: set[str]) -> dict[str, bytes] | None:
    # When opencv-doc is installed, its files are already on disk.
    paths = {m: Path("/") / m for m in members}
    if all(p.is_file() for p in paths.values()):
        return {m: p.read_bytes() for m, p in paths.items()}
    return None


def _extract_from_deb(deb: Path, members: set[str]) -> dict[str, bytes]:
    # `dpkg-deb --fsys-tarfile` handles every compression a .deb may use (xz, zstd, …);
    # the stream is read once and only the members we need are kept in memory.
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    found: dict[str, bytes] = {}
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name in members and info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                found[name] = handle.read()
                if len(found) == len(members):
                    break
    proc.stdout.close()
    proc.kill()
    proc.wait()
    absent = sorted(members - set(found))
    if absent:
        raise AssetError(f"{deb.name} lacks {', '.join(absent)}", file=deb.name)
    return found


def _write_frames(video: Path, photos_dir: Path, frames: Iterable[DemoPhoto]) -> None:
    import cv2  # only needed here; cv2 is a heavy import

    from tasks.images import encode_png

    wanted = {p.frame: p for p in frames}
    capture = cv2.VideoCapture(str(video))
    try:
        # Read sequentially rather than seek: AVI seeking can land on a nearby key frame.
        index = 0
        while wanted and index <= max(wanted):
            ok, bgr = capture.read()
            if not ok:
                raise DataError(f"video ends before frame {min(wanted)}", file=str(video))
            photo = wanted.pop(index, None)
            if photo is not None:
                _write_atomic(photos_dir / photo.file_name, encode_png(bgr[:, :, ::-1], compress_level=6))
            index += 1
    finally:
        capture.release()


# -- files ------------------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _present(path: Path, sha256: str | None) -> bool:
    if not path.is_file():
        return False
    return sha256 is None or sha256_file(path) == sha256


def _check_sha(data: bytes, expected: str | None, what: str) -> None:
    if expected is not None and _sha256(data) != expected:
        raise AssetError(
            f"checksum mismatch: sha256 {_sha256(data)[:16]}…, expected {expected[:16]}… "
            "(the package changed; the hand-drawn boxes would not fit)",
            file=what,
        )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary shareable cache files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
