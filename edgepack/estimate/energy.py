"""Energy per inference and battery/power at a rate: active power x time per compute unit, over idle.

``active_w`` in the profiles is the power a unit draws above the device's idle baseline (the Pi
figures are wall power under load minus idle), so energy here is the inference's own share.
"""

from __future__ import annotations

from ..target import ComputeUnit, TargetProfile
from .base import Estimate

FALLBACK_ACTIVE_W = 2.0  # edgepack assumption for a unit without an active_w figure
BAND = (0.5, 2.0)  # latency band x power uncertainty


def _active_w(unit: ComputeUnit, notes: list[str]) -> float:
    if unit.active_w is not None:
        return unit.active_w
    notes.append(f"unit '{unit.name}' has no active_w in the profile: assumed {FALLBACK_ACTIVE_W:g} W")
    return FALLBACK_ACTIVE_W


def energy_per_inference(profile: TargetProfile, time_by_unit_us: dict[str, float], switch_us: float = 0.0) -> Estimate:
    """Joules (reported in mJ) per inference: sum over units of active_w x time, plus the CPU<->accelerator
    transfers at CPU power."""
    notes: list[str] = []
    units = {u.name: u for u in profile.device.units}
    cpu = next(u for u in profile.device.units if u.kind == "cpu")
    mj = 0.0
    for name, us in sorted(time_by_unit_us.items()):
        w = _active_w(units[name], notes)
        mj += w * us / 1e3
        notes.append(f"unit '{name}': {us / 1e3:.3f} ms x {w:g} W")
    if switch_us:
        w = _active_w(cpu, notes)
        mj += w * switch_us / 1e3
        notes.append(f"partition switches: {switch_us / 1e3:.3f} ms at CPU power {w:g} W")
    notes.append("energy above the idle baseline (active_w is the draw above idle); latency band and power figures "
                 f"give the {BAND[0]:g}x-{BAND[1]:g}x band")
    return Estimate(mj, mj * BAND[0], mj * BAND[1], "mJ", "active power x estimated time per compute unit", notes)


def at_rate(profile: TargetProfile, per_inference: Estimate, per_hour: float, latency_ms: float) -> dict[str, Estimate]:
    """Battery figures (devices with a battery in their profile: phones) or power figures (the rest:
    boards, laptops on the wall) at ``per_hour`` inferences per hour."""
    dev = profile.device
    j = per_inference.value / 1e3
    lo_j, hi_j = per_inference.low / 1e3, per_inference.high / 1e3
    busy = per_hour * latency_ms / 3.6e6  # share of the hour spent inferring
    notes = [f"{per_hour:g} inferences per hour ({busy:.1%} of the time busy)"]
    if busy > 1:
        notes.append("the rate exceeds what the device can run back to back; figures assume it anyway")
    wh = j * per_hour / 3600
    out: dict[str, Estimate] = {}
    if dev.battery_wh or dev.battery_v:  # a battery-powered device: battery figures
        if dev.battery_v:
            mah = wh / dev.battery_v * 1000
            out["mah_per_hour"] = Estimate(mah, mah * lo_j / j if j else 0, mah * hi_j / j if j else 0, "mAh",
                                           "energy per inference x rate / battery voltage",
                                           [*notes, f"battery voltage {dev.battery_v:g} V", *per_inference.assumptions])
        if dev.battery_wh:
            pct = wh / dev.battery_wh * 100
            out["battery_pct_per_hour"] = Estimate(pct, pct * lo_j / j if j else 0, pct * hi_j / j if j else 0, "%",
                                                   "energy per inference x rate / battery capacity",
                                                   [*notes, f"battery {dev.battery_wh:g} Wh", "screen, radios and idle drain not included"])
        return out
    idle = dev.idle_w or 0.0
    avg = idle + j * per_hour / 3600
    out["average_w"] = Estimate(avg, idle + lo_j * per_hour / 3600, idle + hi_j * per_hour / 3600, "W",
                                "idle power + energy per inference x rate",
                                [*notes, f"idle {idle:g} W at the wall" if dev.idle_w is not None else "no idle_w in the profile: 0 W"])
    k = j * 1000 / 3600
    out["wh_per_1000"] = Estimate(k, lo_j * 1000 / 3600, hi_j * 1000 / 3600, "Wh",
                                  "energy per inference x 1,000 (above idle)", ["idle draw not included"])
    if dev.power_bank_wh:
        hours = dev.power_bank_wh / avg if avg else float("inf")
        out["power_bank_hours"] = Estimate(hours, dev.power_bank_wh / out["average_w"].high, dev.power_bank_wh / out["average_w"].low
                                           if out["average_w"].low else hours, "h", "power bank Wh / average watts",
                                           [f"power bank {dev.power_bank_wh:g} Wh, converter losses not included", *notes])
    return out
