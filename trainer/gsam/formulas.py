"""The GSAM update on lists of gradient tensors.

The math of `gsam_gradient` in google-research/big_vision
(`big_vision/trainers/proj/gsam/gsam.py`), written for lists of tensors that
match a model's `trainable_variables`. All norms and inner products are taken
in float32 over all tensors together (one global vector). `None` entries
(variables without a gradient) are skipped and stay `None`. Every formula
touches each parameter in as few passes as possible: on small models the
elementwise work is a visible part of a step.

Example:

```python
import numpy as np
from trainer.gsam import formulas

g = [np.array([3.0, 0.0], "float32")]
g_p = [np.array([1.0, 1.0], "float32")]
e = formulas.perturbation(g, weights=None, rho=0.5)  # [[0.5, 0.0]]
d = formulas.gsam_direction(g, g_p, alpha=0.1)  # [[0.85, 1.15]]
u = formulas.flatness_direction(g, g_p)  # [[0.0, 0.71]]
d_cheap = formulas.reused_gsam_direction(g, u, alpha=0.1)  # [[2.90, 2.26]]
```
"""

import tensorflow as tf

PERTURBATIONS = ("sam", "adaptive", "asam")


def global_norm(tensors):
    """L2 norm of all `tensors` taken together, in float32."""
    # tf.nn.l2_loss(t) is sum(t ** 2) / 2 in one pass over t.
    halves = [tf.nn.l2_loss(_f32(t)) for t in tensors if t is not None]
    return tf.sqrt(2.0 * tf.add_n(halves)) if halves else tf.zeros(())


def inner_product(xs, ys):
    """Sum of `sum(x * y)` over the pairs, in float32; `None` pairs count 0."""
    products = [
        tf.reduce_sum(_f32(x) * _f32(y)) for x, y in zip(xs, ys) if x is not None and y is not None
    ]
    return tf.add_n(products) if products else tf.zeros(())


def perturbation(grads, weights, rho, perturbation="sam", eps=1e-12, asam_eta=0.01):
    """The ascent step `e` to the perturbed weights `w + e`.

    Args:
        grads: list of gradient tensors (or `None`).
        weights: list of weight tensors matching `grads`; only read when
            `perturbation` is `"adaptive"` or `"asam"`.
        rho: perturbation radius, a scalar.
        perturbation: one of
            - `"sam"`: `e = rho * g / (|g| + eps)` (SAM, big_vision's default);
            - `"adaptive"`: `e = rho * |w| * g / (|g| + eps)` (big_vision's
              `adaptive_perturbation=True`, as in the GSAM paper);
            - `"asam"`: `e = rho * T**2 * g / (|T * g| + eps)` with
              `T = |w| + asam_eta` (ASAM, Kwon et al. 2021).
        eps: added to the norm before dividing.
        asam_eta: the offset `eta` of ASAM's `T`; ignored otherwise.

    Returns:
        A list with one tensor of the gradient's dtype (or `None`) per entry
        of `grads`.
    """
    if perturbation not in PERTURBATIONS:
        raise ValueError(
            f"`perturbation` must be one of {PERTURBATIONS}. "
            f"Received: perturbation={perturbation!r}"
        )
    rho = _f32(rho)
    if perturbation == "sam":
        step = rho / (global_norm(grads) + eps)
        return [None if g is None else _like(_f32(g) * step, g) for g in grads]
    offset = asam_eta if perturbation == "asam" else 0.0
    scales = [None if g is None else tf.abs(_f32(w)) + offset for g, w in zip(grads, weights)]
    if perturbation == "adaptive":
        step = rho / (global_norm(grads) + eps)
        return [None if g is None else _like(t * _f32(g) * step, g) for g, t in zip(grads, scales)]
    scaled = [None if g is None else t * _f32(g) for g, t in zip(grads, scales)]
    step = rho / (global_norm(scaled) + eps)
    return [
        None if g is None else _like(t * tg * step, g) for g, t, tg in zip(grads, scales, scaled)
    ]


def gsam_direction(grads, perturbed_grads, alpha, minimize_fp=True, eps=1e-12):
    """The GSAM descent direction `d` from clean and perturbed gradients.

    With `g = grads`, `g_p = perturbed_grads` and `u^ = u / (|u| + eps)`:

    - `minimize_fp=True` (GSAM as published): `d = g_p - alpha * (g -
      <g, g_p^> g_p^)`, descend on the perturbed loss and ascend on the
      surrogate gap orthogonally to `g_p`;
    - `minimize_fp=False`: `d = g + alpha * (g_p - <g_p, g^> g^)`, descend on
      the clean loss and on the gap orthogonally to `g`.

    `alpha=0` gives SAM's `d = g_p` (or plain `g`). The map is linear in
    `(g, g_p)` jointly, so loss-scaled gradients give loss-scaled directions.

    Args:
        grads: list of clean gradients `g` (or `None`).
        perturbed_grads: list of gradients `g_p` at the perturbed weights.
        alpha: the GSAM coefficient, a scalar.
        minimize_fp: which of the two forms above to use.
        eps: added to the norm before dividing.

    Returns:
        A list with one tensor of the gradient's dtype (or `None`) per entry.
    """
    projected_out = perturbed_grads if minimize_fp else grads
    scale_g, scale_g_p = _gsam_scales(
        inner_product(grads, perturbed_grads), global_norm(projected_out), alpha, minimize_fp, eps
    )
    return [
        (None if g is None or g_p is None else _like(scale_g_p * _f32(g_p) + scale_g * _f32(g), g))
        for g, g_p in zip(grads, perturbed_grads)
    ]


def flatness_direction(grads, perturbed_grads, eps=1e-12):
    """LookSAM's flatness direction, for the unit perturbed gradient:

        u = g_p^ - <g_p^, g^> g^

    The component of the perturbed gradient `g_p` orthogonal to the clean
    gradient `g` (LookSAM, Liu et al., CVPR 2022): the part of `g_p` that
    steers towards flat regions, where the part along `g` mostly restates the
    descent. Up to its norm it is also GSAM's own surrogate-gap term: with
    `minimize_fp=False`, `gsam_direction` is `g + alpha * |g_p| * u`. Taken
    of the unit vectors, `u` is free of the gradients' units (loss scale,
    replicas) and keeps the angle between them: `|u| = sin(angle(g, g_p))`,
    which grows with rho and vanishes at `rho=0`.

    Args:
        grads: list of clean gradients `g` (or `None`).
        perturbed_grads: list of gradients `g_p` at the perturbed weights.
        eps: added to every norm before dividing.

    Returns:
        A list with one tensor of the gradient's dtype (or `None`) per entry.
    """
    norm_g = global_norm(grads) + eps
    norm_g_p = global_norm(perturbed_grads) + eps
    c = inner_product(grads, perturbed_grads) / tf.square(norm_g)
    return [
        None if g is None or g_p is None else _like((_f32(g_p) - c * _f32(g)) / norm_g_p, g)
        for g, g_p in zip(grads, perturbed_grads)
    ]


def reused_gsam_direction(grads, flatness, alpha, reuse_scale=None, minimize_fp=True, eps=1e-12):
    """The GSAM direction of a step without a perturbed pass (LookSAM reuse).

    An estimate of the perturbed gradient from the clean gradient `g` and the
    stored `u = flatness_direction(g_old, g_p_old)`, scaled to `|g|`:

    - `reuse_scale=None` (adaptive): `g~_p = g + |g| * u`. For small angles
      `g~_p` makes the angle with `g` that the last perturbed pass measured
      (`|u| = sin(angle)`), so the reused component follows rho, its
      schedule and the angle as they change during training.
    - `reuse_scale=c`, a number (LookSAM's fixed coefficient):
      `g~_p = g + c * |g| / |u| * u`.

    and then GSAM's own decomposition, `gsam_direction(g, g~_p, alpha,
    minimize_fp)`, so alpha enters exactly as in an exact step:

    - `minimize_fp=True`: `d = g~_p - alpha * (g - <g, g~_p^> g~_p^)`;
    - `minimize_fp=False`: `d = g + alpha * (g~_p - <g~_p, g^> g^)`.

    `alpha=0` is LookSAM's update `d = g~_p`. A zero `u` (e.g. `rho=0`)
    gives `d = g`. `g~_p` is never built: `<g, g~_p>` and `|g~_p|` follow from
    `|g|`, `|u|` and `<g, u>`, and `d` is one multiply-add of `g` and `u`.
    The result scales like `g` (loss scale, replicas).

    Args:
        grads: list of clean gradients `g` (or `None`).
        flatness: list of stored directions `u`, matching `grads`; entries
            where `grads` is `None` are skipped.
        alpha: the GSAM coefficient, a scalar.
        reuse_scale: `None` (adaptive), or LookSAM's fixed coefficient of
            the rescaled `u`, a scalar >= 0.
        minimize_fp: the GSAM form; see `gsam_direction`.
        eps: added to every norm before dividing.

    Returns:
        A list with one tensor of the gradient's dtype (or `None`) per entry.
    """
    flatness = [None if g is None else v for g, v in zip(grads, flatness)]
    norm_g = global_norm(grads)
    norm_v = global_norm(flatness)
    g_dot_v = inner_product(grads, flatness)
    if reuse_scale is None:
        beta = norm_g
    else:
        beta = _f32(reuse_scale) * norm_g / (norm_v + eps)
    # <g, g~_p> and |g~_p| for g~_p = g + beta * u.
    inner = tf.square(norm_g) + beta * g_dot_v
    if minimize_fp:
        squared = tf.square(norm_g) + 2.0 * beta * g_dot_v + tf.square(beta * norm_v)
        projected_out_norm = tf.sqrt(tf.maximum(squared, 0.0))
    else:
        projected_out_norm = norm_g
    scale_g, scale_g_p = _gsam_scales(inner, projected_out_norm, alpha, minimize_fp, eps)
    # scale_g * g + scale_g_p * (g + beta * u)
    scale_v = scale_g_p * beta
    scale_g = scale_g + scale_g_p
    return [
        None if g is None or v is None else _like(scale_g * _f32(g) + scale_v * _f32(v), g)
        for g, v in zip(grads, flatness)
    ]


def _gsam_scales(inner, projected_out_norm, alpha, minimize_fp, eps):
    """`(a, b)` with GSAM's direction `d = a * g + b * g_p`.

    `inner` is `<g, g_p>`; `projected_out_norm` is the norm of the gradient
    that the surrogate-gap term is made orthogonal to: `|g_p|` when
    `minimize_fp`, else `|g|`.
    """
    alpha = _f32(alpha)
    c = inner / tf.square(projected_out_norm + eps)
    # Both forms rearranged to one multiply-add per element:
    # g_p - alpha * (g - c * g_p) = (1 + alpha * c) * g_p - alpha * g, and
    # g + alpha * (g_p - c * g) = (1 - alpha * c) * g + alpha * g_p.
    if minimize_fp:
        return -alpha, 1.0 + alpha * c
    return 1.0 - alpha * c, alpha


def _f32(x):
    return tf.cast(x, tf.float32)


def _like(x, reference):
    return tf.cast(x, reference.dtype)
