"""GSAM against a NumPy port of the official update.

`reference_gsam_gradient` transcribes `gsam_gradient` from
google-research/big_vision (`big_vision/trainers/proj/gsam/gsam.py`) to
NumPy in float64, plus ASAM's perturbation (Kwon et al., 2021). The tests
check `trainer.gsam.formulas` against it, and one `GSAM` training step of a small
MLP whose gradients are written out by hand.
"""

import keras
import numpy as np
import pytest

from trainer.gsam import GSAM, formulas


def _norm(tree):
    return np.sqrt(sum(np.sum(np.square(t)) for t in tree))


def reference_perturbation(params, grads, rho, adaptive, asam_eta=None, eps=1e-12):
    if asam_eta is not None:
        scale = [np.abs(w) + asam_eta for w in params]
        scaled = [t * g for t, g in zip(scale, grads)]
        length = _norm(scaled)
        return [t * tg * rho / (length + eps) for t, tg in zip(scale, scaled)]
    length = _norm(grads)
    if adaptive:
        return [np.abs(w) * rho * g / (length + eps) for w, g in zip(params, grads)]
    return [rho * g / (length + eps) for g in grads]


def reference_direction(g_clean, g_robust, alpha, minimize_fp):
    if minimize_fp:
        length = _norm(g_robust)
        g_robust_normalized = [g / length for g in g_robust]
        projection = sum(np.vdot(p, q) for p, q in zip(g_robust_normalized, g_clean))
        residual = [a - projection * b for a, b in zip(g_clean, g_robust_normalized)]
        return [a - b * alpha for a, b in zip(g_robust, residual)]
    length = _norm(g_clean)
    g_clean_normalized = [g / length for g in g_clean]
    projection = sum(np.vdot(p, q) for p, q in zip(g_clean_normalized, g_robust))
    residual = [a - projection * b for a, b in zip(g_robust, g_clean_normalized)]
    return [a + b * alpha for a, b in zip(g_clean, residual)]


def reference_gsam_gradient(
    loss_and_grads,
    params,
    rho,
    alpha,
    adaptive=False,
    minimize_fp=True,
    asam_eta=None,
):
    """Returns (clean loss, perturbed loss, GSAM direction)."""
    l_clean, g_clean = loss_and_grads(params)
    e = reference_perturbation(params, g_clean, rho, adaptive, asam_eta)
    l_robust, g_robust = loss_and_grads([w + d for w, d in zip(params, e)])
    direction = reference_direction(g_clean, g_robust, alpha, minimize_fp)
    return l_clean, l_robust, direction


def mlp_loss_and_grads(params, x, y, sample_weight, l2):
    """MSE of `Dense(tanh) -> Dense` plus `l2 * |W1|^2`, Keras's reduction."""
    w1, b1, w2, b2 = params
    hidden = np.tanh(x @ w1 + b1)
    residual = hidden @ w2 + b2 - y
    n, k = y.shape
    loss = np.sum(sample_weight * np.mean(residual**2, axis=1)) / n
    loss += l2 * np.sum(w1**2)
    d_out = 2 * sample_weight[:, None] * residual / (n * k)
    d_pre = (d_out @ w2.T) * (1 - hidden**2)
    grads = [
        x.T @ d_pre + 2 * l2 * w1,
        d_pre.sum(0),
        hidden.T @ d_out,
        d_out.sum(0),
    ]
    return loss, grads


def _random_tree(rng, dtype="float32"):
    return [rng.normal(size=s).astype(dtype) for s in [(3, 4), (4,), (2,)]]


@pytest.mark.parametrize(
    "form, adaptive, asam_eta",
    [("sam", False, None), ("adaptive", True, None), ("asam", False, 0.01)],
)
def test_perturbation_matches_reference(form, adaptive, asam_eta):
    rng = np.random.default_rng(0)
    grads, weights = _random_tree(rng), _random_tree(rng)
    expected = reference_perturbation(
        [w.astype("float64") for w in weights],
        [g.astype("float64") for g in grads],
        0.3,
        adaptive,
        asam_eta,
    )
    # A variable without gradient is skipped and keeps `None`.
    e = formulas.perturbation(
        grads + [None],
        weights + [weights[0]],
        0.3,
        form,
        asam_eta=asam_eta or 0.01,
    )
    assert e[-1] is None
    for actual, want in zip(e[:-1], expected):
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("minimize_fp", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_direction_matches_reference(minimize_fp, alpha):
    rng = np.random.default_rng(1)
    g, g_p = _random_tree(rng), _random_tree(rng)
    expected = reference_direction(
        [t.astype("float64") for t in g],
        [t.astype("float64") for t in g_p],
        alpha,
        minimize_fp,
    )
    d = formulas.gsam_direction(g + [None], g_p + [None], alpha, minimize_fp=minimize_fp)
    assert d[-1] is None
    for actual, want in zip(d[:-1], expected):
        np.testing.assert_allclose(actual, want, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_sam_direction():
    rng = np.random.default_rng(2)
    g, g_p = _random_tree(rng), _random_tree(rng)
    for minimize_fp, expected in ((True, g_p), (False, g)):
        d = formulas.gsam_direction(g, g_p, 0.0, minimize_fp=minimize_fp)
        # Bit for bit in any order: with alpha 0 the formula multiplies by 1 and adds 0.
        for actual, want in zip(d, expected):
            np.testing.assert_array_equal(actual, want)


@pytest.mark.parametrize("form", formulas.PERTURBATIONS)
def test_zero_gradients_give_zero_steps_not_nan(form):
    zeros = [np.zeros((3,), "float32"), np.zeros((2, 2), "float32")]
    weights = [np.ones((3,), "float32"), np.ones((2, 2), "float32")]
    e = formulas.perturbation(zeros, weights, 0.1, form)
    d = formulas.gsam_direction(zeros, zeros, 0.5)
    for t in e + d:
        np.testing.assert_array_equal(t, np.zeros_like(t))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_norms_and_products_accumulate_in_float32(dtype):
    # 300**2 overflows float16 (max 65504); the float32 norm does not.
    big = [keras.ops.full((4,), 300.0, dtype=dtype)]
    np.testing.assert_allclose(formulas.global_norm(big), 600.0, rtol=1e-6)
    e = formulas.perturbation(big, big, 0.5)
    assert keras.backend.standardize_dtype(e[0].dtype) == dtype
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(e[0], "float32")),
        0.25,
        rtol=1e-2,
    )


def test_unknown_perturbation_is_rejected():
    with pytest.raises(ValueError, match="perturbation"):
        formulas.perturbation([np.ones(2, "float32")], None, 0.1, "sharp")


STEP_CASES = {
    "gsam": dict(),
    "gsam_minimize_f": dict(minimize_fp=False),
    "adaptive": dict(adaptive=True),
    "adaptive_minimize_f": dict(adaptive=True, minimize_fp=False),
    "sam": dict(alpha=0.0),
    "rho_0": dict(rho=0.0),
    "rho_0_alpha_0": dict(rho=0.0, alpha=0.0),
    "asam": dict(asam=True, asam_eta=0.05),
}


def _mlp_problem(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, 5))
    y = rng.normal(size=(16, 2))
    params = [rng.normal(size=s) * 0.5 for s in [(5, 4), (4,), (4, 2), (2,)]]
    return x, y, params


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
@pytest.mark.parametrize("case", list(STEP_CASES))
def test_one_training_step_matches_reference(case, weighted):
    options = {"rho": 0.1, "alpha": 0.3, **STEP_CASES[case]}
    x, y, params = _mlp_problem()
    l2 = 0.01 if weighted else 0.0
    sample_weight = np.linspace(0.2, 2.0, len(x)) if weighted else np.ones(len(x))

    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                4,
                activation="tanh",
                kernel_regularizer=keras.regularizers.L2(l2),
            ),
            keras.layers.Dense(2),
        ]
    )
    model.set_weights([p.astype("float32") for p in params])
    gsam_model = GSAM(model, **options)
    gsam_model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    history = gsam_model.fit(
        x.astype("float32"),
        y.astype("float32"),
        sample_weight=sample_weight.astype("float32") if weighted else None,
        batch_size=len(x),
        epochs=1,
        verbose=0,
    )

    asam_eta = options.get("asam_eta") if options.get("asam") else None
    l_clean, l_robust, direction = reference_gsam_gradient(
        lambda p: mlp_loss_and_grads(p, x, y, sample_weight, l2),
        params,
        options["rho"],
        options["alpha"],
        adaptive=options.get("adaptive", False),
        minimize_fp=options.get("minimize_fp", True),
        asam_eta=asam_eta,
    )
    for variable, p, d in zip(model.trainable_variables, params, direction):
        np.testing.assert_allclose(
            variable.numpy(), p - d, rtol=1e-5, atol=1e-5, err_msg=variable.path
        )
    np.testing.assert_allclose(history.history["loss"][0], l_clean, rtol=1e-5)
    np.testing.assert_allclose(history.history["perturbed_loss"][0], l_robust, rtol=1e-5)
