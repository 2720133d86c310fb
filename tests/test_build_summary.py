"""The `build` summary counts what ships for each model: OpenVINO's model.bin beside model.xml too."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SAMPLE_MODEL


def test_openvino_summary_counts_the_bin(tmp_path, cli):
    pytest.importorskip("openvino")
    out = tmp_path / "out"
    code, text, err = cli("build", SAMPLE_MODEL, "--target", "intel-openvino", "-o", out)
    assert code == 0, err
    manifest = json.loads((out / "intel-openvino" / "manifest.json").read_text())
    sizes = {a["path"]: a["bytes"] for a in manifest["artifacts"]}
    line = next(ln for ln in text.splitlines() if "model.xml" in ln and "bytes" in ln)
    assert "model.xml + model.bin" in line, line
    shown = int(re.search(r"([\d,]+) bytes", line).group(1).replace(",", ""))
    assert shown == sizes["model.xml"] + sizes["model.bin"] > sizes["model.xml"]
