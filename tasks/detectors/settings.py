"""Adapter settings: frozen dataclasses checked once at the edge, with one-line errors naming the setting."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..errors import DetectorError

__all__ = ["SettingProblem", "ImageSettings", "parse_settings", "setting", "settings_table"]

S = TypeVar("S")


class SettingProblem(ValueError):
    """Raised by a settings class's ``__post_init__``; becomes a DetectorError naming the setting."""

    def __init__(self, name: str, message: str, allowed: Any = None) -> None:
        super().__init__(message)
        self.name, self.message, self.allowed = name, message, allowed


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with its one-line documentation (shown by ``settings_table``)."""
    return field(default=default, metadata={"doc": doc})


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


def parse_settings(
    cls: type[S], raw: Mapping[str, Any] | None, *, file: str | None = None, key: str | None = None
) -> S:
    """``cls(**raw)`` with types checked and coerced (lists → tuples, ints → floats)."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    prefix = f"{key}." if key else ""
    values = {}
    for name, value in raw.items():
        if name not in fields:
            raise DetectorError(f"unknown setting {name!r}", file=file, key=f"{prefix}{name}", allowed=sorted(fields))
        try:
            values[name] = _coerce(value, hints[name])
        except (TypeError, ValueError):
            raise DetectorError(
                f"{value!r} is not {_describe(hints[name])}",
                file=file,
                key=f"{prefix}{name}",
                allowed=_choices(hints[name]),
            ) from None
    try:
        return cls(**values)
    except SettingProblem as problem:
        raise DetectorError(
            problem.message, file=file, key=f"{prefix}{problem.name}", allowed=problem.allowed
        ) from None


def settings_table(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) of every setting: what the docs show and a test checks."""
    hints = typing.get_type_hints(cls)
    return [(f.name, _describe(hints[f.name]), f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value in args and type(value) is type(args[args.index(value)]):
            return value
        raise ValueError
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise ValueError
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if hint is type(None):
        if value is None:
            return None
        raise ValueError
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise TypeError
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(f"unsupported setting type {hint!r}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} {_describe(args[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _choices(hint: Any) -> list[Any] | None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return list(args)
    if origin in (typing.Union, types.UnionType):
        found = [c for a in args for c in (_choices(a) or [])]
        return found or None
    return None
