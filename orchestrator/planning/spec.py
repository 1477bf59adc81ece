"""The sweep spec: YAML → validated, frozen pydantic models; every error names file, line and key."""

from __future__ import annotations

import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import SpecError, nearest

__all__ = [
    "Spec",
    "DatasetSpec",
    "EvaluationSpec",
    "SelectSpec",
    "ModelSpec",
    "SplitRange",
    "ExecutionSpec",
    "SearchGoal",
    "SearchTarget",
    "SearchSpec",
    "load_spec",
    "parse_spec",
    "is_uri",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Frozen):
    """Where the images come from. `type` picks the kind; paths are relative to the spec file."""

    type: Literal["demo", "coco", "folder", "video"] = Field(
        description="demo: the 14 demo photos; coco: image folder + instances json; folder: unlabelled images "
        "(reference evaluation); video: frames of a video file (reference evaluation)"
    )
    images: str | None = Field(default=None, description="coco: the image folder (e.g. val2017/)")
    annotations: str | None = Field(default=None, description="coco: the COCO instances json (e.g. instances_val2017.json)")
    path: str | None = Field(default=None, description="folder: the image folder; video: the video file")
    limit: int | None = Field(default=None, ge=1, description="keep the first N images (json order, sorted names, frames)")
    step: int | None = Field(default=None, ge=1, description="video: every N-th frame")
    image_ids: list[int] | None = Field(default=None, description="coco: only these image ids")
    name: str | None = Field(default=None, description="coco/folder/video: a display name for the dataset")

    @model_validator(mode="after")
    def _keys_for_kind(self) -> DatasetSpec:
        from orchestrator.data.datasets import DATASET_KEYS

        allowed = DATASET_KEYS[self.type]
        extra = sorted(k for k in self.model_fields_set if k not in allowed)
        if extra:
            raise ValueError(f"`{extra[0]}` is not a setting of a {self.type} dataset (allowed: {', '.join(allowed)})")
        needs = {"coco": ("images", "annotations"), "folder": ("path",), "video": ("path",), "demo": ()}
        for key in needs[self.type]:
            if getattr(self, key) is None:
                raise ValueError(f"dataset type {self.type!r} needs `{key}`")
        return self

    def config(self, resolve) -> dict:
        """The mapping orchestrator.data.datasets.make_dataset takes, paths resolved with `resolve`."""
        config = self.model_dump(exclude_unset=True)
        config["type"] = self.type
        for key in ("images", "annotations", "path"):
            if key in config:
                config[key] = resolve(config[key])
        return config


class SelectSpec(_Frozen):
    """Keep the first `first` images on which the reference (unsplit fp32) model's AP ≥ `min_ap`."""

    min_ap: float = Field(ge=0.0, le=1.0, description="keep images where the unsplit fp32 model's AP reaches this (0–1)")
    first: int = Field(ge=1, description="keep this many images, in dataset order")
    model: str | None = Field(default=None, description="the model whose AP decides (default: the first)")


class EvaluationSpec(_Frozen):
    """Ground truth from the dataset's annotations, or the uncompressed model's own detections."""

    mode: Literal["ground-truth", "reference"] | None = Field(
        default=None,
        description="ground-truth: the dataset's annotations; reference: the unsplit fp32 model's own detections "
        "above score_threshold (default: ground-truth when the dataset has annotations)",
    )
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="reference mode: detections kept as ground truth")
    select: SelectSpec | None = Field(default=None, description="image selection (min_ap, first, model), as the seed study did")


class SplitRange(_Frozen):
    """`{every: 20}` → split points 0, 20, 40, … (only valid ones are kept); `start`/`stop` bound it."""

    every: int = Field(ge=1, description="a split point every N nodes")
    start: int = Field(default=0, ge=0, description="first node index")
    stop: int | None = Field(default=None, ge=0, description="last node index (default: the last valid one)")
    input: bool = Field(default=False, description="also the split `input`: remote inference, the picture coded with the image codecs")


class ModelSpec(_Frozen):
    """One detector: an ONNX file (or `asset:centernet` / `asset:nanodet`), its adapter, its axes."""

    name: str = Field(description="the model's name in rows and reports")
    path: str = Field(description="an ONNX file (relative to the spec), or asset:centernet / asset:nanodet")
    adapter: str | dict[str, Any] = Field(
        description="detector adapter: a name, or {name: {setting: value, …}} (see Detector adapters; "
        "the old spelling {type: name, setting: value, …} still works)"
    )
    input_shapes: dict[str, list[int]] | None = Field(default=None, description="fix symbolic input dimensions")
    variants: list[str | dict[str, dict[str, Any] | None]] | dict[str, dict[str, Any] | None] = Field(
        default_factory=lambda: ["fp32"],
        description="model variants: a list of names or {name: {settings}}, or one mapping {name: {settings}} "
        "(see Model variants)",
    )
    splits: list[int | str] | SplitRange = Field(
        description="node indices to cut after, tensor names, `input` (remote inference: the picture at the model's "
        "input resolution coded with the image codecs, the whole model on the server; rows: split -2), or "
        "{every: N, start:, stop:}; the unsplit model (-1) always runs"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("model names use letters, digits, '.', '_' and '-'")
        return value

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, value: str | dict) -> str | dict:
        if isinstance(value, dict) and not isinstance(value.get("type"), str):
            if len(value) != 1 or not isinstance(next(iter(value.values())), (dict, type(None))):
                raise ValueError("an adapter is a name or a one-key mapping {name: {settings}}")
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list | dict) -> list | dict:
        for entry in value if isinstance(value, list) else ():
            if isinstance(entry, dict) and len(entry) != 1:
                raise ValueError("a variant is a name or a one-key mapping {name: {settings}}")
        return value

    @field_validator("splits")
    @classmethod
    def _splits(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("give at least one split point")
        return value

    @property
    def old_adapter_spelling(self) -> bool:
        """``{type: name, setting: value}``: the spelling before every plug-in read ``{name: {settings}}``."""
        return isinstance(self.adapter, dict) and isinstance(self.adapter.get("type"), str)

    @property
    def adapter_type(self) -> str:
        if self.old_adapter_spelling:
            return str(self.adapter["type"])  # type: ignore[index]
        return plugin_entries(self.adapter)[0][0] if self.adapter else ""

    @property
    def adapter_settings(self) -> dict[str, Any]:
        if self.old_adapter_spelling:
            return {k: v for k, v in self.adapter.items() if k != "type"}  # type: ignore[union-attr]
        return plugin_entries(self.adapter)[0][1] if self.adapter else {}

    def variant_entries(self) -> list[tuple[str, dict[str, Any]]]:
        return plugin_entries(self.variants)


class ExecutionSpec(_Frozen):
    """How the sweep runs: worker count, onnxruntime threads, in-flight bound, flush interval."""

    workers: int | Literal["auto"] = Field(default="auto", description="worker actors (auto: cluster CPUs / threads)")
    threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads per worker")
    optimization: Literal["exact", "none", "basic", "extended", "all"] = Field(
        default="exact",
        description="onnxruntime graph optimisation; exact: no fusion that changes float rounding, so a lossless "
        "cut reproduces the unsplit outputs bit for bit",
    )
    worker_memory_mb: float = Field(
        default=400, ge=0, description="a worker holding more returns freed memory to the OS after a unit (0: never)"
    )
    max_in_flight: int | None = Field(default=None, ge=1, description="work units in flight (default: 2 per worker)")
    chunk_tasks: int = Field(default=64, ge=1, description="tasks per work unit at most (one head run feeds them)")
    flush_seconds: float = Field(default=5.0, gt=0, description="rows are written to Parquet at least this often")
    retries: int = Field(default=2, ge=0, description="times a unit is re-run after its worker was lost")
    address: str | None = Field(default=None, description="Ray address (default: $RAY_ADDRESS, else a local Ray)")

    @field_validator("workers")
    @classmethod
    def _workers(cls, value):
        if isinstance(value, int) and value < 1:
            raise ValueError("workers must be >= 1 or 'auto'")
        return value


class SearchGoal(_Frozen):
    """What a setting must reach: `within` AP points of a reference, or at most `bpp` bits per pixel."""

    within: float | None = Field(
        default=None, ge=0, description="AP points a setting may lose against `of` (the paired-bootstrap ΔAP decides)"
    )
    of: Literal["unsplit", "remote"] = Field(
        default="unsplit",
        description="within's reference: unsplit (the uncompressed model) or remote (the remote-inference anchor "
        "curve, interpolated at the setting's rate)",
    )
    bpp: float | None = Field(default=None, gt=0, description="a rate budget: the most accurate setting at or under it")
    metric: Literal["ap", "ap50", "ap75"] = Field(default="ap", description="the accuracy the goal is stated in")

    @model_validator(mode="after")
    def _one_goal(self) -> SearchGoal:
        if (self.within is None) == (self.bpp is None):
            raise ValueError("give exactly one of `within` (AP points) or `bpp` (rate budget)")
        return self


class SearchTarget(_Frozen):
    """One searched axis: a codec's ordered parameter, per (model, variant, split) it applies to."""

    codec: str = Field(description="a codec listed under `codecs` with at least two values of its ordered parameter")
    param: str | None = Field(
        default=None, description="the ordered parameter (default: qp for nncodec / hevc, bits for uniform, quality "
        "for jpeg / webp / avif)",
    )
    range: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="[low, high]: only the `codecs` values inside it"
    )
    goal: SearchGoal = Field(description="{within: 0.5} AP points of the unsplit model, {within: 0.5, of: remote}, or {bpp: 0.3}")
    models: list[str] | None = Field(default=None, description="only these models (default: all)")
    variants: list[str] | None = Field(default=None, description="only these variant labels (default: all)")


class SearchSpec(_Frozen):
    """Adaptive search instead of the full grid: bisection over each target's ordered parameter,
    on a subset of images first, widened to all images for the final candidates."""

    targets: list[SearchTarget] = Field(min_length=1, description="the searched codecs and their goals")
    subset: int = Field(default=4, ge=1, description="images in the first stage (then doubled up to all)")
    level: float = Field(default=0.95, gt=0, lt=1, description="confidence level of the paired-bootstrap intervals")
    resamples: int = Field(default=1000, ge=100, description="bootstrap resamples per interval")
    seed: int = Field(default=0, description="seed of the image order and of the resamples")


class Spec(_Frozen):
    """A whole sweep. `file` is where it was read from (for messages and relative paths)."""

    sweep: str = Field(description="the sweep's name (letters, digits, . _ -)")
    output: str = Field(description="results directory (relative to the spec) or a pyarrow filesystem URI (s3://…)")
    dataset: DatasetSpec = Field(description="where the images come from")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="how detections are scored")
    models: list[ModelSpec] = Field(min_length=1, description="the detectors to sweep")
    codecs: dict[str, dict[str, Any] | None] | list[str | dict[str, dict[str, Any] | None]] = Field(
        description="{codec: {setting: value or [values]}} (lists expand to a grid), or a list of codec names "
        "and such one-key mappings"
    )
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec, description="how the sweep runs")
    search: SearchSpec | None = Field(
        default=None, description="adaptive search: the cheapest setting per split meeting a goal, with a fraction of the grid"
    )
    file: str | None = None
    text: str | None = None

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("sweep names use letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _unique_models(self) -> Spec:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        for i, m in enumerate(self.models):
            if m.old_adapter_spelling:
                where = ": ".join(p for p in (self.file, f"models[{i}].adapter") if p)
                warnings.warn(
                    f"{where}: {{type: {m.adapter_type}, …}} is the old spelling; write "
                    f"{{{m.adapter_type}: {{setting: value, …}}}} as for codecs and variants",
                    FutureWarning,
                    stacklevel=2,
                )
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.file).resolve().parent if self.file else Path.cwd()

    def resolve(self, path: str) -> str:
        """A path from the spec, relative to the spec file; URIs and `asset:` names unchanged."""
        if is_uri(path) or path.startswith("asset:"):
            return path
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (self.base_dir / p))

    @property
    def output_location(self) -> str:
        return self.resolve(self.output)

    def where(self, *path: str | int) -> str | None:
        """``file:line`` of a key path in the spec's text (the file alone when it is not found)."""
        if not self.file or not self.text:
            return self.file
        try:
            lines = _line_map(yaml.compose(self.text))
        except yaml.YAMLError:
            return self.file
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in lines:
                return f"{self.file}:{lines[tuple(path[:n])]}"
        return self.file

    def codec_entries(self) -> list[tuple[str, dict[str, Any], str]]:
        """(codec name, settings with lists, key path for messages) in spec order."""
        if isinstance(self.codecs, dict):
            return [(n, dict(p or {}), f"codecs.{n}") for n, p in self.codecs.items()]
        out = []
        for i, entry in enumerate(self.codecs):
            if isinstance(entry, dict) and len(entry) != 1:
                raise SpecError(
                    "each list entry is a codec name or a one-key mapping {codec: {settings}}",
                    file=self.file,
                    key=f"codecs[{i}]",
                )
            ((name, params),) = plugin_entries(entry)
            out.append((name, params, f"codecs[{i}].{name}"))
        return out


def plugin_entries(value: str | Mapping[str, Any] | Sequence[Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """The one YAML shape of plug-ins (codecs, variants, adapters): ``name``, ``{name: {settings}}``,
    or a list of those; a mapping of several names is several entries. (name, settings) in order."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, {})]
    if isinstance(value, Mapping):
        return [(str(name), dict(settings or {})) for name, settings in value.items()]
    return [entry for item in value for entry in plugin_entries(item)]


def is_uri(path: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path))


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; SpecError names the file, line and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError("spec file not found", file=str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file: {exc.strerror}", file=str(path)) from None
    return parse_spec(text, file=str(path))


def parse_spec(text: str, *, file: str | None = None) -> Spec:
    try:
        data = yaml.safe_load(text)
        lines = _line_map(yaml.compose(text)) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if (file and mark) else file
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=where) from None
    if not isinstance(data, dict):
        raise SpecError("a spec is a YAML mapping with keys sweep, output, dataset, models, codecs", file=file)
    try:
        return Spec.model_validate({**data, "file": file, "text": text})
    except ValidationError as exc:
        raise _spec_error(exc, file=file, lines=lines) from None


def _line_map(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """Key path → 1-based line number, so errors can point into the file."""
    out: dict[tuple, int] = {}
    if node is None:
        return out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[path + (key.value,)] = key.start_mark.line + 1
            out.update({k: v for k, v in _line_map(value, path + (key.value,)).items() if k != path + (key.value,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out.update(_line_map(value, path + (i,)))
    return out


def _key_path(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _data_loc(loc: Sequence[Any]) -> tuple:
    """Drop pydantic's union-branch tags ('str', 'dict[str,any]', 'SplitRange', …) from a loc."""
    return tuple(p for p in loc if isinstance(p, int) or not _looks_like_type_tag(p))


def _looks_like_type_tag(part: str) -> bool:
    return part in {"str", "int", "float", "bool", "list", "dict"} or "[" in part or part[:1].isupper() or part.startswith("literal")


def _spec_error(exc: ValidationError, *, file: str | None, lines: Mapping[tuple, int]) -> SpecError:
    errors = exc.errors(include_url=False)
    # Prefer the most specific error: an unknown key beats the union branches it failed.
    errors.sort(key=lambda e: (e["type"] != "extra_forbidden", -len(e["loc"])))
    err = errors[0]
    loc = _data_loc(err["loc"])
    key = _key_path(loc)
    line = None
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    where = f"{file}:{line}" if (file and line) else file
    allowed = None
    if err["type"] == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        hint = nearest(str(loc[-1]), fields) if fields else None
        message = f"unknown key {loc[-1]!r}" + (f"; did you mean {hint!r}?" if hint else "")
        allowed = sorted(fields) if fields else None
    elif err["type"] == "missing":
        message = "required key is missing"
    else:
        message = err["msg"].removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], (dict, list)):
            message += f" (got {err['input']!r})"
    # Union branches report the same mistake several times; count only other places.
    related = loc[:-1] if len(loc) > 1 else loc
    others = {
        _data_loc(e["loc"])
        for e in errors
        if _data_loc(e["loc"])[: len(related)] != related and related[: len(_data_loc(e["loc"]))] != _data_loc(e["loc"])
    }
    more = len(others)
    if more > 0:
        message += f" [and {more} more problem{'s' if more > 1 else ''}]"
    return SpecError(message, file=where, key=key or None, allowed=allowed)


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """The valid keys of the spec model found at a data location, for 'did you mean'."""
    candidates: list[Any] = [Spec]
    for part in loc:
        nxt: list[Any] = []
        for ann in candidates:
            for tp in _unwrap(ann):
                if isinstance(part, int) and typing.get_origin(tp) is list:
                    nxt.extend(typing.get_args(tp))
                elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
                    nxt.append(tp.model_fields[part].annotation)
        candidates = nxt
    fields: list[str] = []
    for ann in candidates:
        for tp in _unwrap(ann):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                fields.extend(f for f in tp.model_fields if f not in ("file", "text"))
    return fields


def _unwrap(ann: Any) -> list[Any]:
    origin = typing.get_origin(ann)
    if origin is Union or origin is types.UnionType:
        out = []
        for arg in typing.get_args(ann):
            out.extend(_unwrap(arg))
        return out
    return [ann]
