"""The GSAM update on lists of gradient tensors.

The math of `gsam_gradient` in google-research/big_vision
(`big_vision/trainers/proj/gsam/gsam.py`), written for lists of tensors that
match a model's `trainable_variables`. All norms and inner products are taken
in float32 over all tensors together (one global vector). `None` entries
(variables without a gradient) are skipped and stay `None`.

Example:

```python
import numpy as np
from trainer import gsam_math

g = [np.array([3.0, 0.0], "float32")]
g_p = [np.array([1.0, 1.0], "float32")]
e = gsam_math.perturbation(g, weights=None, rho=0.5)  # [[0.5, 0.0]]
d = gsam_math.gsam_direction(g, g_p, alpha=0.1)  # [[0.85, 1.15]]
```
"""

from keras import ops

PERTURBATIONS = ("sam", "adaptive", "asam")


def global_norm(tensors):
    """L2 norm of all `tensors` taken together, in float32."""
    return ops.sqrt(inner_product(tensors, tensors))


def inner_product(xs, ys):
    """Sum over pairs of `sum(x * y)` in float32; pairs with a `None` count 0."""
    total = ops.zeros((), "float32")
    for x, y in zip(xs, ys):
        if x is not None and y is not None:
            total += ops.sum(ops.cast(x, "float32") * ops.cast(y, "float32"))
    return total


def perturbation(
    grads, weights, rho, perturbation="sam", eps=1e-12, asam_eta=0.01
):
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
        eps: added to every norm before dividing.
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
    g32 = [None if g is None else ops.cast(g, "float32") for g in grads]
    # e = rho * scale * v / (|v| + eps), with (scale, v) = (1, g) for SAM,
    # (|w|, g) for the adaptive form and (T, T * g) for ASAM.
    if perturbation == "sam":
        scales, vectors = [1.0] * len(grads), g32
    else:
        offset = asam_eta if perturbation == "asam" else 0.0
        scales = [
            None if g is None else ops.abs(ops.cast(w, "float32")) + offset
            for g, w in zip(grads, weights)
        ]
        vectors = g32
        if perturbation == "asam":
            vectors = [
                None if g is None else t * g for g, t in zip(g32, scales)
            ]
    step = ops.cast(rho, "float32") / (global_norm(vectors) + eps)
    return [
        None if g is None else ops.cast(t * v * step, g.dtype)
        for g, t, v in zip(grads, scales, vectors)
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
    alpha = ops.cast(alpha, "float32")
    if minimize_fp:
        along = inner_product(grads, perturbed_grads) / ops.square(
            global_norm(perturbed_grads) + eps
        )
    else:
        along = inner_product(perturbed_grads, grads) / ops.square(
            global_norm(grads) + eps
        )
    directions = []
    for g, g_p in zip(grads, perturbed_grads):
        if g is None or g_p is None:
            directions.append(None)
            continue
        g32, gp32 = ops.cast(g, "float32"), ops.cast(g_p, "float32")
        if minimize_fp:
            d = gp32 - alpha * (g32 - along * gp32)
        else:
            d = g32 + alpha * (gp32 - along * g32)
        directions.append(ops.cast(d, g.dtype))
    return directions
