"""What the Tuner searches: rho_max, rho_min, alpha, the learning rate and optionally the method
and how often GSAM/SAM perturb.

A `SearchSpace` is validated when it is built (so bad bounds fail before anything runs) and
travels in the Tuner's `custom_config` beside the `TrainingConfig`. For every trial,
`trial_config` declares the hyperparameters on KerasTuner's `hp` and lays the sampled values
over the training config; the Trainer lays the Tuner's best values over its own config with
`tuned_config`, so both check them with `TrainingConfig`'s own checks.

* `rho_max`: log-uniform in `rho_max_range`;
* `rho_min`: `rho_max` times a fraction, uniform in `rho_min_fraction_range` (1: constant rho);
* `alpha`: uniform in `alpha_range`, for GSAM only (SAM is GSAM with alpha 0);
* `learning_rate`: log-uniform in `learning_rate_range` (the schedule's peak);
* `method`: one of `method_choices`; empty means the training config's own method;
* `perturb_every`: one of `perturb_every_choices`, for SAM and GSAM only; empty means the
  training config's own;
* `label_smoothing`: uniform in `label_smoothing_range`, and `weight_decay`: log-uniform in
  `weight_decay_range`, for every method; `None` (the default) leaves each unsearched.
* `perturb_budget`: log-uniform in `perturb_budget_range`, for SAM and GSAM when the training
  config's `perturb_every` is `"auto"` (the auto rule's one knob).

A range whose low and high are equal fixes that value.

Example:

>>> space = SearchSpace(rho_max_range=(0.02, 0.2), max_trials=4)
>>> SearchSpace.from_dict(space.to_dict()) == space
True
>>> values = {"rho_max": 0.1, "rho_min_fraction": 0.5, "alpha": 0.05, "learning_rate": 0.02}
>>> tuned_config(TrainingConfig(optimizer="gsam"), values).rho_min
0.05
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trainer.config import (
    AUTO,
    OPTIMIZERS,
    TrainingConfig,
    _check_choice,
    _check_int,
    _check_number,
    custom_config_entry,
    dataclass_from_dict,
)

ALGORITHMS = ("random", "bayesian", "hyperband")
# Objective name -> (the Keras log it reads, the better direction).
OBJECTIVES = {
    "val_accuracy": ("val_sparse_categorical_accuracy", "max"),
    "val_loss": ("val_loss", "min"),
}
# The Tuner's custom_config holds the search space under this key, beside the training config.
CUSTOM_CONFIG_KEY = "tuning"
HYPERPARAMETERS = (
    "method",
    "learning_rate",
    "rho_max",
    "rho_min_fraction",
    "alpha",
    "perturb_every",
    "label_smoothing",
    "weight_decay",
    "perturb_budget",
)
SHARPNESS_AWARE = ("sam", "gsam")
RANGES = (
    "rho_max_range",
    "rho_min_fraction_range",
    "alpha_range",
    "learning_rate_range",
    "perturb_budget_range",
)
# Ranges searched only when set: (low, high) checks of each.
OPTIONAL_RANGES = {
    "label_smoothing_range": dict(low=0, high=0.99),
    "weight_decay_range": dict(low=0, low_inclusive=False),
}
# Hyperband's bookkeeping values ("tuner/epochs", ...) share the trial's hyperparameters.
KERAS_TUNER_PREFIX = "tuner/"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters the Tuner searches, and how.

    Args:
        rho_max_range: (low, high) of rho_max, sampled log-uniformly; low > 0.
        rho_min_fraction_range: (low, high) of rho_min / rho_max, within [0, 1].
        alpha_range: (low, high) of GSAM's alpha, >= 0.
        learning_rate_range: (low, high) of the peak learning rate, sampled log-uniformly.
        method_choices: methods to choose from (`plain`, `sam`, `gsam`); empty: the training
            config's method. rho is searched for sam and gsam, alpha for gsam.
        perturb_every_choices: values of `perturb_every` to choose from (1: the exact method;
            k: the perturbed pass every k steps), for sam and gsam; empty: the training
            config's own.
        label_smoothing_range: (low, high) of the label smoothing, in [0, 1); `None`: the
            training config's own.
        weight_decay_range: (low, high) of the decoupled weight decay, sampled
            log-uniformly; low > 0; `None`: the training config's own.
        perturb_budget_range: (low, high) of `perturb_budget`, within (0, 1], sampled
            log-uniformly; searched only when the training config has `perturb_every="auto"`.
        algorithm: KerasTuner's `"random"` search, `"bayesian"` optimization or `"hyperband"`.
        max_trials: trials to run (Hyperband stops there too).
        epochs_per_trial: epochs each trial trains (Hyperband's largest budget).
        objective: `"val_accuracy"` (higher is better) or `"val_loss"` (lower is better).
        search_seed: seeds the search's sampling; `None` leaves it random.
    """

    rho_max_range: tuple[float, float] = (0.01, 0.3)
    rho_min_fraction_range: tuple[float, float] = (0.1, 1.0)
    alpha_range: tuple[float, float] = (0.0, 0.3)
    learning_rate_range: tuple[float, float] = (0.01, 0.2)
    method_choices: tuple[str, ...] = ()
    perturb_every_choices: tuple[int, ...] = ()
    label_smoothing_range: tuple[float, float] | None = None
    weight_decay_range: tuple[float, float] | None = None
    perturb_budget_range: tuple[float, float] = (0.05, 0.3)
    algorithm: str = "random"
    max_trials: int = 10
    epochs_per_trial: int = 2
    objective: str = "val_accuracy"
    search_seed: int | None = None

    def __post_init__(self):
        _check_range("rho_max_range", self.rho_max_range, low=0, low_inclusive=False)
        _check_range("rho_min_fraction_range", self.rho_min_fraction_range, low=0, high=1)
        _check_range("alpha_range", self.alpha_range, low=0)
        _check_range("learning_rate_range", self.learning_rate_range, low=0, low_inclusive=False)
        _check_range(
            "perturb_budget_range", self.perturb_budget_range, low=0, high=1, low_inclusive=False
        )
        for name, bounds in OPTIONAL_RANGES.items():
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), **bounds)
        for name in (*RANGES, *OPTIONAL_RANGES):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        _check_choices_list(
            "method_choices",
            self.method_choices,
            lambda name, value: _check_choice(name, value, OPTIMIZERS),
        )
        object.__setattr__(self, "method_choices", tuple(self.method_choices))
        _check_choices_list(
            "perturb_every_choices",
            self.perturb_every_choices,
            lambda name, value: _check_int(name, value, minimum=1),
        )
        object.__setattr__(self, "perturb_every_choices", tuple(self.perturb_every_choices))
        _check_choice("algorithm", self.algorithm, ALGORITHMS)
        _check_choice("objective", self.objective, tuple(OBJECTIVES))
        _check_int("max_trials", self.max_trials, minimum=1)
        _check_int("epochs_per_trial", self.epochs_per_trial, minimum=1)
        if self.search_seed is not None:
            _check_int("search_seed", self.search_seed, minimum=0)

    @property
    def searches_the_method(self) -> bool:
        """Whether trials choose the method or how often it perturbs (a comparison fixes both
        for each compared method)."""
        return bool(self.method_choices or self.perturb_every_choices)

    def check_training(self, training: TrainingConfig) -> None:
        """What the space needs of the training config its trials start from."""
        if training.warmup_epochs >= self.epochs_per_trial:
            raise ValueError(
                f"epochs_per_trial ({self.epochs_per_trial}) must be longer than the learning "
                f"rate warmup (warmup_epochs {training.warmup_epochs}): every trial warms up."
            )

    def trial_config(
        self, training: TrainingConfig, hp, model_hyperparameters: bool = False
    ) -> TrainingConfig:
        """Declares the hyperparameters on KerasTuner's `hp`; the trial's training config.

        The trial trains `epochs_per_trial` epochs; the rest is `training`'s. With
        `model_hyperparameters`, `hp` also holds those a user's `build_model` declares.
        """
        methods = self.method_choices or (training.optimizer,)
        if len(methods) == 1:
            hp.Fixed("method", methods[0])
        else:
            hp.Choice("method", list(methods))
        _declare(hp, "learning_rate", self.learning_rate_range, log=True)
        with hp.conditional_scope("method", list(SHARPNESS_AWARE)):
            _declare(hp, "rho_max", self.rho_max_range, log=True)
            _declare(hp, "rho_min_fraction", self.rho_min_fraction_range)
            if len(self.perturb_every_choices) == 1:
                hp.Fixed("perturb_every", self.perturb_every_choices[0])
            elif self.perturb_every_choices:
                hp.Choice("perturb_every", list(self.perturb_every_choices))
            if training.perturb_every == AUTO and not self.perturb_every_choices:
                _declare(hp, "perturb_budget", self.perturb_budget_range, log=True)
        with hp.conditional_scope("method", ["gsam"]):
            _declare(hp, "alpha", self.alpha_range)
        if self.label_smoothing_range is not None:
            _declare(hp, "label_smoothing", self.label_smoothing_range)
        if self.weight_decay_range is not None:
            _declare(hp, "weight_decay", self.weight_decay_range, log=True)
        trial = dataclasses.replace(training, epochs=self.epochs_per_trial)
        return tuned_config(trial, hp.values, model_hyperparameters)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in values.items()
        }

    def to_custom_config(self) -> dict[str, Any]:
        """The Tuner's `custom_config` entry for this space (beside the training config's)."""
        return {CUSTOM_CONFIG_KEY: self.to_dict()}

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> "SearchSpace":
        """Reads the space that `to_custom_config` wrote into the Tuner's `custom_config`."""
        return cls.from_dict(custom_config_entry(custom_config, CUSTOM_CONFIG_KEY, cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "SearchSpace":
        """Builds a space from `custom_config`; an unknown key is an error that names it."""
        return dataclass_from_dict(cls, values, "search space")


def tuned_fields(values: dict[str, Any], model_hyperparameters: bool = False) -> dict[str, Any]:
    """The `TrainingConfig` fields that tuned hyperparameter values set.

    Names that are not the search space's are an error, unless `model_hyperparameters`: a
    user's `build_model` that takes KerasTuner's `hp` declares its own, which stay its own.

    Example:

    >>> tuned_fields({"method": "sam", "rho_max": 0.2, "rho_min_fraction": 0.25})
    {'optimizer': 'sam', 'rho_max': 0.2, 'rho_min': 0.05}
    """
    values = {
        name: value for name, value in values.items() if not name.startswith(KERAS_TUNER_PREFIX)
    }
    unknown = sorted(set(values) - set(HYPERPARAMETERS))
    if unknown and not model_hyperparameters:
        raise ValueError(
            f"Unknown tuned hyperparameter(s): {', '.join(unknown)}. "
            f"Known: {', '.join(HYPERPARAMETERS)}."
        )
    fields = {}
    if "method" in values:
        fields["optimizer"] = values["method"]
    for name in HYPERPARAMETERS:
        if name not in ("method", "rho_min_fraction") and name in values:
            fields[name] = values[name]
    if "rho_min_fraction" in values:
        if "rho_max" not in values:
            raise ValueError("A tuned rho_min_fraction needs the tuned rho_max it is a part of.")
        fields["rho_min"] = values["rho_max"] * values["rho_min_fraction"]
    return fields


def tuned_config(
    training: TrainingConfig, values: dict[str, Any], model_hyperparameters: bool = False
) -> TrainingConfig:
    """`training` with tuned hyperparameter values laid over it, checked like any config.

    Args:
        training: the config the values replace parts of.
        values: hyperparameter name -> value, as KerasTuner's `HyperParameters.values`.
        model_hyperparameters: whether names other than the search space's belong to the
            user's `build_model` (see `tuned_fields`).
    """
    fields = tuned_fields(values, model_hyperparameters)
    optimizer = fields.get("optimizer", training.optimizer)
    if optimizer != "gsam":
        # alpha is GSAM's own, as in pipelines.stages.comparison.ComparisonSpec.method_config.
        fields["alpha"] = None
    if optimizer == "plain":
        fields["perturb_every"] = 1
        fields["perturb_budget"] = None
    return dataclasses.replace(training, **fields)


def _declare(hp, name: str, value_range: tuple[float, float], log: bool = False):
    low, high = value_range
    if low == high:
        return hp.Fixed(name, low)
    return hp.Float(name, min_value=low, max_value=high, sampling="log" if log else "linear")


def _check_choices_list(name, choices, check_one):
    if isinstance(choices, str) or not isinstance(choices, (tuple, list)):
        raise ValueError(f"{name} must be a list, got {choices!r}.")
    for value in choices:
        check_one(name, value)
    if len(set(choices)) != len(choices):
        raise ValueError(f"{name} must not repeat a value, got {list(choices)}.")


def _check_range(name, value_range, low, high=None, low_inclusive=True):
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value_range!r}.")
    for end, value in zip(("low", "high"), value_range):
        _check_number(f"{name} {end}", value, low=low, high=high, low_inclusive=low_inclusive)
    if value_range[0] > value_range[1]:
        raise ValueError(
            f"{name} low ({value_range[0]}) must not exceed its high ({value_range[1]})."
        )
