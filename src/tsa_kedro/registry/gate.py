"""The registration gate: validation and calibration metrics against thresholds.

A check reads one metric by a dotted path (``train_metrics.tsa.pr_auc``) and compares
it with a ``min`` or ``max`` bound. A bound is a number or another metric's dotted path
(``train_metrics.baseline.pr_auc``), and ``margin`` loosens it (``min - margin`` or
``max + margin``), which expresses "TSA may trail the baseline by at most X".

A model that misses a bound fails the gate; the result names every failed check, its
value, its bound and the shortfall. A missing or non-numeric metric, or a check that
is written wrongly, is a configuration error and raises ``GateConfigError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


class GateConfigError(ValueError):
    """A gate check is malformed or names a metric the inputs do not hold."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one gate check.

    Attributes:
        name: The check's name in the parameters.
        metric: Dotted path of the metric checked.
        value: The metric's value (NaN if it was NaN).
        bound: ``min`` or ``max``.
        threshold: The effective threshold after the margin.
        passed: Whether the value is inside the bound (NaN never is).
        shortfall: How far the value is on the wrong side of the threshold (0 if passed).
    """

    name: str
    metric: str
    value: float
    bound: str
    threshold: float
    passed: bool
    shortfall: float

    def describe(self) -> str:
        """One line for logs and the decision file."""
        sign = ">=" if self.bound == "min" else "<="
        verdict = "ok" if self.passed else f"FAILED, off by {self.shortfall:.6g}"
        return (
            f"{self.name}: {self.metric} = {self.value:.6g} (needs {sign} "
            f"{self.threshold:.6g}) {verdict}"
        )


def lookup_metric(metrics: Mapping[str, Any], path: str, check: str) -> float:
    """The number at dotted ``path`` in ``metrics``.

    Raises:
        GateConfigError: A key on the path is missing or the value is not a number.
    """
    node: Any = metrics
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            available = sorted(node) if isinstance(node, Mapping) else []
            where = ".".join(walked) or "<top level>"
            raise GateConfigError(
                f"register gate check {check!r}: metric {path!r} not found "
                f"(no key {key!r} under {where}; available: {available})"
            )
        node = node[key]
        walked.append(key)
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise GateConfigError(
            f"register gate check {check!r}: metric {path!r} is {node!r}, not a number"
        )
    return float(node)


def _threshold(
    metrics: Mapping[str, Any], check: str, spec: Mapping[str, Any]
) -> tuple[str, float]:
    bounds = [b for b in ("min", "max") if b in spec]
    if len(bounds) != 1:
        raise GateConfigError(
            f"register gate check {check!r} needs exactly one of 'min' or 'max', "
            f"got {sorted(spec)}"
        )
    bound = bounds[0]
    raw = spec[bound]
    if isinstance(raw, str):
        base = lookup_metric(metrics, raw, check)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        base = float(raw)
    else:
        raise GateConfigError(
            f"register gate check {check!r}: {bound} must be a number or a metric "
            f"path, got {raw!r}"
        )
    margin = spec.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
        raise GateConfigError(
            f"register gate check {check!r}: margin must be a number >= 0, got {margin!r}"
        )
    return bound, base - margin if bound == "min" else base + margin


def _json_number(value: Any) -> Any:
    """Non-finite floats become None: strict JSON has no NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_gate(
    metrics: Mapping[str, Any], checks: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Run every check against ``metrics``.

    Args:
        metrics: Metric sources by name, e.g. ``{"train_metrics": ...,
            "calibration_metrics": ...}``.
        checks: Check name to ``{"metric": path, "min" | "max": number or path,
            "margin": number}``.

    Returns:
        ``{"passed": bool, "checks": [...], "failed": [names], "summary": str}``.

    Raises:
        GateConfigError: No checks, or a malformed check, or a missing metric.
    """
    if not checks:
        raise GateConfigError("register gate has no checks; refusing to pass blindly")
    results: list[CheckResult] = []
    for name, spec in checks.items():
        if not isinstance(spec, Mapping) or "metric" not in spec:
            raise GateConfigError(f"register gate check {name!r} needs a 'metric' path")
        unknown = set(spec) - {"metric", "min", "max", "margin"}
        if unknown:
            raise GateConfigError(
                f"register gate check {name!r} has unknown keys {sorted(unknown)}"
            )
        value = lookup_metric(metrics, spec["metric"], name)
        bound, threshold = _threshold(metrics, name, spec)
        if math.isnan(value):
            passed, shortfall = False, math.inf
        elif bound == "min":
            passed, shortfall = value >= threshold, max(threshold - value, 0.0)
        else:
            passed, shortfall = value <= threshold, max(value - threshold, 0.0)
        results.append(
            CheckResult(
                name, spec["metric"], value, bound, threshold, passed, shortfall
            )
        )
    failed = [r.name for r in results if not r.passed]
    summary = (
        "all checks passed"
        if not failed
        else "; ".join(r.describe() for r in results if not r.passed)
    )
    return {
        "passed": not failed,
        "checks": [
            {
                **{k: _json_number(v) for k, v in asdict(r).items()},
                "description": r.describe(),
            }
            for r in results
        ],
        "failed": failed,
        "summary": summary,
    }
