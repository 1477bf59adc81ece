"""Session fixtures: a results directory made by a real sweep (real Ray, real onnxruntime,
real codecs) over the tiny detector, shared by the report and dashboard tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SWEEP_CODECS = """  none: {}
  float16: {}
  uniform: {bits: [8, 6, 4, 2]}
  nncodec: {qp: [-30, -22, -14, -6]}
"""


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for the tests of one module, shut down after them."""
    import ray

    from orchestrator.execution.execute import RayOptions, connect

    started = connect(RayOptions(num_cpus=2))
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def sweep_results(tmp_path_factory) -> Path:
    """A finished sweep: tinydet, 5 images (one corrupt), 3 splits, 10 codec settings, 2 variants."""
    import ray

    from orchestrator.execution.execute import RayOptions, connect
    from orchestrator.execution.sweep import SweepOptions, run_sweep
    from orchestrator.planning.spec import load_spec
    from orchestrator.reporting.report import build_report
    from tests.tinydet import tiny_detector, write_coco_folder, write_spec

    root = tmp_path_factory.mktemp("sweep")
    model = root / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(root / "data", n_images=5, corrupt=(4,))
    out = root / "results"
    spec = write_spec(
        root, model=model, images=images, annotations=ann, output=out, codecs=SWEEP_CODECS, sweep="fixture",
    )
    text = spec.read_text().replace("    splits:", "    variants: [fp32, fp16]\n    splits:")
    spec.write_text(text)
    started = connect(RayOptions(num_cpus=2))
    try:
        result = run_sweep(load_spec(spec), SweepOptions(workers=2))
    finally:
        if started:
            ray.shutdown()
    assert result.plan_counts["remaining"] == 0
    build_report(out)
    return out
