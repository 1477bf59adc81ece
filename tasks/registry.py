"""The one plug-in form: typed settings, their validation, and a named registry per plug-in kind.

Codecs, model variants and detector adapters are all written the same way:

    class MyCodec(Codec):                      # Codec, Variant and Adapter derive from Plugin
        name = "mycodec"
        doc = "what it does, in one line"
        fields = (Field("bits", int, 8, "bits per value", low=2, high=16),)

and are listed once in their package ``__init__`` (``Registry(kind, error, [classes])``):
no registry depends on some module having happened to be imported. A spec names a
plug-in as ``name`` or ``{name: {setting: value}}``; ``Plugin.check_settings`` validates
the settings (unknown keys with a did-you-mean, types, ranges, choices, defaults) and
raises the kind's own error type naming the file, the key and what is allowed.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

from .errors import SplitsweepError, nearest

T = TypeVar("T")

__all__ = ["REQUIRED", "Field", "Plugin", "Registry", "SettingProblem", "describe_type", "qualified_key", "validate"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:  # one sentinel, also after pickling to a worker
        return "REQUIRED"


REQUIRED: Any = _Required()


class SettingProblem(ValueError):
    """A constraint between settings failed; becomes the plug-in kind's error naming the setting."""

    def __init__(self, name: str, message: str, allowed: Any = None) -> None:
        super().__init__(message)
        self.name, self.message, self.allowed = name, message, allowed


def qualified_key(key: str | None, name: str) -> str:
    """``codecs.uniform`` + ``bits`` → ``codecs.uniform.bits``: errors point at the exact setting."""
    return f"{key}.{name}" if key else name


_KIND_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


@dataclass(frozen=True)
class Field:
    """One setting of a plug-in: its type, default (or REQUIRED), allowed values and one-line meaning.

    ``kind`` is bool, int, float or str, or (for adapters' structured settings) a typing
    hint: ``tuple[int, int]``, ``tuple[str, ...]``, ``X | None``, ``Literal[...]``.
    Strings with ``choices`` match case-insensitively and come back as the choice.
    """

    name: str
    kind: Any
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    exclusive: bool = False  # open bounds: 0 < ratio < 1
    choices: tuple[Any, ...] | None = None
    range_text: str | None = None  # when the range depends on other settings

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return _KIND_NAMES.get(self.kind) or describe_type(self.kind)

    @property
    def allowed(self) -> str:
        """What a user may write: ``int in [2, 16]``, ``true, false``, ``minmax, entropy``."""
        if self.range_text:
            return self.range_text
        if self.choices is not None:
            return ", ".join(map(str, self.choices))
        if typing.get_origin(self.kind) is Literal:
            return ", ".join(map(str, typing.get_args(self.kind)))
        if self.kind is bool:
            return "true, false"
        return f"{self.type_name}{self._range()}"

    def _range(self) -> str:
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            brackets = "()" if self.exclusive else "[]"
            return f" in {brackets[0]}{_num(lo)}, {_num(hi)}{brackets[1]}"
        if lo is not None:
            return f" {'>' if self.exclusive else '>='} {_num(lo)}"
        if hi is not None:
            return f" {'<' if self.exclusive else '<='} {_num(hi)}"
        return ""

    def check(self, value: Any, *, owner: str, error: type[SplitsweepError], file: str | None, key: str | None) -> Any:
        """The value in canonical form (plain bool / int / float / str / tuple), or ``error`` naming the key."""
        where = qualified_key(key, self.name)
        try:
            out = _coerce(value, self.kind)
        except (TypeError, ValueError):
            wanted = describe_type(self.kind)
            raise error(
                f"{owner} setting {self.name!r}: {value!r} is not {wanted}; expected {wanted}{self._range()}",
                file=file,
                key=where,
                allowed=self.allowed,
            ) from None
        if self.choices is not None and out is not None:
            match = [c for c in self.choices if c == out and type(c) is type(out)]
            if not match and isinstance(out, str):
                match = [c for c in self.choices if isinstance(c, str) and c.lower() == out.lower()]
            if not match:
                shown = ", ".join(repr(c) for c in self.choices)
                raise error(f"invalid value {value!r}: not one of {shown}", file=file, key=where, allowed=self.allowed)
            out = match[0]
        lo, hi = self.low, self.high
        if isinstance(out, (int, float)) and (
            (lo is not None and (out <= lo if self.exclusive else out < lo))
            or (hi is not None and (out >= hi if self.exclusive else out > hi))
        ):
            raise error(
                f"{owner} setting {self.name!r} = {out!r} is out of range", file=file, key=where, allowed=self.allowed
            )
        return out


def validate(
    fields: Iterable[Field],
    params: Any,
    *,
    owner: str,
    error: type[SplitsweepError],
    file: str | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    """Complete, canonical settings in declaration order (defaults filled), or ``error`` naming the key."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise error(f"settings of {owner} must be a mapping, got {type(params).__name__}", file=file, key=key)
    known = {f.name: f for f in fields}
    for name in params:
        if name not in known:
            hint = nearest(str(name), known)
            suffix = f"; did you mean {hint!r}?" if hint else ""
            raise error(
                f"unknown setting {name!r} for {owner}{suffix}",
                file=file,
                key=qualified_key(key, str(name)),
                allowed=sorted(known) or "no settings",
            )
    out: dict[str, Any] = {}
    for f in known.values():
        if f.name in params:
            out[f.name] = f.check(params[f.name], owner=owner, error=error, file=file, key=key)
        elif f.required:
            raise error(
                f"{owner} needs setting {f.name!r}", file=file, key=qualified_key(key, f.name), allowed=f.allowed
            )
        else:
            out[f.name] = f.default
    return out


class Plugin:
    """What every codec, model variant and detector adapter is: a name, a doc line, typed fields.

    ``check_settings`` is the one validation; ``check_together`` is the hook for
    constraints between settings (raise SettingProblem or the kind's error).
    """

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    plugin_kind: ClassVar[str] = "plug-in"  # "codec", "model variant", "detector adapter": for messages
    error: ClassVar[type[SplitsweepError]] = SplitsweepError
    fields: ClassVar[tuple[Field, ...]] = ()

    @classmethod
    def check_settings(
        cls, params: Mapping[str, Any] | None, *, file: str | None = None, key: str | None = None
    ) -> dict[str, Any]:
        """Complete, canonical settings (defaults filled), or the kind's error naming the key."""
        owner = f"{cls.plugin_kind} {cls.name!r}"
        values = validate(cls.fields, params, owner=owner, error=cls.error, file=file, key=key)
        try:
            cls.check_together(values, file=file, key=key)
        except SettingProblem as problem:
            raise cls.error(
                problem.message, file=file, key=qualified_key(key, problem.name), allowed=problem.allowed
            ) from None
        return values

    @classmethod
    def check_together(cls, params: dict[str, Any], *, file: str | None, key: str | None) -> None:
        """Constraints between settings (e.g. the QP range depends on qp_density)."""

    @classmethod
    def summary(cls) -> str:
        """The one-line meaning: ``doc``, else the class docstring's first paragraph."""
        return cls.doc or (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


class Registry(Generic[T]):
    """Maps a name to a plug-in class (by its ``name``); lookup errors name the kind and the allowed names.

    Built-ins are listed where the registry is made, in the package ``__init__`` that
    imports them explicitly, so a lookup never depends on import order.
    """

    def __init__(self, kind: str, error: type[SplitsweepError], entries: Iterable[T] = ()) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: T) -> T:
        """Register a plug-in class under its ``name`` (third-party plug-ins call this too)."""
        name = entry.name  # type: ignore[attr-defined]
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str, *, file: str | None = None, key: str | None = None) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = nearest(name, self._entries) if isinstance(name, str) else None
            suffix = f"; did you mean {hint!r}?" if hint else ""
            raise self._error(
                f"unknown {self.kind} {name!r}{suffix}",
                file=file,
                key=key,
                allowed=sorted(self._entries),
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        for a in args:
            if type(value) is type(a) and value == a:
                return a
        for a in args:  # choices are matched case-insensitively, and come back as written here
            if isinstance(a, str) and isinstance(value, str) and value.lower() == a.lower():
                return a
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
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise TypeError
    # bool is an int in Python; `bits: true` is a spec mistake, not 1
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if hint is int:
        if not numeric or not math.isfinite(value) or float(value) != int(value):
            raise TypeError
        return int(value)
    if hint is float:
        if not numeric or not math.isfinite(value):
            raise TypeError
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError(f"unsupported setting type {hint!r}")


def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe_type(args[0])}"
        return f"a list of {len(args)} {describe_type(args[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
