"""GSAM's behaviour as a Keras 3 model: training mode, losses, logs, live
hyperparameters, failures, precision, compilation, accumulation, the rho
schedule tied to the learning rate and argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.roundoff import (
    ROUNDOFFS_PER_STEP,
    float_values,
    largest_difference,
    roundoff_tolerance,
)
from trainer.gsam import (
    GSAM,
    apply_sharpness_aware_gradients,
    sharpness_aware_gradients,
)
from trainer.gsam.rho import RhoScheduler


def _data(n=16, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def _mlp(seed=0, features=6, batch_norm=False, **dense_kwargs):
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((features,)),
        keras.layers.Dense(8, activation="tanh", **dense_kwargs),
    ]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.5))
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _assert_all_close(actual, expected, atol=1e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=0)


def _gradient(model, x, y, weights):
    """MSE loss (plus model.losses) and its gradient at `weights`, in
    training mode, computed on a clone."""
    clone = keras.models.clone_model(model)
    clone.set_weights(weights)
    with tf.GradientTape() as tape:
        pred = clone(x, training=True)
        loss = keras.ops.mean(keras.losses.mean_squared_error(y, pred))
        loss += sum(clone.losses)
    grads = tape.gradient(loss, clone.trainable_variables)
    return float(loss), [g.numpy() for g in grads], clone


def _per_batch_logs(key):
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(logs[key])
    )
    return seen, callback


# Training mode, state updates and losses.


def test_rho_0_alpha_0_is_the_base_optimizer():
    """Same BatchNorm statistics, dropout seeds and weights as plain Keras, within the
    roundoff of two differently compiled graphs (tests/roundoff.py)."""

    def build():
        keras.utils.set_random_seed(7)
        return keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, kernel_regularizer="l2", activity_regularizer="l2"),
                keras.layers.BatchNormalization(momentum=0.5),
                keras.layers.Dropout(0.5, seed=3),
                keras.layers.Dense(1),
            ]
        )

    x, y = _data(32)
    plain = build()
    initial = _values(plain.variables)
    plain.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    plain_history = plain.fit(x, y, batch_size=8, shuffle=False, verbose=0)

    def gsam(rho):
        inner = build()
        gsam_model = GSAM(inner, rho=rho, alpha=0.0)
        gsam_model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
        return inner, gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)

    inner, history = gsam(0.0)

    names = [v.path for v in inner.variables]
    assert any("moving_mean" in n for n in names)
    assert any("seed_generator" in n for n in names)
    # Every variable, BatchNorm statistics and seeds included, has moved...
    for before, after in zip(initial, _values(plain.variables)):
        assert not np.array_equal(before, after)
    # ...and GSAM moved it as plain Keras training did: four steps of roundoff apart.
    reference = float_values(plain.variables)
    tolerance = roundoff_tolerance(reference, 4 * ROUNDOFFS_PER_STEP)
    assert largest_difference(float_values(inner.variables), reference) <= tolerance
    losses = plain_history.history["loss"]
    assert largest_difference(history.history["loss"], losses) <= roundoff_tolerance(
        losses, 4 * ROUNDOFFS_PER_STEP
    )
    # Negative control: SAM at a small rho is far outside it.
    sam_inner, _ = gsam(0.01)
    assert largest_difference(float_values(sam_inner.variables), reference) > 10 * tolerance


def test_batch_norm_statistics_update_once_from_the_clean_pass():
    x, y = _data(16, features=4)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.Dense(1),
        ]
    )
    w0 = model.get_weights()
    rho = 0.5
    _, grads, _ = _gradient(model, x, y, w0)
    length = np.sqrt(sum(np.sum(g**2) for g in grads))
    kernel, bias = w0[0], w0[1]
    clean = x @ kernel + bias
    perturbed = x @ (kernel + rho * grads[0] / length) + (bias + rho * grads[1] / length)

    gsam_model = GSAM(model, rho=rho, alpha=0.1)
    gsam_model.compile(optimizer="sgd", loss="mse")
    gsam_model.fit(x, y, batch_size=16, verbose=0)

    bn = model.layers[1]
    once_mean, once_var = 0.5 * clean.mean(0), 0.5 + 0.5 * clean.var(0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), once_mean, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), once_var, atol=1e-5)
    # What a second update, or the perturbed pass's statistics, would give.
    twice_mean = 0.5 * once_mean + 0.5 * clean.mean(0)
    assert np.abs(bn.moving_mean.numpy() - twice_mean).max() > 1e-3
    assert np.abs(bn.moving_mean.numpy() - 0.5 * perturbed.mean(0)).max() > 1e-3


def test_dropout_is_active_with_the_same_mask_in_both_passes():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dropout(0.5, seed=1),
            keras.layers.Dense(1),
        ]
    )
    x, y = _data(8, features=32)
    inference_loss = float(
        keras.ops.mean(keras.losses.mean_squared_error(y, model(x, training=False)))
    )
    gsam_model = GSAM(model, rho=0.0, alpha=0.5)
    gsam_model.compile(optimizer="sgd", loss="mse")
    logs = gsam_model.fit(x, y, batch_size=8, verbose=0).history
    assert abs(logs["loss"][0] - inference_loss) > 1e-3
    # rho = 0: the perturbed pass is the clean pass, mask included.
    assert logs["perturbed_loss"][0] == logs["loss"][0]
    np.testing.assert_allclose(logs["grad_cosine"][0], 1.0, atol=1e-6)


def _expected_step_logs(model, x, y, rho):
    """GSAM's statistics of one step on (x, y) at the model's weights, computed by hand,
    and the clone that computed the clean pass."""
    w0 = model.get_weights()
    loss, grads, clone = _gradient(model, x, y, w0)
    length = np.sqrt(sum(np.sum(g**2) for g in grads))
    perturbed = [w + rho * g / length for w, g in zip(w0, grads)]
    perturbed_loss, perturbed_grads, _ = _gradient(model, x, y, perturbed)
    cosine = sum(np.sum(a * b) for a, b in zip(grads, perturbed_grads)) / (
        length * np.sqrt(sum(np.sum(g**2) for g in perturbed_grads))
    )
    logs = {
        "loss": loss,
        "perturbed_loss": perturbed_loss,
        "surrogate_gap": perturbed_loss - loss,
        "grad_norm": length,
        "grad_cosine": cosine,
    }
    return logs, clone


def test_logs_clean_loss_clean_metrics_and_gsam_statistics():
    x, y = _data(16)
    model = _mlp(
        kernel_regularizer=keras.regularizers.L2(0.01),
        activity_regularizer=keras.regularizers.L2(0.01),
    )
    rho = 0.2
    expected, clone = _expected_step_logs(model, x, y, rho)
    mae = float(np.mean(np.abs(clone(x).numpy() - y)))

    gsam_model = GSAM(model, rho=rho, alpha=0.1)
    gsam_model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    logs = {k: v[0] for k, v in gsam_model.fit(x, y, batch_size=16, verbose=0).history.items()}

    expected.update(mae=mae, rho=rho, skipped_steps=0.0)
    assert sorted(logs) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(logs[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
    # Evaluation reports only what it measures.
    assert sorted(gsam_model.evaluate(x, y, verbose=0, return_dict=True)) == [
        "loss",
        "mae",
    ]


def test_epoch_logs_are_means_over_the_epochs_batches_reset_every_epoch():
    """Losses and the gap are weighted by batch size, the gradient statistics are not."""
    x, y = _data(10)
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]  # batch_size=4: 4, 4 and 2 examples
    model = _mlp()
    gsam_model = GSAM(model, rho=0.1, alpha=0.2)
    # Learning rate 0: every step sees the initial weights; only rho changes, per epoch.
    gsam_model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    rhos = [0.1, 0.4]
    history = gsam_model.fit(
        x,
        y,
        batch_size=4,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[RhoScheduler(lambda epoch, rho: rhos[epoch])],
    ).history

    sizes = np.array([4, 4, 2])
    for epoch, rho in enumerate(rhos):
        steps = [_expected_step_logs(model, x[batch], y[batch], rho)[0] for batch in batches]
        for name in ("loss", "perturbed_loss", "surrogate_gap", "grad_norm", "grad_cosine"):
            values = np.array([step[name] for step in steps])
            weights = sizes if name in ("loss", "perturbed_loss", "surrogate_gap") else None
            expected = np.average(values, weights=weights)
            assert history[name][epoch] == pytest.approx(expected, rel=1e-5), (name, epoch)
    # The epochs differ, so a mean carried over from the first would show.
    assert abs(history["surrogate_gap"][1] - history["surrogate_gap"][0]) > 1e-3


def test_class_weight_counts_like_sample_weight():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    labels = (rng.random(32) < 0.3).astype("float32")

    def train(**fit_kwargs):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1, activation="sigmoid")])
        gsam_model = GSAM(model, rho=0.1, alpha=0.2)
        gsam_model.compile(optimizer="sgd", loss="binary_crossentropy")
        gsam_model.fit(x, labels, batch_size=32, verbose=0, **fit_kwargs)
        return model.get_weights()

    by_class = train(class_weight={0: 1.0, 1: 4.0})
    by_sample = train(sample_weight=np.where(labels == 1, 4.0, 1.0))
    unweighted = train()
    _assert_all_close(by_class, by_sample)
    assert np.abs(by_class[0] - unweighted[0]).max() > 1e-4


# Live hyperparameters.


class TracingGSAM(GSAM):
    traces = 0

    def train_step(self, data):
        type(self).traces += 1  # Runs once per trace, not per step.
        return super().train_step(data)


def test_hyperparameters_change_without_retracing():
    x, y = _data(16)
    model = _mlp()
    gsam_model = TracingGSAM(model, rho=0.05, alpha=0.3)
    gsam_model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    schedule = [0.01, 0.03]
    set_rho = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: setattr(gsam_model, "rho", schedule[batch])
    )
    seen, record = _per_batch_logs("rho")
    gsam_model.fit(
        x,
        y,
        batch_size=8,
        shuffle=False,
        verbose=0,
        callbacks=[set_rho, record],
    )
    np.testing.assert_allclose(seen, schedule, rtol=1e-6)
    traces = TracingGSAM.traces

    # rho = alpha = 0 now: the next step is a plain SGD step.
    gsam_model.rho = 0.0
    gsam_model.alpha = 0.0
    w = model.get_weights()
    _, grads, _ = _gradient(model, x[:8], y[:8], w)
    gsam_model.fit(x[:8], y[:8], batch_size=8, verbose=0)
    _assert_all_close(model.get_weights(), [a - 0.1 * g for a, g in zip(w, grads)])
    assert TracingGSAM.traces == traces


def test_hyperparameter_assignment_is_validated():
    constant = GSAM(_mlp(), rho=0.05)
    with pytest.raises(ValueError, match="`rho` must be >= 0"):
        constant.rho = -0.1
    with pytest.raises(ValueError, match="`alpha` must be >= 0"):
        constant.alpha = -1.0
    with pytest.raises(ValueError, match="`rho_max` does not apply"):
        constant.rho_max = 0.1
    tied = GSAM(_mlp(), rho_max=0.04, rho_min=0.02)
    with pytest.raises(ValueError, match="`rho` does not apply"):
        tied.rho = 0.1
    tied.rho_min = 0.01
    assert float(tied.rho_min.numpy()) == pytest.approx(0.01)
    with pytest.raises(ValueError, match=r"rho_min \(0.05\) above rho_max"):
        tied.rho_min = 0.05
    with pytest.raises(ValueError, match=r"rho_min \(0.01\) above rho_max \(0.005\)"):
        tied.rho_max = 0.005
    assert float(tied.rho_max.numpy()) == pytest.approx(0.04)


# Failures leave the model untouched.


def _state(gsam_model):
    return _values(gsam_model.model.variables) + _values(gsam_model.optimizer.variables)


@pytest.mark.parametrize("loss_scale", [False, True], ids=["sgd", "lso"])
def test_non_finite_gradient_skips_the_whole_update(loss_scale):
    x, y = _data(16)
    bad_x = x.copy()
    bad_x[3, 2] = np.nan
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    gsam_model = GSAM(_mlp(batch_norm=True), rho=0.05, alpha=0.1)
    gsam_model.compile(optimizer=optimizer, loss="mse")
    gsam_model.fit(x, y, batch_size=16, verbose=0)
    before = _state(gsam_model)
    scale = float(optimizer.dynamic_scale.numpy()) if loss_scale else None

    logs = gsam_model.fit(bad_x, y, batch_size=16, verbose=0).history
    assert logs["skipped_steps"] == [1.0]
    after = _state(gsam_model)
    if loss_scale:
        # Everything stays but the loss scale, which halves.
        assert float(optimizer.dynamic_scale.numpy()) == scale / 2
        after = [
            a
            for a, v in zip(after, _state_variables(gsam_model))
            if "dynamic_scale" not in v.path and "step_counter" not in v.path
        ]
        before = [
            b
            for b, v in zip(before, _state_variables(gsam_model))
            if "dynamic_scale" not in v.path and "step_counter" not in v.path
        ]
    # Bit for bit: a skipped step assigns nothing.
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)

    logs = gsam_model.fit(x, y, batch_size=16, verbose=0).history
    assert logs["skipped_steps"] == [1.0]
    assert int(gsam_model.optimizer.iterations.numpy()) == 2


def _state_variables(gsam_model):
    return gsam_model.model.variables + gsam_model.optimizer.variables


def test_weights_unchanged_when_a_step_fails_midway():
    x, y = _data(16)
    calls = {"n": 0}

    def failing_on_perturbed_pass(y_true, y_pred):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("perturbed pass failed")
        return keras.losses.mean_squared_error(y_true, y_pred)

    model = _mlp(batch_norm=True)
    gsam_model = GSAM(model, rho=0.5, alpha=0.1)
    gsam_model.compile(optimizer="sgd", loss=failing_on_perturbed_pass, run_eagerly=True)
    before = _values(model.variables)
    reset = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: calls.update(n=0)
    )
    with pytest.raises(RuntimeError, match="perturbed pass failed"):
        gsam_model.fit(x, y, batch_size=16, verbose=0, callbacks=[reset])
    assert calls["n"] == 2
    _assert_all_close(_values(model.variables), before, atol=0)
    assert int(gsam_model.optimizer.iterations.numpy()) == 0


# Precision, compilation and accumulation.


@pytest.fixture
def global_policy():
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


# A step computed in a reduced-precision compute dtype, of unit roundoff u (2**-11 for
# float16, 2**-8 for bfloat16), may differ from float32's by a few u of the largest update;
# where the variables themselves are bfloat16, the new weights are also rounded, by u * |w|.
ROUNDOFFS_PER_UPDATE = 4
# rho and alpha at which GSAM's update differs from SAM's by far more than that tolerance.
PRECISION_RHO, PRECISION_ALPHA = 0.5, 1.0


def _one_step_update(x, y, alpha=PRECISION_ALPHA):
    """GSAM (SGD, learning rate 0.1) from fixed weights; the model and its update, in
    float32."""
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )
    model.set_weights(_mlp_weights())
    before = [_as_float32(v) for v in model.trainable_variables]
    gsam_model = GSAM(model, rho=PRECISION_RHO, alpha=alpha)
    gsam_model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.1))
    gsam_model.fit(x, y, batch_size=len(x), verbose=0)
    return gsam_model, [b - _as_float32(v) for b, v in zip(before, model.trainable_variables)]


def _as_float32(variable):
    return keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32"))


def _mlp_weights():
    rng = np.random.default_rng(5)
    return [rng.normal(size=s).astype("float32") * 0.5 for s in [(6, 8), (8,), (8, 1), (1,)]]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"])
def test_reduced_precision_update_matches_float32(global_policy, policy):
    x, y = _data(32)
    _, reference = _one_step_update(x, y)
    global_policy(policy)
    gsam_model, update = _one_step_update(x, y)
    kernel = gsam_model.model.layers[0].kernel
    assert kernel.dtype == ("bfloat16" if policy == "bfloat16" else "float32")
    if policy == "mixed_float16":
        # The loss scale (2**15) must not leak into the update.
        assert isinstance(gsam_model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(gsam_model.optimizer.dynamic_scale.numpy()) == 2.0**15
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    tolerance = roundoff_tolerance(reference, ROUNDOFFS_PER_UPDATE, compute_dtype)
    if kernel.dtype == "bfloat16":
        tolerance += roundoff_tolerance(_mlp_weights(), 1, "bfloat16")
    assert largest_difference(update, reference) <= tolerance

    # Negative control: SAM's update in the same precision (GSAM without alpha) is out of it.
    _, sam_update = _one_step_update(x, y, alpha=0.0)
    assert largest_difference(sam_update, reference) > 3 * tolerance


def test_jit_compile_matches_graph_mode():
    x, y = _data(32)

    def train(jit_compile, alpha=0.2):
        model = _mlp(batch_norm=True)
        gsam_model = GSAM(model, rho=0.1, alpha=alpha)
        gsam_model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss="mse",
            jit_compile=jit_compile,
        )
        assert gsam_model.jit_compile is jit_compile
        gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        return float_values(model.variables)

    # XLA fuses and reorders: four steps of roundoff apart (tests/roundoff.py).
    reference = train(False)
    tolerance = roundoff_tolerance(reference, 4 * ROUNDOFFS_PER_STEP)
    assert largest_difference(train(True), reference) <= tolerance
    # Negative control: SAM's weights are far outside it.
    assert largest_difference(train(False, alpha=0.0), reference) > 10 * tolerance


def test_gradient_accumulation_averages_micro_batch_directions():
    x, y = _data(16)

    def train(x, y, **optimizer_kwargs):
        model = _mlp()
        gsam_model = GSAM(model, rho=0.1, alpha=0.3)
        gsam_model.compile(optimizer=keras.optimizers.SGD(1.0, **optimizer_kwargs), loss="mse")
        gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        return gsam_model, model.get_weights()

    w0 = _mlp().get_weights()
    _, first = train(x[:8], y[:8])
    _, second = train(x[8:], y[8:])
    gsam_model, accumulated = train(x, y, gradient_accumulation_steps=2)
    # Each micro-batch perturbs on its own (m-sharpness); the optimizer
    # applies the mean of the two directions once.
    expected = [w - ((w - a) + (w - b)) / 2 for w, a, b in zip(w0, first, second)]
    _assert_all_close(accumulated, expected, atol=1e-6)
    assert int(gsam_model.optimizer.iterations.numpy()) == 1


# rho tied to the learning rate.


def _rho_per_step(gsam_model, learning_rate, steps=4):
    x, y = _data(8 * steps)
    gsam_model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    seen, record = _per_batch_logs("rho")
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[record])
    return np.array(seen)


def test_rho_follows_the_learning_rate_schedule_every_step():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 4, alpha=0.1)
    rho = _rho_per_step(GSAM(_mlp(), rho_max=0.04, rho_min=0.02), schedule)
    lr = np.array([float(schedule(step)) for step in range(4)])
    np.testing.assert_allclose(rho, 0.02 + 0.02 * (lr - 0.01) / 0.09, rtol=1e-5)
    assert rho[0] == pytest.approx(0.04) and rho[-1] < rho[1]


def test_rho_is_clamped_to_its_bounds():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 4, alpha=0.1)
    gsam_model = GSAM(_mlp(), rho_max=0.04, rho_min=0.02, lr_max=0.08, lr_min=0.05)
    rho = _rho_per_step(gsam_model, schedule)
    lr = np.array([float(schedule(step)) for step in range(4)])
    expected = np.clip(0.02 + 0.02 * (lr - 0.05) / 0.03, 0.02, 0.04)
    np.testing.assert_allclose(rho, expected, rtol=1e-5)
    assert rho[0] == pytest.approx(0.04) and rho[-1] == pytest.approx(0.02)


def test_rho_follows_a_learning_rate_behind_a_loss_scale_optimizer():
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, 3, 0.01)
    gsam_model = GSAM(_mlp(), rho_max=0.04, rho_min=0.02)
    x, y = _data(32)
    gsam_model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(schedule)),
        loss="mse",
    )
    seen, record = _per_batch_logs("rho")
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[record])
    lr = np.array([float(schedule(step)) for step in range(4)])
    np.testing.assert_allclose(seen, 0.02 + 0.02 * (lr - 0.01) / 0.09, rtol=1e-5)


def test_constant_learning_rate_gives_rho_max():
    rho = _rho_per_step(GSAM(_mlp(), rho_max=0.04, rho_min=0.02), 0.1)
    np.testing.assert_allclose(rho, 0.04)


def test_schedule_without_bounds_needs_explicit_lr_bounds():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    with pytest.raises(ValueError, match="lr_max"):
        _rho_per_step(GSAM(_mlp(), rho_max=0.04, rho_min=0.02), schedule)
    rho = _rho_per_step(
        GSAM(_mlp(), rho_max=0.04, rho_min=0.02, lr_max=0.1, lr_min=0.0125),
        schedule,
    )
    np.testing.assert_allclose(
        rho,
        [0.04, 0.04 * 3 / 7 + 0.02 * 4 / 7, 0.04 / 7 + 0.02 * 6 / 7, 0.02],
        rtol=1e-5,
    )


# Arguments.


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(rho=-0.1), "rho"),
        (dict(alpha=-0.01), "alpha"),
        (dict(rho_max=0.01, rho_min=0.05), "rho_min"),
        (dict(rho_max=0.04), "rho_min"),
        (dict(rho_max=0.04, rho_min=0.02, lr_max=0.1, lr_min=0.1), "lr_max"),
        (dict(rho_max=0.04, rho_min=0.02, lr_max=0.01, lr_min=0.1), "lr_max"),
        (dict(rho_max=0.04, rho_min=0.02, lr_max=0.1), "lr_min"),
        (dict(rho=0.05, rho_max=0.04, rho_min=0.02), "rho"),
        (dict(lr_max=0.1, lr_min=0.01), "lr_max"),
        (dict(adaptive=True, asam=True), "asam"),
        (dict(asam=True, asam_eta=-1.0), "asam_eta"),
        (dict(eps=0.0), "eps"),
        (dict(adaptve=True), "adaptve"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GSAM(_mlp(), **kwargs)


def test_model_must_be_a_keras_model():
    with pytest.raises(ValueError, match="`model`"):
        GSAM(lambda x: x)


# The gradient function outside fit.


def test_custom_loop_reuses_the_training_step():
    x, y = _data(16)

    def compiled():
        gsam_model = GSAM(_mlp(batch_norm=True), rho=0.1, alpha=0.2)
        gsam_model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
        return gsam_model

    by_fit = compiled()
    by_fit.fit(x, y, batch_size=8, shuffle=False, verbose=0)

    by_loop = compiled()
    strategy = tf.distribute.get_strategy()

    @tf.function
    def step(x, y):
        def replica_step(x, y):
            out = sharpness_aware_gradients(
                by_loop, x, y, rho=by_loop.current_rho(), alpha=by_loop.alpha
            )
            apply_sharpness_aware_gradients(by_loop, out)
            return out.logs

        return strategy.run(replica_step, args=(x, y))

    for start in (0, 8):
        logs = step(x[start : start + 8], y[start : start + 8])
    assert set(logs) == {
        "loss",
        "perturbed_loss",
        "surrogate_gap",
        "rho",
        "grad_norm",
        "grad_cosine",
    }
    _assert_all_close(_values(by_loop.model.variables), _values(by_fit.model.variables))


def test_gradients_need_a_compiled_model():
    with pytest.raises(ValueError, match="compiled"):
        sharpness_aware_gradients(GSAM(_mlp()), *_data(4), rho=0.1, alpha=0.1)
