"""Generate ``schemas/profile.schema.json`` from ``edgepack.target.SCHEMA``.

The profile schema is derived, never hand-edited, so it cannot drift from the validator that
edgepack runs on every profile. ``tests/test_schemas.py`` regenerates it and compares.

    python schemas/generate_profile_schema.py          # rewrite the committed file
    python schemas/generate_profile_schema.py --check  # exit 1 if the committed file is stale

What JSON Schema cannot say, and edgepack still checks by hand (edgepack/target.py):
every numeric figure under [device] names a source in [device.sources]; the consistency rules
between engine, provider, format, shapes and recipes; the did-you-mean on unknown keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgepack._toml_check import Field, ListOf, TableOf  # noqa: E402
from edgepack.target import SCHEMA  # noqa: E402

OUT = Path(__file__).resolve().parent / "profile.schema.json"
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array"}


def _type(t: type | tuple[type, ...]) -> dict[str, Any]:
    types = t if isinstance(t, tuple) else (t,)
    names = [_JSON_TYPES[x] for x in types]
    if "number" in names and "integer" in names:  # JSON's number already admits integers
        names.remove("integer")
    return {"type": names[0] if len(names) == 1 else names}


def _field(spec: Field) -> dict[str, Any]:
    out = _type(spec.type)
    if spec.item_type is not None:
        out["items"] = _type(spec.item_type)
    target = out["items"] if spec.item_type is not None else out
    if spec.choices is not None:
        target["enum"] = list(spec.choices)
    if spec.minimum is not None:
        target["minimum"] = spec.minimum
    if spec.maximum is not None:
        target["maximum"] = spec.maximum
    return out


def _is_required(spec: Any, partial: bool) -> bool:
    """A key is required if it is a required field, or a table that holds one (edgepack checks a
    missing table as an empty one)."""
    if partial:
        return False
    if isinstance(spec, Field):
        return spec.required
    if isinstance(spec, dict):
        return any(_is_required(s, partial) for s in spec.values())
    return False


def _spec(spec: Any, partial: bool) -> dict[str, Any]:
    if isinstance(spec, Field):
        return _field(spec)
    if isinstance(spec, dict):
        return _table(spec, partial)
    if isinstance(spec, TableOf):
        return {"type": "object", "additionalProperties": _spec(spec.value, partial)}
    if isinstance(spec, ListOf):  # arrays of tables replace the base's wholesale: items are always complete
        return {"type": "array", "items": _table(spec.item, partial=False)}
    msg = f"unknown schema spec {spec!r}"
    raise TypeError(msg)


def _table(schema: dict[str, Any], partial: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": {k: _spec(v, partial) for k, v in schema.items()},
                           "additionalProperties": False}
    required = [k for k, v in schema.items() if _is_required(v, partial)]
    if required:
        out["required"] = required
    return out


def generate() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgepack target profile",
        "description": ("A targets/*.toml profile parsed with tomllib. Generated from edgepack.target.SCHEMA by "
                        "schemas/generate_profile_schema.py: do not edit by hand. A profile with 'extends' states "
                        "only what differs from its base, so nothing is required in it; the merged profile must "
                        "match the complete form. Not expressible here, checked by edgepack: every [device] figure "
                        "names a source in [device.sources], and the engine/provider/format/recipe consistency "
                        "rules."),
        "if": {"type": "object", "required": ["extends"]},
        "then": {"$ref": "#/$defs/partial"},
        "else": {"$ref": "#/$defs/complete"},
        "$defs": {"complete": _table(SCHEMA, partial=False), "partial": _table(SCHEMA, partial=True)},
    }


def render() -> str:
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"error: {OUT.name} is stale: run python schemas/generate_profile_schema.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
