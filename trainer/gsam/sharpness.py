"""How sharp a trained minimum is: loss-landscape measures of a Keras model on a dataset.

`measure` reports, over the model's trainable weights `w` and the whole dataset:

- SAM's first-order worst case `L(w + e)`, `e = rho * g / |g|` (Foret et al. 2021), or with
  `adaptive=True` the `|w|`-scaled `e = rho * |w| * g / |g|` (Kwon et al. 2021), and the
  surrogate gap `L(w + e) - L(w)` that GSAM minimizes (Zhuang et al. 2022);
- the worst case in that ball, by projected gradient ascent from `e` (Andriushchenko et al.
  2023);
- the Hessian's top eigenvalue by power iteration and its trace by Hutchinson's estimator,
  both from Hessian-vector products (PyHessian, Yao et al. 2020).

The perturbation is `trainer.gsam.formulas.perturbation`, the one GSAM trains with.

Example:

```python
import keras
import numpy as np
import tensorflow as tf
from trainer.gsam import sharpness

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = np.arange(64) % 3
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
result = sharpness.measure(model, dataset, keras.losses.SparseCategoricalCrossentropy())
print(result["top_eigenvalue"], result["surrogate_gap"])
```
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from trainer.config import _check_int, _check_number
from trainer.gsam import formulas

RESULT_KEYS = (
    "loss",
    "perturbed_loss",
    "surrogate_gap",
    "worst_case_loss",
    "top_eigenvalue",
    "eigen_iterations",
    "trace",
    "trace_stderr",
    "seconds",
)


def measure(
    model,
    dataset,
    loss,
    rho=0.05,
    adaptive=False,
    ascent_steps=5,
    power_iterations=20,
    hutchinson_samples=10,
    seed=0,
    tolerance=1e-3,
    max_examples=None,
):
    """Measures the sharpness of `model` at its current weights on `dataset`.

    The model runs in inference mode (`training=False`): BatchNormalization uses its moving
    statistics and dropout is off, so the function measured is the one that is deployed. All
    evaluations at other weights read them from tensors inside a `keras.StatelessScope`; no
    variable is ever assigned, so the model's weights afterwards are bit-identical to before.
    Losses, gradients and Hessian-vector products are averages over all examples (batches
    weighted by their size), as if the dataset were one batch. The batches are read once and
    held in memory.

    Args:
        model: a built Keras model (the inner model, not a `GSAM` wrapper).
        dataset: `(x, y)` batches: a `tf.data.Dataset` or any iterable.
        loss: a `keras.losses.Loss` with the default reduction `"sum_over_batch_size"`.
        rho: radius of the perturbation ball, > 0.
        adaptive: scale the perturbation by `|w|` (the ball is `|e / |w|| <= rho`).
        ascent_steps: steps of projected gradient ascent for `worst_case_loss`, >= 0. Each
            moves `rho` along the normalized ascent direction and projects back on the ball;
            on the sphere that turns `e` halfway towards the gradient there.
        power_iterations: the most Hessian-vector products for `top_eigenvalue`, >= 1.
        hutchinson_samples: Rademacher vectors for `trace`, >= 2.
        seed: seeds the random start of power iteration and the Rademacher vectors.
        tolerance: power iteration stops once the eigenvalue changes by at most this
            fraction of itself between two iterations.
        max_examples: read at most this many examples from `dataset`; `None` reads all.

    Returns:
        A dict of floats with `RESULT_KEYS`:
        `loss` (`L(w)`), `perturbed_loss` (`L(w + e)`), `surrogate_gap` (their difference),
        `worst_case_loss` (the largest loss the ascent found in the ball, never below
        `perturbed_loss`), `top_eigenvalue` (the Hessian eigenvalue of largest magnitude,
        signed, as PyHessian reports it), `eigen_iterations` (how many products power
        iteration used, an int), `trace` and `trace_stderr` (Hutchinson's estimate and its
        standard error) and `seconds` (wall time of the whole call, reading the data
        included).
    """
    _check_loss(loss)
    check_arguments(
        rho=rho,
        adaptive=adaptive,
        ascent_steps=ascent_steps,
        power_iterations=power_iterations,
        hutchinson_samples=hutchinson_samples,
        seed=seed,
        tolerance=tolerance,
        max_examples=max_examples,
    )
    if not getattr(model, "built", False) or not model.trainable_variables:
        raise ValueError("model must be a built Keras model with trainable weights.")

    start = time.perf_counter()
    objective = DatasetLoss(model, loss, read_batches(dataset, max_examples))
    weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]
    rng = np.random.default_rng(seed)
    kind = "adaptive" if adaptive else "sam"

    clean_loss, grads = objective.value_and_gradient(weights)
    first_order = formulas.perturbation(grads, weights, rho, kind)
    perturbed_loss, worst_case_loss = _ascend(
        objective, weights, first_order, rho, kind, ascent_steps
    )
    top_eigenvalue, eigen_iterations = _top_eigenvalue(
        objective, weights, rng, power_iterations, tolerance
    )
    trace, trace_stderr = _hutchinson_trace(objective, weights, rng, hutchinson_samples)
    return {
        "loss": clean_loss,
        "perturbed_loss": perturbed_loss,
        "surrogate_gap": perturbed_loss - clean_loss,
        "worst_case_loss": worst_case_loss,
        "top_eigenvalue": top_eigenvalue,
        "eigen_iterations": eigen_iterations,
        "trace": trace,
        "trace_stderr": trace_stderr,
        "seconds": time.perf_counter() - start,
    }


def read_batches(dataset, max_examples=None):
    """The `(x, y)` batches of `dataset` as tensors, cut after `max_examples` examples."""
    batches, count = [], 0
    for batch in dataset:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        if y is None or sample_weight is not None:
            raise ValueError(
                "dataset must yield (x, y) batches, without sample weights; got a batch of "
                f"{len(batch) if isinstance(batch, tuple) else 1} element(s)."
            )
        size = int(tf.shape(keras.tree.flatten(x)[0])[0])
        if max_examples is not None and count + size > max_examples:
            size = max_examples - count
            x, y = keras.tree.map_structure(lambda t, size=size: t[:size], (x, y))
        batches.append(keras.tree.map_structure(tf.convert_to_tensor, (x, y)))
        count += size
        if count == max_examples:
            break
    if not count:
        raise ValueError("dataset yielded no examples.")
    return batches


class DatasetLoss:
    """The mean loss over a list of batches, as a function of the trainable weights.

    Every method takes `weights`, one tensor per `model.trainable_variables` entry, and runs
    the model at those weights in inference mode without assigning any variable.
    """

    def __init__(self, model, loss, batches):
        self.model = model
        self.loss = loss
        self.batches = batches
        self.num_examples = sum(int(tf.shape(y)[0]) for _, y in batches)
        self._batch_value = tf.function(self._batch_sum, reduce_retracing=True)
        self._batch_gradient = tf.function(self._batch_sum_and_gradient, reduce_retracing=True)
        self._batch_hvp = tf.function(self._batch_hessian_vector_product, reduce_retracing=True)

    def value(self, weights):
        """The mean loss, a float."""
        total = sum(float(self._batch_value(weights, x, y)) for x, y in self.batches)
        return total / self.num_examples

    def value_and_gradient(self, weights):
        """The mean loss (a float) and its gradient (one tensor per weight)."""
        total, grads = 0.0, None
        for x, y in self.batches:
            value, batch_grads = self._batch_gradient(weights, x, y)
            total += float(value)
            grads = batch_grads if grads is None else _add(grads, batch_grads)
        return total / self.num_examples, _scale(grads, 1.0 / self.num_examples)

    def hessian_vector_product(self, weights, vector):
        """The Hessian of the mean loss at `weights` times `vector`."""
        product = None
        for x, y in self.batches:
            batch_product = self._batch_hvp(weights, vector, x, y)
            product = batch_product if product is None else _add(product, batch_product)
        return _scale(product, 1.0 / self.num_examples)

    def _batch_sum(self, weights, x, y):
        """The batch's summed loss: the mean the loss reduces to, times the batch size."""
        mapping = list(zip(self.model.trainable_variables, weights))
        with keras.StatelessScope(mapping):
            mean = self.loss(y, self.model(x, training=False))
        return tf.cast(mean, tf.float32) * tf.cast(tf.shape(y)[0], tf.float32)

    def _batch_sum_and_gradient(self, weights, x, y):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            value = self._batch_sum(weights, x, y)
        return value, tape.gradient(value, weights, unconnected_gradients="zero")

    def _batch_hessian_vector_product(self, weights, vector, x, y):
        # Backward over backward: the gradient of <grad L(w), v> is H v.
        with tf.GradientTape() as tape:
            tape.watch(weights)
            _, grads = self._batch_sum_and_gradient(weights, x, y)
            directional = formulas.inner_product(grads, vector)
        return tape.gradient(directional, weights, unconnected_gradients="zero")


def _ascend(objective, weights, first_order, rho, kind, steps):
    """`L(w + e)` at the first-order point, and the largest loss the ascent from it found."""
    perturbation = first_order
    losses = []
    for _ in range(steps):
        value, grads = objective.value_and_gradient(_add(weights, perturbation))
        losses.append(value)
        step = formulas.perturbation(grads, weights, rho, kind)
        perturbation = _project(_add(perturbation, step), weights, rho, kind)
    losses.append(objective.value(_add(weights, perturbation)))
    return losses[0], max(losses)


def _project(perturbation, weights, rho, kind):
    """Scales `perturbation` back into the ball of radius `rho` (in `|w|` units if adaptive)."""
    if kind == "adaptive":
        radius = formulas.global_norm(
            [tf.math.divide_no_nan(e, tf.abs(w)) for e, w in zip(perturbation, weights)]
        )
    else:
        radius = formulas.global_norm(perturbation)
    return _scale(perturbation, min(1.0, rho / float(radius)) if float(radius) > 0 else 1.0)


def _top_eigenvalue(objective, weights, rng, iterations, tolerance):
    """Power iteration with the Rayleigh quotient; returns (eigenvalue, products used)."""
    vector = _unit([rng.standard_normal(w.shape) for w in weights], weights)
    eigenvalue = None
    for iteration in range(1, iterations + 1):
        product = objective.hessian_vector_product(weights, vector)
        estimate = float(formulas.inner_product(product, vector))
        converged = eigenvalue is not None and abs(estimate - eigenvalue) <= tolerance * abs(
            eigenvalue
        )
        eigenvalue = estimate
        if converged or float(formulas.global_norm(product)) == 0.0:
            break
        vector = _unit(product, weights)
    return eigenvalue, iteration


def _hutchinson_trace(objective, weights, rng, samples):
    """Mean of `v^T H v` over Rademacher vectors `v`, and its standard error."""
    quadratic_forms = []
    for _ in range(samples):
        vector = [
            tf.constant(rng.choice([-1.0, 1.0], size=w.shape), dtype=w.dtype) for w in weights
        ]
        product = objective.hessian_vector_product(weights, vector)
        quadratic_forms.append(float(formulas.inner_product(product, vector)))
    stderr = float(np.std(quadratic_forms, ddof=1)) / math.sqrt(samples)
    return float(np.mean(quadratic_forms)), stderr


def _unit(vector, weights):
    tensors = [tf.cast(v, w.dtype) for v, w in zip(vector, weights)]
    return _scale(tensors, 1.0 / float(formulas.global_norm(tensors)))


def _add(xs, ys):
    return [x + y for x, y in zip(xs, ys)]


def _scale(tensors, factor):
    return [t * tf.cast(factor, t.dtype) for t in tensors]


def check_arguments(
    *,
    rho,
    adaptive,
    ascent_steps,
    power_iterations,
    hutchinson_samples,
    seed,
    tolerance,
    max_examples,
):
    """Raises a ValueError naming the first of `measure`'s settings that is out of range."""
    _check_number("rho", rho, low=0, low_inclusive=False)
    if not isinstance(adaptive, bool):
        raise ValueError(f"adaptive must be True or False, got {adaptive!r}.")
    _check_int("ascent_steps", ascent_steps, minimum=0)
    _check_int("power_iterations", power_iterations, minimum=1)
    _check_int("hutchinson_samples", hutchinson_samples, minimum=2)
    _check_int("seed", seed, minimum=0)
    _check_number("tolerance", tolerance, low=0)
    if max_examples is not None:
        _check_int("max_examples", max_examples, minimum=1)


def _check_loss(loss):
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"loss must be a keras.losses.Loss instance, got {loss!r}.")
    if loss.reduction != "sum_over_batch_size":
        raise ValueError(
            "loss must average over the batch (reduction='sum_over_batch_size'), so that "
            f"batches can be weighted by their size, got reduction={loss.reduction!r}."
        )
