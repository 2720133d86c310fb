"""Each built-in profile's published anchors fall inside the estimate's band for a local stand-in
model, or the profile explains the gap (issue #15)."""

from __future__ import annotations

import pytest
from anchor_proxies import ANCHOR_PROXIES

from edgepack.target import builtin_names, load_target

ANCHORS = [(name, i, a) for name in builtin_names() for i, a in enumerate(load_target(name).device.anchors)]


def test_every_builtin_profile_anchor_is_checked_or_explained():
    assert ANCHORS, "no published anchors in the built-in profiles"
    for name, i, a in ANCHORS:
        gap = a.get("gap", "").strip()
        assert gap or a["model"] in ANCHOR_PROXIES, f"{name} anchor {i} ({a['model']}): neither a local stand-in nor a gap"
        assert not gap or len(gap) > 40, f"{name} anchor {i}: the gap must say why"


@pytest.mark.integration
@pytest.mark.parametrize(("name", "index", "anchor"), [t for t in ANCHORS if not t[2].get("gap")],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_anchor_inside_the_estimate_band(name, index, anchor):
    from real_models import find_real_model

    from edgepack.estimate import estimate_bundle

    key, shapes, _ = ANCHOR_PROXIES[anchor["model"]]
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{key} not installed")
    est = estimate_bundle(path, load_target(name), anchor["precision"], shapes=shapes).latency
    assert est.low <= anchor["latency_ms"] <= est.high, (name, anchor["model"], anchor["latency_ms"], est.low, est.value, est.high)
