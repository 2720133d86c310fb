"""onnxruntime's build and packaging argument parsers, re-stated as data, to check the command lines
and build-settings files edgepack generates without an onnxruntime checkout (this machine cannot
run the builds: no Android NDK, no Xcode).

Transcribed (flag names, arities, choices, actions; post-parse checks) from microsoft/onnxruntime,
MIT licence, Copyright (c) Microsoft Corporation, at these stored versions:

- tools/ci_build/build_args.py @ 03876adc28b33270e71f12697c068a6deb7207a1 (``parse_arguments``:
  the argument groups, the Linux-only ``add_linux_specific_args``, the macOS-only ``add_apple_args``,
  and the checks after parsing)
- tools/ci_build/github/android/build_aar_package.py @ 008eeb96a1e2e8d5c23519a81a837f52b54d384b
  (``parse_args``; ``_parse_build_settings``; how ``_build_aar`` composes each ABI's build.py command)
- tools/ci_build/github/apple/build_and_assemble_apple_pods.py @ 0fe759e06a7ce6def235367ca583ec91539b801c
  (``parse_args``; how ``main`` composes the build_apple_framework.py command)
- tools/ci_build/github/apple/build_apple_framework.py @ 02b0534c4a6f0d70f395bf658f6572fa47074a4a
  (``parse_args``; the build.py command per sysroot/arch in ``main`` and ``_find_or_build_sysroot_arch_framework``)
- tools/ci_build/github/apple/build_settings_utils.py @ 47ba54cd37f9b84a745e1362549cb6a52e6607cd
  (``parse_build_settings_file``'s validation, ``get_sysroot_arch_pairs``, ``get_build_params``)
- tools/ci_build/github/apple/package_assembly_utils.py @ 024d69d800c61c8d372d006efc1e4db530a20490
  (``PackageVariant.release_variant_names``: Full, Mobile)

These are the versions the code index holds (the repository is too large to mirror here); which
release tag each belongs to could not be established offline. The pinned onnxruntime is 1.32.0:
re-check against ``v<version>`` when bumping it (the flags used have been stable for years).
Only the parts a generated command can reach are re-stated; EP groups edgepack never names are
summarised by their flag names.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

CONFIGS = ["Debug", "MinSizeRel", "Release", "RelWithDebInfo"]

# ------------------------------------------------------------------------------ tools/ci_build/build_args.py

# (flag, kwargs) per group; kwargs as the source declares them
_CORE = [
    ("--build_dir", {"required": True}),
    ("--config", {"nargs": "+", "default": ["Debug"], "choices": CONFIGS}),
    ("--update", {"action": "store_true"}), ("--build", {"action": "store_true"}), ("--clean", {"action": "store_true"}),
    ("--parallel", {"nargs": "?", "const": "0", "default": "1", "type": int}),
    ("--target", {"nargs": 1, "action": "extend", "dest": "targets"}),
    ("--targets", {"nargs": "+", "action": "extend", "default": []}),
    ("--compile_no_warning_as_error", {"action": "store_true"}), ("--build_shared_lib", {"action": "store_true"}),
    ("--build_apple_framework", {"action": "store_true"}), ("--enable_lto", {"action": "store_true"}),
    ("--use_cache", {"action": "store_true"}), ("--use_binskim_compliant_compile_flags", {"action": "store_true"}),
]
_CMAKE = [
    ("--cmake_extra_defines", {"nargs": "+", "action": "extend", "default": []}),
    ("--cmake_path", {"default": "cmake"}),
    ("--cmake_generator", {"choices": ["MinGW Makefiles", "Ninja", "NMake Makefiles", "NMake Makefiles JOM",
                                       "Unix Makefiles", "Visual Studio 17 2022", "Visual Studio 18 2026", "Xcode"],
                           "default": None}),
    ("--use_vcpkg", {"action": "store_true"}), ("--use_vcpkg_ms_internal_asset_cache", {"action": "store_true"}),
    ("--skip_submodule_sync", {"action": "store_true"}), ("--skip_pip_install", {"action": "store_true"}),
]
_TESTING = [
    ("--test", {"action": "store_true"}), ("--skip_tests", {"action": "store_true"}), ("--ctest_path", {"default": "ctest"}),
    ("--enable_onnx_tests", {"action": "store_true"}), ("--path_to_protoc_exe", {}), ("--cmake_deps_mirror_dir", {}),
    ("--fuzz_testing", {"action": "store_true"}), ("--enable_symbolic_shape_infer_tests", {"action": "store_true"}),
    ("--skip_onnx_tests", {"action": "store_true"}), ("--skip_winml_tests", {"action": "store_true"}),
    ("--skip_nodejs_tests", {"action": "store_true"}), ("--ctest_timeout", {"default": "10800"}),
    ("--test_parallel", {"default": None, "type": int}), ("--enable_transformers_tool_test", {"action": "store_true"}),
    ("--build_micro_benchmarks", {"action": "store_true"}), ("--code_coverage", {"action": "store_true"}),
]
_TRAINING_PROFILING_DOCS = [
    ("--enable_training", {"action": "store_true"}), ("--enable_training_apis", {"action": "store_true"}),
    ("--enable_training_ops", {"action": "store_true"}), ("--enable_nccl", {"action": "store_true"}), ("--nccl_home", {}),
    ("--enable_memory_profile", {"action": "store_true"}), ("--enable_address_sanitizer", {"action": "store_true"}),
    ("--gen_doc", {"nargs": "?", "const": "yes", "type": str}),
    ("--rv64", {"action": "store_true"}), ("--riscv_toolchain_root", {"type": str, "default": ""}),
    ("--riscv_qemu_path", {"type": str, "default": ""}),
]
_ANDROID = [
    ("--android", {"action": "store_true"}),
    ("--android_abi", {"default": "arm64-v8a", "choices": ["armeabi-v7a", "arm64-v8a", "x86", "x86_64"]}),
    ("--android_api", {"type": int, "default": 27}),
    ("--android_sdk_path", {"type": str, "default": ""}), ("--android_ndk_path", {"type": str, "default": ""}),
    ("--android_cpp_shared", {"action": "store_true"}), ("--android_run_emulator", {"action": "store_true"}),
]
_WASM_FLAGS = ["--build_wasm", "--build_wasm_static_lib", "--enable_wasm_jspi", "--enable_wasm_simd",
               "--enable_wasm_relaxed_simd", "--enable_wasm_threads", "--disable_wasm_exception_catching",
               "--enable_wasm_api_exception_catching", "--enable_wasm_exception_throwing_override",
               "--wasm_run_tests_in_browser", "--enable_wasm_profiling", "--enable_wasm_debug_info"]
_WASM = [(f, {"action": "store_true"}) for f in _WASM_FLAGS] + [
    ("--emsdk_version", {"default": "4.0.23"}), ("--wasm_malloc", {}),
    ("--emscripten_settings", {"nargs": "+", "action": "extend", "default": []}),
]
_DEPENDENCIES_EXTENSIONS = [
    ("--use_full_protobuf", {"action": "store_true"}), ("--use_mimalloc", {"action": "store_true"}),
    ("--external_graph_transformer_path", {"type": str}), ("--use_extensions", {"action": "store_true"}),
    ("--extensions_overridden_path", {"type": str}),
]
_SIZE_REDUCTION = [
    ("--minimal_build", {"default": None, "nargs": "*", "type": str.lower}),
    ("--include_ops_by_config", {"type": str}),
    ("--enable_reduced_operator_type_support", {"action": "store_true"}),
    ("--disable_contrib_ops", {"action": "store_true"}), ("--disable_ml_ops", {"action": "store_true"}),
    ("--disable_generation_ops", {"action": "store_true"}), ("--disable_rtti", {"action": "store_true"}),
    ("--disable_types", {"nargs": "+", "default": [], "choices": ["float4", "float8", "optional", "sparsetensor", "string"]}),
    ("--disable_exceptions", {"action": "store_true"}),
    ("--client_package_build", {"action": "store_true"}), ("--enable_session_threadpool_callbacks", {"action": "store_true"}),
]
_BINDINGS = [
    ("--enable_pybind", {"action": "store_true"}), ("--build_wheel", {"action": "store_true"}), ("--wheel_name_suffix", {}),
    ("--skip-keras-test", {"action": "store_true"}), ("--build_csharp", {"action": "store_true"}),
    ("--build_nuget", {"action": "store_true"}), ("--msbuild_extra_options", {"nargs": "+", "action": "extend", "default": []}),
    ("--build_java", {"action": "store_true"}), ("--build_nodejs", {"action": "store_true"}),
    ("--build_objc", {"action": "store_true"}),
]
_EP_SWITCHES = ["--use_cuda", "--enable_cuda_line_info", "--enable_cuda_nhwc_ops", "--disable_cuda_nhwc_ops",
                "--enable_cuda_minimal_build", "--enable_nvtx_profile", "--enable_cuda_profiling", "--no_sve",
                "--enable_arm_neon_nchwc", "--enable_rvv", "--use_dnnl", "--use_tensorrt", "--use_tensorrt_oss_parser",
                "--use_nv_tensorrt_rtx", "--use_dml", "--dml_external_project", "--use_nnapi", "--use_coreml",
                "--use_snpe", "--use_vitisai", "--use_acl", "--no_kleidiai", "--use_qmx", "--use_rknpu", "--use_cann",
                "--use_migraphx", "--use_webnn", "--use_jsep", "--use_external_dawn", "--use_xnnpack", "--use_vsinpu",
                "--use_azure", "--enable_dx_interop", "--enable_lazy_tensor", "--ms_experimental",
                "--enable_msinternal", "--use_lock_free_queue", "--enable_generic_interface"]
_EP = [(f, {"action": "store_true"}) for f in _EP_SWITCHES] + [
    ("--cuda_version", {}), ("--cuda_home", {}), ("--cudnn_home", {}), ("--nvcc_threads", {"default": 4, "type": int}),
    ("--flash_nvcc_threads", {"default": -1, "type": int}), ("--dnnl_gpu_runtime", {"default": "", "type": str.lower,
                                                                                  "choices": ["ocl", ""]}),
    ("--dnnl_opencl_root", {"default": ""}), ("--dnnl_aarch64_runtime", {"default": "", "type": str.lower,
                                                                         "choices": ["acl", ""]}),
    ("--dnnl_acl_root", {"default": ""}), ("--use_openvino", {"nargs": "?", "const": "CPU"}),
    ("--use_tensorrt_builtin_parser", {"action": "store_true", "default": True}), ("--tensorrt_home", {}),
    ("--tensorrt_rtx_home", {}), ("--dml_path", {"type": str, "default": ""}), ("--nnapi_min_api", {"type": int}),
    ("--use_qnn", {"nargs": "?", "const": "shared_lib", "choices": ["shared_lib", "static_lib"]}), ("--qnn_home", {}),
    ("--snpe_root", {}), ("--acl_home", {}), ("--acl_libs", {}), ("--cann_home", {}), ("--migraphx_home", {}),
    ("--rocm_version", {}), ("--rocm_home", {}),
    ("--use_webgpu", {"nargs": "?", "const": "static_lib", "choices": ["shared_lib", "static_lib"]}),
    ("--wgsl_template", {"choices": ["static"], "default": "static"}),
]
_LINUX_ONLY = [("--allow_running_as_root", {"action": "store_true"}),
               ("--enable_external_custom_op_schemas", {"action": "store_true"})]
_APPLE_ONLY = [
    ("--apple_sysroot", {"default": ""}), ("--ios_toolchain_file", {"default": ""}),
    ("--visionos_toolchain_file", {"default": ""}), ("--tvos_toolchain_file", {"default": ""}),
    ("--xcode_code_signing_team_id", {"default": ""}), ("--xcode_code_signing_identity", {"default": ""}),
    ("--use_xcode", {"action": "store_const", "const": "Xcode", "dest": "cmake_generator"}),
    ("--osx_arch", {"default": "arm64", "choices": ["arm64", "arm64e", "x86_64"]}),
    ("--apple_deploy_target", {"type": str}),
]


class BuildArgsError(Exception):
    """What argparse (or build_args.py's checks after parsing) would have refused."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits; a test wants the message
        raise BuildArgsError(message)


def build_py_parser(host: str) -> argparse.ArgumentParser:
    """build.py's parser as ``parse_arguments`` makes it on ``host`` ('linux' or 'macos')."""
    p = _Parser(prog="build.py", fromfile_prefix_chars="@", allow_abbrev=True)
    groups = [_CORE, _CMAKE, _TESTING, _TRAINING_PROFILING_DOCS, _ANDROID, _WASM, _DEPENDENCIES_EXTENSIONS,
              _SIZE_REDUCTION, _BINDINGS, _EP]
    for group in groups:
        for flag, kwargs in group:
            p.add_argument(flag, **kwargs)
    if host == "macos":
        platform = p.add_mutually_exclusive_group()
        platform.add_argument("--ios", action="store_true")
        platform.add_argument("--visionos", action="store_true")
        platform.add_argument("--tvos", action="store_true")
        platform.add_argument("--macos", choices=["MacOSX", "Catalyst"])
        for flag, kwargs in _APPLE_ONLY:
            p.add_argument(flag, **kwargs)
    elif host == "linux":
        for flag, kwargs in _LINUX_ONLY:
            p.add_argument(flag, **kwargs)
    else:
        raise ValueError(host)
    return p


def parse_build_py(argv: list[str], host: str) -> argparse.Namespace:
    """Parse like build.py on ``host``, then the checks ``parse_arguments`` makes after parsing."""
    args = build_py_parser(host).parse_args(argv)
    if args.disable_exceptions and args.minimal_build is None:
        raise BuildArgsError("--disable_exceptions requires --minimal_build to be specified.")
    if host == "macos":
        if args.build_apple_framework and not any([args.ios, args.macos, args.visionos, args.tvos]):
            raise BuildArgsError("--build_apple_framework requires --ios, --macos, --visionos, or --tvos to be specified.")
        if args.macos and not args.build_apple_framework:
            raise BuildArgsError("--macos target requires --build_apple_framework.")
    return args


# --------------------------------------------------------- tools/ci_build/github/android/build_aar_package.py

DEFAULT_BUILD_ABIS = ["armeabi-v7a", "arm64-v8a", "x86", "x86_64"]
DEFAULT_ANDROID_MIN_SDK_VER = 24
DEFAULT_ANDROID_TARGET_SDK_VER = 34


def aar_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="build_aar_package.py")
    p.add_argument("--android_sdk_path", type=str, default="")
    p.add_argument("--android_ndk_path", type=str, default="")
    p.add_argument("--qnn_path", type=str, default="")
    p.add_argument("--build_dir", type=str, default="build/android_aar")
    p.add_argument("--include_ops_by_config", type=str)
    p.add_argument("--config", type=str, default="Release", choices=CONFIGS)
    p.add_argument("build_settings_file", type=Path)
    return p


def aar_build_settings(data: dict) -> dict:
    """``_parse_build_settings`` on the loaded JSON: defaults, the required build_params, the sdk check."""
    if "build_params" not in data:
        raise ValueError("build_params is required in the build config file")
    settings = {"build_abis": data.get("build_abis", DEFAULT_BUILD_ABIS),
                "android_min_sdk_version": data.get("android_min_sdk_version", DEFAULT_ANDROID_MIN_SDK_VER),
                "android_target_sdk_version": data.get("android_target_sdk_version", DEFAULT_ANDROID_TARGET_SDK_VER)}
    settings["build_params"] = list(data["build_params"]) + [f"--android_api={settings['android_min_sdk_version']}"]
    if settings["android_min_sdk_version"] > settings["android_target_sdk_version"]:
        raise ValueError("android_min_sdk_version cannot be larger than android_target_sdk_version")
    return settings


def aar_build_py_argvs(argv: list[str], read_settings) -> tuple[argparse.Namespace, dict, list[list[str]]]:
    """(the script's args, its settings, one build.py argv per ABI) for a build_aar_package.py command line;
    ``read_settings(path)`` returns the settings file's text."""
    args = aar_parser().parse_args(argv)
    if not args.android_sdk_path or not args.android_ndk_path:
        raise ValueError("android_sdk_path and android_ndk_path are required")
    settings = aar_build_settings(json.loads(read_settings(args.build_settings_file)))
    base = settings["build_params"] + [f"--config={args.config}"]
    out = []
    for abi in settings["build_abis"]:
        cmd = [*base, f"--android_abi={abi}", f"--build_dir={args.build_dir}/intermediates/{abi}"]
        if args.include_ops_by_config:
            cmd.append(f"--include_ops_by_config={args.include_ops_by_config}")
        out.append(cmd)
    return args, settings, out


# ---------------------------------------------------- tools/ci_build/github/apple/build_and_assemble_apple_pods.py

POD_VARIANTS = ["Full", "Mobile"]  # PackageVariant.release_variant_names()


def pods_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="build_and_assemble_apple_pods.py")
    p.add_argument("--build-dir", type=Path, default=Path("build/apple_framework"))
    p.add_argument("--staging-dir", type=Path, default=Path("build/apple_pod_staging"))
    p.add_argument("--pod-version", default="local")
    p.add_argument("--variant", choices=POD_VARIANTS, default="Mobile")
    p.add_argument("--test", action="store_true")
    p.add_argument("--include-ops-by-config")
    p.add_argument("--build-settings-file", required=True)
    p.add_argument("-b", "--build-apple-framework-arg", action="append", dest="build_apple_framework_extra_args",
                   default=[])
    return p


def framework_parser() -> argparse.ArgumentParser:
    """tools/ci_build/github/apple/build_apple_framework.py's parser."""
    p = _Parser(prog="build_apple_framework.py")
    p.add_argument("--build_dir", type=Path, default=Path("build/apple_framework"))
    p.add_argument("--include_ops_by_config", type=Path)
    p.add_argument("--config", type=str, default="Release", choices=CONFIGS)
    p.add_argument("--build_dynamic_framework", action="store_true")
    p.add_argument("--path_to_protoc_exe", type=Path)
    p.add_argument("build_settings_file", type=Path)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--only_build_single_sysroot_arch_framework", nargs=2, metavar=("sysroot", "arch"))
    mode.add_argument("--only_assemble_xcframework", action="store_true")
    p.add_argument("--record_sysroot_arch_framework_build_outputs_to_file", type=Path)
    return p


def apple_build_settings(data: dict) -> dict:
    """``build_settings_utils.parse_build_settings_file`` on the loaded JSON (its assertions as errors)."""

    def str_lists(value, what):
        if not isinstance(value, dict):
            raise ValueError(f"{what} is not a dict")
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, list) or not all(isinstance(e, str) for e in v):
                raise ValueError(f"{what}[{k!r}] is not a list of strings")
        return value

    archs = str_lists(data.get("build_osx_archs", {"iphoneos": ["arm64"], "iphonesimulator": ["arm64", "x86_64"]}),
                      "build_osx_archs")
    return {"build_osx_archs": archs, "build_params": str_lists(data.get("build_params", {}), "build_params")}


def pods_build_py_argvs(argv: list[str], read_settings) -> tuple[argparse.Namespace, argparse.Namespace, dict,
                                                                 list[tuple[str, str, list[str]]]]:
    """(pods script args, framework script args, settings, [(sysroot, arch, build.py argv)]) for a
    build_and_assemble_apple_pods.py command line."""
    pods = pods_parser().parse_args(argv)
    framework_argv = list(pods.build_apple_framework_extra_args)
    if pods.include_ops_by_config is not None:
        framework_argv += ["--include_ops_by_config", pods.include_ops_by_config]
    framework_argv += ["--build_dir", str(pods.build_dir), pods.build_settings_file]
    fw = framework_parser().parse_args(framework_argv)
    settings = apple_build_settings(json.loads(read_settings(fw.build_settings_file)))
    pairs = sorted({(s, a) for s, archs in settings["build_osx_archs"].items() for a in archs})
    trailing = [f"--config={fw.config}"]
    if fw.include_ops_by_config is not None:
        trailing.append(f"--include_ops_by_config={fw.include_ops_by_config}")
    out = []
    for sysroot, arch in pairs:
        cmd = [*settings["build_params"].get("base", []), *settings["build_params"].get(sysroot, []), *trailing,
               f"--apple_sysroot={'macosx' if sysroot == 'macabi' else sysroot}", f"--osx_arch={arch}",
               f"--build_dir={fw.build_dir}/intermediates/{sysroot}_{arch}"]
        out.append((sysroot, arch, cmd))
    return pods, fw, settings, out


def words(command: str) -> list[str]:
    """A one-line command as the shell splits it (no expansion; callers substitute variables first)."""
    return shlex.split(command)
