"""Adapter settings: frozen dataclasses whose fields are the plug-in form's typed Fields (tasks.registry)."""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ..registry import Field, SettingProblem, describe_type

__all__ = ["SettingProblem", "ImageSettings", "fields_of", "setting", "settings_table"]


def setting(default: Any, doc: str, **bounds: Any) -> Any:
    """A dataclass field declared as a registry Field: default, one-line meaning, and
    optional ``low``/``high``/``exclusive``/``choices`` (the type comes from the annotation)."""
    return field(default=default, metadata={"doc": doc, **bounds})


@dataclass(frozen=True)
class ImageSettings:
    """How an RGB image becomes the model's input tensor; every adapter has these settings."""

    input: str = setting("images", "name of the model's image input")
    input_size: tuple[int, int] | None = setting(None, "model input [height, width]; null: the image's own size")
    resize: Literal["stretch", "letterbox"] = setting(
        "stretch", "stretch to input_size, or keep the aspect ratio and pad (centred)"
    )
    pad_value: float = setting(0.0, "pixel value (0–255) of letterbox padding")
    layout: Literal["NCHW", "NHWC"] = setting("NCHW", "input tensor layout")
    channels: Literal["RGB", "BGR"] = setting("RGB", "channel order of the input tensor")
    scale: float = setting(1 / 255, "pixel values are multiplied by this (1/255 or 1)")
    mean: tuple[float, float, float] = setting((0.0, 0.0, 0.0), "subtracted after scaling, in input channel order")
    std: tuple[float, float, float] = setting((1.0, 1.0, 1.0), "divided by after subtracting mean")
    dtype: Literal["float32", "uint8"] = setting(
        "float32", "input tensor element type (uint8: raw 0–255 pixels; scale, mean, std unused)"
    )
    batch: bool = setting(True, "the input has a leading batch dimension of 1")
    score_threshold: float = setting(0.05, "detections scoring below are dropped (low for mAP)")
    max_detections: int = setting(100, "at most this many detections per image, best first")

    def __post_init__(self) -> None:
        if self.input_size is not None and min(self.input_size) < 1:
            raise SettingProblem("input_size", "must be two positive integers")
        if self.resize == "letterbox" and self.input_size is None:
            raise SettingProblem("resize", "letterbox needs an input_size")
        if any(s == 0 for s in self.std):
            raise SettingProblem("std", "must not contain 0")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise SettingProblem("score_threshold", "must be between 0 and 1")
        if self.max_detections < 1:
            raise SettingProblem("max_detections", "must be at least 1")


@functools.cache
def fields_of(cls: type) -> tuple[Field, ...]:
    """The settings dataclass ``cls`` as registry Fields (type from the annotation)."""
    hints = typing.get_type_hints(cls)
    return tuple(
        Field(f.name, hints[f.name], f.default, f.metadata.get("doc", ""), **{
            k: v for k, v in f.metadata.items() if k != "doc"
        })
        for f in dataclasses.fields(cls)
    )


def settings_table(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) of every setting of a settings dataclass."""
    return [(f.name, describe_type(f.kind), f.default, f.doc) for f in fields_of(cls)]
