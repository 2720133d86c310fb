"""How the minimal runtime is built on each device family: the host check at the top of
``build_runtime.sh``, the extra CI steps and the libraries the workflow uploads (backend data,
keyed by the profile's ``family``; the CI runner itself is profile data, ``minimal_build.ci_runner``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuildPlatform:
    check: str  # build_runtime.sh: what the host must be, and the EXTRA_ARGS it adds
    ci_steps: str = ""  # GitHub Actions steps before the build
    libraries: tuple[str, ...] = ("libonnxruntime.so*",)  # what the workflow uploads, in the build's output folder
    packaging: str | None = None  # "aar" / "pods": onnxruntime's packaging script instead of build.sh (mobile_packaging)
    uploads: tuple[str, ...] = ()  # with packaging: what the workflow uploads, relative to the build folder


_ANDROID_CHECK = """\
# Android: cross-compiled on Linux or macOS with the Android SDK and NDK.
: "${ANDROID_SDK_ROOT:?set ANDROID_SDK_ROOT to your Android SDK folder}"
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to an Android NDK folder (e.g. $ANDROID_SDK_ROOT/ndk/<version>)}"
EXTRA_ARGS=()
"""

_IOS_CHECK = """\
# iOS: this build runs on macOS only, with Xcode and its command line tools.
if [ "$(uname -s)" != "Darwin" ]; then
  echo "error: the iOS runtime must be built on macOS with Xcode" >&2
  exit 1
fi
EXTRA_ARGS=()
"""

_LINUX_AARCH64_CHECK = """\
# Raspberry Pi (aarch64 Linux). Default: build natively on the Pi itself or on an aarch64 machine
# or CI runner (needs git, python3, cmake >= 3.28, gcc/g++; several hours on a Pi 4, 4 GB RAM at least).
# Alternative: cross-compile on x86_64 with EDGEPACK_CROSS=1 (needs gcc-aarch64-linux-gnu and
# g++-aarch64-linux-gnu; give a host protoc of the protobuf version in cmake/deps.txt as PROTOC if
# the build cannot run the target's protoc). The native build is the tested path.
EXTRA_ARGS=()
if [ "$(id -u)" = "0" ]; then
  EXTRA_ARGS+=(--allow_running_as_root)  # build.py refuses root without it (CI containers run as root; Linux-only flag)
fi
if [ "$(uname -m)" != "aarch64" ]; then
  if [ "${EDGEPACK_CROSS:-0}" != "1" ]; then
    echo "error: not on aarch64; run this on the Pi (or an aarch64 runner), or set EDGEPACK_CROSS=1 to cross-compile" >&2
    exit 1
  fi
  TOOLCHAIN="$PWD/aarch64-linux-gnu.toolchain.cmake"
  cat > "$TOOLCHAIN" <<'CMAKE'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
CMAKE
  EXTRA_ARGS+=(--cmake_extra_defines "CMAKE_TOOLCHAIN_FILE=$TOOLCHAIN")
  if [ -n "${PROTOC:-}" ]; then
    EXTRA_ARGS+=(--path_to_protoc_exe "$PROTOC")
  fi
fi
"""

_ANDROID_NDK = "27.2.12479018"  # NDK r27c, installed with the runner's own sdkmanager

_ANDROID_STEPS = """\
      - uses: actions/setup-java@v5
        with:
          distribution: temurin
          java-version: "17"
      - name: Android NDK
        run: |
          "$ANDROID_SDK_ROOT/cmdline-tools/latest/bin/sdkmanager" --install "ndk;@NDK@"
          echo "ANDROID_NDK_HOME=$ANDROID_SDK_ROOT/ndk/@NDK@" >> "$GITHUB_ENV"
"""


PLATFORMS = {
    "android": BuildPlatform(_ANDROID_CHECK, _ANDROID_STEPS.replace("@NDK@", _ANDROID_NDK), packaging="aar",
                             uploads=("onnxruntime-release.aar",)),
    "ios": BuildPlatform(_IOS_CHECK, "", packaging="pods", uploads=("pods/",)),
    "linux-arm": BuildPlatform(_LINUX_AARCH64_CHECK),
}
