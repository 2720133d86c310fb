"""The cost model's parameters for one profile: the development-host defaults of latency.py, replaced
by what ``edgepack calibrate`` measured on the device (``[device.cost_model]``), and the onnxruntime
session the estimate models (``[estimate]``).

``[device.cost_model]`` keys (each with a source in ``[device.sources]``, as every device figure):

- ``eff_<class>``: share of the unit's peak a node of that op class reaches (``eff_conv_depthwise``
  for class ``conv-depthwise``); ``eff_conv_pointwise`` prices 1 x 1 convs apart from k x k ones.
- ``op_<Op>``: operations per element of an arithmetic-heavy elementwise op (``op_Resize-linear``).
- ``strided_conv``, ``channel_exp``, ``channel_sat``, ``small_exp``, ``dw_row_tap_dispatches``,
  ``dw_channel_tap_dispatches``, ``run_dispatches``: the named terms of latency.py.
- ``nchwc_block``: with the NCHWc layout, convs work on channels padded to this block (MLAS: 16 with
  AVX-512, 8 with AVX2), so a 24-channel conv costs what a 32-channel one does.
- ``parallel_elems``, ``par_cache_gbps``, ``par_op_<Op>`` (profiles calibrated at N > 1 threads): from
  ``parallel_elems`` elements on, onnxruntime splits an elementwise op over the threads; such nodes
  are priced at ``par_cache_gbps`` and ``par_op_<Op>`` operations per element instead of the
  cache-resident (single-thread) figures.

``[estimate]``: ``optimization_level`` (the session's graph optimization level; onnxruntime's default
is ``all``), ``layout`` (``nchwc`` where onnxruntime's x86 NCHWc transformer runs: level ``all`` on an
AVX2/AVX-512 CPU), ``threads`` (intra-op threads; onnxruntime's default is one per physical core).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..target import TargetProfile

SCALARS = ("strided_conv", "channel_exp", "channel_sat", "small_exp", "dw_row_tap_dispatches",
           "dw_channel_tap_dispatches", "run_dispatches", "nchwc_block")


@dataclass(frozen=True)
class CostParams:
    efficiency: dict[str, float]
    element_ops: dict[str, float]
    strided_conv: float
    channel_exp: float
    channel_sat: float
    small_exp: float
    dw_row_tap_dispatches: float
    dw_channel_tap_dispatches: float
    run_dispatches: float
    nchwc_block: float  # channels per NCHWc block (convs pad their channels to it); 1 where the layout is NCHW
    level: str  # the session optimization level priced
    layout: str
    threads: int | None
    measured: tuple[str, ...] = field(default=())  # the keys the profile measured
    parallel_elems: float = float("inf")  # N threads: elementwise nodes from this size on run split over them
    par_cache_gbps: float | None = None
    par_element_ops: dict[str, float] = field(default_factory=dict)

    @property
    def fused(self) -> bool:
        return self.level in ("extended", "all")


def session(profile: TargetProfile) -> tuple[str, str, int | None]:
    """(optimization level, layout, threads) the profile's estimates model. Without an ``[estimate]``
    table: the level the bundle's model is optimized at (accelerators: basic; their EP compiles it),
    plain NCHW (the built-in targets are ARM devices or compiling EPs), threads as the unit's cores."""
    s = profile.estimate_session
    level = s.get("optimization_level") or ("basic" if profile.is_accelerator else profile.optimization_level)
    layout = s.get("layout", "nchw")
    cpu = next((u for u in profile.device.units if u.kind == "cpu"), None)
    threads = s.get("threads", cpu.cores if cpu is not None else None)
    return level, layout, threads


def for_profile(profile: TargetProfile) -> CostParams:
    from . import latency as lat

    cm = profile.device.cost_model
    eff = dict(lat.EFFICIENCY)
    eff.update({k[4:].replace("_", "-"): v for k, v in cm.items() if k.startswith("eff_")})
    ops = dict(lat.ELEMENT_OPS)
    ops.update({k[3:]: v for k, v in cm.items() if k.startswith("op_")})  # (par_op_ keys start otherwise)
    defaults = {"strided_conv": lat.STRIDED_CONV, "channel_exp": lat.CHANNEL_EXP, "channel_sat": lat.CHANNEL_SAT,
                "small_exp": lat.SMALL_EXP, "nchwc_block": 1.0,
                "dw_row_tap_dispatches": lat.DW_ROW_TAP_DISPATCHES,
                "dw_channel_tap_dispatches": lat.DW_CHANNEL_TAP_DISPATCHES, "run_dispatches": lat.RUN_DISPATCHES}
    scalars = {k: cm.get(k, v) for k, v in defaults.items()}
    level, layout, threads = session(profile)
    par_ops = {k[7:]: v for k, v in cm.items() if k.startswith("par_op_")}
    return CostParams(eff, ops, **scalars, level=level, layout=layout, threads=threads,
                      measured=tuple(sorted(cm)), parallel_elems=float(cm.get("parallel_elems", float("inf"))),
                      par_cache_gbps=cm.get("par_cache_gbps"), par_element_ops=par_ops)


def describe(p: CostParams, profile: TargetProfile) -> str:
    """One assumption line: the session priced and where the parameters come from."""
    where = (f"{len(p.measured)} cost-model parameters measured on the device (profile {profile.source}), "
             "the rest the development host's" if p.measured else
             "cost-model parameters from the development host's micro-benchmarks (no device calibration)")
    return (f"models an onnxruntime {profile.execution_provider} session at optimization level '{p.level}'"
            f"{' with the NCHWc layout' if p.layout == 'nchwc' else ''}, "
            f"{p.threads if p.threads is not None else 'default'} thread(s); {where}")
