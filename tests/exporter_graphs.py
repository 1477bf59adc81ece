"""A small detector built the way torchvision's ONNX exports are: every exporter idiom in 40 nodes.

Idioms (each crosses some cut): a 0-d float computed from the image (its mean), an int64
shape chain (Shape → Gather → Cast → arithmetic → Concat), an in-graph Resize whose output
size comes from that chain (static shape inference cannot follow it, so cut sizes are
unknown until measured), an empty tensor (a zero-channel Slice, concatenated back), a 0-d
bool condition, and TopK + NonMaxSuppression inside an ``If`` whose bodies read outer
tensors. The input is ``images [1, 3, H, W]`` with symbolic H, W: shapes differ from image
to image. Outputs ``boxes [N, 4]`` xyxy in input pixels, ``scores [N]``, ``labels`` int64
``[N]`` (COCO ids 1–3), N dynamic, as the ``boxes-labels-scores`` adapter reads them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.graphs import Builder

__all__ = ["exporter_detector", "RESIZE_TO", "ADAPTER"]

RESIZE_TO = 48  # the longer side after the in-graph resize
ADAPTER = {"type": "boxes-labels-scores", "input_size": None, "boxes": "boxes", "labels": "labels",
           "scores": "scores", "score_threshold": 0.0}


def _i64(b: Builder, name: str, values) -> str:
    return b.weight(name, np.array(values, np.int64))


def _f32(b: Builder, name: str, values) -> str:
    return b.weight(name, np.array(values, np.float32))


def exporter_detector(seed: int = 0) -> onnx.ModelProto:
    b = Builder(seed=seed)
    # pre-processing: a 0-d float (mean) and the int64 shape chain
    mean = b.node("ReduceMean", ["images"], "transform/mean", keepdims=0)
    x = b.node("Sub", ["images", mean], "transform/sub")
    shape = b.node("Shape", ["images"], "transform/shape")
    h = b.node("Gather", [shape, _i64(b, "two", 2)], "transform/gather_h")
    w = b.node("Gather", [shape, _i64(b, "three", 3)], "transform/gather_w")
    hf = b.node("Cast", [h], "transform/cast_h", to=TensorProto.FLOAT)
    wf = b.node("Cast", [w], "transform/cast_w", to=TensorProto.FLOAT)
    scale = b.node("Div", [_f32(b, "target", float(RESIZE_TO)), b.node("Max", [hf, wf], "transform/max")],
                   "transform/scale")
    new_h = b.node("Cast", [b.node("Floor", [b.node("Mul", [hf, scale], "transform/mul_h")], "transform/floor_h")],
                   "transform/int_h", to=TensorProto.INT64)
    new_w = b.node("Cast", [b.node("Floor", [b.node("Mul", [wf, scale], "transform/mul_w")], "transform/floor_w")],
                   "transform/int_w", to=TensorProto.INT64)
    axes0 = _i64(b, "axes0", [0])
    sizes = b.node("Concat", [_i64(b, "nc", [1, 3]), b.node("Unsqueeze", [new_h, axes0], "transform/unsq_h"),
                              b.node("Unsqueeze", [new_w, axes0], "transform/unsq_w")], "transform/sizes", axis=0)
    x = b.node("Resize", [x, "", "", sizes], "transform/resize", mode="linear")
    # backbone, with an empty tensor crossing some cuts
    f1 = b.node("Relu", [b.conv(x, 3, 8, "backbone.body.layer1.conv", stride=2)], "backbone.body.layer1.relu")
    empty = b.node("Slice", [f1, _i64(b, "zero1", [0]), _i64(b, "zero1b", [0]), _i64(b, "axis1", [1])],
                   "backbone.body.layer1.empty")
    f2 = b.node("Relu", [b.conv(f1, 8, 8, "backbone.body.layer2.conv")], "backbone.body.layer2.relu")
    f2 = b.node("Concat", [f2, empty], "backbone.body.layer2.concat", axis=1)
    f = b.node("Add", [f2, f1], "backbone.body.layer2.add")
    # head: per-cell score and box, scaled by the 0-d input sizes
    s = b.node("Sigmoid", [b.conv(f, 8, 1, "head.cls", k=1, gain=3.0)], "head.cls_sig")
    scores_all = b.node("Reshape", [s, _i64(b, "minus1", [-1])], "head.scores_flat")
    raw = b.node("Transpose", [b.conv(f, 8, 4, "head.box", k=1, gain=2.0)], "head.box_t", perm=[0, 2, 3, 1])
    raw = b.node("Sigmoid", [b.node("Reshape", [raw, _i64(b, "m1x4", [-1, 4])], "head.box_flat")], "head.box_sig")
    size_xy = b.node("Concat", [b.node("Unsqueeze", [wf, axes0], "head.unsq_w"),
                                b.node("Unsqueeze", [hf, axes0], "head.unsq_h")], "head.size_xy", axis=0)
    xy = b.node("Mul", [b.node("Slice", [raw, _i64(b, "s0", [0]), _i64(b, "s2", [2]), _i64(b, "ax1", [1])],
                                "head.xy_raw"), size_xy], "head.xy")
    half = b.node("Mul", [size_xy, _f32(b, "half", 0.5)], "head.half")
    wh = b.node("Mul", [b.node("Slice", [raw, _i64(b, "s2b", [2]), _i64(b, "s4", [4]), _i64(b, "ax1b", [1])],
                                "head.wh_raw"), half], "head.wh")
    x2y2 = b.node("Min", [b.node("Add", [xy, wh], "head.x2y2_raw"), size_xy], "head.x2y2")
    boxes_all = b.node("Concat", [xy, x2y2], "head.boxes", axis=1)
    best = b.node("ReduceMax", [scores_all], "postprocess/best", keepdims=0)
    cond = b.node("Greater", [best, _f32(b, "minus_one", -1.0)], "postprocess/any")
    b.node("If", [cond], "postprocess/if", outputs=["boxes", "scores", "labels"],
           then_branch=_select_branch(scores_all, boxes_all), else_branch=_nothing_branch())
    dims = ("H", "W")
    return b.model(
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *dims])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"])],
        "exporter_detector",
    )


def _select_branch(scores_all: str, boxes_all: str) -> onnx.GraphProto:
    """TopK then NMS, reading the outer scores and boxes (free names of the body)."""
    c = lambda name, arr: helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(arr))  # noqa: E731
    nodes = [
        helper.make_node("Shape", [scores_all], ["sel_n"]),
        c("sel_cap", np.array([12], np.int64)),
        helper.make_node("Min", ["sel_n", "sel_cap"], ["sel_k"]),
        helper.make_node("TopK", [scores_all, "sel_k"], ["sel_vals", "sel_idx"]),
        helper.make_node("Gather", [boxes_all, "sel_idx"], ["sel_boxes"], axis=0),
        c("sel_ax0", np.array([0], np.int64)),
        c("sel_ax01", np.array([0, 1], np.int64)),
        helper.make_node("Unsqueeze", ["sel_boxes", "sel_ax0"], ["nms_boxes"]),
        helper.make_node("Unsqueeze", ["sel_vals", "sel_ax01"], ["nms_scores"]),
        c("nms_max", np.array([5], np.int64)),
        c("nms_iou", np.array([0.5], np.float32)),
        helper.make_node("NonMaxSuppression", ["nms_boxes", "nms_scores", "nms_max", "nms_iou"], ["nms_sel"]),
        c("col2", np.array(2, np.int64)),
        helper.make_node("Gather", ["nms_sel", "col2"], ["keep"], axis=1),
        helper.make_node("Gather", ["sel_boxes", "keep"], ["out_boxes"], axis=0),
        helper.make_node("Gather", ["sel_vals", "keep"], ["out_scores"], axis=0),
        helper.make_node("Gather", ["sel_idx", "keep"], ["kept_idx"], axis=0),
        c("three_i", np.array(3, np.int64)),
        c("one_i", np.array(1, np.int64)),
        helper.make_node("Mod", ["kept_idx", "three_i"], ["kept_mod"]),
        helper.make_node("Add", ["kept_mod", "one_i"], ["out_labels"]),
    ]
    return helper.make_graph(nodes, "select", [], _branch_outputs("out"))


def _nothing_branch() -> onnx.GraphProto:
    c = lambda name, arr: helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(arr))  # noqa: E731
    nodes = [c("no_boxes", np.zeros((0, 4), np.float32)), c("no_scores", np.zeros(0, np.float32)),
             c("no_labels", np.zeros(0, np.int64))]
    return helper.make_graph(nodes, "nothing", [], _branch_outputs("no"))


def _branch_outputs(prefix: str) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(f"{prefix}_boxes", TensorProto.FLOAT, [None, 4]),
            helper.make_tensor_value_info(f"{prefix}_scores", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info(f"{prefix}_labels", TensorProto.INT64, [None])]
