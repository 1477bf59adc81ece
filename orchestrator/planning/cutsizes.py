"""Cut sizes of a spec's models, measured on the dataset's first image where shape inference gives up.

`inspect --spec SPEC` and `plan SPEC` use this: the first image of the spec's dataset goes
through the model's adapter (its resize / letterbox / normalisation) and the model runs
once with every unknown cut tensor exposed, so the sizes are those of the sweep's own
inputs, not of a synthetic tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from orchestrator.data.datasets import Dataset, make_dataset
from orchestrator.planning.spec import ModelSpec, Spec
from tasks import detectors
from tasks.errors import SpecError
from tasks.graph import SplitGraph
from tasks.images import decode_image

__all__ = ["first_image_feeds", "spec_model", "measure_on_first_image"]


def spec_model(spec: Spec, name: str | None) -> tuple[int, ModelSpec]:
    """The spec's model called ``name`` (default: the first), with its index."""
    if name is None:
        return 0, spec.models[0]
    for i, m in enumerate(spec.models):
        if m.name == name:
            return i, m
    raise SpecError(f"the spec has no model named {name!r}", file=spec.file, key="models",
                    allowed=[m.name for m in spec.models])


def first_image_feeds(spec: Spec, model: ModelSpec, dataset: Dataset | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The model feeds of the dataset's first image (through the model's adapter), and where it came from."""
    if dataset is None:
        dataset = make_dataset(spec.dataset.config(spec.resolve), spec_file=spec.file)
    records = dataset.records()
    if not records:
        raise SpecError("the dataset has no images", file=spec.file, key="dataset")
    record = records[0]
    rgb = decode_image(dataset.image_bytes(record), name=record.file_name)
    adapter = detectors.adapter(model.adapter_type, model.adapter_settings, file=spec.file, key="adapter")
    return dict(adapter.preprocess(rgb).feeds), dataset.source(record)


def measure_on_first_image(
    graph: SplitGraph, spec: Spec, model: ModelSpec, *, dataset: Dataset | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> str | None:
    """Measure every unknown cut size of ``graph`` on the spec's first image; a note saying so, or None."""
    from tasks.cutsizes import measure_into

    if not graph.unknown_size_tensors():
        return None
    where = "given feeds"
    if feeds is None:
        feeds, where = first_image_feeds(spec, model, dataset)
    count = measure_into(graph, feeds)
    return f"{count} cut tensor sizes measured on the dataset's first image ({where}), marked *"
