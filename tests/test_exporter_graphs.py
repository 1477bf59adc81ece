"""Exporter idioms (tests/exporter_graphs.py) at every split, with every codec and variant; inspect on them."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from orchestrator.cli import main
from orchestrator.planning.variants import map_split_points
from tasks import codecs, detectors, variants
from tasks.codecs.container import header_size
from tasks.cutsizes import measure_into, sample_feeds
from tasks.errors import ModelError, SplitError
from tasks.graph import SplitGraph
from tasks.runtime import SplitRunner, make_session
from tasks.tensorkinds import is_feature_map
from tasks.work import NO_SPLIT, distortion, run_head, run_tasks
from tests.exporter_graphs import ADAPTER, exporter_detector
from tests.tinydet import photo

EVERY_CODEC = [
    codecs.setting("none"), codecs.setting("none", {"zstd": 3}), codecs.setting("float16"),
    codecs.setting("bfloat16"), codecs.setting("uniform", {"bits": 8}), codecs.setting("uniform", {"bits": 3}),
    codecs.setting("nncodec", {"qp": -24}),
]


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return exporter_detector()


@pytest.fixture(scope="module")
def adapter():
    return detectors.adapter(ADAPTER["type"], {k: v for k, v in ADAPTER.items() if k != "type"})


def test_every_idiom_crosses_some_cut(model):
    graph = SplitGraph(model)
    crossing = {t.name: t for p in graph.split_points() if p.valid for t in p.tensors}
    dtypes = {(t.dtype, None if t.shape is None else len(t.shape)) for t in crossing.values()}
    assert ("float32", 0) in dtypes and ("int64", 0) in dtypes and ("bool", 0) in dtypes  # 0-d float, int, cond
    assert crossing["backbone.body.layer1.empty_out"].shape[1] == 0  # the empty tensor
    assert "head.scores_flat_out" in crossing and "head.boxes_out" in crossing  # read inside the If body only
    # the in-graph resize: no static size past it
    assert crossing["transform/resize_out"].nbytes is None
    assert graph.valid_splits() == list(range(graph.num_nodes - 1))


@pytest.mark.parametrize("size", [(40, 56), (64, 48)])
def test_every_split_every_codec_no_failed_task_and_none_is_exact(model, adapter, size):
    """Two image sizes: shapes past the resize differ from image to image."""
    graph = SplitGraph(model)
    splits = graph.valid_splits()
    runner = SplitRunner(model, splits)
    head = run_head(runner, adapter, photo(3, width=size[1], height=size[0]))
    tasks = [(NO_SPLIT, codecs.setting("none"))] + [(s, c) for s in splits for c in EVERY_CODEC]
    outcomes = run_tasks(runner, adapter, head, tasks)
    failed = [(o.split, o.setting.codec, o.error) for o in outcomes if not o.ok]
    assert failed == []
    assert len(head.detections.scores) > 0
    for s in splits:  # head → none → tail is the unsplit model, bit for bit, at every split
        cut = runner.cut(s)
        decoded = codecs.build(codecs.setting("none")).decode(
            codecs.build(codecs.setting("none")).encode(head.tensors_for(cut) if hasattr(head, "tensors_for")
                                                        else {t: head.cut_tensors[t] for t in cut.tensors}))
        tail = runner.run_tail(s, decoded, head.feeds)
        for name in runner.output_names:
            assert np.array_equal(tail.outputs[name], head.outputs[name]), (s, name)
    by = {(o.split, o.setting): o for o in outcomes}
    for s in splits:
        cut_arrays = {t: head.cut_tensors[t] for t in runner.cut(s).tensors}
        raw = sum(a.nbytes for a in cut_arrays.values())
        for c in EVERY_CODEC:
            r = by[(s, c)].result
            assert r.raw_bytes == raw
            # int64 / bool tensors at their real size in the float32 reference
            assert r.float32_bytes == sum(4 * a.size if a.dtype.kind == "f" else a.nbytes for a in cut_arrays.values())
            assert r.feature_mse >= 0 and (r.feature_psnr == math.inf) == (r.feature_mse == 0)


def test_distortion_of_scalars_and_empty_tensors():
    # over the feature maps only: the scalar, the empty and the int tensor are shape tensors
    a = {"m": np.array([[1.0, 3.0]], np.float32), "s": np.array(2.0, np.float32),
         "e": np.zeros((1, 0, 3), np.float32), "i": np.array(5, np.int64)}
    b = {"m": np.array([[1.0, 4.0]], np.float32), "s": np.array(2.5, np.float32),
         "e": np.zeros((1, 0, 3), np.float32), "i": np.array(5, np.int64)}
    assert distortion(a, b, value_range=(0.0, 4.0)) == (0.5, pytest.approx(10 * math.log10(16 / 0.5)))
    assert distortion({"e": a["e"]}, {"e": b["e"]}) == (0.0, math.inf)
    assert distortion({"s": a["s"]}, {"s": b["s"]}) == (0.0, math.inf)


def test_every_codec_carries_shape_tensors_bit_exactly_at_their_real_size():
    """Float scalars and short float vectors feed in-graph shape arithmetic (torchvision's
    resize scale): no codec may round them, and they cost their raw bytes."""
    rng = np.random.default_rng(1)
    shape_like = {"scale": np.array(800 / 576, np.float32), "size": np.array([576.3, 768.7], np.float32),
                  "f64": np.array(1 / 3), "f16": np.array([0.1, 0.2], np.float16),
                  "v64": rng.standard_normal(64).astype(np.float32)}
    fmap = {"fmap": rng.standard_normal((1, 8, 9, 9)).astype(np.float32)}
    for c in EVERY_CODEC:
        codec = codecs.build(c)
        out = codec.decode(codec.encode({**shape_like, **fmap}))
        for k, v in shape_like.items():
            assert out[k].dtype == v.dtype and out[k].shape == v.shape and np.array_equal(out[k], v), (c, k)
        alone = len(codec.encode(fmap))
        with_side = len(codec.encode({**shape_like, **fmap}))
        side = sum(v.nbytes for v in shape_like.values())
        if not c.params.get("zstd"):  # a zstd stage compresses the whole container: sizes do not add up
            entries = header_size(list(shape_like), [v.shape for v in shape_like.values()]) - header_size([], [])
            assert with_side == alone + side + entries, c
    assert not is_feature_map(shape_like["v64"]) and is_feature_map(rng.standard_normal(65).astype(np.float32))


def test_lossy_codecs_never_touch_int_or_bool_tensors():
    arrays = {"i": np.array([[1, 2 ** 40]], np.int64), "b": np.array([True, False]), "u": np.arange(5, dtype=np.uint8),
              "i32": np.array(-3, np.int32), "f": np.linspace(0, 1, 50, dtype=np.float32).reshape(5, 10)}
    for c in EVERY_CODEC:
        codec = codecs.build(c)
        out = codec.decode(codec.encode(arrays))
        for k in ("i", "b", "u", "i32"):
            assert out[k].dtype == arrays[k].dtype and np.array_equal(out[k], arrays[k]), (c, k)


def test_measured_sizes_where_inference_gives_up(model):
    graph = SplitGraph(model, input_shapes={"images": (1, 3, 40, 56)})
    before = graph.unknown_size_tensors()
    assert "transform/resize_out" in before
    assert measure_into(graph) == len(before)
    assert graph.unknown_size_tensors() == []
    info = graph.info("transform/resize_out")
    assert info.measured and info.shape == (1, 3, 34, 48)  # 48 / 56 of 40 rows, floored
    point = graph.split_points()[graph.index("transform/resize")]
    assert point.measured and point.total_bytes == 3 * 34 * 48 * 4 + 8
    assert [t.name for t in point.data_tensors] == ["transform/resize_out"]
    assert point.shape_bytes == 8  # the two 0-d float image sizes the head reads later


def test_sample_needs_a_fixed_input_shape(model):
    with pytest.raises(ModelError, match="no fixed shape") as err:
        sample_feeds(SplitGraph(model))
    assert "input-shape" in str(err.value.allowed)


def test_split_by_layer_name_and_bad_splits(model):
    graph = SplitGraph(model)
    assert graph.index("backbone.body.layer2") == graph.index("backbone.body.layer2.add")  # last node of the scope
    assert graph.index("backbone/body/layer1") == graph.index("backbone.body.layer1.empty")
    assert graph.index("transform") == graph.index("transform/resize")
    with pytest.raises(SplitError, match=r"inside the subgraph of node 46 \(If 'postprocess/if'\).*nearest valid splits: 45"):
        graph.cut("sel_boxes")
    with pytest.raises(SplitError, match="no node name starts with it"):
        graph.cut("backbone.body.layer3")


def test_split_whose_cut_carries_only_the_graph_input():
    from tests.graphs import Builder, f32

    b = Builder()
    b.node("Constant", [], "c", outputs=["c"], value=onnx.numpy_helper.from_array(np.ones(1, np.float32)))
    b.node("Add", ["x", "c"], "add", outputs=["y"])
    b.node("Relu", ["y"], "relu", outputs=["z"])
    graph = SplitGraph(b.model([f32("x", [1, 4])], [f32("z", [1, 4])], "g"))
    with pytest.raises(SplitError, match=r"read only the graph input.*nearest valid splits: 1"):
        graph.cut(0)


def test_fp16_converts_a_graph_with_an_if_body(model, adapter):
    built = variants.variant("fp16", {}).build(model.SerializeToString())
    fp16 = onnx.load_from_string(built.model_bytes)
    assert any("If/Loop/Scan" in n for n in built.notes)
    x = {"images": (np.random.default_rng(1).random((1, 3, 40, 56)) * 255).astype(np.float32)}
    ref = make_session(model).run(None, x)
    got = make_session(fp16).run(None, x)
    assert [r.shape for r in ref] == [g.shape for g in got]
    assert np.abs(ref[0] - got[0]).max() < 1.0 and np.array_equal(ref[2], got[2])
    inits = {i.name: i.data_type for i in fp16.graph.initializer}
    assert inits["backbone.body.layer1.conv.w"] == onnx.TensorProto.FLOAT16
    # every split maps into the variant, and runs with every codec
    mapping = map_split_points(model, fp16, SplitGraph(model).valid_splits())
    assert mapping.errors == {}
    runner = SplitRunner(fp16, sorted(set(mapping.index.values())))
    head = run_head(runner, adapter, photo(4, width=56, height=40))
    outcomes = run_tasks(runner, adapter, head, [(s, c) for s in runner.splits for c in EVERY_CODEC])
    assert [o.error for o in outcomes if not o.ok] == []


def test_int8_static_on_a_graph_with_an_if_body(model, adapter):
    rng = np.random.default_rng(2)
    calibration = [{"images": (rng.random((1, 3, 40, 56)) * 255).astype(np.float32)} for _ in range(2)]
    built = variants.variant("int8-static", {"images": 2}).build(model.SerializeToString(), calibration=calibration)
    q = onnx.load_from_string(built.model_bytes)
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    mapping = map_split_points(model, q, SplitGraph(model).valid_splits())
    assert mapping.index  # most splits map
    for k, why in mapping.errors.items():  # the others say why, and fail alone
        assert f"split {k}" in why
    runner = SplitRunner(q, sorted(set(mapping.index.values())), skip_invalid=True)
    assert runner.invalid == {}
    head = run_head(runner, adapter, photo(5, width=56, height=40))
    outcomes = run_tasks(runner, adapter, head, [(NO_SPLIT, codecs.setting("none"))]
                         + [(s, c) for s in runner.splits for c in EVERY_CODEC[:3]])
    assert [o.error for o in outcomes if not o.ok] == []


def test_runner_skips_invalid_splits_when_asked(model):
    runner = SplitRunner(model, [3, 46], skip_invalid=True)
    assert runner.splits == (3,) and isinstance(runner.invalid[46], SplitError)
    with pytest.raises(SplitError):
        SplitRunner(model, [3, 46])


def test_inspect_measures_suggests_and_plots(model, tmp_path, capsys):
    path = tmp_path / "exp.onnx"
    onnx.save(model, path)
    assert main(["inspect", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "--input-shape" in doc["note"] and any(p["total_bytes"] is None for p in doc["split_points"])
    assert main(["inspect", str(path), "--json", "--input-shape", "images=1x3x40x56", "--suggest",
                 "--plot", str(tmp_path / "cuts.svg")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(p["total_bytes"] is not None for p in doc["split_points"] if p["valid"])
    resize = next(p for p in doc["split_points"] if p["node_name"] == "transform/resize")
    assert resize["measured"] and resize["data_bytes"] == 3 * 34 * 48 * 4 and resize["shape_bytes"] == 8
    picks = doc["suggestions"]
    assert picks and all(1 <= s["feature_maps"] <= 4 for s in picks)
    assert [s["split"] for s in picks] == sorted(s["split"] for s in picks)
    by_split = {p["split"]: p for p in doc["split_points"]}
    for s in picks:  # a local minimum: no neighbour with fewer data bytes on either side of its plateau
        assert by_split[s["split"]]["data_bytes"] == s["data_bytes"]
    assert all(s["head_macs"] is not None for s in picks)
    assert (tmp_path / "cuts.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert main(["inspect", str(path), "--input-shape", "images=1x3x40x56", "--valid-only"]) == 0
    text = capsys.readouterr().out
    assert "1 feature map 19.1 KiB + 2 shape tensors 8 B" in text and "*" in text


def _spec_with_photos(tmp_path, model) -> str:
    from tasks.images import encode_png

    onnx.save(model, tmp_path / "exp.onnx")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(encode_png(photo(1, width=96, height=64)))  # first: 96 wide → 32 rows
    (tmp_path / "imgs" / "b.png").write_bytes(encode_png(photo(2, width=56, height=40)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""sweep: exp
output: res
dataset: {{type: folder, path: imgs}}
evaluation: {{mode: reference}}
models:
  - name: exp
    path: exp.onnx
    adapter: {json.dumps({ADAPTER["type"]: {k: v for k, v in ADAPTER.items() if k != "type"}})}
    splits: [transform/resize, backbone.body.layer2]
codecs:
  none: {{}}
""")
    return str(spec)


def test_inspect_and_plan_measure_on_the_specs_first_image(model, tmp_path, capsys):
    spec = _spec_with_photos(tmp_path, model)
    assert main(["inspect", "--spec", spec, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "first image" in doc["note"] and "a.png" in doc["note"]
    resize = next(p for p in doc["split_points"] if p["node_name"] == "transform/resize")
    assert resize["measured"] and resize["data_bytes"] == 3 * 32 * 48 * 4  # 64×96 resized to 32×48
    assert all(p["total_bytes"] is not None for p in doc["split_points"] if p["valid"])
    assert main(["plan", spec]) == 0
    text = capsys.readouterr().out
    assert "what crosses each split" in text and "1: 18.0 KiB*" in text and "first image" in text
    assert main(["inspect", "--spec", spec, "--model-name", "nope"]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err


def test_macs_of_an_exporter_graph_with_measured_shapes(model):
    from tasks.cutsizes import mac_shapes
    from tasks.macs import count_macs

    shapes = {"images": (1, 3, 40, 56)}
    with pytest.raises(ModelError, match="not static"):
        count_macs(model, input_shapes=shapes)  # the convs behind the in-graph resize
    known = mac_shapes(model, input_shapes=shapes)
    assert known and all(all(isinstance(d, int) for d in s) for s in known.values())
    cost = count_macs(model, input_shapes=shapes, known_shapes=known)
    assert cost.total_macs > 0
    # the same count as with every shape given by a run of the model at that size
    graph = SplitGraph(model, input_shapes=shapes)
    measure_into(graph)
    assert count_macs(model, input_shapes=shapes, known_shapes=graph.measured_shapes()).total_macs == cost.total_macs
