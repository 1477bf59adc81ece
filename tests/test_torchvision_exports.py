"""Real torchvision exports (SSDlite320, Faster R-CNN MobileNetV3-FPN) swept at 5 splits with every codec,
inspected, and Faster R-CNN with every variant (slow).

The exports come from ``shared/tools/export_torchvision.py`` (next to the repository, or
$SPLITSWEEP_EXPORT_SCRIPT), run in a side virtual environment with a CPU torch — never the
project's own: torch is only needed to *make* the ONNX files. The venv is created on first
use under $SPLITSWEEP_TV_VENV (default ``tvenv`` in the splitsweep cache dir) with pip from PyPI, and
the exports are cached next to it; where that cannot be done (no network, no script) the
tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.data.cache import cache_dir
from orchestrator.execution.sweep import SweepOptions, run_sweep
from orchestrator.planning.spec import parse_spec
from orchestrator.results.store import ResultsStore, latest_rows

pytestmark = pytest.mark.slow

_ROOT = Path(__file__).resolve().parents[1]
_CACHE = cache_dir()  # $SPLITSWEEP_CACHE, else $XDG_CACHE_HOME/splitsweep, else ~/.cache/splitsweep
_VENV = Path(os.environ.get("SPLITSWEEP_TV_VENV", _CACHE / "tvenv"))
_EXPORTS = _CACHE / "torchvision-exports"
_PACKAGES = [["torch==2.13.0", "onnx", "onnxruntime", "numpy<2", "pillow"], ["--no-deps", "torchvision==0.28.0"]]


def _script() -> Path:
    candidates = [os.environ.get("SPLITSWEEP_EXPORT_SCRIPT"), _ROOT.parent / "shared" / "tools" / "export_torchvision.py",
                  _ROOT / "scripts" / "export_torchvision.py"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    pytest.skip("export_torchvision.py not found (set SPLITSWEEP_EXPORT_SCRIPT)")


def _side_python() -> Path:
    python = _VENV / "bin" / "python"
    # `import torchvision` needs the export script's op shim (FACTS: CUDA wheel); its files are enough here
    probe = [str(python), "-c", "import torch, onnx, importlib.util as u; assert u.find_spec('torchvision')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(_VENV)], check=True, capture_output=True, timeout=300)
        for args in _PACKAGES:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True, capture_output=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot install torch / torchvision into {_VENV}: {exc} {detail.decode(errors='replace')[-300:]}")
    return python


def _export(name: str) -> Path:
    out = _EXPORTS / f"{name}.onnx"
    if not out.exists():
        _EXPORTS.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TV_OUT": str(_EXPORTS)}
        done = subprocess.run([str(_side_python()), str(_script()), name], env=env, capture_output=True, text=True,
                              timeout=3600)
        assert done.returncode == 0 and out.exists(), done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def video():
    from orchestrator.data.demo_data import ensure_video

    return ensure_video()


def _inspect(path: Path, capsys) -> dict:
    assert main(["inspect", str(path), "--json", "--suggest"]) == 0
    return json.loads(capsys.readouterr().out)


def _five_splits(doc: dict) -> list[int]:
    picks = [s["split"] for s in doc["suggestions"]]
    valid = doc["valid"]
    spread = [valid[int(i * (len(valid) - 1) / 4)] for i in range(5)]  # also early / late cuts
    return sorted(set(picks[:3] + spread))[:5] if len(set(picks[:3] + spread)) >= 5 else spread


_CODECS = """  none: {}
  float16: {}
  bfloat16: {}
  uniform: {bits: [8, 4]}
  nncodec: {qp: -10}
"""


@pytest.mark.parametrize("name,size", [("ssdlite320_mobilenet_v3_large", 320), ("fasterrcnn_mobilenet_v3_large_fpn", 800)])
def test_export_sweeps_clean_at_five_splits(name, size, ray_local, tmp_path, video, capsys):
    model = _export(name)
    doc = _inspect(model, capsys)
    assert all(p["total_bytes"] is not None for p in doc["split_points"] if p["valid"])  # a size for every cut
    splits = _five_splits(doc)
    spec = parse_spec(
        f"""sweep: {name}
output: {tmp_path / 'res'}
dataset: {{type: video, path: {video}, step: 100, limit: 3}}
evaluation: {{mode: reference}}
models:
  - name: {name}
    path: {model}
    adapter: {{boxes-labels-scores: {{input_size: [{size}, {size}], score_threshold: 0.0}}}}
    splits: {json.dumps(splits)}
codecs:
{_CODECS}""",
        file=str(tmp_path / "spec.yaml"),
    )
    result = run_sweep(spec, SweepOptions(workers=2))
    assert result.plan_counts["failed"] == 0 and result.plan_counts["remaining"] == 0


def test_faster_rcnn_every_variant(ray_local, tmp_path, video, capsys):
    model = _export("fasterrcnn_mobilenet_v3_large_fpn")
    doc = _inspect(model, capsys)
    splits = [s["split"] for s in doc["suggestions"]][:2]
    spec = parse_spec(
        f"""sweep: frcnn-variants
output: {tmp_path / 'res'}
dataset: {{type: video, path: {video}, step: 100, limit: 2}}
evaluation: {{mode: reference}}
models:
  - name: frcnn
    path: {model}
    adapter: {{boxes-labels-scores: {{input_size: [800, 800], score_threshold: 0.0}}}}
    variants:
      - fp32
      - fp16
      - int8-dynamic
      - int8-static: {{method: minmax, images: 2}}
      - prune-magnitude: {{sparsity: 0.3}}
      - prune-filters: {{ratio: 0.1}}
      - nncodec-weights: {{qp: -28, relative: true}}
    splits: {json.dumps(splits)}
codecs:
  none: {{}}
  float16: {{}}
""",
        file=str(tmp_path / "variants.yaml"),
    )
    result = run_sweep(spec, SweepOptions(workers=2))
    rows = latest_rows(ResultsStore(str(tmp_path / "res")).read_rows(["task_id", "variant", "status", "error", "finished_at"]))
    failed = [(v, e) for v, s, e in zip(rows["variant"].to_pylist(), rows["status"].to_pylist(), rows["error"].to_pylist())
              if s != "ok"]
    assert failed == [] and result.plan_counts["failed"] == 0
    assert len(set(rows["variant"].to_pylist())) == 7  # every variant built
