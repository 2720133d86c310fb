"""Target profiles: the built-ins load, and bad profiles fail with one clear message."""

from __future__ import annotations

import json

import pytest

from edgepack.errors import ProfileError
from edgepack.target import builtin_dir, builtin_names, load_target

BUILTINS = ["android-nnapi", "android-qnn", "android-qnn-8elite", "android-qnn-8gen2", "intel-openvino", "ios-coreml",
            "rpi4-cpu", "rpi5-cpu"]
NO_FP32_PATH = ("android-qnn", "android-qnn-8elite", "android-qnn-8gen2")  # the HTP: fp16 is the last resort


def test_builtin_targets_exist():
    assert builtin_names() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_profiles_load_and_cite_every_figure(name):
    p = load_target(name)
    assert p.name == name
    assert p.recipes[-1].name == ("fp16" if name in NO_FP32_PATH else "none")
    assert any(u.kind == "cpu" for u in p.device.units)
    # every numeric device figure has a non-empty public source
    assert p.device.sources and all(s.strip() for s in p.device.sources.values())


def test_known_hardware_facts_are_encoded():
    nnapi, coreml, pi4 = load_target("android-nnapi"), load_target("ios-coreml"), load_target("rpi4-cpu")
    assert nnapi.recipes[0].name == "static-int8" and nnapi.recipes[0].activation_type == "uint8"
    assert "static-int8" not in [r.name for r in coreml.recipes]
    assert coreml.provider_options["ModelFormat"] == "MLProgram"
    assert "fp16" not in [r.name for r in pi4.recipes]
    assert nnapi.requires_fixed_shapes and coreml.requires_fixed_shapes
    assert load_target("intel-openvino").format == "openvino-ir"


def _write(tmp_path, text, name="mine.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BAD_PROFILES = [
    ('extends = "rpi4-cpu"\nname = "x"\nfamliy = "linux-arm"\n', "unknown key 'famliy' (did you mean 'family'?)"),
    ('extends = "rpi4-cpu"\nname = 3\n', "'name' must be a string"),
    ('extends = "rpi4-cpu"\nname = "x"\n[runtime]\nexecution_provider = "NNAPII"\n', "did you mean 'NNAPI'?"),
    ('extends = "rpi4-cpu"\nname = "x"\n[shapes]\npolicy = "sometimes"\n', "'shapes.policy' = 'sometimes' is not one of"),
    ('extends = "rpi4-cpu"\nname = "x"\n[[quantization]]\nname = "none"\n[[quantization]]\nname = "static-int8"\nactivation_type = "uint8"\n',
     "recipes after 'none' can never be chosen"),
    ('extends = "rpi4-cpu"\nname = "x"\n[[quantization]]\nname = "fp16"\n', "has no fp16 arithmetic"),
    ('extends = "android-nnapi"\nname = "x"\n[[quantization]]\nname = "static-int8"\nactivation_type = "int8"\n',
     "NNAPI rejects int8 QLinearConv"),
    ('extends = "ios-coreml"\nname = "x"\n[[quantization]]\nname = "static-int8"\nactivation_type = "uint8"\n',
     "CoreML EP does not take int8"),
    ('extends = "android-nnapi"\nname = "x"\n[shapes]\npolicy = "dynamic"\n', "needs fixed shapes"),
    ('extends = "rpi4-cpu"\nname = "x"\n[runtime]\nengine = "openvino"\n', "OpenVINO provider goes with engine 'openvino'"),
    ('extends = "no-such-target"\nname = "x"\n', "unknown target 'no-such-target'"),
    ('extends = "rpi4-cpu"\nname = "x"\n[device]\nidle_w = -1.0\n', "'device.idle_w' = -1.0 must be at least 0.0"),
    ('extends = "rpi4-cpu"\nname = "x"\n[device.units.cpu]\nactive_w = 3.0\n[device.sources]\n"units.gpu.active_w" = "x"\n',
     "names no figure"),
    ('name = "x"\nfamily = "linux-arm"\n', "missing required key 'runtime.engine'"),
    ('this is = not toml', "invalid TOML"),
    ('extends = "rpi4-cpu"\nname = "x"\n[[quantization]]\nname = "static-int8"\n', "static int8 needs an activation type"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_PROFILES)
def test_bad_profiles(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_target(str(path))
    assert expected in str(info.value)
    assert "mine.toml" in str(info.value)
    assert str(tmp_path) not in str(info.value).replace(str(path), "")


@pytest.mark.parametrize(("text", "expected"), BAD_PROFILES[:4])
def test_bad_profile_cli_one_line_exit_2(tmp_path, cli, text, expected, tiny_cnn_path):
    path = _write(tmp_path, text)
    code, out, err = cli("inspect", tiny_cnn_path, "--target", path)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expected in err
    assert "Traceback" not in err


def test_extends_changes_only_what_differs(tmp_path):
    path = _write(tmp_path, 'extends = "rpi5-cpu"\nname = "my-pi"\n[device]\nidle_w = 2.5\n')
    mine, base = load_target(str(path)), load_target("rpi5-cpu")
    assert mine.name == "my-pi" and mine.device.idle_w == 2.5
    assert mine.recipes == base.recipes and mine.device.units == base.device.units


def test_extends_cycle_and_unknown_base(tmp_path):
    _write(tmp_path, 'extends = "b.toml"\nname = "a"\n', "a.toml")
    _write(tmp_path, 'extends = "a.toml"\nname = "b"\n', "b.toml")
    with pytest.raises(ProfileError, match="cycle"):
        load_target(str(tmp_path / "a.toml"))


def test_unknown_target_name_suggests(cli, tiny_cnn_path):
    code, _, err = cli("inspect", tiny_cnn_path, "--target", "rpi5")
    assert code == 2 and "unknown target 'rpi5'" in err and "did you mean" in err


def test_targets_command(cli):
    code, out, _ = cli("targets")
    assert code == 0 and all(n in out for n in BUILTINS)
    code, out, _ = cli("targets", "--json")
    assert [t["name"] for t in json.loads(out)] == BUILTINS


def test_profiles_folder_is_the_repository_targets():
    assert (builtin_dir() / "rpi4-cpu.toml").is_file()
