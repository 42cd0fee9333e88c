"""GSAM with `perturb_every="auto"`: which steps run the perturbed pass, and its state.

The oracle for the decisions is a NumPy float32 transcription of the rule documented in
trainer/gsam/schedule.py, fed the clean gradients of a scripted sequence: a linear model whose
loss is the mean of its output has the batch's mean input as its kernel's gradient, whatever
the weights, so the test chooses every gradient. MirroredStrategy runs in a fresh interpreter
(`python -m tests.test_gsam_auto`), as in test_gsam_distributed.py.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_gsam_distributed import replica_spread, run_scenarios, two_cpu_strategy
from trainer.config import DEFAULT_PERTURB_BUDGET, TrainingConfig
from trainer.gsam import GSAM, schedule
from trainer.training.history import HISTORY_FILE, TrainingHistory, read_history


def reference_decisions(gradients, budget):
    """Which steps perturb under the documented rule, for clean gradients `gradients` (one
    row per step; a row with a NaN is a non-finite step); also the smallest margin of a
    comparison the rule made."""
    one = np.float32(1.0)
    budget = np.float32(budget)
    credit, mean, perturb = np.float32(1.0), np.float32(0.0), True
    reference = np.zeros_like(gradients[0])
    decisions, margins = [], []
    for g in gradients:
        g = g.astype(np.float32)
        finite = bool(np.isfinite(g).all())
        decisions.append(perturb)
        credit = np.minimum(credit - np.float32(perturb) + budget, np.float32(schedule.MAX_CREDIT))
        stale = False
        if perturb:
            if finite:
                reference = g / np.linalg.norm(g)
        else:
            norm_ref = np.linalg.norm(reference)
            cosine = 0.0 if norm_ref == 0 else g @ reference / (np.linalg.norm(g) * norm_ref)
            staleness = one - np.float32(cosine)
            margins.append(abs(staleness - mean))
            stale = staleness > mean
            mean = mean + budget * (staleness - mean)
        perturb = bool(
            (perturb and not finite) or credit >= schedule.MAX_CREDIT or (credit >= one and stale)
        )
    return decisions, min(margins)


def scripted_gradients(steps=40, seed=0):
    """Unit gradients that drift by a few degrees a step in a plane, with a jump to a far
    direction every ninth step: stale at some steps, fresh at others."""
    rng = np.random.default_rng(seed)
    angles = np.cumsum(rng.uniform(0.02, 0.12, size=steps))
    angles[::9] += 1.2
    return np.stack([np.cos(angles), np.sin(angles), np.zeros(steps), np.zeros(steps)], 1)


@keras.saving.register_keras_serializable(package="test_gsam_auto")
def mean_output(y_true, y_pred):
    """The loss whose gradient with respect to a linear model's kernel is the mean input."""
    return keras.ops.mean(y_pred)


def linear_gsam(budget=0.25, **options):
    """GSAM over `Dense(1)` without bias, trained on the mean of its output: the gradient of
    a batch is its mean input."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    gsam_model = GSAM(
        model, rho=0.1, alpha=0.2, perturb_every="auto", perturb_budget=budget, **options
    )
    gsam_model.compile(optimizer=keras.optimizers.SGD(0.01), loss=mean_output)
    return gsam_model


def perturbed_steps_of(gsam_model, x, epochs=1, callbacks=()):
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(bool(logs["perturbed_step"]))
    )
    history = gsam_model.fit(
        x,
        np.zeros((len(x), 1), "float32"),
        batch_size=1,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[record, *callbacks],
    )
    return seen, history.history


def test_the_steps_that_perturb_follow_the_numpy_reference_of_the_rule():
    gradients = scripted_gradients()
    expected, margin = reference_decisions(gradients, budget=0.25)
    # No comparison is a near tie that float32 rounding in another order could flip.
    assert margin > 1e-4
    seen, history = perturbed_steps_of(linear_gsam(budget=0.25), gradients.astype("float32"))
    assert seen == expected
    # The rule does choose its steps: not every fourth one, and a jump is followed by one.
    assert seen != [step % 4 == 0 for step in range(len(seen))]
    assert history["perturbed_steps"] == [float(sum(expected))]
    assert history["perturbed_fraction"][0] == pytest.approx(sum(expected) / len(expected))


def test_the_budget_is_what_a_long_run_spends():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 4)).astype("float32")
    for budget in (0.1, 0.3):
        seen, _ = perturbed_steps_of(linear_gsam(budget=budget), x)
        # The credit is conserved and at most MAX_CREDIT: the count is budget * steps give or
        # take the credit held at the end.
        assert abs(sum(seen) - budget * len(x)) <= schedule.MAX_CREDIT + 1
        gaps = np.diff(np.flatnonzero(seen))
        assert gaps.max() <= np.ceil(schedule.MAX_CREDIT / budget)


def test_perturbed_fraction_is_the_share_of_each_epochs_steps(tmp_path):
    gradients = scripted_gradients(steps=20)
    expected, _ = reference_decisions(np.concatenate([gradients, gradients]), budget=0.25)
    config = TrainingConfig(model="mlp", perturb_every="auto", perturb_budget=0.25)
    history_callback = TrainingHistory(str(tmp_path / HISTORY_FILE), config)
    seen, logs = perturbed_steps_of(
        linear_gsam(budget=0.25), gradients.astype("float32"), 2, [history_callback]
    )
    assert seen == expected
    assert logs["perturbed_fraction"] == pytest.approx(
        [sum(expected[:20]) / 20, sum(expected[20:]) / 20]
    )
    epochs = read_history(str(tmp_path / HISTORY_FILE))["epochs"]
    assert [epoch["passes"] for epoch in epochs] == [
        20 + sum(expected[:20]),
        40 + sum(expected),
    ]
    assert [epoch["perturbed_fraction"] for epoch in epochs] == logs["perturbed_fraction"]


def test_a_non_finite_perturbing_step_is_retried_and_still_costs_its_pass():
    gradients = scripted_gradients(steps=16).astype("float32")
    clean, _ = reference_decisions(gradients, budget=0.5)
    nan_step = next(step for step, perturbed in enumerate(clean) if perturbed and step >= 2)
    gradients[nan_step, 0] = np.nan
    expected, _ = reference_decisions(gradients, budget=0.5)
    seen, history = perturbed_steps_of(linear_gsam(budget=0.5), gradients)
    assert seen == expected
    assert seen[nan_step] and seen[nan_step + 1]
    assert history["skipped_steps"] == [1.0]
    assert history["perturbed_steps"] == [float(sum(seen))]


def _state(gsam_model):
    variables = [
        gsam_model.steps_until_perturbation,
        gsam_model.perturbed_steps,
        gsam_model.perturb_credit,
        gsam_model.staleness_mean,
        *gsam_model.flatness_direction,
        *gsam_model.reference_gradient,
    ]
    return [np.array(v.numpy()) for v in variables]


@pytest.mark.parametrize("how", ["keras_file", "weights_file", "checkpoint"])
def test_a_restored_run_continues_with_the_same_decisions(tmp_path, how):
    """`.keras` files, the weights files of the Trainer's epoch backups
    (trainer/training/resume.py) and TF checkpoints all carry the rule's state."""
    gradients = scripted_gradients(steps=48, seed=2).astype("float32")
    first, second = gradients[:24], gradients[24:]
    uninterrupted = linear_gsam()
    perturbed_steps_of(uninterrupted, first)
    state = _state(uninterrupted)
    if how == "keras_file":
        uninterrupted.save(tmp_path / "auto.keras")
        restored = keras.saving.load_model(tmp_path / "auto.keras")
    elif how == "weights_file":
        uninterrupted.save_weights(tmp_path / "auto.weights.h5")
        restored = linear_gsam()
        restored.build((None, 4))  # as the Trainer does before restoring a backup
        restored.optimizer.build(restored.trainable_variables)
        restored.load_weights(tmp_path / "auto.weights.h5")
    else:
        checkpoint = tf.train.Checkpoint(model=uninterrupted, optimizer=uninterrupted.optimizer)
        path = checkpoint.save(str(tmp_path / "ckpt"))
        restored = linear_gsam()
        restored.optimizer.build(restored.trainable_variables)
        tf.train.Checkpoint(model=restored, optimizer=restored.optimizer).restore(
            path
        ).assert_existing_objects_matched()
    assert (restored.perturb_every, restored.perturb_budget) == ("auto", 0.25)
    for a, b in zip(_state(restored), state):  # a round trip: bit for bit
        np.testing.assert_array_equal(a, b)
    continued, _ = perturbed_steps_of(uninterrupted, second)
    resumed, _ = perturbed_steps_of(restored, second)
    assert resumed == continued
    assert any(continued) and not all(continued)
    # Negative control: a fresh model, without the stored state, decides otherwise.
    fresh, _ = perturbed_steps_of(linear_gsam(), second)
    assert fresh != continued


def test_the_training_config_reaches_the_wrapper():
    from trainer.training import fit

    for budget, expected in ((None, DEFAULT_PERTURB_BUDGET), (0.3, 0.3)):
        config = TrainingConfig(
            model="mlp", optimizer="gsam", perturb_every="auto", perturb_budget=budget
        )
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
        trained = fit.wrap_for_training(model, config, 0.1, 0.001)
        assert (trained.perturb_every, trained.perturb_budget) == ("auto", expected)
        assert config.method == "gsam-auto"
        assert config.passes_per_step == pytest.approx(1 + expected)
        assert len(trained.reference_gradient) == len(model.trainable_variables)


def test_the_trainer_records_the_perturbed_steps_it_ran(tmp_path):
    """run_fn with `perturb_every="auto"`: history.json counts the passes the steps ran."""
    from tests import trainer_examples

    rng = np.random.default_rng(0)
    splits = {
        "train": trainer_examples.random_image_examples(rng, 64),
        "eval": trainer_examples.random_image_examples(rng, 16),
    }
    config = TrainingConfig(
        optimizer="gsam", epochs=2, batch_size=8, perturb_every="auto", perturb_budget=0.3,
        min_train_steps=0,
    )  # fmt: skip
    with open(trainer_examples.SAMPLE_SCHEMA) as f:
        _, run_dir = trainer_examples.run_trainer(tmp_path, config, splits, f.read())
    document = read_history(os.path.join(run_dir, HISTORY_FILE))
    assert document["method"] == "gsam-auto"
    epochs = document["epochs"]
    assert [epoch["steps"] for epoch in epochs] == [8, 16]
    perturbed = [round(epoch["perturbed_fraction"] * 8) for epoch in epochs]
    assert [epoch["passes"] for epoch in epochs] == [8 + perturbed[0], 16 + sum(perturbed)]
    # Step 0 perturbs; then the budget allows about 0.3 of the steps.
    assert 1 <= perturbed[0] and sum(perturbed) <= 0.3 * 16 + schedule.MAX_CREDIT


def test_gsam_default_budget_is_the_configs():
    import inspect

    default = inspect.signature(GSAM).parameters["perturb_budget"].default
    assert default == DEFAULT_PERTURB_BUDGET


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, "0.1", True])
def test_invalid_budget_raises_naming_it(budget):
    with pytest.raises(ValueError, match="`perturb_budget` must be a number in \\(0, 1\\]"):
        linear_gsam(budget=budget)


def test_a_reference_needs_the_flatness_direction_it_measures():
    from trainer.gsam import sharpness_aware_gradients

    gsam_model = linear_gsam()
    with pytest.raises(ValueError, match="`reference` measures how stale"):
        sharpness_aware_gradients(
            gsam_model,
            np.ones((2, 4), "float32"),
            np.zeros((2, 1), "float32"),
            rho=0.1,
            alpha=0.1,
            reference=gsam_model.reference_gradient,
        )


# MirroredStrategy on 2 logical CPUs.


@pytest.fixture(scope="module")
def measured():
    return run_scenarios("tests.test_gsam_auto")


@pytest.mark.parametrize("name", ["per_replica", "sync_perturbation"])
def test_replicas_decide_alike_at_every_step(measured, name):
    run = measured[name]
    assert run["decisions_differ"] == 0
    assert run["state_replica_spread"] == 0.0
    assert run["weights_replica_spread"] == 0.0
    # The rule chose: some steps perturbed and some reused, at the budget.
    assert 0 < run["perturbed"] < run["steps"]
    assert abs(run["perturbed"] - 0.25 * run["steps"]) <= schedule.MAX_CREDIT + 1


def test_each_replica_keeps_its_own_reference_unless_synced(measured):
    assert measured["per_replica"]["reference_replica_spread"] > 1e-3
    assert measured["sync_perturbation"]["reference_replica_spread"] <= 1e-6


def _scenarios():
    strategy = two_cpu_strategy()
    rng = np.random.default_rng(0)
    steps = 32
    # Each replica's half of a batch has its own gradient: the two shards point differently.
    x = rng.normal(size=(steps * 4, 4)).astype("float32")
    x[1::4] += 2.0
    y = np.zeros((len(x), 1), "float32")
    results = {}
    for name, sync in (("per_replica", False), ("sync_perturbation", True)):
        with strategy.scope():
            gsam_model = linear_gsam(sync_perturbation=sync)
            gsam_model.optimizer.build(gsam_model.trainable_variables)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
        )

        @tf.function
        def step(batch, gsam_model=gsam_model):
            return strategy.run(lambda b: gsam_model.train_step(b)["perturbed_step"], args=(batch,))

        decisions = [
            [float(v) for v in strategy.experimental_local_results(step(batch))]
            for batch in dataset
        ]
        state = [
            gsam_model.steps_until_perturbation,
            gsam_model.perturbed_steps,
            gsam_model.perturb_credit,
            gsam_model.staleness_mean,
        ]
        results[name] = {
            "steps": len(decisions),
            "perturbed": sum(first for first, _ in decisions),
            "decisions_differ": sum(first != second for first, second in decisions),
            "state_replica_spread": replica_spread(strategy, state),
            "weights_replica_spread": replica_spread(strategy, gsam_model.trainable_variables),
            "reference_replica_spread": replica_spread(strategy, gsam_model.reference_gradient),
        }
    return results


if __name__ == "__main__":
    print(json.dumps(_scenarios()))
