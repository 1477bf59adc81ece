"""Video sweeps: the frame rate comes from the file (cv2 CAP_PROP_FPS), the report gives
rates in kbps at it, and BD-rate is the same in kbps, bpp and bytes (all frames share one size)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from orchestrator.planning.spec import load_spec
from orchestrator.reporting.bdrate import bd_table
from orchestrator.reporting.report import build_report, with_kbps
from tests.tinydet import adapter_spec, photo, tiny_detector

ROOT = Path(__file__).resolve().parent.parent
FPS = 15.0
WIDTH, HEIGHT = 96, 80


def write_video(path: Path, *, frames: int = 6, fps: float = FPS) -> Path:
    """A short real MJPEG AVI: distinct frames of the tiny detector's kind of picture."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for k in range(frames):
        writer.write(np.ascontiguousarray(photo(k)[:, :, ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video_sweep(tmp_path_factory, ray_local):
    from orchestrator.execution.sweep import SweepOptions, run_sweep

    root = tmp_path_factory.mktemp("video")
    video = write_video(root / "clip.avi")
    model = root / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    spec = root / "video.yaml"
    spec.write_text(f"""sweep: video
output: {root / "results"}
dataset: {{type: video, path: {video}}}
models:
  - name: tinydet
    path: {model}
    adapter: {json.dumps(adapter_spec())}
    splits: [input, 3]
codecs:
  jpeg: {{quality: [10, 30, 50, 70, 90]}}
  webp: {{quality: [10, 30, 50, 70, 90]}}
  uniform: {{bits: [2, 3, 4, 6, 8]}}
execution: {{workers: 1}}
""")
    result = run_sweep(load_spec(spec), SweepOptions(workers=1))
    assert result.plan_counts["failed"] == 0 and result.plan_counts["remaining"] == 0
    return root, video, root / "results"


def test_frame_rate_is_read_from_the_video_and_stored(video_sweep):
    from orchestrator.data.datasets import VideoDataset
    from orchestrator.results.reading import open_results

    _, video, out = video_sweep
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert fps == pytest.approx(FPS)
    assert VideoDataset(video).frame_rate() == fps
    assert json.loads((out / "meta.json").read_text())["frame_rate"] == fps
    assert open_results(str(out)).meta.frame_rate == fps


def test_report_gives_kbps_at_the_frame_rate_and_the_same_bd_rate(video_sweep):
    _, _, out = video_sweep
    table = with_kbps(build_report(out).table, FPS)
    coded = table[table["coded_bytes"] > 0]
    # kbps = 8 · mean bytes per frame · fps / 1000 = bpp · pixels · fps / 1000 (one frame size)
    assert np.allclose(coded["kbps"], 8 * coded["coded_bytes"] * FPS / 1000, rtol=1e-12)
    assert np.allclose(coded["kbps"], coded["bpp"] * WIDTH * HEIGHT * FPS / 1000, rtol=1e-9)
    assert with_kbps(table, None) is table  # stills: no kbps

    by_rate = {rate: bd_table(table, rate=rate, metric="miou").set_index(["split", "codec"])
               for rate in ("bpp", "kbps", "coded_bytes")}
    values = by_rate["bpp"]["bd_rate"].dropna()
    assert len(values) >= 1 and values.abs().gt(0).all()  # real numbers, not a degenerate 0
    for rate in ("kbps", "coded_bytes"):
        # the log-rate shift of a constant factor cancels in the Bjøntegaard integral
        assert np.allclose(by_rate[rate].loc[values.index, "bd_rate"], values, rtol=0, atol=1e-9), rate


def test_report_cli_prints_and_writes_kbps_for_video(video_sweep):
    root, _, out = video_sweep
    csv = root / "report.csv"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out), "--csv", str(csv)],
                         capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr
    data = pd.read_csv(csv)
    assert list(data.columns[:8]) == ["model", "variant", "split", "codec", "qp", "bytes", "bpp", "kbps"]
    assert np.allclose(data["kbps"], 8 * data["bytes"] * FPS / 1000, rtol=1e-9)
    header = next(ln for ln in run.stdout.splitlines() if ln.startswith("model") and "bpp" in ln)
    assert "kbps" in header.split()
    assert "its BD-rate in kbps equals the one in bpp" in run.stdout
    bd_lines = [ln for ln in run.stdout.splitlines() if ln.startswith("tinydet") and " uniform " in ln and "-" in ln]
    uniform = data[(data["split"] == 3) & (data["codec"] == "uniform")]
    want = f"{uniform['kbps'].min():,.1f}-{uniform['kbps'].max():,.1f}"
    assert any(want in ln for ln in bd_lines), (want, bd_lines)
    kbps = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out), "--rate", "kbps",
                           "--format", "json"], capture_output=True, text=True, env=env, timeout=180)
    assert kbps.returncode == 0, kbps.stderr
    payload = json.loads(kbps.stdout)
    bpp = json.loads(subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out), "--format", "json"],
                                    capture_output=True, text=True, env=env, timeout=180).stdout)
    assert [r["bd_rate"] for r in payload["bd"]] == pytest.approx([r["bd_rate"] for r in bpp["bd"]], abs=1e-9,
                                                                   nan_ok=True)
    assert all("kbps" in c and math.isfinite(c["kbps"]) for c in payload["configs"] if c["coded_bytes"])
