"""GSAM with `perturb_every=k` (LookSAM-style reuse of the flatness direction).

The oracle is a NumPy float64 transcription of the documented formulas on the
hand-differentiated MLP of test_gsam_reference.py; exact steps are checked
against exact GSAM. MirroredStrategy runs in a fresh interpreter (`python -m
tests.test_gsam_lookahead`), like test_gsam_distributed.py.
"""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.roundoff import (
    ROUNDOFFS_PER_STEP,
    float_values,
    largest_difference,
    largest_magnitude,
    roundoff_tolerance,
)
from tests.test_gsam_distributed import (
    replica_spread,
    run_scenarios,
    two_cpu_strategy,
)
from tests.test_gsam_reference import (
    _mlp_problem,
    _norm,
    mlp_loss_and_grads,
    reference_direction,
    reference_perturbation,
)
from trainer.config import TrainingConfig
from trainer.gsam import (
    GSAM,
    PERTURBED_PASS_LOGS,
    apply_sharpness_aware_gradients,
    formulas,
    sharpness_aware_gradients,
)

# GSAM.compile's warning about XLA on CPU, expected where a test compiles with XLA.
XLA_ON_CPU_WARNING = "ignore:`perturb_every` > 1 with `jit_compile=True`:UserWarning"


def reference_flatness(g, g_p):
    """u = g_p^ - <g_p^, g^> g^."""
    unit = [t / _norm(g) for t in g]
    unit_p = [t / _norm(g_p) for t in g_p]
    along = sum(np.vdot(a, b) for a, b in zip(unit_p, unit))
    return [a - along * b for a, b in zip(unit_p, unit)]


def reference_reused_direction(g, u, alpha, reuse_scale, minimize_fp):
    """GSAM's direction of (g, g~_p): g~_p = g + |g| * u (`reuse_scale` None), else
    g~_p = g + reuse_scale * |g| / |u| * u."""
    beta = _norm(g) if reuse_scale is None else reuse_scale * _norm(g) / _norm(u)
    estimate = [a + beta * v for a, v in zip(g, u)]
    return reference_direction(g, estimate, alpha, minimize_fp)


def _reference_mlp(params, l2=0.0):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=keras.regularizers.L2(l2)),
            keras.layers.Dense(2),
        ]
    )
    model.set_weights([p.astype("float32") for p in params])
    return model


def _reference_step(params, x, y, rho, alpha, adaptive, minimize_fp):
    """One exact GSAM step's direction and the flatness direction it stores."""
    ones = np.ones(len(x))
    _, g = mlp_loss_and_grads(params, x, y, ones, 0.0)
    e = reference_perturbation(params, g, rho, adaptive)
    _, g_p = mlp_loss_and_grads([w + d for w, d in zip(params, e)], x, y, ones, 0.0)
    return reference_direction(g, g_p, alpha, minimize_fp), reference_flatness(g, g_p)


def _data(n=16, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, features)).astype("float32"),
        rng.normal(size=(n, 1)).astype("float32"),
    )


def _mlp(seed=0, features=6, batch_norm=False, dropout=False, output_dtype=None):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((features,)), keras.layers.Dense(8, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.5))
    if dropout:
        layers.append(keras.layers.Dropout(0.3, seed=4))
    layers.append(keras.layers.Dense(1, dtype=output_dtype))
    return keras.Sequential(layers)


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _per_batch_logs(*keys):
    seen = {key: [] for key in keys}

    def record(batch, logs):
        for key in keys:
            seen[key].append(float(logs[key]))

    return seen, keras.callbacks.LambdaCallback(on_train_batch_end=record)


# Exact steps.


def test_perturb_every_1_is_exact_gsam_within_roundoff():
    """k=1 adds no state and no log, and its steps equal those of the reuse path made to
    perturb at every step (through its `tf.cond`), within float32 roundoff: the two are
    differently compiled graphs, which round differently under oneDNN (tests/roundoff.py)."""
    x, y = _data(32)

    def compiled(alpha=0.2, **options):
        gsam_model = GSAM(_mlp(batch_norm=True, dropout=True), rho=0.1, alpha=alpha, **options)
        gsam_model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
        return gsam_model

    exact = compiled()
    history = exact.fit(x, y, batch_size=8, shuffle=False, verbose=0).history
    assert exact.flatness_direction is None
    assert "perturbed_step" not in history
    assert not any("flatness" in v.path or "until" in v.path for v in exact.variables)

    forced = compiled(perturb_every=2)
    forced.optimizer.build(forced.trainable_variables)

    @tf.function
    def step(x, y):
        out = sharpness_aware_gradients(
            forced,
            x,
            y,
            rho=forced.current_rho(),
            alpha=forced.alpha,
            perturb=tf.constant(True),
            flatness=forced.flatness_direction,
            reuse_scale=forced.reuse_scale,
        )
        apply_sharpness_aware_gradients(forced, out)
        return out.logs

    for start in range(0, 32, 8):
        logs = step(x[start : start + 8], y[start : start + 8])
    assert float(logs["perturbed_step"]) == 1.0
    reference = float_values(exact.model.variables)
    tolerance = roundoff_tolerance(reference, 4 * ROUNDOFFS_PER_STEP)
    assert largest_difference(float_values(forced.model.variables), reference) <= tolerance

    # Negative controls: a SAM step and a GSAM step with alpha 5% off are far outside it.
    for alpha in (0.0, 0.19):
        other = compiled(alpha=alpha)
        other.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        assert largest_difference(float_values(other.model.variables), reference) > 10 * tolerance


# Which steps run the perturbed pass.


@pytest.mark.filterwarnings(XLA_ON_CPU_WARNING)
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_only_steps_0_k_2k_run_the_perturbed_pass(jit_compile):
    calls = tf.Variable(0, dtype=tf.int64, trainable=False)

    def count_call(inputs):
        calls.assign_add(1)
        return inputs

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Lambda(count_call), keras.layers.Dense(1)]
    )
    gsam_model = GSAM(model, rho=0.1, alpha=0.2, perturb_every=3)
    gsam_model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    passes = []
    seen, record = _per_batch_logs("perturbed_step")
    count = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: calls.assign(0),
        on_train_batch_end=lambda batch, logs: passes.append(int(calls.numpy())),
    )
    x, y = _data(56)
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[count, record])

    assert passes == [2, 1, 1, 2, 1, 1, 2]
    assert seen["perturbed_step"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert int(gsam_model.steps_until_perturbation.numpy()) == 2


# The step without the perturbed pass.


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(minimize_fp=False),
        dict(alpha=0.0, reuse_scale=0.7),
        dict(adaptive=True, reuse_scale=0.3),
    ],
    ids=["gsam", "minimize_f", "looksam", "adaptive_perturbation_fixed_scale"],
)
def test_cheap_step_matches_the_numpy_reference(options):
    options = {"rho": 0.1, "alpha": 0.3, **options}
    reuse_scale = options.get("reuse_scale")
    minimize_fp = options.get("minimize_fp", True)
    adaptive = options.get("adaptive", False)
    lr = 0.5
    x, y, params = _mlp_problem()
    model = _reference_mlp(params)
    gsam_model = GSAM(model, perturb_every=3, **options)
    gsam_model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    gsam_model.fit(x.astype("float32"), y.astype("float32"), batch_size=8, shuffle=False, verbose=0)

    d0, g_v = _reference_step(
        params, x[:8], y[:8], options["rho"], options["alpha"], adaptive, minimize_fp
    )
    w1 = [w - lr * d for w, d in zip(params, d0)]
    _, g1 = mlp_loss_and_grads(w1, x[8:], y[8:], np.ones(8), 0.0)
    d1 = reference_reused_direction(g1, g_v, options["alpha"], reuse_scale, minimize_fp)
    w2 = [w - lr * d for w, d in zip(w1, d1)]
    for variable, expected in zip(model.trainable_variables, w2):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-5)
    for stored, expected in zip(gsam_model.flatness_direction, g_v):
        np.testing.assert_allclose(stored.numpy(), expected, rtol=1e-5, atol=1e-5)
    # The reused step is not the plain step.
    plain = [w - lr * g for w, g in zip(w1, g1)]
    assert max(np.abs(v.numpy() - p).max() for v, p in zip(model.trainable_variables, plain)) > 1e-3


def test_reused_direction_matches_reference_and_skips_missing_gradients():
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (4,), (2,)]
    g = [rng.normal(size=s).astype("float32") for s in shapes]
    u = [0.3 * rng.normal(size=s).astype("float32") for s in shapes]
    for minimize_fp in (True, False):
        for reuse_scale in (None, 0.7):
            d = formulas.reused_gsam_direction(
                g + [None], u + [u[0]], 0.4, reuse_scale, minimize_fp
            )
            assert d[-1] is None
            expected = reference_reused_direction(
                [t.astype("float64") for t in g], [t.astype("float64") for t in u], 0.4,
                reuse_scale, minimize_fp,
            )  # fmt: skip
            for actual, want in zip(d[:-1], expected):
                np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-6)
    # No stored direction yet (zeros): the step is the clean gradient.
    zeros = [np.zeros_like(t) for t in g]
    for reuse_scale in (None, 0.7):
        for actual, want in zip(formulas.reused_gsam_direction(g, zeros, 0.4, reuse_scale), g):
            np.testing.assert_allclose(actual, want, rtol=1e-6)


def test_flatness_direction_is_orthogonal_to_g_with_the_sine_of_the_angle_as_norm():
    rng = np.random.default_rng(4)
    g = [rng.normal(size=(5,)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")]
    g_p = [t + rng.normal(size=t.shape).astype("float32") for t in g]
    u = formulas.flatness_direction(g, g_p)
    expected = reference_flatness(
        [t.astype("float64") for t in g], [t.astype("float64") for t in g_p]
    )
    for actual, want in zip(u, expected):
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-6)
    assert abs(float(formulas.inner_product(g, u))) < 1e-5
    cosine = sum(np.vdot(a, b) for a, b in zip(g, g_p)) / (_norm(g) * _norm(g_p))
    assert float(formulas.global_norm(u)) == pytest.approx(np.sqrt(1 - cosine**2), rel=1e-5)
    # Free of the gradients' units: scaling g_p (a loss scale) changes nothing.
    for a, b in zip(formulas.flatness_direction(g, [1024.0 * t for t in g_p]), u):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# Logs.


def test_perturbed_pass_logs_average_only_the_perturbing_steps():
    x, y = _data(32)
    gsam_model = GSAM(_mlp(), rho=0.2, alpha=0.1, perturb_every=2)
    gsam_model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    keys = ("loss", "perturbed_loss", "surrogate_gap", "grad_cosine", "grad_norm")
    seen, record = _per_batch_logs(*keys)
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[record])

    def first_step_logs(rho):
        exact = GSAM(_mlp(), rho=rho, alpha=0.1)
        exact.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        return exact.fit(x[:8], y[:8], batch_size=8, verbose=0).history

    # Step 0 is an exact GSAM step on the same batch, within the roundoff of two differently
    # compiled graphs at each log's scale (the gap is a difference of losses).
    first, other_rho = first_step_logs(0.2), first_step_logs(0.19)
    for key in keys:
        scale = first["perturbed_loss"][0] if key == "surrogate_gap" else first[key][0]
        tolerance = roundoff_tolerance([scale], ROUNDOFFS_PER_STEP)
        assert abs(seen[key][0] - first[key][0]) <= tolerance, key
        if key in PERTURBED_PASS_LOGS:
            # Negative control: the perturbed pass at another rho is far outside it.
            assert abs(other_rho[key][0] - first[key][0]) > 10 * tolerance, key
    # Cheap steps 1 and 3 leave the running means of the perturbed pass's logs
    # alone; the clean loss and gradient norm move every step.
    for key in ("perturbed_loss", "surrogate_gap", "grad_cosine"):
        assert seen[key][1] == seen[key][0] and seen[key][3] == seen[key][2], key
        assert seen[key][2] != seen[key][1], key
    for key in ("loss", "grad_norm"):
        assert len(set(seen[key])) == 4, key
    assert min(seen["surrogate_gap"]) > 0


# Failures, precision, compilation, accumulation.


@pytest.mark.parametrize("loss_scale", [False, True], ids=["sgd", "lso"])
def test_non_finite_steps_keep_the_stored_direction_and_retry_perturbing(loss_scale):
    x, y = _data(40)
    x[8, 0] = np.nan  # step 1, cheap
    x[24, 0] = np.nan  # step 3, perturbing
    optimizer = keras.optimizers.SGD(0.1)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    gsam_model = GSAM(_mlp(), rho=0.1, alpha=0.2, perturb_every=3)
    gsam_model.compile(optimizer=optimizer, loss="mse")
    stored, countdown = [], []

    def snapshot(batch, logs):
        stored.append(_values(gsam_model.flatness_direction))
        countdown.append(int(gsam_model.steps_until_perturbation.numpy()))

    seen, record = _per_batch_logs("perturbed_step", "skipped_steps")
    gsam_model.fit(
        x,
        y,
        batch_size=8,
        shuffle=False,
        verbose=0,
        callbacks=[record, keras.callbacks.LambdaCallback(on_train_batch_end=snapshot)],
    )
    assert seen["perturbed_step"] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert seen["skipped_steps"] == [0.0, 1.0, 1.0, 2.0, 2.0]
    assert countdown == [2, 1, 0, 0, 2]
    for step in (1, 2, 3):  # bit for bit: nothing is assigned to the stored direction
        for a, b in zip(stored[step], stored[0]):
            np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(t).all() for t in stored[4])
    assert max(np.abs(a - b).max() for a, b in zip(stored[4], stored[0])) > 0


@pytest.fixture
def global_policy():
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_cheap_step_matches_float32(global_policy):
    """The loss scale (2**15) cancels out of the reused direction."""
    x, y = _data(16)

    def two_steps():
        model = _mlp(output_dtype="float32")
        gsam_model = GSAM(model, rho=0.05, alpha=0.3, perturb_every=2)
        gsam_model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        history = gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0).history
        return gsam_model, history, _values(model.trainable_variables)

    _, _, reference = two_steps()
    global_policy("mixed_float16")
    gsam_model, history, update = two_steps()
    assert isinstance(gsam_model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history["skipped_steps"] == [0.0]
    initial = _values(_mlp().trainable_variables)
    # g_v is the small difference of two nearly parallel gradients, so it
    # carries float16's rounding magnified (1.5% here, 0.14% for two exact
    # steps); a leaked loss scale would be off by orders of magnitude.
    for actual, expected, w0 in zip(update, reference, initial):
        scale = np.abs(expected - w0).max()
        np.testing.assert_allclose((actual - w0) / scale, (expected - w0) / scale, atol=3e-2)


@pytest.mark.filterwarnings(XLA_ON_CPU_WARNING)
def test_jit_compile_matches_graph_mode():
    x, y = _data(40)

    def train(jit_compile, alpha=0.2):
        gsam_model = GSAM(_mlp(batch_norm=True), rho=0.1, alpha=alpha, perturb_every=3)
        gsam_model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss="mse",
            jit_compile=jit_compile,
        )
        gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
        return float_values(gsam_model.model.variables + gsam_model.flatness_direction)

    # XLA fuses and reorders: five steps of roundoff apart (tests/roundoff.py).
    reference = train(False)
    tolerance = roundoff_tolerance(reference, 5 * ROUNDOFFS_PER_STEP)
    assert largest_difference(train(True), reference) <= tolerance
    # Negative control: SAM's weights are far outside it.
    assert largest_difference(train(False, alpha=0.0), reference) > 10 * tolerance


def test_jit_compile_on_cpu_warns_that_xla_slows_the_perturbed_pass():
    on_accelerator = bool(
        tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
    )
    x, y = _data(8)
    for perturb_every, jit_compile in ((2, True), (2, False), (1, True)):
        gsam_model = GSAM(_mlp(), perturb_every=perturb_every)
        gsam_model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gsam_model.fit(x, y, verbose=0)
        warned = any("jit_compile=False` on CPU" in str(w.message) for w in caught)
        expected = perturb_every > 1 and jit_compile and not on_accelerator
        assert warned == expected, (perturb_every, jit_compile)


def test_gradient_accumulation_counts_micro_batches():
    """Micro-batch A perturbs and stores g_v; micro-batch B, at the same
    weights, reuses it; the optimizer applies the mean of both directions."""
    x, y, params = _mlp_problem()
    model = _reference_mlp(params)
    gsam_model = GSAM(model, rho=0.1, alpha=0.3, perturb_every=2)
    gsam_model.compile(
        optimizer=keras.optimizers.SGD(1.0, gradient_accumulation_steps=2), loss="mse"
    )
    gsam_model.fit(x.astype("float32"), y.astype("float32"), batch_size=8, shuffle=False, verbose=0)

    d_a, g_v = _reference_step(params, x[:8], y[:8], 0.1, 0.3, False, True)
    _, g_b = mlp_loss_and_grads(params, x[8:], y[8:], np.ones(8), 0.0)
    d_b = reference_reused_direction(g_b, g_v, 0.3, None, True)
    for variable, w, a, b in zip(model.trainable_variables, params, d_a, d_b):
        np.testing.assert_allclose(variable.numpy(), w - (a + b) / 2, rtol=1e-5, atol=1e-5)
    assert int(gsam_model.optimizer.iterations.numpy()) == 1


# Saving.


def _trained(steps=4, **options):
    x, y = _data(8 * steps)
    gsam_model = GSAM(_mlp(batch_norm=True), rho=0.1, alpha=0.2, perturb_every=3, **options)
    gsam_model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    return gsam_model


def _resume(gsam_model):
    x, y = _data(24, seed=1)
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    return _values(gsam_model.model.variables)


def test_keras_file_round_trips_the_stored_direction(tmp_path):
    gsam_model = _trained(reuse_scale=0.5)
    assert int(gsam_model.steps_until_perturbation.numpy()) == 2
    path = tmp_path / "gsam.keras"
    gsam_model.save(path)
    loaded = keras.saving.load_model(path)

    assert (loaded.perturb_every, loaded.reuse_scale) == (3, 0.5)
    assert int(loaded.steps_until_perturbation.numpy()) == 2
    stored = _values(gsam_model.flatness_direction)
    assert max(np.abs(t).max() for t in stored) > 0
    for a, b in zip(_values(loaded.flatness_direction), stored):  # a round trip: bit for bit
        np.testing.assert_array_equal(a, b)
    # The next two steps reuse the stored direction: training resumes identically.
    for a, b in zip(_resume(loaded), _resume(gsam_model)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_checkpoint_resume_restores_the_stored_direction(tmp_path):
    gsam_model = _trained()
    checkpoint = tf.train.Checkpoint(model=gsam_model, optimizer=gsam_model.optimizer)
    path = checkpoint.save(str(tmp_path / "ckpt"))
    stored = _values(gsam_model.flatness_direction)
    uninterrupted = _resume(gsam_model)

    checkpoint.restore(path).assert_existing_objects_matched()
    for a, b in zip(_values(gsam_model.flatness_direction), stored):  # a round trip
        np.testing.assert_array_equal(a, b)
    assert int(gsam_model.steps_until_perturbation.numpy()) == 2
    for a, b in zip(_resume(gsam_model), uninterrupted):
        np.testing.assert_allclose(a, b, atol=1e-6)


# Arguments.


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3", None])
def test_invalid_perturb_every_raises_naming_it(value):
    with pytest.raises(ValueError, match="`perturb_every` must be an integer >= 1"):
        GSAM(_mlp(), perturb_every=value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reuse_scale=0.5), "`reuse_scale` only applies"),
        (dict(perturb_every=2, reuse_scale=-0.1), "`reuse_scale` must be >= 0"),
    ],
)
def test_invalid_reuse_scale_raises_naming_it(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GSAM(_mlp(), **kwargs)


def test_unbuilt_model_must_be_built_before_training():
    x, y = _data(8)
    gsam_model = GSAM(keras.Sequential([keras.layers.Dense(1)]), perturb_every=2)
    gsam_model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="gsam_model.build"):
        gsam_model.fit(x, y, verbose=0)
    built = GSAM(keras.Sequential([keras.layers.Dense(1)]), perturb_every=2)
    built.build((None, 6))
    built.compile(optimizer="sgd", loss="mse")
    built.fit(x, y, verbose=0)
    assert len(built.flatness_direction) == 2


def test_skipping_the_perturbed_pass_needs_a_matching_stored_direction():
    gsam_model = GSAM(_mlp(), perturb_every=2)
    gsam_model.compile(optimizer="sgd", loss="mse")
    x, y = _data(4)
    with pytest.raises(ValueError, match="only with the stored `flatness`"):
        sharpness_aware_gradients(gsam_model, x, y, rho=0.1, alpha=0.1, perturb=tf.constant(False))
    with pytest.raises(ValueError, match="one variable per trainable variable"):
        sharpness_aware_gradients(
            gsam_model,
            x,
            y,
            rho=0.1,
            alpha=0.1,
            perturb=tf.constant(False),
            flatness=gsam_model.flatness_direction[:-1],
        )


def test_training_config_reaches_the_wrapper():
    from trainer.training import fit

    config = TrainingConfig(model="mlp", optimizer="sam", perturb_every=5)
    model = _mlp()
    trained = fit.wrap_for_training(model, config, 0.1, 0.001)
    assert (trained.perturb_every, trained.reuse_scale) == (5, None)
    assert len(trained.flatness_direction) == len(model.trainable_variables)
    assert config.passes_per_step == pytest.approx(1.2)


# MirroredStrategy on 2 logical CPUs.


@pytest.fixture(scope="module")
def measured():
    return run_scenarios("tests.test_gsam_lookahead")


def test_replicas_stay_identical(measured):
    for name in ("per_replica", "sync_perturbation", "multi_worker_loop", "non_finite"):
        assert measured[name]["replica_spread"] == 0.0, name
    for name in ("per_replica", "sync_perturbation", "non_finite"):
        assert measured[name]["perturbed_steps"] == [1.0, 0.0, 1.0, 0.0], name


def test_each_replica_reuses_its_own_direction_unless_synced(measured):
    # |u| is at most 1: one step of roundoff of a unit vector apart.
    tolerance = roundoff_tolerance([1.0], ROUNDOFFS_PER_STEP)
    assert measured["per_replica"]["flatness_replica_gap"] > 10 * tolerance
    assert measured["sync_perturbation"]["flatness_replica_gap"] <= tolerance


def test_sync_perturbation_equals_the_global_batch_steps(measured):
    # Four steps of rounding apart (summed halves against the whole batch).
    tolerance = roundoff_tolerance([measured["weight_scale"]], 4 * ROUNDOFFS_PER_STEP)
    assert measured["sync_perturbation"]["error_vs_global_batch"] <= tolerance
    # The oracle tells reuse from exact steps.
    assert measured["sync_perturbation"]["error_vs_exact_gsam"] > 10 * tolerance


def test_multi_worker_loop_equals_fit(measured):
    run = measured["multi_worker_loop"]
    assert run["error_vs_fit"] <= roundoff_tolerance(
        [measured["weight_scale"]], 4 * ROUNDOFFS_PER_STEP
    )
    # Four steps: 0 and 2 perturbed, the last (3) did not, step 4 will.
    assert run["last_perturbed_step"] == 0.0
    assert run["steps_until_perturbation"] == 0


def test_non_finite_cheap_step_is_skipped_on_every_replica(measured):
    assert measured["non_finite"]["skipped_steps"] == 1


def _scenarios():
    strategy = two_cpu_strategy()
    from trainer.training import multi_worker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")

    def build(**options):
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)]
        )
        gsam_model = GSAM(model, **{"rho": 0.1, "alpha": 0.5, "perturb_every": 2, **options})
        gsam_model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return gsam_model

    def weights(gsam_model):
        return [v.numpy() for v in gsam_model.trainable_variables]

    def fit(gsam_model, x):
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(float(logs["perturbed_step"]))
        )
        gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0, callbacks=[record])
        return seen

    results = {}
    for name, sync in (("per_replica", False), ("sync_perturbation", True)):
        with strategy.scope():
            gsam_model = build(sync_perturbation=sync)
        perturbed = fit(gsam_model, x)
        results[name] = {
            "replica_spread": replica_spread(strategy, gsam_model.trainable_variables),
            "flatness_replica_gap": replica_spread(strategy, gsam_model.flatness_direction),
            "perturbed_steps": perturbed,
            "weights": weights(gsam_model),
        }
    global_batch = build()
    global_batch.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    exact = build(perturb_every=1)
    exact.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    synced = results["sync_perturbation"].pop("weights")
    synced_error = {
        "error_vs_global_batch": largest_difference(synced, weights(global_batch)),
        "error_vs_exact_gsam": largest_difference(synced, weights(exact)),
    }
    results["sync_perturbation"].update(synced_error)

    with strategy.scope():
        looped = build()

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(8)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(per_replica).repeat()

    history = multi_worker.fit(
        looped, dataset_fn, strategy=strategy, epochs=1, steps_per_epoch=4, log=lambda line: None
    )
    results["weight_scale"] = largest_magnitude(weights(exact))
    results["multi_worker_loop"] = {
        "replica_spread": replica_spread(strategy, looped.trainable_variables),
        "error_vs_fit": largest_difference(weights(looped), results["per_replica"].pop("weights")),
        "last_perturbed_step": history[-1]["perturbed_step"],
        "steps_until_perturbation": int(looped.steps_until_perturbation.numpy()),
    }

    bad_x = x.copy()
    bad_x[13, 2] = np.nan  # Step 1 (cheap), the second replica's half.
    with strategy.scope():
        failing = build()
    results["non_finite"] = {
        "perturbed_steps": fit(failing, bad_x),
        "replica_spread": replica_spread(strategy, failing.trainable_variables),
        "skipped_steps": int(failing.skipped_steps.numpy()),
    }
    return results


if __name__ == "__main__":
    print(json.dumps(_scenarios()))
