"""Model variants on small graphs built here, run in onnxruntime."""

from __future__ import annotations

import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.errors import SplitsweepError, VariantError
from tasks.macs import count_macs
from tasks.variants import VARIANTS, variant, variant_key, variant_label
from tasks.variants.prune import magnitude_masks

# --- graphs -----------------------------------------------------------------------


def _finish(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[n] for n in outputs)
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def small_detector(seed: int = 0, width: int = 16) -> onnx.ModelProto:
    """A CenterNet-shaped toy: stem conv, depthwise, pointwise + BN, upsample, two heads."""
    rng = np.random.default_rng(seed)
    c1, c2 = width, 2 * width

    def w(*shape, scale=None):
        fan = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return (rng.normal(size=shape) * (scale or (2 / fan) ** 0.5)).astype(np.float32)

    inits = {
        "w1": w(c1, 3, 3, 3), "b1": w(c1, scale=0.1),
        "wd": w(c1, 1, 3, 3), "bd": w(c1, scale=0.1),
        "w2": w(c2, c1, 1, 1), "b2": w(c2, scale=0.1),
        "bn_s": (1 + 0.1 * rng.normal(size=c2)).astype(np.float32), "bn_b": w(c2, scale=0.1),
        "bn_m": w(c2, scale=0.1), "bn_v": (1 + 0.1 * np.abs(rng.normal(size=c2))).astype(np.float32),
        "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "w3": w(8, c2, 3, 3), "b3": w(8, scale=0.1),
        "w4": w(4, c2, 1, 1), "b4": w(4, scale=0.1),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1], name="stem"),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["a1"], name="relu6"),
        helper.make_node("Conv", ["a1", "wd", "bd"], ["cd"], group=c1, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("Relu", ["cd"], ["ad"], name="relu_dw"),
        helper.make_node("Conv", ["ad", "w2", "b2"], ["c2"], name="pw"),
        helper.make_node("BatchNormalization", ["c2", "bn_s", "bn_b", "bn_m", "bn_v"], ["n2"], name="bn"),
        helper.make_node("Relu", ["n2"], ["a2"], name="relu2"),
        helper.make_node("Resize", ["a2", "", "scales"], ["u2"], mode="nearest", name="up"),
        helper.make_node("Conv", ["u2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], name="head_cls"),
        helper.make_node("Sigmoid", ["c3"], ["heatmap"], name="sigmoid"),
        helper.make_node("Conv", ["u2", "w4", "b4"], ["boxes"], name="head_box"),
    ]
    return _finish(nodes, [("x", [1, 3, 32, 32])], ["heatmap", "boxes"], inits)


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {
        "g": (rng.normal(size=(256, 256)) / 16).astype(np.float32),
        "gc": (rng.normal(size=256) * 0.1).astype(np.float32),
        "m": (rng.normal(size=(256, 64)) / 16).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "g", "gc"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "m"], ["y"]),
    ]
    return _finish(nodes, [("x", [4, 256])], ["y"], inits)


def _feeds(n: int, seed: int, high: float = 1.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(0, high, size=(1, 3, 32, 32)).astype(np.float32)} for _ in range(n)]


def _run(model, feeds) -> list[np.ndarray]:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _rel_err(out, ref) -> float:
    return max(float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max()) for a, b in zip(out, ref))


@pytest.fixture(scope="module")
def detector():
    return small_detector()


# --- registry and settings ----------------------------------------------------------


def test_registry_names_and_errors():
    assert set(VARIANTS) == {
        "fp32", "fp16", "int8-dynamic", "int8-static", "prune-magnitude", "prune-filters", "nncodec-weights"
    }
    with pytest.raises(VariantError, match="did you mean 'prune-filters'") as err:
        variant("prune-filter", file="sweep.yaml", key="variants[2]")
    assert "int8-static" in str(err.value) and err.value.file == "sweep.yaml"
    with pytest.raises(VariantError) as err:
        variant("int8-static", {"calib": 8}, key="variants[1]")
    assert err.value.key == "variants[1].calib" and "images" in err.value.allowed
    with pytest.raises(VariantError, match="invalid value 'kl'"):
        variant("int8-static", {"method": "kl"})
    with pytest.raises(VariantError, match="out of range"):
        variant("prune-filters", {"ratio": 1.0})
    with pytest.raises(VariantError, match="expected a number"):
        variant("prune-magnitude", {"sparsity": "half"})
    with pytest.raises(VariantError, match="allowed: no settings"):
        variant("fp16", {"bits": 16})


def test_labels_and_canonical_settings():
    assert variant_label("int8-static", {"images": 8}) == "int8-static minmax n=8"
    assert variant_label("int8-static", {"method": "Entropy", "images": 4, "per_channel": False}) == (
        "int8-static entropy n=4 per-tensor"
    )
    assert variant_label("nncodec-weights", {"qp": -24, "relative": True}) == "nncodec-weights qp=-24·σ"
    assert variant_label("prune-filters", {"ratio": 0.25}) == "prune-filters 25%"
    assert variant_label("prune-magnitude", {"sparsity": 0.9}) == "prune-magnitude 90%"
    assert variant_label("fp16") == "fp16"
    assert variant("int8-static", {}).canonical == variant("int8-static", {"images": 8, "method": "minmax"}).canonical


def test_variant_key_is_a_content_hash():
    a, b = b"model-a", b"model-b"
    key = variant_key(a, "int8-static", {"images": 2}, ["img1", "img2", "img3"])
    assert len(key) == 64 and int(key, 16) >= 0
    # Only the calibration images the build reads count; defaults equal explicit values.
    assert key == variant_key(a, "int8-static", {"images": 2, "method": "minmax"}, ["img1", "img2", "other"])
    assert key != variant_key(a, "int8-static", {"images": 2}, ["img2", "img1"])
    assert key != variant_key(b, "int8-static", {"images": 2}, ["img1", "img2"])
    assert key != variant_key(a, "int8-static", {"images": 2, "method": "entropy"}, ["img1", "img2"])
    # Families without calibration ignore the ids.
    assert variant_key(a, "fp16", None, ["x"]) == variant_key(a, "fp16", {}, [])
    with pytest.raises(VariantError):
        variant_key(a, "fp8", {}, [])


def test_fp32_is_the_model_with_its_costs(detector):
    built = variant("fp32").build(detector)
    data = detector.SerializeToString()
    assert built.model_bytes == data and built.file_bytes == len(data)
    assert built.transmission == "zlib-6" and built.transmission_bytes == len(zlib.compress(data, 6))
    assert built.params == sum(numpy_helper.to_array(i).size for i in detector.graph.initializer)
    assert built.macs == count_macs(detector).total_macs > 0
    assert built.settings == "{}"


# --- fp16 ---------------------------------------------------------------------------


def test_fp16_close_half_size_float32_io():
    model = small_detector(width=64)  # weights dominate the file, as in a real detector
    built = variant("fp16").build(model)
    fp32_bytes = len(model.SerializeToString())
    assert 0.45 < built.file_bytes / fp32_bytes < 0.55
    converted = built.model
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in converted.graph.input)
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in converted.graph.output)
    inits = {i.name: i.data_type for i in converted.graph.initializer}
    assert inits["w1"] == inits["bn_v"] == inits["lo"] == TensorProto.FLOAT16
    assert inits["scales"] == TensorProto.FLOAT  # Resize scales must stay float32
    # Intermediate (cut) tensors keep their names and are float16.
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(converted).graph.value_info}
    assert types["a1"] == types["u2"] == TensorProto.FLOAT16
    feeds = _feeds(1, seed=3)[0]
    ref, out = _run(model, feeds), _run(built.model_bytes, feeds)
    assert all(o.dtype == np.float32 for o in out)
    # float16 rounds every weight and activation to 11 significant bits (unit roundoff
    # u = 2^-11 ≈ 4.9e-4); through ~5 layers the error grows to a few u relative to the
    # output range, so 1e-2 is ~20 u of margin while a wrong cast would be far off.
    assert _rel_err(out, ref) < 1e-2
    assert _rel_err(out, ref) > 0  # it did compute in float16


def test_fp16_constant_nodes_and_cast_attributes():
    # Cast(to=float) and Constant nodes change type; Resize scales from a Constant stay float32.
    nodes = [
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32))),
        helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32))),
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Shape", ["m"], ["shp"]),
        helper.make_node("Cast", ["shp"], ["shp_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["shp_f"], ["n"], keepdims=1),
        helper.make_node("Div", ["m", "n"], ["d"]),
        helper.make_node("Resize", ["d", "", "s"], ["y"], mode="nearest"),
    ]
    model = _finish(nodes, [("x", [1, 3, 4, 4])], ["y"], {})
    built = variant("fp16").build(model)
    by_out = {n.output[0]: n for n in built.model.graph.node}
    assert by_out["k"].attribute[0].t.data_type == TensorProto.FLOAT16
    assert by_out["s"].attribute[0].t.data_type == TensorProto.FLOAT
    assert by_out["shp_f"].attribute[0].i == TensorProto.FLOAT16
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 4)).astype(np.float32)
    (ref,), (out,) = _run(model, {"x": x}), _run(built.model_bytes, {"x": x})
    assert out.dtype == np.float32 and out.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(out, ref, rtol=2e-3, atol=1e-4)


# --- int8 ---------------------------------------------------------------------------


def _scales(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_scale")}


def test_int8_static_calibration_sets_the_scales(detector):
    low, high = _feeds(4, seed=1, high=1.0), _feeds(4, seed=2, high=3.0)
    a = variant("int8-static", {"images": 4}).build(detector, calibration=low)
    b = variant("int8-static", {"images": 4}).build(detector, calibration=high)
    sa, sb = _scales(a.model), _scales(b.model)
    assert sa.keys() == sb.keys() and "x_scale" in sa
    # The input's range is [0, 1) vs [0, 3): its uint8 scale is range/255.
    assert sa["x_scale"] == pytest.approx(1 / 255, rel=0.01)
    assert sb["x_scale"] == pytest.approx(3 / 255, rel=0.01)
    assert not np.array_equal(sa["a2_scale"], sb["a2_scale"])
    assert np.array_equal(sa["w1_scale"], sb["w1_scale"])  # weight scales do not depend on data
    assert sa["w1_scale"].shape == (16,)  # per output channel by default
    assert any(n.op_type == "QuantizeLinear" for n in a.model.graph.node)
    assert {i.data_type for i in a.model.graph.initializer if i.name.startswith("w1")} >= {TensorProto.INT8}
    assert a.macs == count_macs(detector).total_macs
    feeds = low[0]
    assert _rel_err(_run(a.model_bytes, feeds), _run(detector, feeds)) < 0.1


def test_int8_static_methods_differ(detector):
    feeds = _feeds(4, seed=1)
    scales = {
        method: _scales(variant("int8-static", {"images": 4, "method": method}).build(detector, calibration=feeds).model)
        for method in ("minmax", "entropy", "percentile")
    }
    # Entropy clips the long tail of ReLU outputs: a smaller activation scale than minmax.
    assert scales["entropy"]["a2_scale"] < scales["minmax"]["a2_scale"]
    assert not np.array_equal(scales["percentile"]["a2_scale"], scales["minmax"]["a2_scale"])


def test_int8_static_needs_matching_calibration(detector):
    with pytest.raises(VariantError, match="needs 8 calibration images, 2 given"):
        variant("int8-static").build(detector, calibration=_feeds(2, seed=0))
    with pytest.raises(VariantError, match="needs 8 calibration images, 0 given"):
        variant("int8-static").build(detector)
    with pytest.raises(VariantError, match="the model needs"):
        variant("int8-static", {"images": 1}).build(detector, calibration=[{"image": np.zeros((1, 3, 32, 32), np.float32)}])
    with pytest.raises(VariantError, match="float64"):
        variant("int8-static", {"images": 1}).build(detector, calibration=[{"x": np.zeros((1, 3, 32, 32))}])


def test_int8_static_leaves_minus_inf_padding_in_float():
    # TF "SAME" max-pooling converts to Pad(value=-inf) + MaxPool: an int8 range reaching
    # -inf has a NaN scale, so those nodes stay float and every scale is finite.
    rng = np.random.default_rng(0)
    inits = {
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "ninf": np.array([-np.inf], np.float32),
        "w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Pad", ["x", "pads", "ninf"], ["p"], mode="constant", name="pad"),
        helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[3, 3], name="pool"),
        helper.make_node("Conv", ["m", "w"], ["y"], pads=[1, 1, 1, 1], name="conv"),
    ]
    model = _finish(nodes, [("x", [1, 3, 32, 32])], ["y"], inits)
    feeds = _feeds(2, seed=0)
    built = variant("int8-static", {"images": 2}).build(model, calibration=feeds)
    for init in built.model.graph.initializer:
        if init.name.endswith("scale"):
            assert np.isfinite(numpy_helper.to_array(init)).all() and (numpy_helper.to_array(init) > 0).all()
    assert "left in float (inf/NaN constants): pad, pool" in built.notes[-1]
    assert _rel_err(_run(built.model_bytes, feeds[0]), _run(model, feeds[0])) < 0.05


def test_int8_dynamic_shrinks_matmul_weights():
    model = mlp()
    built = variant("int8-dynamic").build(model)
    ops = [n.op_type for n in built.model.graph.node]
    assert ops.count("MatMulInteger") == 2  # the Gemm and the MatMul
    assert built.file_bytes < 0.3 * len(model.SerializeToString())
    x = np.random.default_rng(0).normal(size=(4, 256)).astype(np.float32)
    assert _rel_err(_run(built.model_bytes, {"x": x}), _run(model, {"x": x})) < 0.05


def test_int8_dynamic_on_a_conv_graph(detector):
    with pytest.raises(VariantError, match="no MatMul/Gemm node"):
        variant("int8-dynamic").build(detector)
    built = variant("int8-dynamic", {"conv": True}).build(detector)
    assert sum(n.op_type == "ConvInteger" for n in built.model.graph.node) == 5
    feeds = _feeds(1, seed=5)[0]
    assert _rel_err(_run(built.model_bytes, feeds), _run(detector, feeds)) < 0.1


# --- magnitude pruning --------------------------------------------------------------

_PRUNABLE = ("w1", "wd", "w2", "w3", "w4")


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_magnitude_pruning_is_exact(detector, sparsity, scope):
    built = variant("prune-magnitude", {"sparsity": sparsity, "scope": scope}).build(detector)
    before = {i.name: numpy_helper.to_array(i) for i in detector.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in built.model.graph.initializer}
    total = sum(before[n].size for n in _PRUNABLE)
    zeros = sum(int((after[n] == 0).sum()) for n in _PRUNABLE)
    assert zeros == int(np.floor(sparsity * total + 0.5))
    for name in _PRUNABLE:
        kept = after[name] != 0
        np.testing.assert_array_equal(after[name][kept], before[name][kept])
        if kept.any() and (~kept).any():  # every pruned weight is no larger than any kept one
            assert np.abs(before[name][~kept]).max() <= np.abs(before[name][kept]).min() or scope == "global"
        if scope == "layer":
            assert abs((~kept).sum() - sparsity * before[name].size) < 1
    for name in ("b1", "bn_s", "scales"):  # biases and other tensors untouched
        np.testing.assert_array_equal(after[name], before[name])
    fp32 = variant("fp32").build(detector)
    assert built.params == fp32.params and built.nonzero_params == fp32.nonzero_params - zeros
    assert built.file_bytes == len(detector.SerializeToString())  # dense storage
    assert built.transmission_bytes < fp32.transmission_bytes


def test_magnitude_ties_are_deterministic():
    weights = {"a": np.array([[1, -1, 1, 2]], np.float32), "b": np.array([[1, 1], [1, 3]], np.float32)}
    masks = magnitude_masks(weights, 0.5, scope="global")  # 4 of 8 elements; six have |w| = 1
    assert masks["a"].tolist() == [[True, True, True, False]]  # the first four of them in order
    assert masks["b"].tolist() == [[True, False], [False, False]]
    layer = magnitude_masks(weights, 0.5, scope="layer")
    assert layer["a"].tolist() == [[True, True, False, False]] and layer["b"].sum() == 2
    odd = magnitude_masks({"a": np.ones((1, 3), np.float32), "b": np.ones((1, 3), np.float32)}, 0.5, scope="layer")
    assert odd["a"].sum() + odd["b"].sum() == 3  # round(0.5 · 6); the first layer gets the extra one


# --- filter pruning -----------------------------------------------------------------


def _two_convs():
    # conv1 has 4 filters of 2×1×1 weights with L1 norms 3, 1, 4, 1 (a tie at 1).
    w1 = np.array([[1.0, -2.0], [0.5, 0.5], [-4.0, 0.0], [0.0, 1.0]], np.float32).reshape(4, 2, 1, 1)
    b1 = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    w2 = np.random.default_rng(0).normal(size=(3, 4, 3, 3)).astype(np.float32)
    b2 = np.array([0.0, 1.0, -1.0], np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    return _finish(nodes, [("x", [1, 2, 6, 6])], ["y"], {"w1": w1, "b1": b1, "w2": w2, "b2": b2})


def test_filter_pruning_removes_lowest_l1_filters():
    model = _two_convs()
    built = variant("prune-filters", {"ratio": 0.5}).build(model)
    got = {i.name: numpy_helper.to_array(i) for i in built.model.graph.initializer}
    orig = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    keep = [0, 2]  # norms 3, 1, 4, 1: filters 1 and 3 go (the tie broken by index is moot here)
    np.testing.assert_array_equal(got["w1"], orig["w1"][keep])
    np.testing.assert_array_equal(got["b1"], orig["b1"][keep])
    np.testing.assert_array_equal(got["w2"], orig["w2"][:, keep])
    np.testing.assert_array_equal(got["b2"], orig["b2"])
    assert built.params == 2 * 2 + 2 + 3 * 2 * 9 + 3
    # Same as the original with those filters zeroed (ReLU(0) = 0 feeds conv2 nothing).
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    for init in zeroed.graph.initializer:
        if init.name in ("w1", "b1"):
            array = numpy_helper.to_array(init).copy()
            array[[1, 3]] = 0
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    x = np.random.default_rng(1).normal(size=(1, 2, 6, 6)).astype(np.float32)
    (out,), (ref,) = _run(built.model_bytes, {"x": x}), _run(zeroed, {"x": x})
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert "conv1 4→2" in built.notes[0]


def test_filter_pruning_ties_go_to_the_lower_index():
    built = variant("prune-filters", {"ratio": 0.25}).build(_two_convs())  # one filter: norms 1 at 1 and 3
    kept = numpy_helper.to_array(next(i for i in built.model.graph.initializer if i.name == "w1"))
    np.testing.assert_array_equal(kept[:, :, 0, 0], [[1.0, -2.0], [-4.0, 0.0], [0.0, 1.0]])


def test_filter_pruning_follows_hard_swish():
    # hard-swish x · relu6(x + 3) / 6 joins two tensors of the same conv: still prunable,
    # and hswish(0) = 0, so the result equals the original with those filters zeroed.
    rng = np.random.default_rng(2)
    inits = {
        "w1": rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "b1": rng.normal(size=6).astype(np.float32),
        "three": np.array(3, np.float32), "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
        "six": np.array(6, np.float32), "w2": rng.normal(size=(2, 6, 1, 1)).astype(np.float32),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Add", ["c", "three"], ["a"]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["r"]),
        helper.make_node("Mul", ["c", "r"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["h"]),
        helper.make_node("Conv", ["h", "w2"], ["y"], name="conv2"),
    ]
    model = _finish(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)
    built = variant("prune-filters", {"ratio": 0.5}).build(model)
    norms = np.abs(inits["w1"]).sum(axis=(1, 2, 3))
    removed = sorted(np.argsort(norms, kind="stable")[:3].tolist())
    got = {i.name: numpy_helper.to_array(i) for i in built.model.graph.initializer}
    np.testing.assert_array_equal(got["w1"], np.delete(inits["w1"], removed, axis=0))
    np.testing.assert_array_equal(got["w2"], np.delete(inits["w2"], removed, axis=1))
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    for init in zeroed.graph.initializer:
        if init.name in ("w1", "b1"):
            array = numpy_helper.to_array(init).copy()
            array[removed] = 0
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(built.model_bytes, {"x": x})[0], _run(zeroed, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_filter_pruning_through_bn_and_depthwise(detector):
    built = variant("prune-filters", {"ratio": 0.25}).build(detector)
    onnx.checker.check_model(built.model, full_check=True)
    got = {i.name: tuple(i.dims) for i in built.model.graph.initializer}
    # stem 16 → 12 filters: depthwise shrinks with it (group too), pw loses input channels;
    # pw 32 → 24 through BN and Resize to both heads' inputs; the heads feed graph outputs.
    assert got["w1"] == (12, 3, 3, 3) and got["wd"] == (12, 1, 3, 3) and got["bd"] == (12,)
    assert got["w2"] == (24, 12, 1, 1) and got["bn_v"] == (24,)
    assert got["w3"] == (8, 24, 3, 3) and got["w4"] == (4, 24, 1, 1)
    dw = next(n for n in built.model.graph.node if n.name == "dw")
    assert {a.name: helper.get_attribute_value(a) for a in dw.attribute}["group"] == 12
    feeds = _feeds(1, seed=0)[0]
    out, ref = _run(built.model_bytes, feeds), _run(detector, feeds)
    assert [o.shape for o in out] == [r.shape for r in ref]
    fp32 = variant("fp32").build(detector)
    assert built.params < fp32.params and built.macs < fp32.macs and built.file_bytes < fp32.file_bytes
    assert "head_cls" in built.notes[1] and "graph output" in built.notes[1]


def test_filter_pruning_refuses_when_nothing_can_be_pruned():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="body"),
        helper.make_node("Add", ["c1", "x"], ["s"], name="residual"),
        helper.make_node("Conv", ["s", "w2"], ["y"], name="head"),
    ]
    inits = {"w1": rng.normal(size=(3, 3, 3, 3)).astype(np.float32), "w2": rng.normal(size=(2, 3, 1, 1)).astype(np.float32)}
    model = _finish(nodes, [("x", [1, 3, 8, 8])], ["y"], inits)
    with pytest.raises(VariantError) as err:
        variant("prune-filters").build(model)
    message = str(err.value)
    assert "no convolution can be pruned" in message
    assert "body: feeds Add residual together with another activation" in message
    assert "head: its channels reach graph output 'y'" in message
    assert isinstance(err.value, SplitsweepError)


# --- NNCodec-coded weights ----------------------------------------------------------


def test_nncodec_weights_error_within_the_step(detector):
    from tasks.codecs.nnc import step_size

    before = {i.name: numpy_helper.to_array(i) for i in detector.graph.initializer}
    sizes = []
    for qp in (-40, -32, -24, -16):
        delta = 2.0 ** (qp / 4)
        assert step_size(qp) == delta  # at QPs divisible by 4 the step is exactly 2^(qp/4)
        for use_dq in (False, True):
            built = variant("nncodec-weights", {"qp": qp, "use_dq": use_dq}).build(detector)
            after = {i.name: numpy_helper.to_array(i) for i in built.model.graph.initializer}
            err = max(float(np.abs(after[n] - before[n]).max()) for n in _PRUNABLE)
            # Plain uniform quantization rounds to the nearest level: at most Δ/2. With
            # dependent quantization each of the two interleaved quantizers has step 2Δ
            # and the trellis may pick the other level: measured 1.3–1.7Δ, bounded by 2Δ.
            bound = 2 * delta if use_dq else delta / 2 * (1 + 1e-5)
            assert err <= bound
            assert err > (0.25 * delta if qp > -40 else 0)  # it did quantize
            assert np.abs(after["b1"] - before["b1"]).max() < 1e-5  # biases: near lossless
            np.testing.assert_array_equal(after["scales"], before["scales"])  # geometry untouched
            assert built.transmission_bytes < built.file_bytes
            if use_dq:
                sizes.append(built.transmission_bytes)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    feeds = _feeds(1, seed=4)[0]
    fine = variant("nncodec-weights", {"qp": -40}).build(detector)
    assert _rel_err(_run(fine.model_bytes, feeds), _run(detector, feeds)) < 0.01


def test_nncodec_weights_refuses_a_graph_without_weights():
    model = _finish([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 4])], ["y"], {})
    with pytest.raises(VariantError, match="no float weight initializer"):
        variant("nncodec-weights").build(model)
    with pytest.raises(VariantError, match="out of range"):
        variant("nncodec-weights", {"qp": 200})


def test_nncodec_weights_relative_qp_follows_each_tensors_scale():
    from tasks.codecs.nnc import step_size

    model = small_detector()
    for init in model.graph.initializer:  # a layer 1000× smaller than the rest, as BN folding makes
        if init.name == "w2":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1e-3, "w2"))
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    absolute = variant("nncodec-weights", {"qp": -20}).build(model)
    after = {i.name: numpy_helper.to_array(i) for i in absolute.model.graph.initializer}
    assert not after["w2"].any()  # one absolute step (0.03) wipes the small layer out
    relative = variant("nncodec-weights", {"qp": -20, "relative": True})
    built = relative.build(model)
    after = {i.name: numpy_helper.to_array(i) for i in built.model.graph.initializer}
    qps = relative.tensor_qps({n: before[n] for n in _PRUNABLE})
    for name in _PRUNABLE:
        sigma = before[name].std()
        # Adjacent NNR steps differ by at most 1.25×, so the nearest is within √1.25 ≈ 1.118.
        assert abs(np.log(step_size(qps[name]) / (2 ** (-20 / 4) * sigma))) <= np.log(1.25) / 2 + 1e-9
        assert np.abs(after[name] - before[name]).max() <= 2 * step_size(qps[name])
    assert qps["w2"] < qps["w1"] - 30  # about 4·log2(1000) ≈ 40 QPs finer
    assert np.corrcoef(after["w2"].ravel(), before["w2"].ravel())[0, 1] > 0.9


def test_defer_dequantize_keeps_results_and_sends_8_bit_skips():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from tasks.graph import SplitGraph
    from tasks.variants.quantize import defer_dequantize

    def qdq(name):
        return [
            helper.make_node("QuantizeLinear", [name, "s", "z"], [f"{name}_q"], name=f"{name}_Q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_dq"], name=f"{name}_DQ"),
        ]

    # a is a skip connection: read only by the final Add, after the b branch.
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), *qdq("a")]
    nodes += [helper.make_node("Neg", ["x"], ["b"], name="neg"), *qdq("b")]
    nodes += [helper.make_node("Add", ["b_dq", "a_dq"], ["y"], name="skip_add")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)], ir_version=8)
    x = np.array([-1.0, 0.5, 2.0, 3.3], np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert {i.name: i.dtype for i in SplitGraph(model).cut("b_q").tensor_infos} == {"a_dq": "float32", "b_q": "uint8"}

    defer_dequantize(model)
    onnx.checker.check_model(model)
    assert [n.name for n in model.graph.node] == ["relu", "a_Q", "neg", "b_Q", "b_DQ", "a_DQ", "skip_add"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)
    cut = SplitGraph(model).cut("b_q")
    assert set(cut.tensors) == {"a_q", "b_q"}
    assert {info.dtype for info in cut.tensor_infos} == {"uint8"}
