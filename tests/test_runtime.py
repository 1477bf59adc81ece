"""make_session options and SplitRunner: head once for all splits, cached tails, exact results."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest

from tasks.errors import ModelError, SpecError, SplitError
from tasks.runtime import OPTIMIZATIONS, HeadResult, SplitRunner, TailResult, make_session
from tests import graphs


def test_session_thread_and_execution_options() -> None:
    session = make_session(graphs.chain(), threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert session.get_providers() == ["CPUExecutionProvider"]
    fast = make_session(graphs.chain().SerializeToString(), optimization="all")
    assert fast.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert make_session(graphs.chain()).get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize(("kwargs", "key"), [({"threads": 0}, "threads"), ({"threads": True}, "threads"),
                                             ({"optimization": "max"}, "optimization")])
def test_bad_session_options(kwargs, key) -> None:
    with pytest.raises(SpecError) as err:
        make_session(graphs.chain(), **kwargs)
    assert err.value.key == key and err.value.allowed
    if key == "optimization":
        assert err.value.allowed == ", ".join(OPTIMIZATIONS)


def test_unloadable_model_is_a_model_error() -> None:
    model = graphs.chain()
    model.graph.node[1].op_type = "NoSuchOp"
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        make_session(model)


def test_runner_head_and_tails_match_the_whole_model() -> None:
    model = graphs.side_input()
    feeds = graphs.feeds_for(model)
    full = make_session(model).run(None, feeds)
    runner = SplitRunner(model, [0, "body_relu_out", 9])
    assert runner.splits == (0, 3, 9)
    assert runner.input_names == ("images", "scale")
    assert runner.output_names == ("stem", "scores", "boxes")
    head = runner.run_head(feeds)
    assert isinstance(head, HeadResult) and head.seconds > 0
    assert list(head.outputs) == ["stem", "scores", "boxes"]
    for name, value in zip(runner.output_names, full):
        assert np.array_equal(head.outputs[name], value)
    assert set(head.tensors) == {t for k in runner.splits for t in runner.cut(k).tensors}
    for k in runner.splits:
        cut = runner.cut(k)
        sent = head.tensors_for(cut)
        assert list(sent) == list(cut.tensors)
        assert runner.side_feeds(k, feeds).keys() == {"scale"}
        tail = runner.run_tail(k, sent, feeds)
        assert isinstance(tail, TailResult) and tail.seconds > 0
        assert list(tail.outputs) == list(runner.output_names)
        for name, value in zip(runner.output_names, full):
            assert np.array_equal(tail.outputs[name], value), (k, name)
    # a changed cut tensor changes the result: the tail really reads what it is given
    cut = runner.cut(3)
    changed = {name: value + 1 for name, value in head.tensors_for(cut).items()}
    assert not np.array_equal(runner.run_tail(3, changed, feeds).outputs["boxes"], head.outputs["boxes"])


def test_runner_side_inputs_reach_the_tail() -> None:
    model = graphs.side_input()
    feeds = graphs.feeds_for(model)
    runner = SplitRunner(model, [5])
    head = runner.run_head(feeds)
    doubled = dict(feeds, scale=feeds["scale"] * 2)
    out = runner.run_tail(5, head.tensors_for(runner.cut(5)), doubled)
    assert np.array_equal(out.outputs["boxes"], head.outputs["boxes"] * 2)


def test_tail_sessions_are_built_once() -> None:
    runner = SplitRunner(graphs.chain(), [3, 7])
    assert runner.tail_session(3) is runner.tail_session("conv2_out")
    assert runner.tail_session(3) is not runner.tail_session(7)
    # a split the head was not asked for still has a tail (the caller brings its tensors)
    feeds = graphs.feeds_for(graphs.chain())
    full = make_session(graphs.chain()).run(None, feeds)[0]
    head = SplitRunner(graphs.chain(), [5]).run_head(feeds)
    assert np.array_equal(runner.run_tail(5, head.tensors_for(runner.cut(5)), feeds).outputs["y"], full)


def test_runner_without_splits_runs_the_whole_model() -> None:
    model = graphs.fpn()
    feeds = graphs.feeds_for(model)
    head = SplitRunner(model, []).run_head(feeds)
    assert head.tensors == {}
    assert np.array_equal(head.outputs["features"], make_session(model).run(None, feeds)[0])


def test_runner_errors() -> None:
    model = graphs.side_input()
    with pytest.raises(SplitError):
        SplitRunner(model, [11])
    runner = SplitRunner(model, [2])
    with pytest.raises(ModelError) as err:
        runner.run_head({"images": graphs.feeds_for(model)["images"]})
    assert err.value.key == "feeds" and err.value.allowed == "images, scale"
    with pytest.raises(ValueError, match="cut tensors missing"):
        runner.run_tail(2, {}, graphs.feeds_for(model))


def test_results_are_frozen() -> None:
    runner = SplitRunner(graphs.chain(), [2])
    head = runner.run_head(graphs.feeds_for(graphs.chain()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.seconds = 0.0  # type: ignore[misc]


def test_input_shapes_reach_the_sessions() -> None:
    model = graphs.symbolic_batch()
    runner = SplitRunner(model, [1], input_shapes={"x": (2, 3, 6, 6)})
    assert runner.cut(1).raw_bytes == 2 * 4 * 6 * 6 * 4
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)}
    head = runner.run_head(feeds)
    out = runner.run_tail(1, head.tensors_for(runner.cut(1)), feeds)
    assert out.outputs["y"].shape == (2, 4, 1, 1)
    assert np.array_equal(out.outputs["y"], make_session(model).run(None, feeds)[0])


@pytest.mark.parametrize("builder", [graphs.fusion_patterns, graphs.qdq, graphs.chain])
def test_exact_sessions_split_bit_for_bit(builder) -> None:
    """Every split of graphs onnxruntime would otherwise fuse across (BatchNorm folding,
    MatMul+Add -> Gemm, Gelu, LayerNorm, QDQ, Conv+Add+Relu) gives the unsplit result exactly."""
    model = builder()
    feeds = graphs.feeds_for(model)
    runner = SplitRunner(model, [])
    full = make_session(model).run(None, feeds)
    valid = runner.graph.valid_splits()
    head = SplitRunner(model, valid).run_head(feeds)
    for k in valid:
        out = runner.run_tail(k, head.tensors_for(runner.cut(k)), feeds)
        for name, value in zip(runner.output_names, full):
            assert np.array_equal(out.outputs[name], value), (k, runner.cut(k).node_name)


def test_cut_tensor_of_unknown_rank_still_runs() -> None:
    """onnx cannot infer the Loop output's shape here; onnxruntime runs heads and tails that
    declare it with a type only (onnx.checker would want a shape)."""
    model = graphs.control_flow(annotate=False)
    feeds = graphs.feeds_for(model)
    runner = SplitRunner(model, [5, 6])
    assert runner.cut(6).tensor_infos[1].shape is None
    head = runner.run_head(feeds)
    full = make_session(model).run(None, feeds)[0]
    for k in (5, 6):
        assert np.array_equal(runner.run_tail(k, head.tensors_for(runner.cut(k)), feeds).outputs["y"], full)
