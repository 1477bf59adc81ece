"""`splitsweep plan SPEC`: how many tasks and work units, and how many are already stored; no Ray."""

from __future__ import annotations

from collections import Counter


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--retry-failed", action="store_true", help="count failed tasks as to be run again")
    parser.add_argument("--no-sizes", action="store_true",
                        help="skip the per-split size table (which may run each model once on the first image)")


def run(args) -> int:
    from orchestrator.plan import build_plan
    from orchestrator.schema import codec_label, codec_sort_key, split_label
    from orchestrator.spec import load_spec
    from orchestrator.store import ResultsStore
    from orchestrator.table import format_table

    spec = load_spec(args.spec)
    plan = build_plan(spec)
    store = ResultsStore(spec.output_location)
    status = store.task_status() if store.exists() and store.check_meta() is not None else {}
    if args.retry_failed:
        status = {k: v for k, v in status.items() if v == "ok"}
    counts = plan.counts(status)
    rows = []
    by = Counter()
    for t in plan.tasks:
        by[(t.model, t.variant, t.split, t.setting, status.get(t.task_id, "remaining"))] += 1
    # the same label and order as `status`: settings by value (QP -26 before -10)
    keys = sorted({k[:4] for k in by}, key=lambda k: (k[0], k[1], k[2], codec_sort_key(k[3].codec, k[3].params)))
    for k in keys:
        rows.append({"model": k[0], "variant": k[1], "split": split_label(k[2]), "codec": codec_label(k[3].codec, k[3].params),
                     "tasks": sum(by[k + (s,)] for s in ("ok", "failed", "remaining")),
                     "ok": by[k + ("ok",)], "failed": by[k + ("failed",)], "remaining": by[k + ("remaining",)]})
    print(format_table(rows, ["model", "variant", "split", "codec", "tasks", "ok", "failed", "remaining"]))
    if not args.no_sizes:
        for m in plan.models:
            print(f"\n{m.name}: what crosses each split (fp32)")
            print(split_sizes_text(plan, m))
    units = plan.units(skip={t for t, s in status.items()}, chunk_tasks=spec.execution.chunk_tasks)
    print(
        f"\n{counts['tasks']} tasks in {counts['units']} work units (head runs); stored: {counts['ok']} ok, "
        f"{counts['failed']} failed; to run: {counts['remaining']} tasks in {len(units)} units → {spec.output_location}"
    )
    return 0


def split_sizes_text(plan, m) -> str:
    """The per-split table of one model: feature maps and shape tensors crossing each cut,
    with sizes measured on the dataset's first image where shape inference cannot tell them."""
    from orchestrator.cutsizes import measure_on_first_image
    from orchestrator.table import format_table, human_bytes
    from tasks.graph import SplitGraph
    from tasks.work import describe_error

    graph = SplitGraph(m.path, input_shapes={k: tuple(v) for k, v in (m.spec.input_shapes or {}).items()} or None)
    try:
        note = measure_on_first_image(graph, plan.spec, m.spec, dataset=plan.dataset)
    except Exception as exc:  # noqa: BLE001 - the table is informational: show the sizes known, and why not more
        note = f"unknown sizes (-) could not be measured on the first image: {describe_error(exc)}"
    points = {p.split: p for p in graph.split_points()}
    rows = []
    for k in m.splits:
        point = points[k]
        def star(tensors) -> str:
            return "*" if any(t.measured for t in tensors) else ""

        rows.append({
            "split": k, "op": point.op_type, "node": point.node_name[:40],
            "feature maps": f"{len(point.data_tensors)}: {human_bytes(point.data_bytes)}{star(point.data_tensors)}",
            "shape tensors": f"{len(point.shape_tensors)}: {human_bytes(point.shape_bytes)}{star(point.shape_tensors)}",
            "total": human_bytes(point.total_bytes) + star(point.tensors),
        })
    text = format_table(rows, ["split", "op", "node", "feature maps", "shape tensors", "total"])
    return text + (f"\n{note}" if note else "")
