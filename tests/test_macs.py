"""MAC and parameter counts against hand-computed values; head + tail = total at every split."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.errors import ModelError, SplitError
from tasks.macs import count_macs, count_params, macs_by_split, measure_latency, split_macs


def _model(nodes, inputs, outputs, inits, opset=17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[n] for n in outputs)
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def _w(*shape):
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def _single(node, x_shape, inits):
    return _model([node], [("x", x_shape)], [node.output[0]], inits)


def test_conv_stride_pad():
    # 1×3×32×32, 16 filters 3×3, stride 2, pad 1 → 1×16×16×16; each output: 3·3·3 MACs.
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    cost = count_macs(_single(node, [1, 3, 32, 32], {"w": _w(16, 3, 3, 3), "b": _w(16)}))
    assert cost.total_macs == 16 * 16 * 16 * 27 == 110_592
    assert cost.params == 16 * 27 + 16


def test_conv_groups():
    # 8 → 8 channels in 2 groups of 4, 3×3, no pad: out 8×8×8, each output sees 4·3·3 inputs.
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2)
    cost = count_macs(_single(node, [1, 8, 10, 10], {"w": _w(8, 4, 3, 3)}))
    assert cost.total_macs == 8 * 8 * 8 * 36 == 18_432


def test_depthwise_dilated():
    # depthwise 3×3, dilation 2, pad 2 keeps 10×10: 8·10·10 outputs × 9 MACs.
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=8, dilations=[2, 2], pads=[2, 2, 2, 2])
    cost = count_macs(_single(node, [2, 8, 10, 10], {"w": _w(8, 1, 3, 3)}))
    assert cost.total_macs == 2 * 8 * 10 * 10 * 9 == 14_400


def test_conv_transpose():
    # every one of the 4·5·5 inputs is spread over Cout/groups · 3·3 = 2·9 outputs.
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    cost = count_macs(_single(node, [1, 4, 5, 5], {"w": _w(4, 2, 3, 3)}))
    assert cost.total_macs == 100 * 18 == 1_800


def test_gemm_trans_a():
    # A is K×M = 20×5 with transA: M·N·K = 5·7·20.
    node = helper.make_node("Gemm", ["x", "b", "c"], ["y"], transA=1)
    cost = count_macs(_single(node, [20, 5], {"b": _w(20, 7), "c": _w(7)}))
    assert cost.total_macs == 5 * 7 * 20 == 700


def test_batched_matmul():
    node = helper.make_node("MatMul", ["x", "b"], ["y"])
    cost = count_macs(_single(node, [2, 3, 4, 5], {"b": _w(5, 6)}))
    assert cost.total_macs == 2 * 3 * 4 * 6 * 5 == 720


def _chain():
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),  # 8·16·16·27 = 55_296
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=8, pads=[1, 1, 1, 1]),  # 8·16·16·9 = 18_432
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"]),  # 1·10·8 = 80
    ]
    inits = {"w1": _w(8, 3, 3, 3), "w2": _w(8, 1, 3, 3), "g": _w(8, 10)}
    return _model(nodes, [("x", [1, 3, 16, 16])], ["y"], inits)


def test_head_plus_tail_is_total_at_every_split():
    model = _chain()
    cost = count_macs(model)
    assert cost.total_macs == 55_296 + 18_432 + 80
    assert [n.macs for n in cost.nodes] == [55_296, 0, 18_432, 0, 0, 80]
    cumulative = macs_by_split(model)
    assert cumulative == [55_296, 55_296, 73_728, 73_728, 73_728, 73_808]
    for k in range(-1, len(model.graph.node)):
        head, tail = split_macs(model, k)
        assert head + tail == cost.total_macs
        assert head == (0 if k < 0 else cumulative[k])
    assert split_macs(cost, 2) == (73_728, 80)
    with pytest.raises(SplitError, match="out of range"):
        split_macs(cost, 6)


def test_symbolic_dims_need_input_shapes():
    node = helper.make_node("Conv", ["x", "w"], ["y"])
    model = _single(node, ["N", 3, 8, 8], {"w": _w(4, 3, 3, 3)})
    with pytest.raises(ModelError, match="not static"):
        count_macs(model)
    assert count_macs(model, input_shapes={"x": [2, 3, 8, 8]}).total_macs == 2 * 4 * 6 * 6 * 27
    with pytest.raises(ModelError, match="no such graph input"):
        count_macs(model, input_shapes={"image": [1, 3, 8, 8]})


def test_quantized_ops_count_the_same_macs():
    """ConvInteger / MatMulInteger from onnxruntime's dynamic quantizer, QLinearConv by hand."""
    from tasks.variants import variant

    model = _chain()
    expected = count_macs(model).total_macs
    dynamic = variant("int8-dynamic", {"conv": True}).build(model)
    ops = {n.op_type for n in dynamic.model.graph.node}
    assert {"ConvInteger", "MatMulInteger"} <= ops
    assert count_macs(dynamic.model_bytes).total_macs == expected

    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, np.uint8), "z")
    wzp = numpy_helper.from_array(np.array(0, np.int8), "wz")
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.int8), "w")
    node = helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "wz", "s", "z"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "q",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 8, 16, 16])],
        [scale, zp, wzp, w],
    )
    qmodel = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert count_macs(qmodel).total_macs == 55_296


def test_params_skip_int64_and_count_constants():
    const = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([0, 2, 0], np.float32)))
    nodes = [const, helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Reshape", ["m", "shape"], ["y"])]
    model = _model(nodes, [("x", [1, 3])], ["y"], {"shape": np.array([1, -1], np.int64)})
    counted = count_params(model)
    assert (counted.params, counted.nonzero_params) == (3, 1)


def test_measure_latency_runs_the_model():
    model = _chain()
    x = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    seconds = measure_latency(model.SerializeToString(), {"x": x}, threads=1, repeats=3)
    assert 0 < seconds < 60
