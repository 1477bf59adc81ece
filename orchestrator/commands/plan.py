"""`splitsweep plan SPEC`: how many tasks and work units, and how many are already stored; no Ray."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--retry-failed", action="store_true", help="count failed tasks as to be run again")
    parser.add_argument("--no-sizes", action="store_true",
                        help="skip the per-split size table (which may run each model once on the first image)")


def run(args) -> int:
    import pyarrow.compute as pc

    from orchestrator import build_plan, load_spec
    from orchestrator.planning.plan import REMAINING
    from orchestrator.reporting.table import format_table
    from orchestrator.results.planfile import reuse_stored_ids
    from orchestrator.results.schema import codec_label, codec_sort_key, split_label
    from orchestrator.results.store import ResultsStore

    spec = load_spec(args.spec)
    plan = build_plan(spec)
    store = ResultsStore(spec.output_location)
    stored = None
    if store.exists() and store.check_meta() is not None:
        reuse_stored_ids(store, plan)
        stored = store.stored_tasks(("status",))
    if stored is not None and args.retry_failed:
        stored = stored.filter(pc.equal(stored["status"], "ok"))
    state = plan.state(stored)
    counts = plan.counts(state)
    configs = plan.config_counts(state)
    # the same label and order as `status`: settings by value (QP -26 before -10)
    configs.sort(key=lambda c: (c["model"], c["variant"], c["split"], codec_sort_key(c["setting"].codec, c["setting"].params)))
    rows = [
        {"model": c["model"], "variant": c["variant"], "split": split_label(c["split"]),
         "codec": codec_label(c["setting"].codec, c["setting"].params),
         **{k: c[k] for k in ("tasks", "ok", "failed", "remaining")}}
        for c in configs
    ]  # fmt: skip
    print(format_table(rows, ["model", "variant", "split", "codec", "tasks", "ok", "failed", "remaining"]))
    if not args.no_sizes:
        for m in plan.models:
            print(f"\n{m.name}: what crosses each split (fp32)")
            print(split_sizes_text(plan, m))
    units = plan.units(skip=state != REMAINING, chunk_tasks=spec.execution.chunk_tasks)
    sequences = plan.sequence_units(skip=state != REMAINING)
    print(
        f"\n{counts['tasks']} tasks in {counts['units']} work units (head runs); stored: {counts['ok']} ok, "
        f"{counts['failed']} failed; to run: {counts['remaining']} tasks in {len(units)} units"
        + (f" and {len(sequences)} sequence units (a video's frames coded as one stream)" if sequences else "")
        + f" → {spec.output_location}"
    )
    return 0


def split_sizes_text(plan, m) -> str:
    """The per-split table of one model: feature maps and shape tensors crossing each cut,
    with sizes measured on the dataset's first image where shape inference cannot tell them."""
    from orchestrator.planning.cutsizes import measure_on_first_image
    from orchestrator.reporting.table import format_table, human_bytes
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
