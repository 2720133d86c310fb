#!/usr/bin/env bash
# Does onnxruntime's Swift package have a tag for this version? Usage: ./check_spm_version.sh 1.32.0
# (the bundle's version: jq -r .toolchain.onnxruntime out/ios-coreml/manifest.json)
# Exit 0: pin it in Package.swift (exact: "VERSION"). Exit 1: no such tag - use CocoaPods (README.md).
set -euo pipefail
VERSION="${1:?usage: $0 ONNXRUNTIME_VERSION}"
REPO="https://github.com/microsoft/onnxruntime-swift-package-manager"
if git ls-remote --exit-code --tags "$REPO" "refs/tags/$VERSION" >/dev/null; then
  echo "$REPO has tag $VERSION: Swift Package Manager works (Package.swift: exact: \"$VERSION\")"
else
  echo "$REPO has no tag $VERSION: use CocoaPods (pod 'onnxruntime-objc', '$VERSION'), see README.md" >&2
  exit 1
fi
