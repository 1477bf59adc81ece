"""One unit of work without Ray: tasks.work and the SweepWorker class the actors wrap."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from orchestrator.execution.worker import ModelPayload, SweepWorker, UnitPayload, UnitTask
from tasks import codecs, detectors
from tasks.runtime import SplitRunner
from tasks.work import NO_SPLIT, distortion, run_head, run_tasks
from tests.tinydet import ADAPTER, photo, tiny_detector

SPLITS = (3, 5, 9)


@pytest.fixture(scope="module")
def parts():
    model = tiny_detector().SerializeToString()
    runner = SplitRunner(model, SPLITS)
    adapter = detectors.adapter(ADAPTER["type"], {k: v for k, v in ADAPTER.items() if k != "type"})
    return model, runner, adapter


def test_distortion_is_mse_and_psnr_over_the_value_range():
    a = {"x": np.array([[0.0, 1.0], [2.0, 3.0]], np.float32), "shape": np.array([4], np.int64)}
    b = {"x": np.array([[0.0, 1.0], [2.0, 4.0]], np.float32), "shape": np.array([4], np.int64)}
    mse, psnr = distortion(a, b)
    assert mse == pytest.approx(0.25)  # one error of 1 over four elements; int tensors ignored
    assert psnr == pytest.approx(10 * math.log10(3.0**2 / 0.25))  # peak = max - min = 3
    assert distortion(a, a) == (0.0, math.inf)


def test_head_once_then_every_split_and_codec(parts):
    _, runner, adapter = parts
    head = run_head(runner, adapter, photo(1))
    settings = [codecs.setting("none"), codecs.setting("float16"), codecs.setting("uniform", {"bits": 2})]
    tasks = [(NO_SPLIT, codecs.setting("none"))] + [(s, c) for s in SPLITS for c in settings]
    outcomes = run_tasks(runner, adapter, head, tasks)
    assert [o.error for o in outcomes] == [None] * len(tasks)
    by = {(o.split, o.setting.codec): o for o in outcomes}
    base = by[(NO_SPLIT, "none")]
    assert base.result.raw_bytes == 0 and base.detections is head.detections
    for s in SPLITS:
        none, f16, u2 = by[(s, "none")], by[(s, "float16")], by[(s, "uniform")]
        cut_bytes = sum(head.cut_tensors[t].nbytes for t in runner.cut(s).tensors)
        assert none.result.raw_bytes == f16.result.raw_bytes == cut_bytes == none.result.float32_bytes
        assert none.result.tail_s == 0.0 and none.detections is head.detections  # re-uses the full output
        assert f16.result.coded_bytes < none.result.coded_bytes and f16.result.tail_s > 0
        assert u2.result.head_s == head.seconds  # the one shared run
    for s in (3, 5):  # feature maps (at 9 the cut is 1×4: one value per channel, exact at any bits)
        assert by[(s, "uniform")].result.feature_mse > by[(s, "float16")].result.feature_mse > 0
    # 2-bit features move the scores: the detections differ from the unsplit model's
    assert not np.allclose(by[(3, "uniform")].detections.scores, base.detections.scores)


def test_a_failing_task_fails_alone(parts):
    _, runner, adapter = parts
    head = run_head(runner, adapter, photo(2))
    bad = codecs.setting("float16")
    outcomes = run_tasks(runner, adapter, head, [(NO_SPLIT, bad), (3, codecs.setting("none"))])
    assert outcomes[0].error.startswith("ValueError: the unsplit model (split -1) is only run with codec 'none'")
    assert outcomes[1].ok


def _png(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_sweep_worker_turns_a_unit_into_rows(parts):
    model, _, _ = parts
    worker = SweepWorker(threads=1)
    payload = ModelPayload(key="tiny/fp32", model="tiny", variant="fp32", source=model, adapter=ADAPTER["type"],
                           adapter_settings={k: v for k, v in ADAPTER.items() if k != "type"}, splits=(3, 5))
    # the driver mapped the splits: 9 has no counterpart in this "variant" (node None)
    tasks = (UnitTask("t0", NO_SPLIT, codecs.setting("none"), NO_SPLIT),
             UnitTask("t1", 3, codecs.setting("float16"), 3), UnitTask("t2", 9, codecs.setting("float16"), None))
    unit = UnitPayload(sweep="s", model_key="tiny/fp32", image_id=7, image_name="img7.png", tasks=tasks)
    rows = worker.run(payload, _png(photo(7)), unit)
    assert [r["task_id"] for r in rows] == ["t0", "t1", "t2"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[2]["error"] == "split 9 has no counterpart in variant 'fp32'"
    assert rows[1]["image_width"] == 96 and rows[1]["image_height"] == 80 and rows[1]["qp"] is None
    assert rows[1]["codec_params"] == '{"zstd":0}' and rows[1]["detections"]

    # Another chunk of the same image re-uses the head outputs the worker still holds.
    again = worker.run(payload, b"not read again", UnitPayload("s", "tiny/fp32", 7, "img7.png", tasks[1:2]))
    assert again[0]["status"] == "ok" and again[0]["detections"] == rows[1]["detections"]

    unit8 = UnitPayload(sweep="s", model_key="tiny/fp32", image_id=8, image_name="img8.png", tasks=tasks)
    broken = worker.run(payload, _png(photo(8))[:100], unit8)  # a truncated image: every task fails, says why
    assert {r["status"] for r in broken} == {"failed"}
    assert all(r["error"].startswith("DataError: img8.png") for r in broken)


def test_pieces_of_a_unit_share_one_head_run(parts):
    """A unit spread over workers: one worker's head() reaches the others (through the object
    store on Ray; here by value), who then need no image; a head that cannot be fetched
    (lost with its worker) is run again locally, with the same rows."""
    model, _, _ = parts
    payload = ModelPayload(key="tiny/fp32", model="tiny", variant="fp32", source=model, adapter=ADAPTER["type"],
                           adapter_settings={k: v for k, v in ADAPTER.items() if k != "type"}, splits=SPLITS)
    tasks = (UnitTask("t0", 3, codecs.setting("float16"), 3), UnitTask("t1", 5, codecs.setting("none"), 5))
    unit = UnitPayload(sweep="s", model_key="tiny/fp32", image_id=7, image_name="img7.png", tasks=tasks)
    image = _png(photo(7))
    alone = SweepWorker(threads=1).run(payload, image, unit)

    shared = SweepWorker(threads=1).head(payload, image, unit)
    assert shared is not None and (shared.width, shared.height) == (96, 80)
    fetched = []
    other = SweepWorker(threads=1, fetch=lambda ref: fetched.append(ref) or ref[0])
    rows = other.run(payload, b"not an image: the head comes from the shared ref", unit, [shared])
    assert fetched and [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["detections"] for r in rows] == [r["detections"] for r in alone]
    assert [r["coded_bytes"] for r in rows] == [r["coded_bytes"] for r in alone]

    def lost(ref):
        raise RuntimeError("owner died")

    rows = SweepWorker(threads=1, fetch=lost).run(payload, image, unit, ["ref"])
    assert [r["detections"] for r in rows] == [r["detections"] for r in alone]
    # a head() that fails returns None: the pieces run it themselves and report why
    assert SweepWorker(threads=1).head(payload, b"broken", unit) is None
