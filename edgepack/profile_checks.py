"""Checks on the strings a profile carries into generated files (issue #14, profile injection).

A target profile is untrusted data, and some of its strings reach files a user may run or feed to
other tools: the bundle folder name (``name``), ``build_runtime.sh`` (name, ``minimal_build.flags``),
``requirements.txt`` (``stock_package``), the CI workflow (name, ``--config``), READMEs and JSON.
So, besides the schema in :mod:`edgepack.target`:

* no string anywhere in a profile file (keys, values, nested tables, arrays, ``extends``) may hold
  a control character (C0, DEL, C1, Unicode line/paragraph separators, bidirectional overrides);
* ``name`` is a plain folder name: ``^[A-Za-z0-9._-]+$``, not ``.`` or ``..``, at most 100 characters;
* ``stock_package`` of a ``linux-arm`` profile goes into ``requirements.txt``: it must be a PEP 508
  distribution name (no specifier, URL, option or second line);
* ``--config`` in ``minimal_build.flags`` must be one of onnxruntime's build configurations;
* provider option keys are identifiers;
* every table and array holds at most MAX_ITEMS entries, nesting is at most MAX_DEPTH deep and an
  ``extends`` chain at most MAX_EXTENDS files long, so a hostile profile costs linear, bounded work.

The writers quote and serialize on top of this (``shlex.quote`` in the build script, JSON-quoted
scalars in YAML, ``json.dumps`` for code in READMEs); :func:`require_safe_for_scripts` repeats the
checks where a profile reaches a script, for profiles made in Python without :func:`load_target`.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ProfileError, StageError

NAME = re.compile(r"^[A-Za-z0-9._-]+$")
NAME_MAX = 100
RUNNER_LABEL = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# PEP 508 (and the core metadata spec): a distribution name
PIP_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
# onnxruntime tools/ci_build/build.py: --config choices
BUILD_CONFIGS = ("Debug", "MinSizeRel", "Release", "RelWithDebInfo")
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
MAX_ITEMS = 256  # entries in any one table or array (real profiles have a few dozen at most)
MAX_DEPTH = 16  # tables and arrays nested in each other (real profiles: 4)
MAX_EXTENDS = 16  # files in one ``extends`` chain (real profiles: 2)
MAX_STRING = 4096  # characters in one string (the longest source note today is ~300)


def _show(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def control_char(text: str) -> str | None:
    """The first control character in ``text`` as ``U+XXXX``, or None."""
    m = CONTROL.search(text)
    return f"U+{ord(m.group()):04X}" if m else None


def check_text(text: str, what: str) -> None:
    """Refuse a control character in ``text`` (a name from a profile, a file, a manifest)."""
    bad = control_char(text)
    if bad:
        msg = f"{what} {_show(text)} contains a control character ({bad})"
        raise ProfileError(msg)


def check_raw(data: dict[str, Any], label: str) -> None:
    """Every key and string of one parsed profile file: no control characters, bounded sizes.

    Iterative (no recursion), one visit per value: linear in the size of the file.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, dotted, depth = stack.pop()
        where = dotted or "<root>"
        if depth > MAX_DEPTH:
            msg = f"{label}: '{where}' is nested more than {MAX_DEPTH} tables/arrays deep"
            raise ProfileError(msg)
        if isinstance(value, dict):
            if len(value) > MAX_ITEMS:
                msg = f"{label}: '{where}' has {len(value)} entries; a profile table holds at most {MAX_ITEMS}"
                raise ProfileError(msg)
            for key, item in value.items():
                bad = control_char(key)
                if bad:
                    msg = f"{label}: key {_show(key)} under '{where}' contains a control character ({bad})"
                    raise ProfileError(msg)
                stack.append((item, f"{dotted}.{key}" if dotted else key, depth + 1))
        elif isinstance(value, list):
            if len(value) > MAX_ITEMS:
                msg = f"{label}: '{where}' has {len(value)} items; a profile array holds at most {MAX_ITEMS}"
                raise ProfileError(msg)
            stack.extend((item, f"{dotted}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            bad = control_char(value)
            if bad:
                msg = f"{label}: '{where}' = {_show(value)} contains a control character ({bad})"
                raise ProfileError(msg)
            if len(value) > MAX_STRING:
                msg = f"{label}: '{where}' is {len(value)} characters long; at most {MAX_STRING}"
                raise ProfileError(msg)


def check_chain(chain: tuple[str, ...], label: str) -> None:
    """Refuse an ``extends`` chain longer than MAX_EXTENDS files (before reading the next one)."""
    if len(chain) >= MAX_EXTENDS:
        msg = f"{label}: 'extends' chain is longer than {MAX_EXTENDS} profiles"
        raise ProfileError(msg)


def check_name(name: str, label: str) -> None:
    if not NAME.match(name) or name in (".", "..") or len(name) > NAME_MAX:
        msg = (f"{label}: 'name' = {_show(name)} must be a plain folder name: letters, digits, '.', '_' and '-' "
               f"only (not '.' or '..'), at most {NAME_MAX} characters")
        raise ProfileError(msg)


def check_pip_name(value: str, label: str, key: str = "minimal_build.stock_package") -> None:
    if not PIP_NAME.match(value):
        msg = (f"{label}: '{key}' = {_show(value)} must be a Python package name (PEP 508: letters, digits, "
               f"'.', '_', '-'; no version, URL or option) because it goes into requirements.txt")
        raise ProfileError(msg)


def config_flag(flags: tuple[str, ...] | list[str]) -> str | None:
    """The value after ``--config`` in build flags, if any."""
    flags = list(flags)
    return flags[flags.index("--config") + 1] if "--config" in flags[:-1] else None


def check_profile(profile, label: str) -> None:
    """The loaded profile's strings that reach generated files (see the module docstring)."""
    check_name(profile.name, label)
    if profile.stock_index == "pypi" and profile.stock_package is not None:  # pinned in requirements.txt
        check_pip_name(profile.stock_package, label)
    if profile.ci_runner is not None and not RUNNER_LABEL.match(profile.ci_runner):
        msg = (f"{label}: 'minimal_build.ci_runner' {_show(profile.ci_runner)} is not a GitHub Actions runner label "
               "(letters, digits, '.', '_', '-')")
        raise ProfileError(msg)
    flags = list(profile.minimal_build_flags)
    if flags and flags[-1] == "--config":
        msg = f"{label}: 'minimal_build.flags' ends with '--config' without a value"
        raise ProfileError(msg)
    config = config_flag(flags)
    if config is not None and config not in BUILD_CONFIGS:
        msg = (f"{label}: 'minimal_build.flags' has '--config' {_show(config)}; onnxruntime builds one of: "
               f"{', '.join(BUILD_CONFIGS)}")
        raise ProfileError(msg)
    for key in profile.provider_options:
        if not OPTION_KEY.match(key):
            msg = f"{label}: 'runtime.provider_options' key {_show(key)} must be an identifier (letters, digits, '_', '.')"
            raise ProfileError(msg)


def require_safe_for_scripts(profile) -> None:
    """The same checks where a profile reaches a script or a requirements file (a StageError there:
    a profile built in Python without load_target must not slip through)."""
    try:
        check_profile(profile, f"target '{profile.name!r}'")
        for flag in profile.minimal_build_flags:
            check_text(flag, "build flag")
    except ProfileError as exc:
        raise StageError(str(exc)) from None
