"""The one result type of every estimate: a value with a band, a unit, a method and its assumptions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Estimate:
    """An estimated (never measured) figure. ``low <= value <= high``; ``method`` says how it was made."""

    value: float
    low: float
    high: float
    unit: str
    method: str
    assumptions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "value": _round(self.value),
            "low": _round(self.low),
            "high": _round(self.high),
            "unit": self.unit,
            "method": self.method,
            "assumptions": list(self.assumptions),
        }


def _round(x: float) -> float | int:
    if isinstance(x, int):
        return x
    if x == 0 or abs(x) >= 1000:
        return round(x, 1) if abs(x) < 1e6 else int(round(x))
    from math import floor, log10

    return round(x, max(0, 3 - int(floor(log10(abs(x))))))


def band(value: float, low_factor: float, high_factor: float) -> tuple[float, float]:
    return value * low_factor, value * high_factor
