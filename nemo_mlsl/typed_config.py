"""Mappings (YAML, ``key=value`` overrides) → typed dataclass configs: unknown fields and values of the wrong type
are refused by name, so a typo or ``train.lr=abc`` is a one-line error instead of a crash deep in training."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any, Mapping, Sequence

from nemo_mlsl.errors import ConfigError


def _kind(hint: Any) -> str:
    """What a field's type hint asks for, in words."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args) + " or null" * (len(args) < len(typing.get_args(hint)))
    origin = typing.get_origin(hint) or hint
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
            dict: "a mapping"}.get(origin, getattr(origin, "__name__", str(origin)))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` asks for (an integer-valued float for an int, an int for a float), else a
    ConfigError naming the field, the value and what it must be."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(value, a, where)
            except ConfigError:
                continue
    elif hint is bool or origin is None and hint in (int, float, str):
        if hint is bool and isinstance(value, bool):
            return value
        if hint is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)  # a YAML number where a name is meant (an env value, a partition)
    elif (origin or hint) in (list, tuple, Sequence) and isinstance(value, (list, tuple)):
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    elif (origin or hint) in (dict, Mapping) and isinstance(value, Mapping):
        return {k: coerce(v, args[1], f"{where}[{k!r}]") for k, v in value.items()} if args else dict(value)
    elif origin is None and isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where} = {value!r} must be {_kind(hint)}; fix it in the file or the key=value override")


def typed(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    """A dataclass from a mapping, refusing unknown fields by name and values of the wrong type (the YAML → typed
    config step)."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of fields, got {data!r}")
    data = dict(data or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; valid: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def check_positive(value: float | None, name: str, hint: str = "") -> None:
    """``value`` (when given) is a finite number > 0, else a ConfigError naming ``name``."""
    if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value <= 0):
        raise ConfigError(f"{name} must be a positive number, got {value}" + (f" ({hint})" if hint else ""))


def check_non_negative(value: float | None, name: str, hint: str = "") -> None:
    """``value`` (when given) is a finite number >= 0 (a seed, a count of replicates), else a ConfigError."""
    if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value < 0):
        raise ConfigError(f"{name} must be >= 0, got {value}" + (f" ({hint})" if hint else ""))
