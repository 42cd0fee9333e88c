"""TrainingConfig: every validation error names its field; custom_config round trips."""

import dataclasses
import json
import math

import pytest

from trainer.config import TrainingConfig

FIELDS = [field.name for field in dataclasses.fields(TrainingConfig)]

# (field, bad value, extra valid fields); each message must start with the field's name.
BAD_VALUES = [
    ("model", "cnn", {}),
    ("model_widths", (), {}),
    ("model_widths", (8, 0, 32), {}),
    ("model_widths", "8,16", {}),
    ("epochs", 0, {}),
    ("epochs", 2.0, {}),
    ("epochs", True, {}),
    ("batch_size", -1, {}),
    ("learning_rate", 0.0, {}),
    ("learning_rate", math.nan, {}),
    ("learning_rate", "0.1", {}),
    ("lr_schedule", "step", {}),
    ("lr_min_ratio", 1.5, {}),
    ("lr_min_ratio", -0.1, {}),
    ("warmup_epochs", -1, {}),
    ("base_optimizer", "rmsprop", {}),
    ("optimizer", "asam", {}),
    ("rho_max", -0.1, {}),
    ("rho_max", math.inf, {}),
    ("rho_min", -0.1, {}),
    ("rho_min", 0.5, {"rho_max": 0.1}),
    ("alpha", -0.1, {}),
    ("alpha", 0.1, {"optimizer": "sam"}),
    ("adaptive", "yes", {}),
    ("perturb_every", 0, {}),
    ("perturb_every", -2, {}),
    ("perturb_every", 2.5, {}),
    ("perturb_every", 5, {"optimizer": "plain"}),
    ("perturb_every", "sometimes", {}),
    ("perturb_every", "auto", {"optimizer": "plain"}),
    ("perturb_budget", 0.0, {"perturb_every": "auto"}),
    ("perturb_budget", 1.5, {"perturb_every": "auto"}),
    ("perturb_budget", "0.1", {"perturb_every": "auto"}),
    ("reuse_scale", -0.1, {"perturb_every": 5}),
    ("reuse_scale", math.nan, {"perturb_every": 5}),
    ("label_key", "", {}),
    ("image_key", None, {}),
    ("image_shape", (28, 28), {}),
    ("image_shape", (28, 28, 2), {}),
    ("image_shape", (28, 0, 1), {}),
    ("input_size", (14, 14, 1), {}),
    ("input_size", (14, 0), {}),
    ("num_classes", 1, {}),
    ("train_steps_per_epoch", 0, {}),
    ("eval_steps", 1.5, {}),
    ("seed", -1, {}),
    ("min_train_steps", -1, {}),
    ("class_names", ("only",), {}),
    ("plateau_factor", 1.0, {"lr_schedule": "plateau"}),
    ("plateau_factor", 0.25, {}),
    ("plateau_patience", 0, {"lr_schedule": "plateau"}),
    ("min_learning_rate", 1.0, {"lr_schedule": "plateau"}),
    ("early_stopping", 0, {}),
    ("augment", ("rotate",), {}),
    ("augment", "crop", {}),
    ("class_weights", (1.0,), {}),
    ("class_weights", "balance", {}),
    ("label_smoothing", 1.0, {}),
    ("weight_decay", -0.1, {}),
]


@pytest.mark.parametrize("field, value, extra", BAD_VALUES)
def test_every_validation_error_names_its_field(field, value, extra):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        TrainingConfig(**{field: value, **extra})


def test_every_field_is_validated():
    assert sorted({field for field, _, _ in BAD_VALUES}) == sorted(FIELDS)


@pytest.mark.parametrize(
    "optimizer, perturb_every, passes",
    [
        ("plain", 1, 1.0),
        ("sam", 1, 2.0),
        ("gsam", 1, 2.0),
        ("gsam", 5, 1.2),
        ("sam", 2, 1.5),
        ("gsam", "auto", 1.1),
    ],
)
def test_passes_per_step_counts_the_perturbed_pass_every_perturb_every_steps(
    optimizer, perturb_every, passes
):
    config = TrainingConfig(optimizer=optimizer, perturb_every=perturb_every)
    assert config.passes_per_step == pytest.approx(passes)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match="Unknown training config key.*: lr, rho"):
        TrainingConfig.from_dict({"rho": 0.1, "lr": 0.1, "epochs": 2})


def test_round_trips_through_json_and_custom_config():
    config = TrainingConfig(
        model="mlp",
        model_widths=(32, 16),
        optimizer="sam",
        epochs=2,
        image_shape=(32, 32, 3),
        input_size=(16, 16),
        num_classes=4,
        warmup_epochs=0.5,
        train_steps_per_epoch=7,
    )
    custom_config = json.loads(json.dumps(config.to_custom_config()))
    assert TrainingConfig.from_custom_config(custom_config) == config
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainingConfig.from_dict(None) == TrainingConfig()


def test_custom_config_without_the_training_entry_is_an_error():
    with pytest.raises(ValueError, match="custom_config has no 'training' entry"):
        TrainingConfig.from_custom_config({"epochs": 3})


def test_effective_alpha():
    assert TrainingConfig(optimizer="sam").effective_alpha == 0.0
    assert TrainingConfig(optimizer="sam", alpha=0).effective_alpha == 0.0
    assert TrainingConfig(optimizer="gsam").effective_alpha == 0.01
    assert TrainingConfig(optimizer="gsam", alpha=0.3).effective_alpha == 0.3
