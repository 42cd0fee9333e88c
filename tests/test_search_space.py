"""SearchSpace: its checks, the hyperparameters it declares, and tuned values over a config."""

import keras_tuner
import pytest

from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace, tuned_config, tuned_fields


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(rho_max_range=(0.5, 0.1)), "rho_max_range low (0.5) must not exceed its high (0.1)"),
        (dict(rho_max_range=(-0.1, 0.1)), "rho_max_range low must be > 0, got -0.1"),
        (dict(rho_max_range=(0.1,)), "rho_max_range must be a (low, high) pair"),
        (dict(rho_min_fraction_range=(0.5, 1.5)), "rho_min_fraction_range high must be <= 1"),
        (dict(alpha_range=(-1, 0.1)), "alpha_range low must be >= 0"),
        (dict(learning_rate_range=(0, 0.1)), "learning_rate_range low must be > 0"),
        (dict(learning_rate_range=(0.1, float("nan"))), "learning_rate_range high must be a fin"),
        (dict(method_choices=("sam", "adam")), "method_choices must be one of plain, sam, gsam"),
        (dict(method_choices=("sam", "sam")), "method_choices must not repeat a value"),
        (dict(method_choices="sam"), "method_choices must be a list, got 'sam'"),
        (dict(perturb_every_choices=(1, 0)), "perturb_every_choices must be an integer >= 1"),
        (dict(perturb_every_choices=(2.5,)), "perturb_every_choices must be an integer >= 1"),
        (dict(perturb_every_choices=(5, 5)), "perturb_every_choices must not repeat a value"),
        (dict(perturb_every_choices=5), "perturb_every_choices must be a list, got 5"),
        (dict(algorithm="grid"), "algorithm must be one of random, bayesian, hyperband"),
        (dict(objective="accuracy"), "objective must be one of val_accuracy, val_loss"),
        (dict(max_trials=0), "max_trials must be an integer >= 1"),
        (dict(epochs_per_trial=1.5), "epochs_per_trial must be an integer >= 1"),
        (dict(search_seed=-1), "search_seed must be an integer >= 0"),
    ],
)
def test_bad_spaces_are_named(arguments, message):
    with pytest.raises(ValueError) as error:
        SearchSpace(**arguments)
    assert message in str(error.value)


def test_the_space_round_trips_through_custom_config():
    space = SearchSpace(rho_max_range=[0.02, 0.2], method_choices=["sam", "gsam"], max_trials=3)
    assert space.rho_max_range == (0.02, 0.2) and space.method_choices == ("sam", "gsam")
    assert SearchSpace.from_custom_config(space.to_custom_config()) == space
    with pytest.raises(ValueError, match="Unknown search space key.*: rho_max. Known"):
        SearchSpace.from_dict({"rho_max": [0.1, 0.2]})
    with pytest.raises(ValueError, match="custom_config has no 'tuning' entry"):
        SearchSpace.from_custom_config(TrainingConfig().to_custom_config())


def declared(space, training):
    hp = keras_tuner.HyperParameters()
    config = space.trial_config(training, hp)
    return config, hp.values


def test_rho_is_declared_for_sharpness_aware_methods_and_alpha_for_gsam_only():
    training = TrainingConfig(optimizer="gsam", epochs=9)
    config, values = declared(SearchSpace(epochs_per_trial=2), training)
    assert set(values) == {"method", "learning_rate", "rho_max", "rho_min_fraction", "alpha"}
    assert config.epochs == 2 and config.optimizer == "gsam"
    assert config.rho_min == pytest.approx(values["rho_max"] * values["rho_min_fraction"])
    _, values = declared(SearchSpace(method_choices=("sam",)), training)
    assert set(values) == {"method", "learning_rate", "rho_max", "rho_min_fraction"}
    config, values = declared(SearchSpace(method_choices=("plain",)), training)
    assert set(values) == {"method", "learning_rate"}
    assert config.optimizer == "plain" and config.alpha is None


def test_equal_bounds_fix_a_value():
    _, values = declared(
        SearchSpace(learning_rate_range=(0.03, 0.03), alpha_range=(0.0, 0.0)), TrainingConfig()
    )
    assert values["learning_rate"] == 0.03 and values["alpha"] == 0.0


def test_perturb_every_is_declared_for_sharpness_aware_methods_only():
    config, values = declared(
        SearchSpace(method_choices=("gsam",), perturb_every_choices=(1, 5)), TrainingConfig()
    )
    assert values["perturb_every"] in (1, 5) and config.perturb_every == values["perturb_every"]
    # KerasTuner's first choice, plain: no perturbed pass, so no perturb_every either.
    config, values = declared(
        SearchSpace(method_choices=("plain", "gsam"), perturb_every_choices=(1, 5)),
        TrainingConfig(),
    )
    assert values["method"] == "plain" and "perturb_every" not in values
    assert config.perturb_every == 1
    config = tuned_config(TrainingConfig(optimizer="gsam"), {"perturb_every": 5})
    assert config.perturb_every == 5 and config.method == "gsam-k5"
    # Plain has no perturbed pass: a plain trial drops the training config's perturb_every.
    config = tuned_config(TrainingConfig(optimizer="gsam", perturb_every=5), {"method": "plain"})
    assert config.perturb_every == 1 and config.method == "plain"
    _, values = declared(
        SearchSpace(method_choices=("sam",), perturb_every_choices=(10,)), TrainingConfig()
    )
    assert values["perturb_every"] == 10
    _, values = declared(SearchSpace(), TrainingConfig(optimizer="gsam", perturb_every=5))
    assert "perturb_every" not in values


def test_the_auto_budget_is_searched_when_the_config_perturbs_on_its_own():
    training = TrainingConfig(optimizer="gsam", perturb_every="auto")
    space = SearchSpace(perturb_budget_range=(0.05, 0.2))
    config, values = declared(space, training)
    assert 0.05 <= values["perturb_budget"] <= 0.2
    assert config.perturb_budget == values["perturb_budget"] and config.method == "gsam-auto"
    # A fixed k, or plain training, has no budget to search.
    _, values = declared(space, TrainingConfig(optimizer="gsam", perturb_every=5))
    assert "perturb_budget" not in values
    config, values = declared(
        SearchSpace(method_choices=("plain", "gsam")), TrainingConfig(perturb_every="auto")
    )
    assert values["method"] == "plain" and "perturb_budget" not in values
    assert (config.perturb_every, config.perturb_budget) == (1, None)
    with pytest.raises(ValueError, match="perturb_budget_range high"):
        SearchSpace(perturb_budget_range=(0.1, 1.5))


def test_a_space_that_chooses_the_method_says_so():
    assert not SearchSpace().searches_the_method
    assert SearchSpace(method_choices=("sam",)).searches_the_method
    assert SearchSpace(perturb_every_choices=(1, 5)).searches_the_method


def test_tuned_values_are_checked_like_the_config():
    training = TrainingConfig(optimizer="gsam", alpha=0.01)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        tuned_config(training, {"learning_rate": -0.1})
    with pytest.raises(ValueError, match="Unknown tuned hyperparameter.*: momentum"):
        tuned_config(training, {"momentum": 0.5})
    with pytest.raises(ValueError, match="rho_min_fraction needs the tuned rho_max"):
        tuned_fields({"rho_min_fraction": 0.5})


def test_tuned_values_replace_their_fields_only():
    training = TrainingConfig(optimizer="gsam", alpha=0.01, rho_max=0.04, rho_min=0.02, seed=5)
    values = {"method": "sam", "rho_max": 0.2, "rho_min_fraction": 0.5, "tuner/epochs": 3}
    config = tuned_config(training, values)
    # SAM has no alpha of its own; Hyperband's bookkeeping is not a hyperparameter.
    assert (config.optimizer, config.alpha, config.rho_max, config.rho_min) == (
        "sam",
        None,
        0.2,
        0.1,
    )
    assert (config.learning_rate, config.seed) == (training.learning_rate, 5)


def test_label_smoothing_and_weight_decay_are_searched_only_when_given():
    training = TrainingConfig(optimizer="plain", epochs=9)
    space = SearchSpace(label_smoothing_range=(0.0, 0.2), weight_decay_range=(1e-5, 1e-3))
    assert SearchSpace.from_custom_config(space.to_custom_config()) == space
    config, values = declared(space, training)
    assert {"label_smoothing", "weight_decay"} <= set(values)
    assert 0 <= config.label_smoothing <= 0.2 and 1e-5 <= config.weight_decay <= 1e-3
    assert (config.label_smoothing, config.weight_decay) == (
        values["label_smoothing"],
        values["weight_decay"],
    )
    assert not {"label_smoothing", "weight_decay"} & set(declared(SearchSpace(), training)[1])
    with pytest.raises(ValueError, match="weight_decay_range low must be > 0"):
        SearchSpace(weight_decay_range=(0.0, 1e-3))
    with pytest.raises(ValueError, match="label_smoothing_range high must be <= 0.99"):
        SearchSpace(label_smoothing_range=(0.0, 1.0))
