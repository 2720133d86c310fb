"""Hand-written validation of parsed TOML against a small schema language.

A schema is a dict of key -> spec. A spec is one of:

* a ``Field`` (a leaf with a type, optional choices, required flag);
* a dict (a nested table with its own schema);
* ``TableOf(spec)`` (a table whose keys are free, every value matching ``spec``);
* ``ListOf(schema_dict)`` (an array of tables, each matching the schema).

Errors name the file and the dotted key, and unknown keys get a did-you-mean,
in the style of pypa/build's config validation.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from .errors import ProfileError

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "an array"}


@dataclass(frozen=True)
class Field:
    type: type | tuple[type, ...]
    required: bool = False
    choices: tuple[Any, ...] | None = None
    item_type: type | None = None  # for lists of scalars
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class TableOf:
    value: Any  # Field or schema dict


@dataclass(frozen=True)
class ListOf:
    item: dict[str, Any]


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(t: type | tuple[type, ...]) -> str:
    types = t if isinstance(t, tuple) else (t,)
    return " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in types)


def _check_type(value: Any, want: type | tuple[type, ...]) -> bool:
    types = want if isinstance(want, tuple) else (want,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def check(data: Any, schema: dict[str, Any], source: str, prefix: str = "") -> None:
    """Raise ProfileError on the first problem of ``data`` against ``schema``."""
    if not isinstance(data, dict):
        msg = f"{source}: '{prefix.rstrip('.') or '<root>'}' must be a table"
        raise ProfileError(msg)
    for key in data:
        if key not in schema:
            msg = f"{source}: unknown key '{prefix}{key}'{did_you_mean(key, tuple(schema))}"
            raise ProfileError(msg)
    for key, spec in schema.items():
        dotted = f"{prefix}{key}"
        if key not in data:
            if isinstance(spec, Field) and spec.required:
                msg = f"{source}: missing required key '{dotted}'"
                raise ProfileError(msg)
            if isinstance(spec, dict):  # a missing table is fine only if none of its keys is required
                check({}, spec, source, dotted + ".")
            continue
        _check_value(data[key], spec, source, dotted)


def _check_value(value: Any, spec: Any, source: str, dotted: str) -> None:
    if isinstance(spec, dict):
        check(value, spec, source, dotted + ".")
    elif isinstance(spec, TableOf):
        if not isinstance(value, dict):
            msg = f"{source}: '{dotted}' must be a table"
            raise ProfileError(msg)
        for k, v in value.items():
            _check_value(v, spec.value, source, f"{dotted}.{k}")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            msg = f"{source}: '{dotted}' must be an array of tables ([[{dotted}]])"
            raise ProfileError(msg)
        for i, item in enumerate(value):
            check(item, spec.item, source, f"{dotted}[{i}].")
    else:
        _check_field(value, spec, source, dotted)


def _check_field(value: Any, spec: Field, source: str, dotted: str) -> None:
    if not _check_type(value, spec.type):
        msg = f"{source}: '{dotted}' must be {_describe(spec.type)}, got {type(value).__name__} {value!r}"
        raise ProfileError(msg)
    if spec.item_type is not None:
        for item in value:
            if not _check_type(item, spec.item_type):
                msg = f"{source}: every item of '{dotted}' must be {_describe(spec.item_type)}, got {item!r}"
                raise ProfileError(msg)
    items = value if isinstance(value, list) else [value]
    if spec.choices is not None:
        for item in items:
            if item not in spec.choices:
                hint = did_you_mean(str(item), tuple(str(c) for c in spec.choices))
                valid = ", ".join(repr(c) for c in spec.choices)
                msg = f"{source}: '{dotted}' = {item!r} is not one of {valid}{hint}"
                raise ProfileError(msg)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or (spec.minimum is not None and value < spec.minimum):
            msg = f"{source}: '{dotted}' = {value!r} must be at least {spec.minimum}"
            raise ProfileError(msg)
        if spec.maximum is not None and value > spec.maximum:
            msg = f"{source}: '{dotted}' = {value!r} must be at most {spec.maximum}"
            raise ProfileError(msg)
