"""GSAM under tf.distribute.MirroredStrategy on 2 logical CPU devices.

Logical devices must be configured before TensorFlow initializes, so the
scenarios run once in a fresh interpreter (`python -m
tests.test_gsam_distributed`), which prints their measurements as JSON; the
tests check those. The oracle is single-device GSAM, itself checked against
the official update in test_gsam_reference.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.roundoff import (
    ROUNDOFFS_PER_STEP,
    largest_difference,
    largest_magnitude,
    roundoff_tolerance,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LR = 0.1
LOGGED = ("loss", "perturbed_loss", "surrogate_gap", "grad_norm", "grad_cosine")
# name -> (sync_perturbation, under a LossScaleOptimizer)
FIT_RUNS = {
    "per_replica": (False, False),
    "sync_perturbation": (True, False),
    "per_replica_loss_scale": (False, True),
    "sync_perturbation_loss_scale": (True, True),
}
PER_REPLICA = ("per_replica", "per_replica_loss_scale")
SYNCED = ("sync_perturbation", "sync_perturbation_loss_scale")


def run_scenarios(module):
    """Runs `python -m module` in a fresh interpreter; the JSON it printed last."""
    result = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def two_cpu_strategy():
    """MirroredStrategy over 2 logical CPUs; call before TensorFlow initializes."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def replica_spread(strategy, variables):
    """The largest difference between the two replicas' copies of `variables`."""
    copies = [strategy.experimental_local_results(v.value) for v in variables]
    return largest_difference(
        [np.asarray(first) for first, _ in copies], [np.asarray(second) for _, second in copies]
    )


@pytest.fixture(scope="module")
def measured():
    return run_scenarios("tests.test_gsam_distributed")


def one_step_tolerance(measured):
    """Two graphs one step apart: the replicas' all-reduced halves against one device's
    whole batch (tests/roundoff.py)."""
    return roundoff_tolerance([measured["weight_scale"]], ROUNDOFFS_PER_STEP)


@pytest.mark.parametrize("name", PER_REPLICA)
def test_each_replica_perturbs_along_its_own_shard_gradient(measured, name):
    run = measured[name]
    assert run["error_vs_mean_of_shard_steps"] <= one_step_tolerance(measured)
    # The oracle can tell the two modes apart.
    assert run["error_vs_global_batch_step"] > 10 * one_step_tolerance(measured)


@pytest.mark.parametrize("name", SYNCED)
def test_sync_perturbation_equals_the_global_batch_step(measured, name):
    run = measured[name]
    assert run["error_vs_global_batch_step"] <= one_step_tolerance(measured)
    assert run["error_vs_mean_of_shard_steps"] > 10 * one_step_tolerance(measured)


def test_replica_weights_stay_identical(measured):
    # Bit for bit: every replica runs the same compiled step on all-reduced values.
    for name in (*FIT_RUNS, "custom_loop", "non_finite", "non_finite_loss_scale"):
        assert measured[name]["replica_spread"] == 0.0, name


@pytest.mark.parametrize("name", PER_REPLICA)
def test_logs_average_the_replicas(measured, name):
    """Each replica logs in its own batch's units (loss scale and the
    1/num_replicas of the loss undone); the epoch logs are their mean."""
    expected = measured["single_device"]["mean_of_shard_logs"]
    for key in LOGGED:
        assert measured[name]["logs"][key] == pytest.approx(expected[key], rel=1e-5), key


@pytest.mark.parametrize("name", SYNCED)
def test_sync_perturbation_logs_are_the_global_batch_logs(measured, name):
    """Every replica perturbs along the global gradient: the loss, the gap, |g| and
    cos(g, g_p) are the single-device values on the whole batch."""
    expected = measured["single_device"]["global_batch_logs"]
    for key in LOGGED:
        assert measured[name]["logs"][key] == pytest.approx(expected[key], rel=1e-5), key


def test_the_oracles_tell_the_modes_apart(measured):
    single = measured["single_device"]
    for key in ("perturbed_loss", "grad_norm", "grad_cosine"):
        assert single["mean_of_shard_logs"][key] != pytest.approx(
            single["global_batch_logs"][key], rel=1e-4
        ), key


def test_non_finite_shard_skips_the_step_on_every_replica(measured):
    for name in ("non_finite", "non_finite_loss_scale"):
        run = measured[name]
        assert run["weight_change"] == 0.0, name
        assert run["skipped_steps"] == 1, name
        assert run["iterations"] == 0, name
    assert measured["non_finite_loss_scale"]["scale_ratio"] == 0.5


def test_custom_loop_under_the_strategy_matches_fit(measured):
    run = measured["custom_loop"]
    # Two steps of batch 4 (a replica's 2 examples each).
    assert run["error_vs_fit"] <= 2 * one_step_tolerance(measured)
    assert run["error_vs_train_step"] <= 2 * one_step_tolerance(measured)


def _scenarios():
    strategy = two_cpu_strategy()
    import keras
    import tensorflow as tf

    from trainer.gsam import (
        GSAM,
        apply_sharpness_aware_gradients,
        sharpness_aware_gradients,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    options = dict(rho=0.1, alpha=0.5)

    def build(optimizer=None, **gsam_options):
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(5, activation="tanh"),
                keras.layers.Dense(1),
            ]
        )
        gsam_model = GSAM(model, **{**options, **gsam_options})
        gsam_model.compile(optimizer=optimizer or keras.optimizers.SGD(LR), loss="mse")
        return gsam_model

    def trained(gsam_model):
        return [v.numpy() for v in gsam_model.trainable_variables]

    w0 = trained(build())

    def single_device_step(xs, ys):
        gsam_model = build()
        history = gsam_model.fit(xs, ys, batch_size=len(xs), verbose=0)
        weights = trained(gsam_model)
        return [(a - b) / LR for a, b in zip(w0, weights)], history.history

    first, first_logs = single_device_step(x[:4], y[:4])
    second, second_logs = single_device_step(x[4:], y[4:])
    whole, whole_logs = single_device_step(x, y)
    mean_of_shards = [w - LR * (a + b) / 2 for w, a, b in zip(w0, first, second)]
    global_step = [w - LR * d for w, d in zip(w0, whole)]

    results = {
        "weight_scale": largest_magnitude(global_step),
        "single_device": {
            "mean_of_shard_logs": {
                key: (first_logs[key][0] + second_logs[key][0]) / 2 for key in LOGGED
            },
            "global_batch_logs": {key: whole_logs[key][0] for key in LOGGED},
        }
    }
    for name, (sync, loss_scale) in FIT_RUNS.items():
        with strategy.scope():
            optimizer = keras.optimizers.SGD(LR)
            if loss_scale:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            gsam_model = build(optimizer, sync_perturbation=sync)
        history = gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        weights = trained(gsam_model)
        results[name] = {
            "error_vs_mean_of_shard_steps": largest_difference(weights, mean_of_shards),
            "error_vs_global_batch_step": largest_difference(weights, global_step),
            "replica_spread": replica_spread(strategy, gsam_model.trainable_variables),
            "logs": {key: history.history[key][0] for key in LOGGED},
        }

    bad_x = x.copy()
    bad_x[6, 1] = np.nan  # In the second replica's half only.
    for name, loss_scale in (
        ("non_finite", False),
        ("non_finite_loss_scale", True),
    ):
        with strategy.scope():
            optimizer = keras.optimizers.SGD(LR, momentum=0.9)
            if loss_scale:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            gsam_model = build(optimizer)
        gsam_model.fit(bad_x, y, batch_size=8, shuffle=False, verbose=0)
        results[name] = {
            "weight_change": largest_difference(trained(gsam_model), w0),
            "replica_spread": replica_spread(strategy, gsam_model.trainable_variables),
            "skipped_steps": int(gsam_model.skipped_steps.numpy()),
            "iterations": int(gsam_model.optimizer.iterations.numpy()),
        }
        if loss_scale:
            results[name]["scale_ratio"] = float(optimizer.dynamic_scale.numpy()) / 2.0**15

    with strategy.scope():
        by_fit, by_function, by_train_step = build(), build(), build()
        for gsam_model in (by_function, by_train_step):
            gsam_model.optimizer.build(gsam_model.trainable_variables)
    by_fit.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    )

    def replica_step(batch):
        step = sharpness_aware_gradients(
            by_function,
            *batch,
            rho=by_function.current_rho(),
            alpha=by_function.alpha,
        )
        apply_sharpness_aware_gradients(by_function, step)
        return step.logs

    @tf.function
    def loop_step(batch):
        strategy.run(replica_step, args=(batch,))
        strategy.run(by_train_step.train_step, args=(batch,))

    for batch in dataset:
        loop_step(batch)
    results["custom_loop"] = {
        "error_vs_fit": largest_difference(trained(by_function), trained(by_fit)),
        "error_vs_train_step": largest_difference(trained(by_train_step), trained(by_fit)),
        "replica_spread": max(
            replica_spread(strategy, by_function.trainable_variables),
            replica_spread(strategy, by_train_step.trainable_variables),
        ),
    }
    return results


if __name__ == "__main__":
    print(json.dumps(_scenarios()))
