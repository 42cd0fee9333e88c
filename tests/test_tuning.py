"""tuner_fn under TFX's own Tuner executor, on a tiny separable tabular split."""

import dataclasses
import math

import numpy as np
import pytest

from tests import trainer_examples
from trainer import search_space
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace

CENTERS = np.array([[-2.0, -2.0], [2.0, -2.0], [0.0, 2.5]])
TRAINING = TrainingConfig(
    model="mlp",
    batch_size=16,
    learning_rate=0.05,
    lr_schedule="constant",
    optimizer="gsam",
    seed=3,
)


def separable_splits(rng, train=96, eval=48):
    """Three classes around well-separated centers: a trial that learns gets far above 1/3."""

    def examples(count):
        return [
            trainer_examples.tabular_example(
                (CENTERS[index % 3] + 0.4 * rng.normal(size=2)).tolist(), 0, b"x", index % 3
            )
            for index in range(count)
        ]

    return {"train": examples(train), "eval": examples(eval)}


def tune(tmp_path, space, training=TRAINING, seed=0):
    custom_config = {**training.to_custom_config(), **space.to_custom_config()}
    return trainer_examples.run_tuner(
        tmp_path,
        custom_config,
        separable_splits(np.random.default_rng(seed)),
        trainer_examples.TABULAR_SCHEMA,
    )


def inside(value, value_range):
    low, high = value_range
    return low <= value <= high or math.isclose(value, low) or math.isclose(value, high)


def test_three_trials_give_three_rows_best_first_and_inside_the_space(tmp_path):
    space = SearchSpace(
        rho_max_range=(0.01, 0.2),
        rho_min_fraction_range=(0.2, 0.8),
        alpha_range=(0.0, 0.1),
        learning_rate_range=(0.01, 0.1),
        method_choices=("sam", "gsam"),
        max_trials=3,
        epochs_per_trial=1,
        search_seed=1,
    )
    best, rows = tune(tmp_path, space)

    assert len(rows) == 3
    assert len({row["trial_id"] for row in rows}) == 3
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    values = best["values"]
    assert values == {name: rows[0][name] for name in values}
    assert values["method"] in ("sam", "gsam")
    assert inside(values["rho_max"], space.rho_max_range)
    assert inside(values["rho_min_fraction"], space.rho_min_fraction_range)
    assert inside(values["learning_rate"], space.learning_rate_range)
    assert ("alpha" in values) == (values["method"] == "gsam")
    if "alpha" in values:
        assert inside(values["alpha"], space.alpha_range)
    config = search_space.tuned_config(TRAINING, values)
    assert config.rho_min == pytest.approx(values["rho_max"] * values["rho_min_fraction"])


def test_an_absurdly_large_rho_is_never_the_best(tmp_path):
    """rho_max from 0.001 to 10^4 (log-uniform): a rho in the hundreds throws the weights far
    from where the gradient is taken, and such a trial ends below every trial with a small rho.
    """
    space = SearchSpace(
        rho_max_range=(0.001, 1e4),
        rho_min_fraction_range=(1.0, 1.0),
        learning_rate_range=(0.05, 0.05),
        max_trials=3,
        epochs_per_trial=1,
        search_seed=4,
    )
    best, rows = tune(tmp_path, space, dataclasses.replace(TRAINING, optimizer="sam", alpha=None))

    absurd = [row["score"] for row in rows if row["rho_max"] > 100]
    sane = [row["score"] for row in rows if row["rho_max"] < 0.1]
    assert absurd and sane, f"the seeded search must try both kinds of rho: {rows}"
    assert best["values"]["rho_max"] < 0.1
    assert max(absurd) < min(sane)


@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_stop_at_max_trials(algorithm, tmp_path):
    space = SearchSpace(algorithm=algorithm, max_trials=2, epochs_per_trial=3, search_seed=2)
    best, rows = tune(tmp_path, space, dataclasses.replace(TRAINING, train_steps_per_epoch=2))

    assert len(rows) == 2
    # Hyperband's bookkeeping ("tuner/epochs", ...) rides along; the Trainer ignores it.
    bookkeeping = [name for name in best["values"] if name.startswith("tuner/")]
    assert bool(bookkeeping) == (algorithm == "hyperband")
    config = search_space.tuned_config(TRAINING, best["values"])
    assert inside(config.rho_max, space.rho_max_range)
    assert inside(config.learning_rate, space.learning_rate_range)
