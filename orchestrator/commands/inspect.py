"""`splitsweep inspect`: the split-point table of an ONNX model (cut tensors, shapes, bytes per node)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from orchestrator.reporting.table import human_bytes
from tasks.errors import SpecError, SplitsweepError
from tasks.graph import SplitGraph, SplitPoint, TensorInfo, format_ranges

__all__ = ["add_arguments", "run", "human_bytes", "parse_input_shape", "suggest", "Suggestion"]


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
    parser.add_argument("model", metavar="MODEL.onnx", nargs="?", help="the ONNX model to inspect (or --spec)")
    parser.add_argument(
        "--spec", metavar="SPEC",
        help="inspect a model of this sweep spec (its path, input_shapes and adapter); unknown cut sizes are "
        "measured on the spec's first image",
    )
    parser.add_argument("--model-name", metavar="NAME", help="--spec: which of the spec's models (default: the first)")
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
    parser.add_argument(
        "--no-measure", action="store_true",
        help="do not run the model on a synthetic input where shape inference leaves cut sizes unknown",
    )
    parser.add_argument(
        "--suggest", action="store_true",
        help="list candidate split points: few feature maps, a local minimum of bytes, with head MACs",
    )
    parser.add_argument("--max-maps", type=int, default=4, metavar="N",
                        help="--suggest: at most N feature maps cross the cut (default 4)")
    parser.add_argument("--plot", metavar="FILE", help="draw cut bytes and head MACs against node index (.png / .svg)")


WIDTH = 120  # the table fits a 120-column terminal; --json has everything unabridged


def elide(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by dropping its middle (``backbone…conv_3``):
    the start and the end of a layer name are the parts that tell nodes apart."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    keep = width - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2 :]


def wrap_parts(first: str, parts: list[str], width: int) -> list[str]:
    """``first`` and then ``parts`` joined by "; " into lines of at most ``width``
    characters; a part longer than a line is elided in its middle."""
    lines = [first]
    for part in parts:
        part = elide(part, width)
        joined = f"{lines[-1]} {part}" if lines[-1] == first else f"{lines[-1]}; {part}"
        if len(joined) <= width:
            lines[-1] = joined
        else:
            lines[-1] += ";" if lines[-1] != first else ""
            lines.append(part)
    return lines


def _tensor_text(info: TensorInfo) -> str:
    return f"{info.name} {info.describe()} {human_bytes(info.nbytes)}"


def _tensor_json(info: TensorInfo) -> dict[str, Any]:
    return {"name": info.name, "dtype": info.dtype, "shape": info.shape, "bytes": info.nbytes,
            "kind": "data" if info.is_data else "shape", "measured": info.measured}


def kinds_text(point: SplitPoint) -> str:
    """``3 feature maps 4.1 MiB + 4 shape tensors 32 B`` (``measured`` where sizes were measured)."""
    parts = []
    data, shape = point.data_tensors, point.shape_tensors
    if data:
        parts.append(f"{len(data)} feature map{'s' * (len(data) != 1)} {human_bytes(point.data_bytes)}")
    if shape:
        parts.append(f"{len(shape)} shape tensor{'s' * (len(shape) != 1)} {human_bytes(point.shape_bytes)}")
    return " + ".join(parts) or "nothing"


def _row_json(point: SplitPoint) -> dict[str, Any]:
    return {
        "split": point.split,
        "op_type": point.op_type,
        "node_name": point.node_name,
        "branches": point.branches,
        "tensors": [_tensor_json(t) for t in point.tensors],
        "total_bytes": point.total_bytes,
        "data_bytes": point.data_bytes,
        "shape_bytes": point.shape_bytes,
        "measured": point.measured,
        "side_inputs": [_tensor_json(t) for t in point.side_inputs],
        "valid": point.valid,
        "reason": point.reason,
    }


@dataclass(frozen=True)
class Suggestion:
    """A candidate split point: few feature maps, and fewer bytes than its neighbours along the graph."""

    point: SplitPoint
    head_macs: int | None


def suggest(points: list[SplitPoint], head_macs: list[int] | None, *, max_maps: int = 4, limit: int = 15) -> list[Suggestion]:
    """Valid cuts with 1..max_maps feature maps whose data bytes are a local minimum along the graph.

    Consecutive cuts of equal size (a run of Constant nodes, elementwise ops) form one
    plateau; a plateau is a minimum when the plateaus on both sides are larger, and its
    last index is suggested (the most computing the device does for those bytes). The
    ``limit`` smallest are returned in node order.
    """
    rows = [p for p in points if p.valid and p.data_bytes is not None and 1 <= len(p.data_tensors) <= max_maps]
    plateaus: list[list[SplitPoint]] = []
    for p in rows:
        if plateaus and plateaus[-1][-1].data_bytes == p.data_bytes:
            plateaus[-1].append(p)
        else:
            plateaus.append([p])
    picks = []
    for i, run in enumerate(plateaus):
        size = run[0].data_bytes
        left = plateaus[i - 1][0].data_bytes if i else None
        right = plateaus[i + 1][0].data_bytes if i + 1 < len(plateaus) else None
        if (left is None or size < left) and (right is None or size < right):
            computing = [p for p in run if p.op_type != "Constant"]  # exporters emit Constants by the hundred
            picks.append((computing or run)[-1])
    picks = sorted(sorted(picks, key=lambda p: p.data_bytes)[:limit], key=lambda p: p.split)
    return [Suggestion(p, head_macs[p.split] if head_macs else None) for p in picks]


def _head_macs(graph: SplitGraph) -> list[int] | None:
    """Cumulative head MACs, with measured shapes where inference has none; None if unknown."""
    from tasks.macs import count_macs, macs_by_split

    try:
        return macs_by_split(count_macs(graph.model, known_shapes=graph.measured_shapes()))
    except SplitsweepError:
        return None


def _measure(graph: SplitGraph, out) -> str | None:
    """Measure unknown cut sizes on a synthetic input; a note for the table, or why it could not."""
    from tasks.cutsizes import measure_into, unmeasurable_inputs

    unknown = graph.unknown_size_tensors()
    if not unknown:
        return None
    missing = unmeasurable_inputs(graph)
    if missing:
        names = ", ".join(f"{t.name} {t.describe()}" for t in missing)
        return (f"{len(unknown)} cut tensors have unknown sizes and input(s) {names} have no fixed shape: "
                "pass --input-shape NAME=1x3x800x800 (in a spec: input_shapes or the adapter's input_size) "
                "to measure them")
    count = measure_into(graph)
    return f"{count} cut tensor sizes measured on a synthetic input (marked *): shape inference cannot follow them"


def _open(args: argparse.Namespace) -> tuple[SplitGraph, str | None]:
    """The graph to inspect and the note on measured sizes: from MODEL.onnx, or from a spec's model."""
    if args.spec is None:
        if args.model is None:
            raise SpecError("inspect needs a model", key="MODEL.onnx", allowed="MODEL.onnx, or --spec SPEC [--model-name NAME]")
        graph = SplitGraph(args.model, input_shapes=dict(args.input_shape) or None)
        return graph, None if args.no_measure else _measure(graph, sys.stdout)
    if args.model is not None:
        raise SpecError("give MODEL.onnx or --spec, not both", key="--spec",
                        allowed="--spec SPEC --model-name NAME picks one of the spec's models")
    from orchestrator import load_spec
    from orchestrator.planning.cutsizes import measure_on_first_image, spec_model
    from orchestrator.planning.plan import resolve_model_path

    spec = load_spec(args.spec)
    _, m = spec_model(spec, args.model_name)
    args.model = resolve_model_path(spec, m)
    shapes = {k: tuple(v) for k, v in (m.input_shapes or {}).items()} | dict(args.input_shape)
    graph = SplitGraph(args.model, input_shapes=shapes or None)
    return graph, None if args.no_measure else measure_on_first_image(graph, spec, m)


def run(args: argparse.Namespace) -> int:
    graph, note = _open(args)
    out = sys.stdout
    points = graph.split_points()
    valid = [p.split for p in points if p.valid]
    rows = [p for p in points if p.valid or not args.valid_only]
    inputs = [graph.info(n) for n in graph.input_names]
    outputs = [graph.info(n) for n in graph.output_names]
    macs = _head_macs(graph) if (args.suggest or args.plot) else None
    picks = suggest(points, macs, max_maps=args.max_maps) if args.suggest else []
    if args.plot:
        plot(points, macs, args.plot, title=str(args.model))
    if args.json:
        doc = {
            "model": str(args.model),
            "nodes": graph.num_nodes,
            "inputs": [_tensor_json(t) for t in inputs],
            "outputs": [_tensor_json(t) for t in outputs],
            "split_points": [_row_json(p) for p in rows],
            "valid": valid,
            "valid_ranges": format_ranges(valid),
            "note": note,
        }
        if args.suggest:
            doc["suggestions"] = [{"split": s.point.split, "node_name": s.point.node_name, "op_type": s.point.op_type,
                                   "feature_maps": len(s.point.data_tensors), "data_bytes": s.point.data_bytes,
                                   "shape_tensors": len(s.point.shape_tensors), "shape_bytes": s.point.shape_bytes,
                                   "head_macs": s.head_macs} for s in picks]
        json.dump(doc, out, indent=1)
        out.write("\n")
        return 0
    out.write(f"{args.model}: {graph.num_nodes} nodes\n")
    out.write(elide("inputs:  " + ", ".join(f"{t.name} {t.describe()}" for t in inputs), WIDTH) + "\n")
    out.write(elide("outputs: " + ", ".join(f"{t.name} {t.describe()}" for t in outputs), WIDTH) + "\n")
    if note:
        out.write(f"note: {note}\n")
    out.write("\n")
    if args.suggest:
        _write_suggestions(out, picks, macs)
        return 0
    op_w = min(14, max([len("op")] + [len(p.op_type) for p in rows]))
    name_w = min(28, max([len("node")] + [len(p.node_name) for p in rows]))
    head = f"{'split':>6}  {'op':<{op_w}}  {'node':<{name_w}}  {'branches':>8}  {'total':>11}  valid  "
    room = max(20, WIDTH - len(head))
    out.write(head + elide("what crosses: cut tensors", room) + "\n")
    for p in rows:
        parts = [_tensor_text(t) for t in p.tensors]
        if p.side_inputs:
            parts.append("+ side inputs: " + "; ".join(_tensor_text(t) for t in p.side_inputs))
        mark = "yes" if p.valid else "no "
        total = human_bytes(p.total_bytes) + ("*" if p.measured else " ")
        lines = wrap_parts(f"{kinds_text(p)}:", parts, room - 2)
        out.write(
            f"{p.split:>6}  {elide(p.op_type, op_w):<{op_w}}  {elide(p.node_name, name_w):<{name_w}}  {p.branches:>8}  "
            f"{total:>11}  {mark}    {lines[0]}\n"
        )
        for more in lines[1:]:  # further cut tensors under the first, never past WIDTH
            out.write(" " * (len(head) + 2) + more + "\n")
    out.write(f"\n{len(valid)} valid split points of {graph.num_nodes}: {format_ranges(valid)}\n")
    invalid = [p for p in points if not p.valid]
    for p in invalid[:10]:
        out.write(elide(f"  not valid: {p.split} ({p.op_type} {p.node_name!r}): {p.reason}", WIDTH) + "\n")
    if len(invalid) > 10:
        out.write(f"  ... and {len(invalid) - 10} more not valid\n")
    return 0


def _write_suggestions(out, picks: list[Suggestion], macs: list[int] | None) -> None:
    if not picks:
        out.write("no candidate split points: no valid cut of known size with few feature maps\n")
        return
    total = macs[-1] if macs else None
    name_w = min(48, max(len("node"), *(len(s.point.node_name) for s in picks)))
    out.write(f"{'split':>6}  {'op':<12}  {'node':<{name_w}}  {'feature maps':>20}  {'shape tensors':>16}  {'head MACs':>16}\n")
    for s in picks:
        p = s.point
        maps = f"{len(p.data_tensors)}: {human_bytes(p.data_bytes)}" + ("*" if any(t.measured for t in p.data_tensors) else "")
        shapes = f"{len(p.shape_tensors)}: {human_bytes(p.shape_bytes)}" if p.shape_tensors else "-"
        head = "?" if s.head_macs is None else _macs_text(s.head_macs) + (f" ({100 * s.head_macs / total:.0f}%)" if total else "")
        out.write(f"{p.split:>6}  {p.op_type[:12]:<12}  {p.node_name[:name_w]:<{name_w}}  {maps:>20}  {shapes:>16}  {head:>16}\n")
    out.write(f"\n{len(picks)} candidates: local minima of the feature-map bytes with at most the given number of maps "
              "(columns: how many tensors, their total bytes; * measured)\n")


def _macs_text(n: int) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e8 else f"{n / 1e6:.2f} M"


def plot(points: list[SplitPoint], macs: list[int] | None, path: str, *, title: str = "") -> None:
    """Cut bytes (valid cuts) and cumulative head MACs against node index, and below it the
    number of tensors crossing each cut (branches)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in ("png", "svg", "pdf"):
        raise SpecError(f"cannot draw to {path!r}", key="--plot", allowed=".png, .svg, .pdf")
    rows = [p for p in points if p.valid and p.total_bytes is not None]
    fig, (ax, ax_b) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    ax.step([p.split for p in rows], [p.data_bytes or 0 for p in rows], where="post", label="feature maps (bytes)")
    ax.step([p.split for p in rows], [p.total_bytes for p in rows], where="post", alpha=0.5, label="all cut tensors (bytes)")
    ax.set_yscale("symlog")
    ax.set_ylabel("bytes crossing the cut")
    ax_b.step([p.split for p in points], [p.branches for p in points], where="post", color="tab:green")
    ax_b.set_ylabel("branches")
    ax_b.set_xlabel("split (node index)")
    if macs:
        ax2 = ax.twinx()
        ax2.plot(range(len(macs)), [m / 1e9 for m in macs], color="tab:red", label="head MACs (G)")
        ax2.set_ylabel("head GMACs")
        ax2.legend(loc="lower right")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
