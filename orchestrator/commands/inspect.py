"""`splitsweep inspect`: the split-point table of an ONNX model (cut tensors, shapes, bytes per node)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tasks.graph import SplitGraph, SplitPoint, TensorInfo, format_ranges

__all__ = ["NAME", "HELP", "add_arguments", "run", "human_bytes", "parse_input_shape"]

NAME = "inspect"
HELP = "List the split points of an ONNX model: cut tensors, shapes and bytes per node."


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``images=1x3x512x512`` -> ("images", (1, 3, 512, 512))."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=DxDx... with positive integers, got {text!r}")
    return name, shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to inspect")
    parser.add_argument("--valid-only", action="store_true", help="list only the valid split points")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        type=parse_input_shape,
        metavar="NAME=1x3x512x512",
        help="fix the shape of a graph input with symbolic dimensions (repeatable)",
    )


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _tensor_text(info: TensorInfo) -> str:
    return f"{info.name} {info.describe()} {human_bytes(info.nbytes)}"


def _tensor_json(info: TensorInfo) -> dict[str, Any]:
    return {"name": info.name, "dtype": info.dtype, "shape": info.shape, "bytes": info.nbytes}


def _row_json(point: SplitPoint) -> dict[str, Any]:
    return {
        "split": point.split,
        "op_type": point.op_type,
        "node_name": point.node_name,
        "branches": point.branches,
        "tensors": [_tensor_json(t) for t in point.tensors],
        "total_bytes": point.total_bytes,
        "side_inputs": [_tensor_json(t) for t in point.side_inputs],
        "valid": point.valid,
        "reason": point.reason,
    }


def run(args: argparse.Namespace) -> int:
    graph = SplitGraph(args.model, input_shapes=dict(args.input_shape) or None)
    points = graph.split_points()
    valid = [p.split for p in points if p.valid]
    rows = [p for p in points if p.valid or not args.valid_only]
    inputs = [graph.info(n) for n in graph.input_names]
    outputs = [graph.info(n) for n in graph.output_names]
    out = sys.stdout
    if args.json:
        json.dump(
            {
                "model": str(args.model),
                "nodes": graph.num_nodes,
                "inputs": [_tensor_json(t) for t in inputs],
                "outputs": [_tensor_json(t) for t in outputs],
                "split_points": [_row_json(p) for p in rows],
                "valid": valid,
                "valid_ranges": format_ranges(valid),
            },
            out,
            indent=1,
        )
        out.write("\n")
        return 0
    out.write(f"{args.model}: {graph.num_nodes} nodes\n")
    out.write("inputs:  " + ", ".join(f"{t.name} {t.describe()}" for t in inputs) + "\n")
    out.write("outputs: " + ", ".join(f"{t.name} {t.describe()}" for t in outputs) + "\n\n")
    op_w = max([len("op")] + [len(p.op_type) for p in rows])
    name_w = min(40, max([len("node")] + [len(p.node_name) for p in rows]))
    out.write(f"{'split':>6}  {'op':<{op_w}}  {'node':<{name_w}}  {'branches':>8}  {'total':>10}  valid  cut tensors\n")
    for p in rows:
        tensors = "; ".join(_tensor_text(t) for t in p.tensors)
        if p.side_inputs:
            tensors += "  + side inputs: " + "; ".join(_tensor_text(t) for t in p.side_inputs)
        mark = "yes" if p.valid else "no "
        out.write(
            f"{p.split:>6}  {p.op_type:<{op_w}}  {p.node_name[:name_w]:<{name_w}}  {p.branches:>8}  "
            f"{human_bytes(p.total_bytes):>10}  {mark}    {tensors}\n"
        )
    out.write(f"\n{len(valid)} valid split points of {graph.num_nodes}: {format_ranges(valid)}\n")
    invalid = [p for p in points if not p.valid]
    for p in invalid[:10]:
        out.write(f"  not valid: {p.split} ({p.op_type} {p.node_name!r}): {p.reason}\n")
    if len(invalid) > 10:
        out.write(f"  ... and {len(invalid) - 10} more not valid\n")
    return 0
