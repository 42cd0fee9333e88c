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
LR_SCHEDULES = ("cosine", "constant", "plateau")
# Training-time image augmentations, in the order they are applied (trainer/inputs/augment.py).
AUGMENTATIONS = ("crop", "flip", "brightness")
BALANCED = "balanced"
DEFAULT_GSAM_ALPHA = 0.01
# `perturb_every="auto"`: the perturbed pass decides by itself when to run (trainer.gsam.GSAM).
AUTO = "auto"
# GSAM's own default `perturb_budget` (checked by tests/test_config.py).
DEFAULT_PERTURB_BUDGET = 0.1
# The Trainer's custom_config holds the training config under this key, beside the keys that
# other executors read (e.g. tfx.extensions.google_cloud_ai_platform's `ai_platform_*`).
CUSTOM_CONFIG_KEY = "training"
# Keras's ReduceLROnPlateau on val_loss as keras-gsam's comparison used it.
PLATEAU_DEFAULTS = {"plateau_factor": 0.5, "plateau_patience": 3}


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
        lr_schedule: `"cosine"` (to `learning_rate * lr_min_ratio`, with linear warmup),
            `"constant"`, or `"plateau"`: Keras's `ReduceLROnPlateau` on val_loss lowers the
            rate by `plateau_factor` after `plateau_patience` epochs without improvement, down
            to `min_learning_rate` (after the warmup, if any).
        lr_min_ratio: final learning rate as a fraction of the peak, for `"cosine"`; for
            `"plateau"`, the floor when `min_learning_rate` is unset.
        warmup_epochs: linear warmup length, in epochs (may be fractional).
        plateau_factor: `"plateau"`: the factor in (0, 1) that each reduction multiplies the
            learning rate by.
        plateau_patience: `"plateau"`: epochs without a lower val_loss before a reduction.
        min_learning_rate: `"plateau"`: the floor of the learning rate; `None` means
            `learning_rate * lr_min_ratio`. GSAM's rho follows the rate from `rho_max` at
            `learning_rate` to `rho_min` at this floor.
        early_stopping: stop when val_loss has not improved for this many epochs and restore
            the weights of the epoch with the lowest val_loss (Keras's `EarlyStopping`); the
            exported model is the restored one. `None`: train every epoch.
        augment: training-time augmentations of the image (`"crop"`, `"flip"`,
            `"brightness"`; see `trainer.inputs.augment`), applied to the training batches
            only, never to evaluation or serving; kept in that order.
        class_weights: `"balanced"` (each class weighted by n / (classes x its count in the
            training split)) or one weight per class; Keras's `class_weight`, which becomes
            sample weights that both passes of SAM and GSAM use. `None`: unweighted.
        label_smoothing: the cross-entropy's label smoothing, in [0, 1).
        weight_decay: decoupled weight decay (the optimizer's `weight_decay`: each step
            subtracts `learning_rate * weight_decay * w`), outside the loss that SAM and GSAM
            perturb.
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
        min_train_steps: without `train_steps_per_epoch` (or TFX's TrainArgs), an epoch is one
            pass over the training split but at least `min_train_steps / epochs` steps, so that
            small data trains long enough (a few hundred rows are a handful of steps a pass).
        class_names: the label's class names, in class order; recorded with the serving model
            (`trainer.predict` prints them). `None`: classes are shown as numbers.
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
    min_train_steps: int = 500
    class_names: tuple[str, ...] | None = None
    seed: int | None = None
    plateau_factor: float = PLATEAU_DEFAULTS["plateau_factor"]
    plateau_patience: int = PLATEAU_DEFAULTS["plateau_patience"]
    min_learning_rate: float | None = None
    early_stopping: int | None = None
    augment: tuple[str, ...] = ()
    class_weights: str | tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    weight_decay: float = 0.0

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
        _check_int("min_train_steps", self.min_train_steps, minimum=0)
        if self.class_names is not None:
            names = self.class_names
            if (
                not isinstance(names, (tuple, list))
                or len(names) < 2
                or not all(isinstance(name, str) and name.strip() for name in names)
            ):
                raise ValueError(
                    f"class_names must be a list of at least two non-empty names, got {names!r}."
                )
            object.__setattr__(self, "class_names", tuple(names))
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
        self._check_practice()

    def _check_practice(self):
        """The checks of the learning rate plateau, early stopping, augmentation and the loss's
        class weights, label smoothing and weight decay."""
        _check_number("plateau_factor", self.plateau_factor, low=0, low_inclusive=False)
        if self.plateau_factor >= 1:
            raise ValueError(f"plateau_factor must be < 1, got {self.plateau_factor}.")
        _check_int("plateau_patience", self.plateau_patience, minimum=1)
        plateau_fields = {
            "plateau_factor": self.plateau_factor != PLATEAU_DEFAULTS["plateau_factor"],
            "plateau_patience": self.plateau_patience != PLATEAU_DEFAULTS["plateau_patience"],
            "min_learning_rate": self.min_learning_rate is not None,
        }
        if self.lr_schedule != "plateau" and any(plateau_fields.values()):
            given = ", ".join(name for name, set_ in plateau_fields.items() if set_)
            raise ValueError(
                f"{given} only apply with lr_schedule 'plateau', got {self.lr_schedule!r}."
            )
        if self.min_learning_rate is not None:
            _check_number("min_learning_rate", self.min_learning_rate, low=0)
            if self.min_learning_rate >= self.learning_rate:
                raise ValueError(
                    f"min_learning_rate ({self.min_learning_rate}) must be below learning_rate "
                    f"({self.learning_rate})."
                )
        if self.early_stopping is not None:
            _check_int("early_stopping", self.early_stopping, minimum=1)
        augment = self.augment
        if (
            isinstance(augment, str)
            or not isinstance(augment, (tuple, list))
            or len(set(augment)) != len(augment)
            or any(name not in AUGMENTATIONS for name in augment)
        ):
            raise ValueError(
                f"augment must be a list of distinct names from {', '.join(AUGMENTATIONS)}, "
                f"got {augment!r}."
            )
        object.__setattr__(self, "augment", tuple(n for n in AUGMENTATIONS if n in augment))
        if self.class_weights is not None and self.class_weights != BALANCED:
            weights = self.class_weights
            if (
                isinstance(weights, str)
                or not isinstance(weights, (tuple, list))
                or len(weights) < 2
                or not all(_non_negative_number(w) for w in weights)
                or not any(w > 0 for w in weights)
            ):
                raise ValueError(
                    f"class_weights must be {BALANCED!r} or one non-negative weight per class "
                    f"(two or more, not all 0), got {weights!r}."
                )
            object.__setattr__(self, "class_weights", tuple(float(w) for w in weights))
        _check_number("label_smoothing", self.label_smoothing, low=0)
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be < 1, got {self.label_smoothing}.")
        _check_number("weight_decay", self.weight_decay, low=0)

    @property
    def plateau_floor(self) -> float:
        """The lowest learning rate of the `"plateau"` schedule."""
        if self.min_learning_rate is not None:
            return float(self.min_learning_rate)
        return self.learning_rate * self.lr_min_ratio

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
        """The fields as JSON values: tuples become lists."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }

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


def _non_negative_number(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
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
