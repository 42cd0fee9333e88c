"""The numbers of a comparison: per-method estimates over seeds, paired gains, the winner.

Pure Python and scipy: run results in, a `Comparison` out. `ComparisonReport` renders it.

* Eval accuracy per method: mean, sample standard deviation (ddof=1), n, and the 95%
  confidence interval of the mean from Student's t with n - 1 degrees of freedom.
* Gain over the reference (`plain`, else the first method), paired by seed: the mean of the
  per-seed differences, its 95% t interval, and a two-sided paired t-test. With one seed
  there is no variance to test against: no interval, no p-value.
* What the paired seeds can tell apart (`power.Power`): the difference they detect with 80%
  power at their own spread, and the seeds a target difference needs (default 0.01, one
  point of accuracy). One seed has no spread: neither can be computed.
* The winner: the highest mean eval accuracy; means equal to 4 decimals tie, and a tie goes
  to the method with fewer forward-backward passes, then to the method listed first. The
  model to push is the winner's best seed by eval accuracy (the lowest seed on a tie).
  The winner's paired gain over every other method (`Comparison.margins`) says whether its
  lead, or its tie, is more than a lack of power.

Example:

>>> history = {"epochs": [{"epoch": 1, "seconds": 10.0, "passes": 100}]}
>>> runs = [
...     RunResult(method, seed, accuracy, {}, history)
...     for method, seed, accuracy in [
...         ("plain", 1, 0.80), ("plain", 2, 0.82), ("gsam", 1, 0.83), ("gsam", 2, 0.84)]
... ]
>>> comparison = compare(runs)
>>> comparison.winner.method, comparison.winner.best_run.seed
('gsam', 2)
>>> round(comparison.winner.gain.gain.mean, 4)
0.025
>>> comparison.winner.gain.power.seeds_needed  # to tell apart 0.01 at these seeds' spread
7
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from scipy import stats

from components.comparison.power import (
    DEFAULT_TARGET_DIFFERENCE,
    ROUNDING,
    SIGNIFICANCE_LEVEL,
    Power,
    check_target_difference,
)

REFERENCE_METHOD = "plain"
CONFIDENCE = 0.95
# Means equal when rounded to this many decimals are a tie.
TIE_DECIMALS = 4
REQUIRED_EPOCH_FIELDS = {"epoch", "seconds", "passes"}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one trained model (one method, one seed) scored, and how it trained.

    Args:
        method: the training method, e.g. `"gsam"`.
        seed: the run's seed.
        eval_accuracy: the Evaluator's overall accuracy, in [0, 1].
        per_class_accuracy: accuracy on each class's eval examples, keyed by the class label
            as a string.
        history: the run's `history.json` document (`trainer/training/history.py`): at least
            one epoch, each with `epoch`, `seconds` and `passes` (cumulative); `surrogate_gap` where
            trained with SAM or GSAM.
        extra_metrics: further per-run numbers (e.g. sharpness), rendered as extra columns.
    """

    method: str
    seed: int
    eval_accuracy: float
    per_class_accuracy: dict[str, float]
    history: dict[str, Any]
    extra_metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a non-empty string, got {self.method!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r} ({self.name}).")
        _check_fraction(f"eval_accuracy of {self.name}", self.eval_accuracy)
        for label, accuracy in self.per_class_accuracy.items():
            _check_fraction(f"per_class_accuracy[{label!r}] of {self.name}", accuracy)
        epochs = self.history.get("epochs") if isinstance(self.history, dict) else None
        if not epochs or any(not REQUIRED_EPOCH_FIELDS <= set(e) for e in epochs):
            raise ValueError(
                f"history of {self.name} must hold at least one epoch, each with "
                f"{', '.join(sorted(REQUIRED_EPOCH_FIELDS))} (see trainer/training/history.py)."
            )
        for name, value in self.extra_metrics.items():
            if not _is_number(value):
                raise ValueError(f"extra_metrics[{name!r}] of {self.name} must be a number.")

    @property
    def name(self) -> str:
        return f"{self.method} seed {self.seed}"

    @property
    def epochs(self) -> list[dict[str, float]]:
        return self.history["epochs"]

    @property
    def final_surrogate_gap(self) -> float | None:
        """The last epoch's surrogate gap; `None` for plain training, which has none."""
        return self.epochs[-1].get("surrogate_gap")

    @property
    def training_seconds(self) -> float:
        return sum(epoch["seconds"] for epoch in self.epochs)

    @property
    def passes(self) -> int:
        """Forward-backward passes over the whole training (the history counts them)."""
        return self.epochs[-1]["passes"]

    @property
    def perturbed_fraction(self) -> float | None:
        """The share of training steps that ran the perturbed pass (1 for exact SAM and GSAM);
        `None` for plain training (one pass per step), or a history without step counts."""
        last = self.epochs[-1]
        if not last.get("steps") or last["passes"] == last["steps"]:
            return None
        return (last["passes"] - last["steps"]) / last["steps"]

    def to_dict(self) -> dict[str, Any]:
        """The run's numbers, without its history, as results.json lists them."""
        return {
            "method": self.method,
            "seed": self.seed,
            "eval_accuracy": self.eval_accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "final_surrogate_gap": self.final_surrogate_gap,
            "training_seconds": self.training_seconds,
            "passes": self.passes,
            "perturbed_fraction": self.perturbed_fraction,
            "extra_metrics": self.extra_metrics,
        }


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean of `n` values; `std` (ddof=1) and the 95% interval need n >= 2."""

    mean: float
    n: int
    std: float | None
    interval: tuple[float, float] | None

    @classmethod
    def of(cls, values: Sequence[float]) -> "Estimate":
        values = [float(v) for v in values]
        n = len(values)
        if n == 0:
            raise ValueError("an estimate needs at least one value.")
        mean = math.fsum(values) / n
        if n == 1:
            return cls(mean, 1, None, None)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        half_width = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * std / math.sqrt(n)
        return cls(mean, n, std, (mean - half_width, mean + half_width))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PairedGain:
    """A method's gain over a reference method on the seeds both ran, its paired t-test, and
    what those seeds can tell apart.

    `p_value` is `None` with a single pair. When every pair differs by the same amount (up to
    float rounding; 0.84 - 0.80 != 0.86 - 0.82) the t statistic is infinite: p is 0 (1 when
    that amount is 0), and any difference is detectable.
    """

    reference: str
    seeds: tuple[int, ...]
    gain: Estimate
    p_value: float | None
    power: Power

    @classmethod
    def between(
        cls,
        runs: Sequence[RunResult],
        reference_runs: Sequence[RunResult],
        target_difference: float = DEFAULT_TARGET_DIFFERENCE,
    ):
        """The gain of `runs` over `reference_runs` (one method each); `None` when they share
        no seed."""
        reference = {run.seed: run.eval_accuracy for run in reference_runs}
        pairs = {
            run.seed: run.eval_accuracy - reference[run.seed]
            for run in sorted(runs, key=lambda run: run.seed)
            if run.seed in reference
        }
        if not pairs:
            return None
        gain = Estimate.of(list(pairs.values()))
        p_value = None
        if gain.n >= 2:
            if gain.std <= ROUNDING:
                p_value = 1.0 if abs(gain.mean) <= ROUNDING else 0.0
            else:
                p_value = float(stats.ttest_1samp(list(pairs.values()), 0.0).pvalue)
        power = Power.of(gain.std, gain.n, target_difference)
        return cls(reference_runs[0].method, tuple(pairs), gain, p_value, power)

    @property
    def significant(self) -> bool | None:
        """Whether p < 5%; `None` when there is one seed and nothing can be claimed."""
        return None if self.p_value is None else self.p_value < SIGNIFICANCE_LEVEL

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "seeds": list(self.seeds),
            "gain": self.gain.to_dict(),
            "p_value": self.p_value,
            "significant": self.significant,
            "power": self.power.to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class MethodSummary:
    """One row of the comparison table."""

    method: str
    runs: tuple[RunResult, ...]
    accuracy: Estimate
    gain: PairedGain | None
    surrogate_gap: float | None
    training_seconds: float
    passes: float
    perturbed_fraction: float | None
    per_class_accuracy: dict[str, float]
    extra_metrics: dict[str, Estimate]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(run.seed for run in self.runs)

    @property
    def best_run(self) -> RunResult:
        """The highest eval accuracy; the lowest seed among equals."""
        return max(self.runs, key=lambda run: (run.eval_accuracy, -run.seed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seeds": list(self.seeds),
            "eval_accuracy": self.accuracy.to_dict(),
            "gain": None if self.gain is None else self.gain.to_dict(),
            "final_surrogate_gap": self.surrogate_gap,
            "training_seconds": self.training_seconds,
            "passes": self.passes,
            "perturbed_fraction": self.perturbed_fraction,
            "per_class_accuracy": self.per_class_accuracy,
            "extra_metrics": {name: e.to_dict() for name, e in self.extra_metrics.items()},
            "best_seed": self.best_run.seed,
        }


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Every method's summary, in the runs' order, and the winner.

    `margins` holds the winner's paired gain over every other method, keyed by that method,
    in the runs' order (`None` where they share no seed).
    """

    methods: tuple[MethodSummary, ...]
    reference: str
    winner: MethodSummary
    # Methods whose rounded mean accuracy equals the winner's, the winner first.
    tied: tuple[MethodSummary, ...]
    target_difference: float
    margins: dict[str, PairedGain | None]

    @property
    def runs(self) -> list[RunResult]:
        return [run for summary in self.methods for run in summary.runs]

    @property
    def extra_metric_names(self) -> list[str]:
        names = {}
        for run in self.runs:
            names.update(dict.fromkeys(run.extra_metrics))
        return list(names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "target_difference": self.target_difference,
            "winner": {
                "method": self.winner.method,
                "seed": self.winner.best_run.seed,
                "eval_accuracy": self.winner.best_run.eval_accuracy,
                "tied_with": [summary.method for summary in self.tied[1:]],
                # The winner's gain over each other method (the gain's "reference").
                "margins": [
                    None if margin is None else margin.to_dict() for margin in self.margins.values()
                ],
            },
            "methods": [summary.to_dict() for summary in self.methods],
            "runs": [run.to_dict() for run in self.runs],
        }


def compare(
    runs: Sequence[RunResult], target_difference: float = DEFAULT_TARGET_DIFFERENCE
) -> Comparison:
    """Summarizes `runs` per method (in order of first appearance) and picks the winner.

    `target_difference` is the accuracy difference, in (0, 1), whose seeds needed are
    reported (0.01: one point).
    """
    target_difference = check_target_difference(target_difference)
    by_method: dict[str, list[RunResult]] = {}
    seen = set()
    for run in runs:
        if (run.method, run.seed) in seen:
            raise ValueError(f"runs holds {run.name} twice.")
        seen.add((run.method, run.seed))
        by_method.setdefault(run.method, []).append(run)
    if not by_method:
        raise ValueError("runs is empty: a comparison needs at least one run.")
    reference = REFERENCE_METHOD if REFERENCE_METHOD in by_method else next(iter(by_method))
    summaries = tuple(
        _summarize(
            method,
            method_runs,
            None if method == reference else by_method[reference],
            target_difference,
        )
        for method, method_runs in by_method.items()
    )
    ranked = sorted(
        summaries,
        key=lambda s: (-round(s.accuracy.mean, TIE_DECIMALS), s.passes, summaries.index(s)),
    )
    best = round(ranked[0].accuracy.mean, TIE_DECIMALS)
    tied = tuple(s for s in ranked if round(s.accuracy.mean, TIE_DECIMALS) == best)
    winner = ranked[0]
    margins = {
        s.method: PairedGain.between(winner.runs, s.runs, target_difference)
        for s in summaries
        if s is not winner
    }
    return Comparison(summaries, reference, winner, tied, target_difference, margins)


def _summarize(method, runs, reference_runs, target_difference) -> MethodSummary:
    runs = tuple(sorted(runs, key=lambda run: run.seed))
    gaps = [run.final_surrogate_gap for run in runs if run.final_surrogate_gap is not None]
    fractions = [run.perturbed_fraction for run in runs if run.perturbed_fraction is not None]
    classes = {label: None for run in runs for label in run.per_class_accuracy}
    extra_names = {name: None for run in runs for name in run.extra_metrics}
    return MethodSummary(
        method=method,
        runs=runs,
        accuracy=Estimate.of([run.eval_accuracy for run in runs]),
        gain=(
            None
            if reference_runs is None
            else PairedGain.between(runs, reference_runs, target_difference)
        ),
        surrogate_gap=_mean(gaps) if gaps else None,
        training_seconds=_mean([run.training_seconds for run in runs]),
        passes=_mean([run.passes for run in runs]),
        perturbed_fraction=_mean(fractions) if fractions else None,
        per_class_accuracy={
            label: _mean(
                [run.per_class_accuracy[label] for run in runs if label in run.per_class_accuracy]
            )
            for label in sorted(classes, key=_class_order)
        },
        extra_metrics={
            name: Estimate.of(
                [run.extra_metrics[name] for run in runs if name in run.extra_metrics]
            )
            for name in extra_names
        },
    )


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _class_order(label: str):
    """Numeric labels in numeric order, before any other labels in text order."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check_fraction(name: str, value) -> None:
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
