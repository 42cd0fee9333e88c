"""The Trainer's hyperparameters: validated once, carried as the Trainer's `custom_config`.

The pipeline builds a `TrainingConfig` (so bad values fail before anything runs) and passes
`config.to_custom_config()` as the Trainer's `custom_config`; `run_fn` reads it back with
`TrainingConfig.from_custom_config`.

Example:

>>> config = TrainingConfig(optimizer="gsam", epochs=3, rho_max=0.04, rho_min=0.02)
>>> TrainingConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

OPTIMIZERS = ("plain", "sam", "gsam")
BASE_OPTIMIZERS = ("sgd", "adam")
MODELS = ("resnet", "mlp")
LR_SCHEDULES = ("cosine", "constant")
DEFAULT_GSAM_ALPHA = 0.01
# `perturb_every="auto"`: the perturbed pass decides by itself when to run (trainer.gsam.GSAM).
AUTO = "auto"
# GSAM's own default `perturb_budget` (checked by tests/test_config.py).
DEFAULT_PERTURB_BUDGET = 0.1
# The Trainer's custom_config holds the training config under this key, beside the keys that
# other executors read (e.g. tfx.extensions.google_cloud_ai_platform's `ai_platform_*`).
CUSTOM_CONFIG_KEY = "training"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """What the Trainer trains, and how.

    Args:
        model: `"resnet"` (images) or `"mlp"` (tabular features).
        model_widths: the resnet's channels per stage, or the mlp's units per hidden layer;
            `None` means the model's default (`trainer.models.builtin.RESNET_WIDTHS`, `MLP_UNITS`).
        epochs: passes over the training split.
        batch_size: examples per step.
        learning_rate: peak learning rate.
        lr_schedule: `"cosine"` (to `learning_rate * lr_min_ratio`, with linear warmup) or
            `"constant"`.
        lr_min_ratio: final learning rate as a fraction of the peak, for `"cosine"`.
        warmup_epochs: linear warmup length, in epochs (may be fractional).
        base_optimizer: `"sgd"` (momentum 0.9) or `"adam"`.
        optimizer: `"plain"`, `"sam"` (GSAM with alpha 0) or `"gsam"`.
        rho_max, rho_min: perturbation radius bounds; rho follows the learning rate between
            them (the GSAM paper's schedule). Equal values give a constant rho.
        alpha: GSAM's ascent coefficient; `None` means 0.01 for gsam. Must be unset or 0 for sam.
        adaptive: scale the perturbation by |w| (the paper's adaptive variant).
        perturb_every: for sam/gsam, run the perturbed pass every `perturb_every` steps and
            reuse its flatness direction in between (LookSAM-style; see `trainer.gsam.GSAM`);
            1 is exact SAM/GSAM; `"auto"` lets GSAM decide at each step, within
            `perturb_budget`. Must be 1 for plain.
        perturb_budget: with `perturb_every="auto"`, the fraction of steps that run the
            perturbed pass on average, in (0, 1]; `None` means GSAM's default (0.1). Unused
            otherwise, so that a comparison can set it for its `gsam-auto` method alone.
        reuse_scale: with `perturb_every` > 1, the coefficient of the reused direction
            (`trainer.gsam.GSAM`'s `reuse_scale`); `None` means GSAM's default, the adaptive
            one (at the angle the last perturbed pass measured); a number is LookSAM's fixed
            coefficient.
            Unused with `perturb_every` 1, so that a comparison can set it for its `gsam-kN`
            methods alone.
        label_key: the integer class label feature.
        image_key: the PNG-encoded image feature, for `"resnet"`; ignored by `"mlp"`.
        image_shape: (height, width, channels) of the decoded images.
        input_size: (height, width) the images are resized to for the model, e.g. a lower
            resolution for a cheaper model; `None` keeps `image_shape`'s.
        num_classes: number of classes; `None` reads it from the schema's label domain.
        train_steps_per_epoch, eval_steps: cap the steps (useful on tiny data); `None` means
            one full pass.
        seed: seeds the initialization, dropout and the training data's order; `None` leaves
            them random.
    """

    model: str = "resnet"
    model_widths: tuple[int, ...] | None = None
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 0.1
    lr_schedule: str = "cosine"
    lr_min_ratio: float = 0.01
    warmup_epochs: float = 0.0
    base_optimizer: str = "sgd"
    optimizer: str = "gsam"
    rho_max: float = 0.04
    rho_min: float = 0.02
    alpha: float | None = None
    adaptive: bool = False
    perturb_every: int | str = 1
    perturb_budget: float | None = None
    reuse_scale: float | None = None
    label_key: str = "label"
    image_key: str = "image"
    image_shape: tuple[int, int, int] = (28, 28, 1)
    input_size: tuple[int, int] | None = None
    num_classes: int | None = None
    train_steps_per_epoch: int | None = None
    eval_steps: int | None = None
    seed: int | None = None

    def __post_init__(self):
        _check_choice("model", self.model, MODELS)
        if self.model_widths is not None:
            if not _positive_ints(self.model_widths):
                raise ValueError(
                    f"model_widths must be a non-empty list of positive integers, "
                    f"got {self.model_widths!r}."
                )
            object.__setattr__(self, "model_widths", tuple(self.model_widths))
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("base_optimizer", self.base_optimizer, BASE_OPTIMIZERS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        if self.perturb_every != AUTO:
            if isinstance(self.perturb_every, str):
                raise ValueError(
                    f"perturb_every must be an integer >= 1 or {AUTO!r}, got "
                    f"{self.perturb_every!r}."
                )
            _check_int("perturb_every", self.perturb_every, minimum=1)
        if self.optimizer == "plain" and self.perturb_every != 1:
            raise ValueError(
                f"perturb_every must be 1 with optimizer='plain' (it has no perturbed pass), "
                f"got {self.perturb_every!r}."
            )
        if self.perturb_budget is not None:
            _check_number("perturb_budget", self.perturb_budget, low=0, high=1, low_inclusive=False)
        if self.reuse_scale is not None:
            _check_number("reuse_scale", self.reuse_scale, low=0)
        if self.num_classes is not None:
            _check_int("num_classes", self.num_classes, minimum=2)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        for name in ("train_steps_per_epoch", "eval_steps"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        _check_number("learning_rate", self.learning_rate, low=0, low_inclusive=False)
        _check_number("lr_min_ratio", self.lr_min_ratio, low=0, high=1)
        _check_number("warmup_epochs", self.warmup_epochs, low=0)
        _check_number("rho_max", self.rho_max, low=0)
        _check_number("rho_min", self.rho_min, low=0)
        if self.rho_min > self.rho_max:
            raise ValueError(f"rho_min ({self.rho_min}) must not exceed rho_max ({self.rho_max}).")
        if self.alpha is not None:
            _check_number("alpha", self.alpha, low=0)
            if self.optimizer == "sam" and self.alpha != 0:
                raise ValueError(
                    f"alpha must be unset or 0 with optimizer='sam' (SAM is GSAM with alpha 0), "
                    f"got {self.alpha}; use optimizer='gsam' for alpha > 0."
                )
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"adaptive must be true or false, got {self.adaptive!r}.")
        for name in ("label_key", "image_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}.")
        shape = self.image_shape
        if not _positive_ints(shape, length=3) or shape[2] not in (1, 3, 4):
            raise ValueError(
                f"image_shape must be (height, width, channels) with channels 1, 3 or 4, "
                f"got {shape!r}."
            )
        object.__setattr__(self, "image_shape", tuple(shape))
        if self.input_size is not None:
            if not _positive_ints(self.input_size, length=2):
                raise ValueError(f"input_size must be (height, width), got {self.input_size!r}.")
            object.__setattr__(self, "input_size", tuple(self.input_size))

    @property
    def effective_alpha(self) -> float:
        """GSAM's alpha as trained: 0 for sam, the configured value (or 0.01) for gsam."""
        if self.optimizer == "sam":
            return 0.0
        return DEFAULT_GSAM_ALPHA if self.alpha is None else float(self.alpha)

    @property
    def method(self) -> str:
        """The training method's name, as comparisons and reports show it: the optimizer, with
        `-kN` when the perturbed gradient is computed every N steps (e.g. `gsam-k5`), `-auto`
        when GSAM decides (`gsam-auto`)."""
        if self.optimizer == "plain" or self.perturb_every == 1:
            return self.optimizer
        if self.perturb_every == AUTO:
            return f"{self.optimizer}-{AUTO}"
        return f"{self.optimizer}-k{self.perturb_every}"

    @property
    def effective_perturb_budget(self) -> float | None:
        """The budget GSAM trains with under `perturb_every="auto"`; `None` otherwise."""
        if self.perturb_every != AUTO:
            return None
        return DEFAULT_PERTURB_BUDGET if self.perturb_budget is None else self.perturb_budget

    @property
    def passes_per_step(self) -> float:
        """Forward-backward passes per training step, planned: 1 for plain, 1 + 1/perturb_every
        for sam/gsam, 1 + perturb_budget with `"auto"`."""
        if self.optimizer == "plain":
            return 1.0
        if self.perturb_every == AUTO:
            return 1.0 + self.effective_perturb_budget
        return 1.0 + 1.0 / self.perturb_every

    def forward_backward_passes(self, steps: int) -> int:
        """Forward-backward passes of the first `steps` optimizer steps, planned: the perturbed
        pass runs at steps 0, perturb_every, 2 * perturb_every, ..., or (`"auto"`) on
        `perturb_budget` of the steps. The training history counts the steps that did."""
        if self.optimizer == "plain":
            return steps
        if self.perturb_every == AUTO:
            return steps + math.ceil(steps * self.effective_perturb_budget - 1e-9)
        return steps + math.ceil(steps / self.perturb_every)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["image_shape"] = list(self.image_shape)
        if self.input_size is not None:
            values["input_size"] = list(self.input_size)
        if self.model_widths is not None:
            values["model_widths"] = list(self.model_widths)
        return values

    def to_custom_config(self) -> dict[str, Any]:
        """The Trainer's `custom_config` for this config."""
        return {CUSTOM_CONFIG_KEY: self.to_dict()}

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> "TrainingConfig":
        """Reads the config that `to_custom_config` wrote into the Trainer's `custom_config`."""
        return cls.from_dict(custom_config_entry(custom_config, CUSTOM_CONFIG_KEY, cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "TrainingConfig":
        """Builds a config from `custom_config`; an unknown key is an error that names it."""
        return dataclass_from_dict(cls, values, "training config")


def custom_config_entry(custom_config: dict[str, Any] | None, key: str, config_class) -> Any:
    """The `key` entry of a component's `custom_config`, written by `config_class`."""
    if not custom_config or key not in custom_config:
        raise ValueError(
            f"The component's custom_config has no {key!r} entry; build it with "
            f"{config_class.__name__}.to_custom_config()."
        )
    return custom_config[key]


def dataclass_from_dict(cls, values: dict[str, Any] | None, what: str):
    """`cls(**values)`; a key that is not a field of `cls` is an error naming it."""
    values = dict(values or {})
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"Unknown {what} key(s): {', '.join(unknown)}. "
            f"Known keys: {', '.join(sorted(known))}."
        )
    return cls(**values)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")


def _positive_ints(values, length=None) -> bool:
    """Whether `values` is a non-empty tuple or list of positive ints (of `length`, if given)."""
    return (
        isinstance(values, (tuple, list))
        and len(values) > 0
        and (length is None or len(values) == length)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    )


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _check_number(name, value, low=None, high=None, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {bound} {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}.")
