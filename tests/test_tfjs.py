"""TF.js → ONNX converter: weights decoding, and every supported op against a numpy reference in onnxruntime."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tasks.errors import ModelError
from tasks.tfjs import IR_VERSION, OPSET, SUPPORTED_OPS, convert, decode_weights, weight_paths

RNG = np.random.default_rng(7)


# --- building TF.js graph models in the test ------------------------------------------------


def _attr(value: Any) -> dict:
    if isinstance(value, bool):
        return {"b": value}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": value}
    if isinstance(value, str):
        return {"s": base64.b64encode(value.encode()).decode()}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {"list": {"s": [base64.b64encode(v.encode()).decode() for v in value]}}
    if isinstance(value, list):
        return {"list": {"i": [str(v) for v in value]}}
    raise TypeError(value)


def node(name: str, op: str, *inputs: str, **attrs: Any) -> dict:
    return {"name": name, "op": op, "input": list(inputs), "attr": {k: _attr(v) for k, v in attrs.items()}}


def placeholder(name: str, shape: Sequence[int]) -> dict:
    return {
        "name": name,
        "op": "Placeholder",
        "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": [{"size": str(d)} for d in shape]}}},
    }


def tfjs_model(
    nodes: list[dict],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    *,
    storage: Mapping[str, str] | None = None,
) -> tuple[dict, bytes, dict[str, np.ndarray]]:
    """model.json dict, weights bytes, and the weights as TF.js will see them (after float16/uint8 storage)."""
    storage = dict(storage or {})
    manifest, chunks, seen = [], [], {}
    for name, value in consts.items():
        value = np.asarray(value)
        dtype = "int32" if value.dtype.kind in "iu" else "float32"
        spec: dict[str, Any] = {"name": name, "shape": list(value.shape), "dtype": dtype}
        kind = storage.get(name)
        if kind == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": dtype}
            chunks.append(value.astype(np.float16).tobytes())
            seen[name] = value.astype(np.float16).astype(np.float32)
        elif kind in ("uint8", "uint16"):
            levels = 255 if kind == "uint8" else 65535
            low, high = float(value.min()), float(value.max())
            scale = (high - low) / levels or 1.0
            q = np.round((value - low) / scale).astype(kind)
            spec["quantization"] = {"dtype": kind, "scale": scale, "min": low, "original_dtype": dtype}
            chunks.append(q.tobytes())
            back = q.astype(np.float64) * scale + low
            seen[name] = np.round(back).astype(np.int32) if dtype == "int32" else back.astype(np.float32)
        else:
            chunks.append(value.astype(dtype).tobytes())
            seen[name] = value.astype(dtype)
        manifest.append(spec)
    const_nodes = [
        {"name": n, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}, "value": {"tensor": {}}}} for n in consts
    ]
    model_json = {
        "format": "graph-model",
        "generatedBy": "test",
        "convertedBy": "test",
        "signature": {"outputs": {o: {"name": o} for o in outputs}},
        "modelTopology": {"node": const_nodes + nodes},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": manifest}],
    }
    return model_json, b"".join(chunks), seen


def run(model: onnx.ModelProto, **feeds: np.ndarray) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def convert_and_run(nodes, consts, outputs, feeds, **kwargs) -> tuple[dict[str, np.ndarray], dict, onnx.ModelProto]:
    model_json, weights, seen = tfjs_model(nodes, consts, outputs, storage=kwargs.pop("storage", None))
    model = convert(model_json, weights, **kwargs)
    return run(model, **feeds), seen, model


# --- numpy references (TF semantics) ---------------------------------------------------------


def same_pads(n: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    eff = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + eff - n, 0)
    return total // 2, total - total // 2


def conv_ref(x, w, strides=(1, 1), padding="SAME", dilations=(1, 1), depthwise=False):
    """NHWC conv; w HWIO (depthwise: H, W, C, multiplier)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    if padding == "SAME":
        (pt, pb), (pl, pr) = same_pads(h, kh, strides[0], dilations[0]), same_pads(wd, kw, strides[1], dilations[1])
    else:
        pt = pb = pl = pr = 0
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh = (h + pt + pb - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
    ow = (wd + pl + pr - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
    out = np.zeros((n, oh, ow, c * w.shape[3] if depthwise else w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilations[0], j * dilations[1]
            patch = xp[
                :, y0 : y0 + strides[0] * (oh - 1) + 1 : strides[0], x0 : x0 + strides[1] * (ow - 1) + 1 : strides[1]
            ]
            if depthwise:
                out += (patch[..., None] * w[i, j]).reshape(out.shape)
            else:
                out += patch @ w[i, j]
    return out


def max_pool_ref(x, k, s, padding):
    n, h, w, c = x.shape
    (pt, pb), (pl, pr) = (same_pads(h, k, s), same_pads(w, k, s)) if padding == "SAME" else ((0, 0), (0, 0))
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    oh, ow = (h + pt + pb - k) // s + 1, (w + pl + pr - k) // s + 1
    out = np.full((n, oh, ow, c), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s])
    return out


def resize_bilinear_ref(x, out_h, out_w, align_corners=False, half_pixel=False):
    """tf.image.resize_bilinear, written out per output pixel."""
    n, h, w, c = x.shape

    def source(o, size_in, size_out):
        if align_corners and size_out > 1:
            return o * (size_in - 1) / (size_out - 1)
        scale = size_in / size_out
        return (o + 0.5) * scale - 0.5 if half_pixel else o * scale

    out = np.zeros((n, out_h, out_w, c))
    for oy in range(out_h):
        fy = source(oy, h, out_h)
        y0 = int(np.floor(fy))
        dy = fy - y0
        ya, yb = min(max(y0, 0), h - 1), min(max(y0 + 1, 0), h - 1)
        for ox in range(out_w):
            fx = source(ox, w, out_w)
            x0 = int(np.floor(fx))
            dx = fx - x0
            xa, xb = min(max(x0, 0), w - 1), min(max(x0 + 1, 0), w - 1)
            top = x[:, ya, xa] * (1 - dx) + x[:, ya, xb] * dx
            bottom = x[:, yb, xa] * (1 - dx) + x[:, yb, xb] * dx
            out[:, oy, ox] = top * (1 - dy) + bottom * dy
    return out


def close(actual, expected, tol=1e-4):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


# --- weights ---------------------------------------------------------------------------------


def test_decode_weights_float32_int32_float16_and_quantized():
    consts = {
        "f32": RNG.normal(size=(2, 3)).astype(np.float32),
        "i32": np.array([3, -1, 7], np.int32),
        "f16": RNG.normal(size=(4,)).astype(np.float32),
        "u8": RNG.uniform(-2, 3, size=(5, 2)).astype(np.float32),
        "u16": RNG.uniform(0, 1, size=(3,)).astype(np.float32),
        "q_int": np.array([0, 100, 1000, 2550], np.int32),
    }
    storage = {"f16": "float16", "u8": "uint8", "u16": "uint16", "q_int": "uint8"}
    model_json, weights, seen = tfjs_model([], consts, [], storage=storage)
    values = decode_weights(model_json, weights)
    for name, expected in seen.items():
        assert values[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(values[name], expected)
    assert values["i32"].tolist() == [3, -1, 7]
    # float16 storage loses precision (so the test sees the stored weights), uint8 more so.
    assert not np.array_equal(values["f16"], consts["f16"])
    assert np.abs(values["u8"] - consts["u8"]).max() <= (5 / 255) / 2 + 1e-6
    assert values["q_int"].tolist() == [0, 100, 1000, 2550]


def test_weight_paths_follow_groups_in_order():
    model_json = {
        "weightsManifest": [{"paths": ["a.bin", "b.bin"], "weights": []}, {"paths": ["c.bin"], "weights": []}]
    }
    assert weight_paths(model_json) == ["a.bin", "b.bin", "c.bin"]


def test_weights_of_the_wrong_length_are_refused():
    model_json, weights, _ = tfjs_model([], {"w": np.zeros(4, np.float32)}, [])
    with pytest.raises(ModelError, match="16 bytes of weights but 20"):
        decode_weights(model_json, weights + b"\0" * 4, file="m.json")
    with pytest.raises(ModelError, match="after 12 bytes but 'w' needs"):
        decode_weights(model_json, weights[:-4], file="m.json")


def test_unknown_weight_dtype_is_refused():
    model_json = {"weightsManifest": [{"paths": [], "weights": [{"name": "s", "shape": [1], "dtype": "string"}]}]}
    with pytest.raises(ModelError, match="dtype 'string'") as info:
        decode_weights(model_json, b"", file="m.json")
    assert "float32" in str(info.value) and info.value.file == "m.json"


# --- convolutions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,kernel,strides,padding,dilations",
    [
        ((1, 9, 9, 3), 3, 1, "SAME", 1),
        ((1, 8, 10, 3), 3, 2, "SAME", 1),  # even sizes, stride 2: TF pads only at the end
        ((1, 9, 8, 3), 3, 2, "VALID", 1),
        ((1, 11, 11, 2), 3, 1, "SAME", 2),
        ((2, 6, 6, 4), 1, 1, "VALID", 1),
    ],
)
def test_conv2d_matches_reference(shape, kernel, strides, padding, dilations):
    x = RNG.normal(size=shape).astype(np.float32)
    w = RNG.normal(size=(kernel, kernel, shape[3], 5)).astype(np.float32)
    nodes = [
        placeholder("x", shape),
        node(
            "conv",
            "Conv2D",
            "x",
            "w",
            strides=[1, strides, strides, 1],
            padding=padding,
            data_format="NHWC",
            dilations=[1, dilations, dilations, 1],
        ),
    ]
    out, seen, model = convert_and_run(nodes, {"w": w}, ["conv"], {"x": x})
    close(out["conv"], conv_ref(x, seen["w"], (strides, strides), padding, (dilations, dilations)))
    assert [n.op_type for n in model.graph.node].count("Conv") == 1


@pytest.mark.parametrize(
    "fused,alpha",
    [(["BiasAdd"], None), (["BiasAdd", "Relu"], None), (["BiasAdd", "Relu6"], None), (["BiasAdd", "LeakyRelu"], 0.3)],
)
def test_fused_conv2d_with_bias_and_activation(fused, alpha):
    x = (RNG.normal(size=(1, 7, 7, 4)) * 4).astype(np.float32)
    w = RNG.normal(size=(3, 3, 4, 6)).astype(np.float32)
    b = RNG.normal(size=6).astype(np.float32) * 3
    attrs = {"leakyrelu_alpha": alpha} if alpha else {}
    nodes = [
        placeholder("x", x.shape),
        node(
            "fc",
            "_FusedConv2D",
            "x",
            "w",
            "b",
            strides=[1, 1, 1, 1],
            padding="SAME",
            fused_ops=fused,
            num_args=1,
            **attrs,
        ),
    ]
    out, seen, _ = convert_and_run(nodes, {"w": w, "b": b}, ["fc"], {"x": x}, storage={"w": "float16"})
    ref = conv_ref(x, seen["w"]) + seen["b"]
    assert (ref > 6).any() and (ref < 0).any()  # every activation changes this data
    if "Relu" in fused:
        ref = np.maximum(ref, 0)
    if "Relu6" in fused:
        ref = np.clip(ref, 0, 6)
    if "LeakyRelu" in fused:
        ref = np.where(ref >= 0, ref, alpha * ref)
    close(out["fc"], ref)


def test_depthwise_conv_with_multiplier_stride_and_fused_relu6():
    x = (RNG.normal(size=(1, 10, 9, 3)) * 5).astype(np.float32)
    w = RNG.normal(size=(3, 3, 3, 2)).astype(np.float32)
    b = RNG.normal(size=6).astype(np.float32)
    nodes = [
        placeholder("x", x.shape),
        node("dw", "DepthwiseConv2dNative", "x", "w", strides=[1, 2, 2, 1], padding="SAME"),
        node(
            "fdw",
            "FusedDepthwiseConv2dNative",
            "x",
            "w",
            "b",
            strides=[1, 1, 1, 1],
            padding="VALID",
            fused_ops=["BiasAdd", "Relu6"],
            num_args=1,
        ),
    ]
    out, seen, _ = convert_and_run(nodes, {"w": w, "b": b}, ["dw", "fdw"], {"x": x}, storage={"w": "uint8"})
    close(out["dw"], conv_ref(x, seen["w"], (2, 2), "SAME", depthwise=True))
    close(out["fdw"], np.clip(conv_ref(x, seen["w"], padding="VALID", depthwise=True) + seen["b"], 0, 6))


def test_conv2d_in_nchw_data_format():
    x = RNG.normal(size=(1, 3, 6, 6)).astype(np.float32)
    w = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    nodes = [
        placeholder("x", x.shape),
        node("conv", "Conv2D", "x", "w", strides=[1, 1, 2, 2], padding="SAME", data_format="NCHW"),
    ]
    out, seen, model = convert_and_run(nodes, {"w": w}, ["conv"], {"x": x})
    ref = conv_ref(x.transpose(0, 2, 3, 1), seen["w"], (2, 2)).transpose(0, 3, 1, 2)
    close(out["conv"], ref)
    assert "Transpose" not in [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("padding,k,s", [("SAME", 3, 2), ("VALID", 3, 2), ("SAME", 3, 1)])
def test_max_pool(padding, k, s):
    x = RNG.normal(size=(1, 8, 7, 3)).astype(np.float32)
    nodes = [
        placeholder("x", x.shape),
        node("pool", "MaxPool", "x", ksize=[1, k, k, 1], strides=[1, s, s, 1], padding=padding),
    ]
    out, _, _ = convert_and_run(nodes, {}, ["pool"], {"x": x})
    close(out["pool"], max_pool_ref(x, k, s, padding))


def test_unsupported_fused_op_names_it():
    nodes = [
        placeholder("x", (1, 4, 4, 1)),
        node("fc", "_FusedConv2D", "x", "w", "b", padding="SAME", fused_ops=["BiasAdd", "Elu"], num_args=1),
    ]
    model_json, weights, _ = tfjs_model(
        nodes, {"w": np.ones((1, 1, 1, 1), np.float32), "b": np.zeros(1, np.float32)}, ["fc"]
    )
    with pytest.raises(ModelError, match="Elu") as info:
        convert(model_json, weights, file="m.json")
    assert info.value.key == "fc" and "BiasAdd+Relu6" in info.value.allowed


# --- element-wise ops, on NCHW-stored tensors (after a conv) and on graph inputs ----------


def _conv_then(op_nodes, consts, outputs, x_shape=(1, 5, 6, 3), channels=4):
    """A 1×1 conv (which stores its output NCHW) followed by ``op_nodes`` reading "c"."""
    x = RNG.normal(size=x_shape).astype(np.float32)
    w = RNG.normal(size=(1, 1, x_shape[3], channels)).astype(np.float32)
    nodes = [placeholder("x", x_shape), node("c", "Conv2D", "x", "w", strides=[1, 1, 1, 1], padding="VALID")] + op_nodes
    out, seen, model = convert_and_run(nodes, dict(consts, w=w), outputs, {"x": x})
    c = conv_ref(x, seen["w"], padding="VALID")
    return out, seen, c, model


@pytest.mark.parametrize(
    "op,fn",
    [
        ("Add", np.add),
        ("AddV2", np.add),
        ("BiasAdd", np.add),
        ("Sub", np.subtract),
        ("Mul", np.multiply),
        ("RealDiv", np.divide),
        ("Maximum", np.maximum),
        ("Minimum", np.minimum),
    ],
)
def test_binary_ops_with_channel_constants(op, fn):
    k = (RNG.uniform(0.5, 2, size=4) * RNG.choice([-1, 1], size=4)).astype(np.float32)
    out, seen, c, _ = _conv_then([node("y", op, "c", "k")], {"k": k}, ["y"])
    close(out["y"], fn(c, seen["k"]))


def test_binary_ops_with_constant_first_scalars_and_two_tensors():
    nodes = [
        node("left", "Sub", "k", "c"),  # constant on the left keeps its place
        node("scaled", "Mul", "s", "c"),
        node("both", "Add", "left", "scaled"),
        node("full", "Mul", "c", "m"),  # a constant of full rank, NHWC
    ]
    k = RNG.normal(size=(1, 1, 1, 4)).astype(np.float32)
    m = RNG.normal(size=(1, 5, 6, 4)).astype(np.float32)
    out, seen, c, _ = _conv_then(
        nodes, {"k": k, "s": np.array(2.5, np.float32), "m": m}, ["left", "scaled", "both", "full"]
    )
    close(out["left"], k - c)
    close(out["scaled"], 2.5 * c)
    close(out["both"], (k - c) + 2.5 * c)
    close(out["full"], c * m)


def test_binary_op_between_layouts_and_ranks():
    # graph input (stored NHWC) + conv output (stored NCHW); then a rank-1 tensor broadcast
    x = RNG.normal(size=(1, 4, 4, 2)).astype(np.float32)
    w = RNG.normal(size=(1, 1, 2, 2)).astype(np.float32)
    v = RNG.normal(size=(2,)).astype(np.float32)
    nodes = [
        placeholder("x", x.shape),
        placeholder("v", (2,)),
        node("c", "Conv2D", "x", "w", strides=[1, 1, 1, 1], padding="VALID"),
        node("sum", "Add", "x", "c"),
        node("bc", "Mul", "c", "v"),
    ]
    out, seen, _ = convert_and_run(nodes, {"w": w}, ["sum", "bc"], {"x": x, "v": v})
    c = conv_ref(x, seen["w"], padding="VALID")
    close(out["sum"], x + c)
    close(out["bc"], c * v)


@pytest.mark.parametrize("op", ["Relu", "Relu6", "Sigmoid", "Tanh", "LeakyRelu"])
def test_unary_ops(op):
    attrs = {"alpha": 0.25} if op == "LeakyRelu" else {}
    out, _, c, model = _conv_then(
        [node("s", "Mul", "c", "k"), node("y", op, "s", **attrs)], {"k": np.array(8.0, np.float32)}, ["y"]
    )
    s = c * 8
    ref = {
        "Relu": np.maximum(s, 0),
        "Relu6": np.clip(s, 0, 6),
        "Sigmoid": 1 / (1 + np.exp(-s)),
        "Tanh": np.tanh(s),
        "LeakyRelu": np.where(s >= 0, s, 0.25 * s),
    }[op]
    close(out["y"], ref)
    if op == "Relu6":
        assert "Clip" in [n.op_type for n in model.graph.node]


def test_identity_output_keeps_its_name():
    out, _, c, model = _conv_then([node("Identity", "Identity", "c")], {}, ["Identity"])
    close(out["Identity"], c)
    assert [o.name for o in model.graph.output] == ["Identity"]


# --- reductions, concat, resize, pad, transpose, reshape, split -----------------------------


@pytest.mark.parametrize("op,fn", [("Mean", np.mean), ("Sum", np.sum), ("Max", np.max), ("Min", np.min)])
@pytest.mark.parametrize("keep", [True, False])
def test_reductions_over_spatial_axes(op, fn, keep):
    out, seen, c, _ = _conv_then(
        [node("r", op, "c", "axes", keep_dims=keep)], {"axes": np.array([1, 2], np.int32)}, ["r"]
    )
    close(out["r"], fn(c, axis=(1, 2), keepdims=keep))


def test_reduction_over_channels_then_broadcast_back():
    nodes = [node("m", "Mean", "c", "axis", keep_dims=True), node("d", "Sub", "c", "m")]
    out, _, c, _ = _conv_then(nodes, {"axis": np.array(-1, np.int32)}, ["m", "d"])
    close(out["m"], c.mean(axis=3, keepdims=True))
    close(out["d"], c - c.mean(axis=3, keepdims=True))


@pytest.mark.parametrize("axis", [3, -1, 1])
def test_concat_of_conv_outputs_and_a_constant(axis):
    k = RNG.normal(size=(1, 5, 6, 4)).astype(np.float32)
    nodes = [node("c2", "Relu", "c"), node("cat", "ConcatV2", "c", "c2", "k", "axis", N=3)]
    out, seen, c, _ = _conv_then(nodes, {"k": k, "axis": np.array(axis, np.int32)}, ["cat"])
    close(out["cat"], np.concatenate([c, np.maximum(c, 0), k], axis=axis))


@pytest.mark.parametrize("align,half", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("size", [(10, 12), (3, 2)])
def test_resize_bilinear_modes(align, half, size):
    nodes = [node("r", "ResizeBilinear", "c", "size", align_corners=align, half_pixel_centers=half)]
    out, _, c, model = _conv_then(nodes, {"size": np.array(size, np.int32)}, ["r"])
    close(out["r"], resize_bilinear_ref(c, *size, align_corners=align, half_pixel=half))
    (resize,) = [n for n in model.graph.node if n.op_type == "Resize"]
    mode = {a.name: a.s.decode() for a in resize.attribute if a.type == onnx.AttributeProto.STRING}
    assert mode["coordinate_transformation_mode"] == (
        "align_corners" if align else "half_pixel" if half else "asymmetric"
    )


def test_resize_refuses_both_alignments():
    nodes = [node("r", "ResizeBilinear", "c", "size", align_corners=True, half_pixel_centers=True)]
    with pytest.raises(ModelError, match="both set"):
        _conv_then(nodes, {"size": np.array([4, 4], np.int32)}, ["r"])


def test_pad_and_padv2_on_nchw_stored_tensor():
    paddings = np.array([[0, 0], [1, 2], [0, 3], [1, 0]], np.int32)
    nodes = [node("p", "Pad", "c", "paddings"), node("p2", "PadV2", "c", "paddings", "value")]
    out, _, c, _ = _conv_then(nodes, {"paddings": paddings, "value": np.array(-7.0, np.float32)}, ["p", "p2"])
    close(out["p"], np.pad(c, paddings))
    close(out["p2"], np.pad(c, paddings, constant_values=-7.0))


def test_transposes_cost_no_nodes_inside_and_one_at_an_output():
    # NCHW input as exported from PyTorch through onnx-tf: transpose → NHWC conv → transpose back
    x = RNG.normal(size=(1, 3, 6, 5)).astype(np.float32)
    w = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    nodes = [
        placeholder("x", x.shape),
        node("to_nhwc", "Transpose", "x", "p1"),
        node("conv", "Conv2D", "to_nhwc", "w", strides=[1, 1, 1, 1], padding="SAME"),
        node("to_nchw", "Transpose", "conv", "p2"),
        node("act", "LeakyRelu", "to_nchw", alpha=0.1),
        node("hwc", "Transpose", "act", "p3"),
    ]
    consts = {
        "w": w,
        "p1": np.array([0, 2, 3, 1], np.int32),
        "p2": np.array([0, 3, 1, 2], np.int32),
        "p3": np.array([0, 2, 3, 1], np.int32),
    }
    out, seen, model = convert_and_run(nodes, consts, ["act", "hwc"], {"x": x})
    conv = conv_ref(x.transpose(0, 2, 3, 1), seen["w"]).transpose(0, 3, 1, 2)
    act = np.where(conv >= 0, conv, 0.1 * conv)
    close(out["act"], act)
    close(out["hwc"], act.transpose(0, 2, 3, 1))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Transpose") == 1  # only the NHWC output "hwc" needs one


def test_reshape_and_split():
    nodes = [
        node("flat", "Reshape", "c", "shape"),
        node("parts", "SplitV", "c", "sizes", "axis", num_split=2),
        node("halves", "Split", "axis", "c", num_split=2),
        node("second", "Identity", "parts:1"),
    ]
    consts = {
        "shape": np.array([1, -1, 4], np.int32),
        "sizes": np.array([1, -1], np.int32),
        "axis": np.array(3, np.int32),
    }
    out, _, c, _ = _conv_then(nodes, consts, ["flat", "parts", "second", "halves", "halves:1"])
    close(out["flat"], c.reshape(1, -1, 4))
    close(out["parts"], c[..., :1])
    close(out["second"], c[..., 1:])
    close(out["halves"], c[..., :2])
    close(out["halves:1"], c[..., 2:])


def test_sparse_to_dense_is_folded_into_a_reshape_shape():
    # onnx-tf writes reshape targets this way (as in NanoDet): shape = base + SparseToDense(...)
    nodes = [
        node("delta", "SparseToDense", "idx", "dense_shape", "vals", "zero"),
        node("target", "AddV2", "base", "delta"),
        node("r", "Reshape", "c", "target"),
    ]
    consts = {
        "idx": np.array([[1]], np.int32),
        "dense_shape": np.array([3], np.int32),
        "vals": np.array([30], np.int32),
        "zero": np.array(0, np.int32),
        "base": np.array([1, 0, 4], np.int32),
    }
    out, _, c, model = _conv_then(nodes, consts, ["r"])
    close(out["r"], c.reshape(1, 30, 4))
    assert "SparseToDense" not in {n.op_type for n in model.graph.node}


def test_computed_shape_is_refused():
    x = RNG.normal(size=(1, 2, 2, 1)).astype(np.float32)
    nodes = [placeholder("x", x.shape), placeholder("s", (3,)), node("r", "Reshape", "x", "s")]
    model_json, weights, _ = tfjs_model(nodes, {}, ["r"])
    with pytest.raises(ModelError, match="must be a constant") as info:
        convert(model_json, weights)
    assert info.value.key == "r"


# --- the model as a whole ---------------------------------------------------------------------


def test_model_metadata_names_and_layout_at_the_boundary():
    x = RNG.normal(size=(1, 8, 8, 3)).astype(np.float32) * 255
    w = RNG.normal(size=(3, 3, 3, 4)).astype(np.float32)
    b = RNG.normal(size=4).astype(np.float32)
    nodes = [
        placeholder("tower_0/images", x.shape),
        node(
            "tower_0/block/conv",
            "_FusedConv2D",
            "tower_0/images",
            "w",
            "b",
            strides=[1, 2, 2, 1],
            padding="SAME",
            fused_ops=["BiasAdd", "Relu6"],
            num_args=1,
        ),
        node("tower_0/out", "Sigmoid", "tower_0/block/conv"),
    ]
    out, seen, model = convert_and_run(nodes, {"w": w, "b": b}, ["tower_0/out"], {"tower_0/images": x}, name="tiny")
    assert model.ir_version == IR_VERSION == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["tower_0/images"]
    (output,) = model.graph.output
    assert output.name == "tower_0/out"
    assert [d.dim_value for d in output.type.tensor_type.shape.dim] == [1, 4, 4, 4]  # NHWC as in TF
    names = [n.name for n in model.graph.node]
    assert "tower_0/block/conv" in names and "tower_0/block/conv/conv" in names
    assert len(set(names)) == len(names)
    ref = 1 / (1 + np.exp(-np.clip(conv_ref(x, seen["w"], (2, 2)) + seen["b"], 0, 6)))
    close(out["tower_0/out"], ref)
    onnx.checker.check_model(model, full_check=True)


def test_unsupported_op_is_named_with_its_node_and_the_supported_ops():
    nodes = [placeholder("x", (1, 4)), node("top", "TopKV2", "x", "k")]
    model_json, weights, _ = tfjs_model(nodes, {"k": np.array(2, np.int32)}, ["top"])
    with pytest.raises(ModelError, match="unsupported op 'TopKV2' at node 'top'") as info:
        convert(model_json, weights, file="model.json")
    assert "Conv2D" in info.value.allowed and info.value.file == "model.json"
    assert set(SUPPORTED_OPS) >= {"Conv2D", "_FusedConv2D", "ResizeBilinear", "SplitV", "Pad", "LeakyRelu", "Mean"}


def test_only_the_requested_outputs_are_converted():
    # a branch with an unsupported op is fine when the chosen outputs do not need it
    nodes = [placeholder("x", (1, 4, 4, 1)), node("keep", "Relu", "x"), node("drop", "TopKV2", "keep", "k")]
    model_json, weights, _ = tfjs_model(nodes, {"k": np.array(2, np.int32)}, ["drop"])
    model = convert(model_json, weights, outputs=["keep"])
    x = RNG.normal(size=(1, 4, 4, 1)).astype(np.float32)
    close(run(model, x=x)["keep"], np.maximum(x, 0))
    with pytest.raises(ModelError, match="not a node"):
        convert(model_json, weights, outputs=["nope"])


def test_not_a_graph_model_is_refused():
    with pytest.raises(ModelError, match="modelTopology"):
        convert({"weightsManifest": []}, b"", file="x.json")


# --- the real demo models against TF.js itself ---------------------------------------------

_TFJS_RUNNER = """
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfc = require('@tensorflow/tfjs-converter');
const fs = require('fs');
(async () => {
  const [modelJson, binPath, inputPath, shape, outDir, ...outputs] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const mj = JSON.parse(fs.readFileSync(modelJson));
  const bin = fs.readFileSync(binPath);
  const model = await tfc.loadGraphModel(tf.io.fromMemory({
    modelTopology: mj.modelTopology, weightSpecs: mj.weightsManifest.flatMap(g => g.weights),
    weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength)}));
  const raw = fs.readFileSync(inputPath);
  const x = tf.tensor(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), shape.split(',').map(Number));
  let res = model.execute(x, outputs);
  if (!Array.isArray(res)) res = [res];
  for (let i = 0; i < outputs.length; i++) {
    fs.writeFileSync(`${outDir}/out${i}.bin`, Buffer.from((await res[i].data()).buffer));
  }
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def tfjs_runtime(tmp_path_factory) -> Path:
    """TF.js (pure JS CPU backend) installed from npm into a temporary directory."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("the TF.js reference check needs Node.js and npm")
    root = tmp_path_factory.mktemp("tfjs")
    (root / "package.json").write_text("{}")
    subprocess.run(
        [
            "npm",
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "@tensorflow/tfjs-core@4.22.0",
            "@tensorflow/tfjs-converter@4.22.0",
            "@tensorflow/tfjs-backend-cpu@4.22.0",
        ],
        cwd=root,
        check=True,
        capture_output=True,
    )
    (root / "run.js").write_text(_TFJS_RUNNER)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["centernet", "nanodet"])
def test_demo_models_match_tfjs(name, tfjs_runtime):
    from orchestrator.data.assets import SOURCES_DIR, cache_dir, ensure_assets

    asset = ensure_assets()[name]
    sources = cache_dir() / SOURCES_DIR / "models"
    model = onnx.load(str(asset.path))
    (inp,) = model.graph.input
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    outputs = [o.name for o in model.graph.output]
    x = np.random.default_rng(1).random(shape) * (255 if name == "centernet" else 2) - (0 if name == "centernet" else 1)
    x = x.astype(np.float32)
    x.tofile(tfjs_runtime / "in.bin")
    subprocess.run(
        [
            "node",
            "run.js",
            str(sources / f"{name}.json"),
            str(sources / f"{name}.bin"),
            "in.bin",
            ",".join(map(str, shape)),
            ".",
            *outputs,
        ],
        cwd=tfjs_runtime,
        check=True,
        capture_output=True,
    )
    ours = run(model, **{inp.name: x})
    for i, out in enumerate(outputs):
        ref = np.fromfile(tfjs_runtime / f"out{i}.bin", np.float32).reshape(ours[out].shape)
        scale = np.abs(ref).max()
        assert np.abs(ours[out] - ref).max() <= 1e-4 * scale, out
    assert json.loads((sources / f"{name}.json").read_text())["format"] == "graph-model"
