"""SplitGraph: cuts, split-point table, head / tail / multi-head models, and their errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tasks.errors import ModelError, SplitError
from tasks.graph import Cut, SplitGraph, TensorInfo, format_ranges
from tasks.runtime import make_session
from tests import graphs

SMALL = {
    "chain": graphs.chain,
    "fpn": graphs.fpn,
    "side_input": graphs.side_input,
    "control_flow": graphs.control_flow,
}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = make_session(model)
    names = [i.name for i in session.get_inputs()]
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {n: feeds[n] for n in names})))


def _index(graph: SplitGraph, node_name: str) -> int:
    return next(i for i in range(graph.num_nodes) if graph.node(i).name == node_name)


def check_splits(
    model: onnx.ModelProto, splits: list[int], feeds_list: list[dict[str, np.ndarray]], *, heads_every: int = 1
) -> None:
    """tail(cut tensors) == whole model, bit for bit; the multi-head's cut tensors == the prefix
    head's (checked, with onnx.checker's full check, on every ``heads_every``-th split)."""
    graph = SplitGraph(model)
    multi = make_session(graph.multi_head_model(splits))
    multi_names = [o.name for o in multi.get_outputs()]
    assert multi_names[: len(graph.output_names)] == list(graph.output_names)
    for feeds in feeds_list:
        full = _run(model, feeds)
        everything = dict(zip(multi_names, multi.run(None, feeds)))
        for name in graph.output_names:
            assert np.array_equal(everything[name], full[name])
        for i, k in enumerate(splits):
            cut = graph.cut(k)
            tail = graph.tail_model(k)
            sent = {name: everything[name] for name in cut.tensors}
            if i % heads_every == 0:
                head = graph.head_model(k)
                onnx.checker.check_model(head, full_check=True)
                onnx.checker.check_model(tail, full_check=True)
                from_head = _run(head, feeds)
                assert list(from_head) == list(cut.tensors)
                for name in cut.tensors:
                    assert np.array_equal(from_head[name], sent[name]), (k, name)
            else:
                onnx.checker.check_model(tail)
            tail_feeds = dict(sent, **{s: feeds[s] for s in cut.side_inputs})
            session = make_session(tail)
            assert [i.name for i in session.get_inputs()] == [*cut.tensors, *cut.side_inputs]
            out = dict(zip([o.name for o in session.get_outputs()], session.run(None, tail_feeds)))
            assert list(out) == list(graph.output_names)
            for name in graph.output_names:
                assert np.isfinite(full[name]).all()
                assert np.array_equal(out[name], full[name]), (k, name)


@pytest.mark.parametrize("name", list(SMALL))
def test_every_valid_split_reproduces_the_whole_model_exactly(name: str) -> None:
    model = SMALL[name]()
    feeds = [graphs.feeds_for(model, seed=0), graphs.feeds_for(model, seed=1)]
    if name == "control_flow":
        feeds.append({"x": np.zeros((1, 4, 8, 8), np.float32)})  # mean below threshold: the else branch
    splits = SplitGraph(model).valid_splits()
    assert len(splits) >= 6
    check_splits(model, splits, feeds)


def test_control_flow_test_feeds_take_both_if_branches() -> None:
    model = graphs.control_flow()
    graph = SplitGraph(model)
    head = graph.head_model(3)
    feeds = (graphs.feeds_for(model), {"x": np.zeros((1, 4, 8, 8), np.float32)})
    taken = {bool(_run(head, f)["positive_out"]) for f in feeds}
    assert taken == {True, False}


def test_fusion_patterns_and_qdq_split_exactly() -> None:
    for model in (graphs.fusion_patterns(), graphs.qdq()):
        check_splits(model, SplitGraph(model).valid_splits(), [graphs.feeds_for(model)])


def test_chain_table() -> None:
    graph = SplitGraph(graphs.chain())
    points = graph.split_points()
    assert graph.num_nodes == len(points) == 13
    assert [p.valid for p in points] == [False] + [True] * 11 + [False]
    assert "constants" in points[0].reason and "nothing is left" in points[12].reason
    # cut after conv2: its output and the skip connection relu1 -> add2
    p3 = points[3]
    assert (p3.op_type, p3.node_name, p3.branches) == ("Conv", "conv2", 2)
    assert [t.name for t in p3.tensors] == ["relu1_out", "conv2_out"]
    assert [t.shape for t in p3.tensors] == [(1, 8, 16, 16)] * 2
    assert p3.total_bytes == 2 * 8 * 16 * 16 * 4
    assert points[10].total_bytes == 8 * 4
    # the Constant's value is recomputed by the tail, never sent
    assert all("half" not in {t.name for t in p.tensors} for p in points)
    assert graph.valid_splits() == list(range(1, 12))


def test_fpn_cut_sends_the_skip_connections() -> None:
    graph = SplitGraph(graphs.fpn())
    cut = graph.cut("c3_relu_out")
    assert cut.split == _index(graph, "c3_relu")
    assert cut.tensors == ("c1_relu_out", "c2_relu_out", "c3_relu_out")
    assert [i.shape for i in cut.tensor_infos] == [(1, 8, 16, 16), (1, 12, 8, 8), (1, 16, 4, 4)]
    assert cut.raw_bytes == (8 * 16 * 16 + 12 * 8 * 8 + 16 * 4 * 4) * 4 == 12288
    assert cut.side_inputs == () and cut.early_outputs == () and cut.side_bytes == 0
    # after the first top-down Add: lateral l1 still waits, p2 goes both up and to its head
    cut = graph.cut("p2_add_out")
    assert set(cut.tensors) == {"lat1_out", "lat3_out", "p2_add_out"}


def test_side_inputs_and_early_outputs() -> None:
    graph = SplitGraph(graphs.side_input())
    for k in graph.valid_splits():
        cut = graph.cut(k)
        assert cut.side_inputs == ("scale",)
        assert cut.side_infos == (TensorInfo("scale", "float32", (1, 1, 4)),)
        assert cut.side_bytes == 16
        assert cut.early_outputs == (() if k == 0 else ("stem",) if k < 9 else ("stem", "scores"))
        assert set(cut.early_outputs) <= set(cut.tensors)
    assert [i.name for i in graph.head_model(0).graph.input] == ["images"]
    tail = graph.tail_model(1)
    assert [i.name for i in tail.graph.input] == ["stem", "scale"]
    assert [o.name for o in tail.graph.output] == ["stem", "scores", "boxes"]


def test_control_flow_cut_includes_tensors_read_inside_bodies() -> None:
    graph = SplitGraph(graphs.control_flow())
    # a is read only by the If's then branch, the nested If and the Loop body
    assert graph.cut(4).tensors == ("conv0_out", "relu0_out", "positive_out", "square_out")
    # after the If, the Loop body still reads a (conv0_out) and b (relu0_out)
    assert graph.cut(5).tensors == ("conv0_out", "relu0_out", "branch_out")
    assert graph.cut(6).tensors == ("branch_out", "repeat_out")
    assert graph.cut(6).tensor_infos[1] == TensorInfo("repeat_out", "float32", (1, 4, 8, 8))


def test_unannotated_loop_output_has_unknown_shape() -> None:
    graph = SplitGraph(graphs.control_flow(annotate=False))
    info = graph.cut(6).tensor_infos[1]
    assert (info.dtype, info.shape, info.nbytes, info.describe()) == ("float32", None, None, "float32[...]")
    assert graph.split_points()[6].total_bytes is None


def test_tail_takes_only_what_it_uses() -> None:
    model = graphs.chain()
    graph = SplitGraph(model)
    tail = graph.tail_model(7)
    ops = [n.op_type for n in tail.graph.node]
    assert ops[0] == "Constant"  # recomputed, not sent
    assert {t.name for t in tail.graph.initializer} == set()
    head = graph.head_model(7)
    assert "Constant" not in [n.op_type for n in head.graph.node]
    assert {t.name for t in head.graph.initializer} == {f"conv{i}.{p}" for i in (1, 2, 3) for p in "wb"}
    for sub in (head, tail):
        assert sub.ir_version == model.ir_version == 8
        assert list(sub.opset_import) == list(model.opset_import)


def test_sub_models_keep_ir_version_value_info_and_domains() -> None:
    model = graphs.control_flow()
    model.ir_version = 7
    model.opset_import.append(onnx.helper.make_operatorsetid("ai.onnx.ml", 3))
    model.graph.value_info.append(graphs.f32("branch_out", [1, 4, 8, 8]))
    graph = SplitGraph(model)
    tail = graph.tail_model(4)
    assert tail.ir_version == 7
    assert [(o.domain, o.version) for o in tail.opset_import] == [("", 17), ("ai.onnx.ml", 3)]
    assert {v.name for v in tail.graph.value_info} == {"branch_out", "repeat_out"}
    onnx.checker.check_model(tail, full_check=True)


def test_multi_head_adds_each_cut_tensor_once() -> None:
    graph = SplitGraph(graphs.side_input())
    multi = graph.multi_head_model([2, 3, "scores"])
    names = [o.name for o in multi.graph.output]
    assert names == ["stem", "scores", "boxes", "body_out", "body_relu_out", "box_t_out"]
    assert len(multi.graph.node) == graph.num_nodes
    onnx.checker.check_model(multi, full_check=True)


def test_split_by_tensor_name_and_numeric_string() -> None:
    graph = SplitGraph(graphs.chain())
    assert graph.cut("relu1_out").split == 2
    assert graph.cut("3").split == 3
    assert graph.cut(np.int64(4)).split == 4
    cut = graph.cut(2)
    assert isinstance(cut, Cut) and (cut.node_name, cut.op_type) == ("relu1", "Relu")


@pytest.mark.parametrize("split", [13, 12, -1, 100])
def test_out_of_range_split(split: int) -> None:
    graph = SplitGraph(graphs.chain(), )
    with pytest.raises(SplitError) as err:
        graph.cut(split)
    assert err.value.key == "split"
    assert err.value.allowed == "0..11 (valid: see `splitsweep inspect`)"
    assert str(split) in err.value.message


def test_empty_cut_explains_why() -> None:
    graph = SplitGraph(graphs.chain())
    with pytest.raises(SplitError) as err:
        graph.cut(0)
    assert err.value.key == "split"
    assert err.value.allowed == "1-11"
    assert "Constant 'half'" in err.value.message and "empty" in err.value.message


@pytest.mark.parametrize(
    ("name", "words"),
    [("relu_1_out", "did you mean 'relu1_out'"), ("x", "graph input"), ("conv1.w", "initializer"), ("zzz", "no node")],
)
def test_unknown_tensor_name(name: str, words: str) -> None:
    graph = SplitGraph(graphs.chain())
    with pytest.raises(SplitError) as err:
        graph.cut(name)
    assert err.value.key == "split"
    assert "node output name" in err.value.allowed and "splitsweep inspect" in err.value.allowed
    assert words in err.value.message


def test_missing_file_and_not_onnx(tmp_path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as err:
        SplitGraph(missing)
    assert err.value.file == str(missing) and "not found" in err.value.message
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    with pytest.raises(ModelError) as err:
        SplitGraph(str(text))
    assert err.value.file == str(text) and "not an ONNX model" in err.value.message
    with pytest.raises(ModelError, match="not an ONNX model"):
        SplitGraph(b"\x00\x01garbage")
    with pytest.raises(ModelError, match="not a file"):
        SplitGraph(tmp_path)


def test_path_and_bytes_load_the_same_graph(tmp_path) -> None:
    model = graphs.fpn()
    path = tmp_path / "fpn.onnx"
    onnx.save(model, str(path))
    from_path, from_bytes = SplitGraph(path), SplitGraph(model.SerializeToString())
    assert from_path.file == str(path) and from_bytes.file is None
    assert from_path.split_points() == from_bytes.split_points() == SplitGraph(model).split_points()


def test_nodes_out_of_order_are_refused() -> None:
    model = graphs.chain()
    nodes = list(model.graph.node)
    model.graph.ClearField("node")
    model.graph.node.extend([nodes[0], nodes[2], nodes[1], *nodes[3:]])
    with pytest.raises(ModelError, match="topological order"):
        SplitGraph(model)


def test_input_shapes_fix_symbolic_dims() -> None:
    model = graphs.symbolic_batch()
    loose = SplitGraph(model).cut(0).tensor_infos[0]
    assert loose.shape[:2] == ("N", 4) and all(isinstance(d, str) for d in loose.shape[2:])
    assert loose.nbytes is None and SplitGraph(model).split_points()[0].total_bytes is None
    fixed = SplitGraph(model, input_shapes={"x": (2, 3, 10, 12)})
    assert fixed.cut(0).tensor_infos[0] == TensorInfo("conv_out", "float32", (2, 4, 10, 12))
    assert fixed.split_points()[1].total_bytes == 2 * 4 * 10 * 12 * 4
    assert [d.dim_value for d in fixed.tail_model(0).graph.input[0].type.tensor_type.shape.dim] == [2, 4, 10, 12]
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["N", "", "H", "W"]  # untouched


@pytest.mark.parametrize(
    ("shapes", "key"),
    [
        ({"images": (1, 3, 8, 8)}, "input_shapes"),
        ({"x": (1, 3, 8)}, "input_shapes.x"),
        ({"x": (1, 4, 8, 8)}, "input_shapes.x"),
    ],
)
def test_bad_input_shapes(shapes, key) -> None:
    with pytest.raises(ModelError) as err:
        SplitGraph(graphs.symbolic_batch(), input_shapes=shapes)
    assert err.value.key == key and err.value.allowed


def test_format_ranges() -> None:
    assert format_ranges([0, 1, 2, 3, 5, 7, 8]) == "0-3, 5, 7-8"
    assert format_ranges([]) == "none"


# ---- the ~2,000-node ResNet-FPN --------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_fpn() -> onnx.ModelProto:
    return graphs.resnet_fpn()


def _expected_nodes() -> int:
    blocks = sum(b for b, _, _ in graphs.RESNET_FPN_STAGES)
    stages = len(graphs.RESNET_FPN_STAGES)
    return 3 + 7 * blocks + stages + (stages + 2 * (stages - 1) + stages) + 2 * 6 * stages + 3


def test_resnet_fpn_table(resnet_fpn) -> None:
    graph = SplitGraph(resnet_fpn)
    points = graph.split_points()
    assert len(points) == graph.num_nodes == _expected_nodes() == 1997
    assert graph.valid_splits() == list(range(1996))
    # end of stage 1: stage 0's output (1x8x8x8) waits for the FPN, stage 1's (1x12x4x4) goes on
    last = graphs.RESNET_FPN_STAGES[1][0] - 1
    p = points[_index(graph, f"s1b{last}_relu")]
    assert [t.name for t in p.tensors] == [f"s0b{graphs.RESNET_FPN_STAGES[0][0] - 1}_relu_out", f"s1b{last}_relu_out"]
    assert p.total_bytes == (8 * 8 * 8 + 12 * 4 * 4) * 4 == 2816
    # inside a stage-2 block: two waiting stage outputs, the block input (skip) and the branch
    p = points[_index(graph, "s2b5_conv2")]
    assert p.branches == 4
    assert p.total_bytes == (8 * 8 * 8 + 12 * 4 * 4 + 16 * 2 * 2 + 8 * 2 * 2) * 4
    # the Constant shape nodes of the heads never cross
    assert not any(t.name.endswith("_shape") for q in points for t in q.tensors)


def _sample(valid: list[int], n: int = 40) -> list[int]:
    step = len(valid) / n
    return sorted({valid[int(i * step)] for i in range(n)} | {valid[-1]})


def test_resnet_fpn_sampled_splits_reproduce_exactly(resnet_fpn) -> None:
    graph = SplitGraph(resnet_fpn)
    splits = _sample(graph.valid_splits())
    assert len(splits) == 41
    check_splits(resnet_fpn, splits, [graphs.feeds_for(resnet_fpn)], heads_every=4)


@pytest.mark.slow
def test_resnet_fpn_every_split_reproduces_exactly(resnet_fpn) -> None:
    graph = SplitGraph(resnet_fpn)
    feeds = graphs.feeds_for(resnet_fpn)
    full = _run(resnet_fpn, feeds)
    valid = graph.valid_splits()
    multi = make_session(graph.multi_head_model(valid))
    everything = dict(zip([o.name for o in multi.get_outputs()], multi.run(None, feeds)))
    for k in valid:
        cut = graph.cut(k)
        out = _run(graph.tail_model(k), {name: everything[name] for name in cut.tensors})
        for name in graph.output_names:
            assert np.array_equal(out[name], full[name]), (k, name)
