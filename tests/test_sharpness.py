"""trainer.gsam.sharpness against a model whose Hessian is known exactly, and its guarantees:
weights untouched, inference mode, determinism, argument checks."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.gsam import sharpness

INPUTS, OUTPUTS, EXAMPLES, BATCH = 6, 2, 100, 32


def _linear_problem(seed=0):
    """Dense(OUTPUTS, use_bias=False) on fixed inputs, MSE, batches 32, 32, 32 and 4.

    The loss is |XW - Y|^2 / (n k), so the Hessian is block-diagonal with k blocks
    2 X^T X / (n k).
    """
    rng = np.random.default_rng(seed)
    # Columns of different scales spread the eigenvalues apart.
    x = (rng.normal(size=(EXAMPLES, INPUTS)) * np.linspace(0.5, 2.0, INPUTS)).astype("float32")
    y = rng.normal(size=(EXAMPLES, OUTPUTS)).astype("float32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((INPUTS,)), keras.layers.Dense(OUTPUTS, use_bias=False)])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    return model, dataset, x.astype("float64"), y.astype("float64")


def _mse(x, y, kernel):
    return float(np.mean((x @ kernel - y) ** 2))


def _mse_gradient(x, y, kernel):
    return 2.0 * x.T @ (x @ kernel - y) / y.size


def _hessian_block(x):
    return 2.0 * x.T @ x / (EXAMPLES * OUTPUTS)


def _measure(model, dataset, **kwargs):
    return sharpness.measure(model, dataset, keras.losses.MeanSquaredError(), **kwargs)


def test_the_result_has_every_key_and_a_consistent_gap():
    model, dataset, _, _ = _linear_problem()
    result = _measure(model, dataset, power_iterations=3, hutchinson_samples=2)
    assert set(result) == set(sharpness.RESULT_KEYS)
    assert result["surrogate_gap"] == result["perturbed_loss"] - result["loss"]
    assert result["seconds"] > 0


def test_top_eigenvalue_matches_numpy():
    model, dataset, x, _ = _linear_problem()
    result = _measure(model, dataset, power_iterations=200, tolerance=1e-7)
    expected = np.linalg.eigvalsh(_hessian_block(x))[-1]
    np.testing.assert_allclose(result["top_eigenvalue"], expected, rtol=1e-3)
    assert result["eigen_iterations"] < 200  # it stopped on the tolerance


def test_power_iteration_stops_early_on_a_loose_tolerance():
    model, dataset, _, _ = _linear_problem()
    loose = _measure(model, dataset, power_iterations=50, tolerance=0.5)
    tight = _measure(model, dataset, power_iterations=50, tolerance=1e-7)
    assert loose["eigen_iterations"] < tight["eigen_iterations"]


def test_trace_is_within_three_standard_errors_of_the_exact_trace():
    model, dataset, x, _ = _linear_problem()
    result = _measure(model, dataset, power_iterations=1, hutchinson_samples=30)
    exact = OUTPUTS * np.trace(_hessian_block(x))
    assert result["trace_stderr"] > 0
    assert abs(result["trace"] - exact) <= 3 * result["trace_stderr"], (result, exact)


@pytest.mark.parametrize("adaptive", [False, True])
def test_losses_match_a_direct_computation(adaptive):
    model, dataset, x, y = _linear_problem()
    kernel = model.get_weights()[0].astype("float64")
    rho = 0.1
    g = _mse_gradient(x, y, kernel)
    scale = np.abs(kernel) if adaptive else 1.0
    e = rho * scale * g / np.linalg.norm(g)
    result = _measure(model, dataset, rho=rho, adaptive=adaptive, power_iterations=1)
    np.testing.assert_allclose(result["loss"], _mse(x, y, kernel), rtol=1e-5)
    np.testing.assert_allclose(result["perturbed_loss"], _mse(x, y, kernel + e), rtol=1e-5)


def test_the_worst_case_is_above_the_first_order_point_and_inside_the_ball():
    model, dataset, x, y = _linear_problem()
    kernel = model.get_weights()[0].astype("float64")
    rho = 0.5
    result = _measure(model, dataset, rho=rho, ascent_steps=10, power_iterations=1)
    assert result["worst_case_loss"] > result["perturbed_loss"]
    # A quadratic: L(w + e) <= L(w) + rho |g| + rho^2 lambda_max / 2 for |e| <= rho.
    bound = (
        _mse(x, y, kernel)
        + rho * np.linalg.norm(_mse_gradient(x, y, kernel))
        + rho**2 * np.linalg.eigvalsh(_hessian_block(x))[-1] / 2
    )
    assert result["worst_case_loss"] <= bound * (1 + 1e-5)


def test_without_ascent_steps_the_worst_case_is_the_first_order_point():
    model, dataset, _, _ = _linear_problem()
    result = _measure(model, dataset, ascent_steps=0, power_iterations=1)
    assert result["worst_case_loss"] == result["perturbed_loss"]


def _batch_norm_dropout_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((INPUTS,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(OUTPUTS),
        ]
    )


def test_weights_are_bit_identical_and_inference_mode_is_used():
    model = _batch_norm_dropout_model()
    _, dataset, x, y = _linear_problem()
    # Moving statistics away from their initial values: a training-mode pass would differ.
    model.layers[1].moving_mean.assign(np.full(8, 0.3, "float32"))
    before = [v.numpy().copy() for v in model.variables]
    result = _measure(model, dataset, power_iterations=2)
    for variable, value in zip(model.variables, before):
        assert np.array_equal(variable.numpy(), value), variable.path
    inference_loss = keras.losses.MeanSquaredError()(y, model(x, training=False))
    np.testing.assert_allclose(result["loss"], float(inference_loss), rtol=1e-5)


def test_the_same_seed_gives_the_same_result_and_another_seed_another_trace():
    model = _batch_norm_dropout_model()
    _, dataset, _, _ = _linear_problem()
    first, again, other = (
        _measure(model, dataset, power_iterations=3, hutchinson_samples=3, seed=seed)
        for seed in (0, 0, 1)
    )
    for key in sharpness.RESULT_KEYS:
        if key != "seconds":
            assert first[key] == again[key], key
    assert first["trace"] != other["trace"]


def test_max_examples_measures_only_the_first_examples():
    model, dataset, x, y = _linear_problem()
    kernel = model.get_weights()[0].astype("float64")
    result = _measure(model, dataset, power_iterations=1, max_examples=40)
    np.testing.assert_allclose(result["loss"], _mse(x[:40], y[:40], kernel), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rho": 0.0}, "rho must be > 0"),
        ({"adaptive": 1}, "adaptive must be True or False"),
        ({"ascent_steps": -1}, "ascent_steps must be an integer >= 0"),
        ({"power_iterations": 0}, "power_iterations must be an integer >= 1"),
        ({"hutchinson_samples": 1}, "hutchinson_samples must be an integer >= 2"),
        ({"tolerance": -1e-3}, "tolerance must be >= 0"),
        ({"max_examples": 0}, "max_examples must be an integer >= 1"),
        ({"loss": "mse"}, "loss must be a keras.losses.Loss"),
        ({"loss": keras.losses.MeanSquaredError(reduction="sum")}, "reduction='sum_over"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    model, dataset, _, _ = _linear_problem()
    kwargs = {"loss": keras.losses.MeanSquaredError(), **kwargs}
    with pytest.raises(ValueError, match=message):
        sharpness.measure(model, dataset, **kwargs)


def test_an_empty_dataset_or_one_without_labels_is_refused():
    model, dataset, x, _ = _linear_problem()
    with pytest.raises(ValueError, match="yielded no examples"):
        _measure(model, dataset.take(0))
    with pytest.raises(ValueError, match=r"must yield \(x, y\) batches"):
        _measure(model, tf.data.Dataset.from_tensor_slices(x).batch(BATCH))
