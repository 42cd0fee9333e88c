"""The SharpnessProbe's push decision, as a pure function of measured values.

A candidate is blessed when the Evaluator blessed it (or no Evaluator blessing was given) and
every sharpness limit set holds:

- `max_top_eigenvalue`: the candidate's `top_eigenvalue` is at most this;
- `max_sharpness_increase`: the candidate's `increase_measure` (`top_eigenvalue` or
  `surrogate_gap`) is at most `baseline + max_sharpness_increase * |baseline|`, the
  baseline's value raised by that fraction. Without a baseline this limit does not apply.

A value that is not finite never passes. Every decision comes with reasons in words: which
measure, its value and its limit.

Example:

>>> decision = decide({"top_eigenvalue": 12.0, "surrogate_gap": 0.1},
...                   {"top_eigenvalue": 10.0, "surrogate_gap": 0.1},
...                   evaluator_blessed=True, max_sharpness_increase=0.1)
>>> decision.blessed, decision.reasons[-1]
(False, 'top_eigenvalue 12 is above the limit 11 (baseline 10 + 10%; max_sharpness_increase)')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

INCREASE_MEASURES = ("top_eigenvalue", "surrogate_gap")


@dataclasses.dataclass(frozen=True)
class Check:
    """One limit applied to one measure."""

    measure: str
    value: float
    limit: float
    rule: str
    note: str = ""

    @property
    def passed(self) -> bool:
        return math.isfinite(self.value) and self.value <= self.limit

    def describe(self) -> str:
        relation = "is within" if self.passed else "is above"
        detail = f"{self.note}; {self.rule}" if self.note else self.rule
        return f"{self.measure} {self.value:.4g} {relation} the limit {self.limit:.4g} ({detail})"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether the candidate may be pushed, the checks made, and the sharpness reasons in words
    (the Evaluator's verdict is not repeated among them)."""

    blessed: bool
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "blessed": self.blessed,
            "checks": [check.to_dict() for check in self.checks],
            "reasons": list(self.reasons),
        }


def decide(
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None = None,
    *,
    evaluator_blessed: bool | None = None,
    max_top_eigenvalue: float | None = None,
    max_sharpness_increase: float | None = None,
    increase_measure: str = "top_eigenvalue",
) -> Decision:
    """Decides on the candidate from its and the baseline's `trainer.gsam.sharpness` results.

    Args:
        candidate: the candidate's measures (at least the ones the limits read).
        baseline: the baseline's measures, or `None` when there is no baseline.
        evaluator_blessed: the Evaluator's verdict; `None` when there is none to respect.
        max_top_eigenvalue: the largest `top_eigenvalue` allowed; `None` sets no limit.
        max_sharpness_increase: the largest relative increase of `increase_measure` over the
            baseline, >= 0; `None` sets no limit.
        increase_measure: the measure `max_sharpness_increase` applies to.
    """
    check_limits(max_top_eigenvalue, max_sharpness_increase, increase_measure)
    checks, reasons = [], []
    if max_top_eigenvalue is not None:
        checks.append(
            Check(
                "top_eigenvalue",
                float(candidate["top_eigenvalue"]),
                float(max_top_eigenvalue),
                "max_top_eigenvalue",
            )
        )
    if max_sharpness_increase is not None:
        if baseline is None:
            reasons.append("max_sharpness_increase not applied: there is no baseline to compare")
        else:
            reference = float(baseline[increase_measure])
            checks.append(
                Check(
                    increase_measure,
                    float(candidate[increase_measure]),
                    reference + max_sharpness_increase * abs(reference),
                    "max_sharpness_increase",
                    note=f"baseline {reference:.4g} + {max_sharpness_increase:.0%}",
                )
            )
    if max_top_eigenvalue is None and max_sharpness_increase is None:
        reasons.append("no sharpness limit set")
    reasons += [check.describe() for check in checks]
    blessed = evaluator_blessed is not False and all(check.passed for check in checks)
    return Decision(blessed, tuple(checks), tuple(reasons))


def check_limits(
    max_top_eigenvalue: float | None,
    max_sharpness_increase: float | None,
    increase_measure: str = "top_eigenvalue",
) -> None:
    """Raises a ValueError naming the setting that is out of range."""
    for name, value in (
        ("max_top_eigenvalue", max_top_eigenvalue),
        ("max_sharpness_increase", max_sharpness_increase),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}.")
    if max_sharpness_increase is not None and max_sharpness_increase < 0:
        raise ValueError(f"max_sharpness_increase must be >= 0, got {max_sharpness_increase}.")
    if increase_measure not in INCREASE_MEASURES:
        raise ValueError(
            f"increase_measure must be one of {', '.join(INCREASE_MEASURES)}, "
            f"got {increase_measure!r}."
        )
