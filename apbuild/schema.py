"""Load TOML tables into frozen dataclasses, strictly.

Each dataclass field is one setting: its type annotation, default and a `setting()`
metadata entry (help text, an optional check) are the whole definition, so unknown keys,
wrong types and bad values are all reported the same way: file, dotted key, what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, ConfigErrors

T = TypeVar("T")
Check = Callable[[Any], str | None]  # returns an error message, or None when fine


def setting(help: str, *, default: Any = dataclasses.MISSING, check: Check | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    meta = {"help": help, "check": check}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None


_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str | int) -> int:
    """'350M', '16G', '512MiB' or a number of bytes -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 350M, 16G, 4096)")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I") or ""
    return int(m.group(1)) * _UNITS[unit]


def one_of(*allowed: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"{value!r} is not allowed; use one of: {', '.join(allowed)}"
    return check


def size_check(value: Any) -> str | None:
    try:
        parse_size(value)
    except ValueError as e:
        return str(e)
    return None


def positive(value: Any) -> str | None:
    return None if value > 0 else f"{value!r} must be greater than 0"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, file: Path, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for arg in args:
            try:
                return _convert(arg, value, file, key)
            except ConfigError:
                continue
        raise ConfigError(file, key, f"{value!r} is not {_type_name(tp)}")
    if origin is tuple:
        (inner, *_) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(file, key, f"{value!r} is not {_type_name(tp)}")
        items, errors = [], []
        for i, v in enumerate(value):
            try:
                items.append(_convert(inner, v, file, f"{key}[{i}]"))
            except ConfigError as e:
                errors.append(e)
        if errors:
            raise ConfigErrors.of(errors)
        return tuple(items)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a table, got {value!r}")
        return load(tp, value, file, key)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(file, key, f"{value!r} is not {_type_name(tp)}")
    return value


def load(cls: type[T], table: dict[str, Any], file: Path, prefix: str = "") -> T:
    """Build cls from a TOML table; every problem names the file and the dotted key, and
    all of a table's problems are reported at once (ConfigErrors), not only the first."""
    hints = typing.get_type_hints(cls)
    # Fields without help (a definition's path, a recipe's name) are set by the loader.
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and "help" in f.metadata}
    allowed = sorted(fields)
    errors: list[ConfigError] = []
    for key in table:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else key
            errors.append(ConfigError(file, dotted, f"unknown key; allowed keys here: {', '.join(allowed)}"))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name not in table:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                help_text = field.metadata.get("help", "")
                errors.append(ConfigError(file, dotted, f"missing; required ({help_text})"))
            continue
        try:
            value = _convert(hints[name], table[name], file, dotted)
        except ConfigError as e:
            errors.append(e)
            continue
        check = field.metadata.get("check")
        if check is not None:
            items = value if isinstance(value, tuple) and not dataclasses.is_dataclass(value) else (value,)
            problems = [p for item in items if (p := check(item)) is not None]
            if problems:
                errors.append(ConfigError(file, dotted, problems[0]))
                continue
        values[name] = value
    if errors:
        raise ConfigErrors.of(errors)
    return cls(**values)


def merge_layers(layers: list[tuple[Path, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Tables read in order, a later one overriding an earlier one key by key (sub-tables
    merge, lists and values are replaced): the merged table and, per dotted key, the file
    that set it."""
    merged: dict[str, Any] = {}
    origins: dict[str, Path] = {}

    def into(target: dict[str, Any], table: dict[str, Any], file: Path, prefix: str) -> None:
        for key, value in table.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                into(target[key], value, file, dotted)
            else:
                target[key] = dict(value) if isinstance(value, dict) else value
                origins[dotted] = file
    for file, table in layers:
        into(merged, table, file, "")
    return merged, origins


def load_layers(cls: type[T], layers: list[tuple[Path, dict[str, Any]]]) -> T:
    """load() over merged layers; each error names the file that wrote the key (the last
    layer for a missing key)."""
    merged, origins = merge_layers(layers)
    top = layers[-1][0]
    try:
        return load(cls, merged, top)
    except ConfigError as e:
        def placed(err: ConfigError) -> ConfigError:
            parts = err.key.replace("[", ".[").split(".")
            for n in range(len(parts), 0, -1):
                if (file := origins.get(".".join(parts[:n]).replace(".[", "["))) is not None:
                    return ConfigError(file, err.key, err.message)
            return ConfigError(top, err.key, err.message)
        raise ConfigErrors.of([placed(err) for err in getattr(e, "errors", [e])]) from None
