"""Small ONNX test graphs built with onnx.helper (opset 17, IR 8, float32, seeded weights), and test tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "Builder",
    "f32",
    "chain",
    "fpn",
    "side_input",
    "control_flow",
    "resnet_fpn",
    "RESNET_FPN_STAGES",
    "fusion_patterns",
    "qdq",
    "symbolic_batch",
    "feeds_for",
    "relu_activation",
]

OPSET = 17
IR_VERSION = 8


@dataclass
class Builder:
    """Collects nodes and seeded random initializers; ``conv`` etc. return the output name."""

    seed: int = 0
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, *, outputs: Sequence[str] | None = None, **attrs) -> str:
        outputs = list(outputs) if outputs is not None else [f"{name}_out"]
        self.nodes.append(helper.make_node(op, list(inputs), outputs, name=name, **attrs))
        return outputs[0]

    def conv(self, x: str, cin: int, cout: int, name: str, *, k: int = 3, stride: int = 1, gain: float = 1.0) -> str:
        """A convolution with bias (a batch norm folded into it)."""
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = self.weight(f"{name}.w", (self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32))
        b = self.weight(f"{name}.b", (self.rng.standard_normal(cout) * 0.05).astype(np.float32))
        return self.node("Conv", [x, w, b], name, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def model(
        self,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        name: str,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, list(inputs), list(outputs), self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_operatorsetid("", OPSET)], ir_version=IR_VERSION, producer_name="tests"
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def f32(name: str, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    """A float32 tensor declaration (None: unknown shape)."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def chain() -> onnx.ModelProto:
    """A plain chain of 13 nodes; node 0 is a Constant, so the cut after it is empty.

    Input ``x`` 1x3x16x16; output ``y`` 1x8.
    """
    b = Builder(seed=1)
    half = b.node("Constant", [], "half", value=numpy_helper.from_array(np.float32(0.5), "half"))
    c1 = b.conv("x", 3, 8, "conv1")
    r1 = b.node("Relu", [c1], "relu1")
    c2 = b.conv(r1, 8, 8, "conv2")
    a2 = b.node("Add", [c2, r1], "add2")
    r2 = b.node("Relu", [a2], "relu2")
    p2 = b.node("MaxPool", [r2], "pool2", kernel_shape=[2, 2], strides=[2, 2])
    c3 = b.conv(p2, 8, 8, "conv3", k=1)
    s3 = b.node("Sigmoid", [c3], "sig3")
    m3 = b.node("Mul", [s3, half], "mul3")
    g = b.node("GlobalAveragePool", [m3], "gap")
    f = b.node("Flatten", [g], "flatten")
    b.node("Identity", [f], "out", outputs=["y"])
    return b.model([f32("x", [1, 3, 16, 16])], [f32("y", [1, 8])], "chain")


def fpn() -> onnx.ModelProto:
    """A small backbone with three pyramid levels, top-down Resize+Add and a Concat head.

    Input ``images`` 1x3x32x32; output ``features`` 1x8x(16*16+8*8+4*4) = 1x8x336.
    Cutting inside the backbone sends several tensors (the skip connections).
    """
    b = Builder(seed=2)
    scales = b.weight("up2", np.array([1, 1, 2, 2], np.float32))
    c1 = b.node("Relu", [b.conv("images", 3, 8, "c1", stride=2)], "c1_relu")  # 16x16
    c2 = b.node("Relu", [b.conv(c1, 8, 12, "c2", stride=2)], "c2_relu")  # 8x8
    c3 = b.node("Relu", [b.conv(c2, 12, 16, "c3", stride=2)], "c3_relu")  # 4x4
    l1 = b.conv(c1, 8, 8, "lat1", k=1)
    l2 = b.conv(c2, 12, 8, "lat2", k=1)
    p3 = b.conv(c3, 16, 8, "lat3", k=1)
    up3 = b.node("Resize", [p3, "", scales], "up3", mode="nearest")
    p2 = b.node("Add", [l2, up3], "p2_add")
    up2 = b.node("Resize", [p2, "", scales], "up2", mode="nearest")
    p1 = b.node("Add", [l1, up2], "p1_add")
    flat = []
    for level, p in (("1", p1), ("2", p2), ("3", p3)):
        o = b.node("Relu", [b.conv(p, 8, 8, f"out{level}")], f"out{level}_relu")
        flat.append(b.node("Reshape", [o, b.weight(f"shape{level}", np.array([1, 8, -1], np.int64))], f"flat{level}"))
    b.node("Concat", flat, "concat", axis=2, outputs=["features"])
    return b.model([f32("images", [1, 3, 32, 32])], [f32("features", [1, 8, 336])], "fpn")


def side_input() -> onnx.ModelProto:
    """Two inputs: ``images`` (1x3x16x16) and ``scale`` (1x1x4), the latter read only by the last node.

    Outputs: ``stem`` (1x8x8x8, a graph output also read by the next node: an early
    output for cuts after it), ``scores`` (1x16x1) and ``boxes`` (1x16x4) = raw boxes * scale.
    """
    b = Builder(seed=3)
    stem = b.node("Relu", [b.conv("images", 3, 8, "stem_conv", stride=2)], "stem_relu", outputs=["stem"])
    f = b.node("Relu", [b.conv(stem, 8, 8, "body", stride=2)], "body_relu")  # 1x8x4x4
    cls = b.conv(f, 8, 1, "cls", k=1)
    box = b.conv(f, 8, 4, "box", k=1)
    cls_t = b.node("Transpose", [cls], "cls_t", perm=[0, 2, 3, 1])
    box_t = b.node("Transpose", [box], "box_t", perm=[0, 2, 3, 1])
    b.node("Sigmoid", [b.node("Reshape", [cls_t, b.weight("s1", np.array([1, -1, 1], np.int64))], "cls_flat")],
           "cls_sig", outputs=["scores"])
    raw = b.node("Reshape", [box_t, b.weight("s4", np.array([1, -1, 4], np.int64))], "box_flat")
    b.node("Mul", [raw, "scale"], "rescale", outputs=["boxes"])
    return b.model(
        [f32("images", [1, 3, 16, 16]), f32("scale", [1, 1, 4])],
        [f32("stem", [1, 8, 8, 8]), f32("scores", [1, 16, 1]), f32("boxes", [1, 16, 4])],
        "side_input",
    )


def control_flow(*, annotate: bool = True) -> onnx.ModelProto:
    """An If (with a nested If in its else branch) and a Loop whose bodies read outer tensors.

    Input ``x`` 1x4x8x8, output ``y`` 1x4x8x8. Nodes: 0 conv0 -> a, 1 relu0 -> b,
    2 mean -> m, 3 positive -> cond, 4 square -> c, 5 branch (If) -> d, 6 repeat (Loop) -> e,
    7 join -> y. The If reads a, b, c (b only from the nested If); the Loop body reads a and b.
    onnx shape inference gives the Loop output a type but no shape; ``annotate`` records
    the shape in value_info, as exporters do (without it, onnx.checker rejects a head or a
    tail that has the Loop output as input or output; onnxruntime accepts both).
    """
    b = Builder(seed=4)
    a = b.conv("x", 4, 4, "conv0")
    r = b.node("Relu", [a], "relu0")
    m = b.node("ReduceMean", [r], "mean", keepdims=0)
    cond = b.node("Greater", [m, b.weight("threshold", np.float32(0.1))], "positive")
    c = b.node("Mul", [r, r], "square")

    t = lambda name: f32(name, None)  # noqa: E731
    inner = helper.make_node(
        "If", [cond], ["inner_out"], name="inner_if",
        then_branch=helper.make_graph([helper.make_node("Mul", ["else_diff", r], ["inner_then"])], "inner_then",
                                      [], [t("inner_then")]),
        else_branch=helper.make_graph([helper.make_node("Neg", [a], ["inner_else"])], "inner_else",
                                      [], [t("inner_else")]),
    )
    then_g = helper.make_graph([helper.make_node("Add", [a, c], ["then_sum"])], "then", [], [t("then_sum")])
    else_g = helper.make_graph(
        [helper.make_node("Sub", [c, a], ["else_diff"]), inner, helper.make_node("Abs", ["inner_out"], ["else_out"])],
        "else", [], [t("else_out")],
    )
    d = b.node("If", [cond], "branch", then_branch=then_g, else_branch=else_g)

    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Mul", [a, b.weight("tenth", np.float32(0.1))], ["scaled"]),
            helper.make_node("Add", ["v_in", "scaled"], ["v_sum"]),
            helper.make_node("Max", ["v_sum", r], ["v_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), f32("v_in", [1, 4, 8, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), f32("v_out", [1, 4, 8, 8])],
    )
    trips = b.weight("trips", np.array(3, np.int64))
    go = b.weight("go", np.array(True))
    e = b.node("Loop", [trips, go, d], "repeat", body=body)
    b.node("Add", [d, e], "join", outputs=["y"])
    model = b.model([f32("x", [1, 4, 8, 8])], [f32("y", [1, 4, 8, 8])], "control_flow")
    if annotate:
        model.graph.value_info.append(f32(e, [1, 4, 8, 8]))
    return model


# (blocks, channels, stride) per stage of resnet_fpn(): 3 + 7*275 + 4 projections + 14 FPN + 51 head = 1,997 nodes.
RESNET_FPN_STAGES: tuple[tuple[int, int, int], ...] = ((40, 8, 1), (80, 12, 2), (110, 16, 2), (45, 16, 2))


def resnet_fpn(size: int = 32) -> onnx.ModelProto:
    """A RetinaNet-like detector of about 2,000 nodes on a tiny input (1x3xSIZExSIZE).

    Stem (conv s2, relu, maxpool s2), four stages of residual blocks (conv1x1-relu-conv3x3-
    relu-conv1x1-add-relu, a 1x1 projection conv on the first block of a stage), FPN
    laterals + top-down nearest Resize + Add, and per level a class and a box head
    (conv-relu-conv, transpose, reshape with a Constant shape), concatenated.
    Outputs ``scores`` (1xAx4, sigmoid) and ``boxes`` (1xAx4), A = sum of level areas.
    Node names: ``s{stage}b{block}_{conv1,relu1,conv2,relu2,conv3,proj,add,relu}``.
    """
    b = Builder(seed=5)
    x = b.node("Relu", [b.conv("images", 3, 8, "stem", stride=2)], "stem_relu")
    x = b.node("MaxPool", [x], "stem_pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 8
    levels = []
    for s, (blocks, ch, stride) in enumerate(RESNET_FPN_STAGES):
        for k in range(blocks):
            p = f"s{s}b{k}"
            st = stride if k == 0 else 1
            mid = max(ch // 2, 4)
            y = b.node("Relu", [b.conv(x, cin, mid, f"{p}_conv1", k=1)], f"{p}_relu1")
            y = b.node("Relu", [b.conv(y, mid, mid, f"{p}_conv2", stride=st)], f"{p}_relu2")
            y = b.conv(y, mid, ch, f"{p}_conv3", k=1, gain=0.2)  # small residual branch keeps 260 blocks finite
            skip = b.conv(x, cin, ch, f"{p}_proj", k=1, stride=st) if (k == 0) else x
            x = b.node("Relu", [b.node("Add", [y, skip], f"{p}_add")], f"{p}_relu")
            cin = ch
        levels.append((x, ch))
    scales = b.weight("up2", np.array([1, 1, 2, 2], np.float32))
    top = None
    pyramid = []
    for s in reversed(range(len(levels))):
        x, ch = levels[s]
        lat = b.conv(x, ch, 8, f"fpn_lat{s}", k=1)
        if top is not None:
            lat = b.node("Add", [lat, b.node("Resize", [top, "", scales], f"fpn_up{s}", mode="nearest")], f"fpn_add{s}")
        top = lat
        pyramid.append((s, b.conv(lat, 8, 8, f"fpn_out{s}")))
    scores, boxes = [], []
    for s, p in sorted(pyramid):
        for head, out, sink in (("cls", 4, scores), ("box", 4, boxes)):
            h = b.node("Relu", [b.conv(p, 8, 8, f"{head}{s}_conv1")], f"{head}{s}_relu1")
            h = b.conv(h, 8, out, f"{head}{s}_conv2")
            h = b.node("Transpose", [h], f"{head}{s}_t", perm=[0, 2, 3, 1])
            shape = b.node("Constant", [], f"{head}{s}_shape",
                           value=numpy_helper.from_array(np.array([1, -1, out], np.int64), f"{head}{s}_shape"))
            sink.append(b.node("Reshape", [h, shape], f"{head}{s}_flat"))
    b.node("Sigmoid", [b.node("Concat", scores, "cls_cat", axis=1)], "cls_sig", outputs=["scores"])
    b.node("Concat", boxes, "box_cat", axis=1, outputs=["boxes"])
    return b.model(
        [f32("images", [1, 3, size, size])],
        [f32("scores", [1, None, 4]), f32("boxes", [1, None, 4])],
        "resnet_fpn",
    )


def fusion_patterns() -> onnx.ModelProto:
    """One instance of each op pattern onnxruntime fuses in a way that changes float results.

    Conv -> BatchNormalization, Conv -> Add(const) -> Mul(const), Conv -> Add(residual) ->
    Relu, Transpose -> MatMul, MatMul -> Add(bias), a decomposed Gelu and a decomposed
    LayerNorm. Input ``x`` 1x8x8x8, output ``y`` 64x600.
    """
    b = Builder(seed=11)
    rng = b.rng

    def vec(name: str, n: int, low: float = 0.0) -> str:
        return b.weight(name, (rng.random(n) + low).astype(np.float32))

    x = b.conv("x", 8, 16, "c1")
    bn = b.node("BatchNormalization", [x, vec("bn.g", 16, 0.5), vec("bn.b", 16), vec("bn.m", 16), vec("bn.v", 16, 0.5)],
                "bn")
    r = b.node("Relu", [bn], "r1")
    c2 = b.conv(r, 16, 16, "c2")
    a = b.node("Add", [c2, b.weight("addc", rng.random((1, 16, 1, 1)).astype(np.float32))], "addc")
    m = b.node("Mul", [a, b.weight("mulc", rng.random((1, 16, 1, 1)).astype(np.float32))], "mulc")
    c3 = b.conv(m, 16, 16, "c3")
    s = b.node("Relu", [b.node("Add", [c3, m], "res")], "r3")
    flat = b.node("Reshape", [s, b.weight("flat_shape", np.array([16, 64], np.int64))], "flat")
    t = b.node("Transpose", [flat], "tr", perm=[1, 0])
    mm = b.node("MatMul", [t, b.weight("W1", (rng.standard_normal((16, 300)) * 0.1).astype(np.float32))], "mm1")
    mm = b.node("MatMul", [mm, b.weight("W2", (rng.standard_normal((300, 600)) * 0.1).astype(np.float32))], "mm2")
    z = b.node("Add", [mm, vec("bias", 600)], "bias")
    d = b.node("Div", [z, b.weight("sqrt2", np.float32(np.sqrt(2.0)))], "gelu_div")
    e = b.node("Add", [b.node("Erf", [d], "gelu_erf"), b.weight("one", np.float32(1.0))], "gelu_add")
    g = b.node("Mul", [b.node("Mul", [z, e], "gelu_mul"), b.weight("half", np.float32(0.5))], "gelu_half")
    mean = b.node("ReduceMean", [g], "ln_mean", axes=[-1])
    centred = b.node("Sub", [g, mean], "ln_sub")
    squared = b.node("Pow", [centred, b.weight("two", np.float32(2.0))], "ln_pow")
    var = b.node("ReduceMean", [squared], "ln_var", axes=[-1])
    std = b.node("Sqrt", [b.node("Add", [var, b.weight("eps", np.float32(1e-5))], "ln_eps")], "ln_sqrt")
    n = b.node("Mul", [b.node("Div", [centred, std], "ln_div"), vec("ln.g", 600)], "ln_mul")
    b.node("Add", [n, vec("ln.b", 600)], "ln_add", outputs=["y"])
    return b.model([f32("x", [1, 8, 8, 8])], [f32("y", [64, 600])], "fusion_patterns")


def qdq() -> onnx.ModelProto:
    """QuantizeLinear -> DequantizeLinear -> Conv (DequantizeLinear weights) -> Q -> DQ, as an
    int8-static variant looks; onnxruntime fuses it into an integer convolution.
    Input ``x`` 1x8x8x8, output ``y`` 1x16x8x8.
    """
    b = Builder(seed=12)
    scale, zero = b.weight("scale", np.float32(0.05)), b.weight("zero", np.uint8(128))
    x = b.node("DequantizeLinear", [b.node("QuantizeLinear", ["x", scale, zero], "q_in"), scale, zero], "dq_in")
    wq = b.weight("w_q", b.rng.integers(0, 255, (16, 8, 3, 3)).astype(np.uint8))
    w = b.node("DequantizeLinear", [wq, b.weight("w_scale", np.float32(0.01)), zero], "dq_w")
    c = b.node("Conv", [x, w], "conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    b.node("DequantizeLinear", [b.node("QuantizeLinear", [c, scale, zero], "q_out"), scale, zero], "dq_out",
           outputs=["y"])
    return b.model([f32("x", [1, 8, 8, 8])], [f32("y", [1, 16, 8, 8])], "qdq")


def symbolic_batch() -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool on ``x`` of shape (N, 3, H, W): sizes need fixed input shapes."""
    b = Builder(seed=13)
    r = b.node("Relu", [b.conv("x", 3, 4, "conv")], "relu")
    b.node("GlobalAveragePool", [r], "gap", outputs=["y"])
    return b.model([f32("x", ["N", 3, "H", "W"])], [f32("y", ["N", 4, 1, 1])], "symbolic_batch")


def feeds_for(model: onnx.ModelProto, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 feeds for every graph input (symbolic dims taken as 1)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for v in model.graph.input:
        if v.name in initializers:
            continue
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
        feeds[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def relu_activation(shape, *, seed: int = 0, sigma: float = 1.5) -> np.ndarray:
    """ReLU of a spatially smoothed random field with per-channel gain and bias: sparse, non-negative."""
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * transfer, s=(h, w))
    field /= field.std()
    gain = rng.uniform(0.5, 3.0, (1, shape[1], 1, 1))
    bias = rng.uniform(-1.5, 0.5, (1, shape[1], 1, 1))
    return np.maximum(field * gain + bias, 0).astype(np.float32)
