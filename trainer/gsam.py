"""GSAM and SAM training for Keras 3 models.

`GSAM` wraps a Keras model and trains it with Surrogate Gap Guided
Sharpness-Aware Minimization (Zhuang et al., ICLR 2022); `alpha=0` is SAM
(Foret et al., ICLR 2021). The update is big_vision's `gsam_gradient`
(`big_vision/trainers/proj/gsam/gsam.py`), implemented once:
`sharpness_aware_gradients` computes it and `apply_sharpness_aware_gradients`
applies it. `GSAM.train_step` calls both, and so can a custom distributed
loop inside `strategy.run`.

Example:

```python
import keras
from trainer.gsam import GSAM

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
gsam_model = GSAM(model, rho=0.05, alpha=0.01)
gsam_model.compile(
    optimizer="sgd",
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
x = keras.random.normal((64, 8))
y = keras.random.randint((64,), 0, 3)
history = gsam_model.fit(x, y, epochs=2, verbose=0)
# history.history has loss, accuracy, perturbed_loss, surrogate_gap, rho,
# grad_norm, grad_cosine and skipped_steps.
```
"""

import collections
import numbers
import warnings

import keras
import tensorflow as tf
from keras import ops

from trainer import gsam_math
from trainer import rho as rho_lib

# Logs measured by the perturbed pass; with `perturb_every > 1`, averaged
# over the steps that ran it.
PERTURBED_PASS_LOGS = ("perturbed_loss", "surrogate_gap", "grad_cosine")


class SharpnessAwareGradients(
    collections.namedtuple(
        "SharpnessAwareGradients",
        [
            "directions",
            "y_pred",
            "state_updates",
            "finite",
            "logs",
            "perturbed",
            "flatness_updates",
        ],
    )
):
    """What `sharpness_aware_gradients` returns.

    Attributes:
        directions: one tensor (or `None`) per `model.trainable_variables`
            entry: the descent direction `d`, in the units the optimizer
            expects from this replica (scaled like the loss by the
            optimizer's loss scale and by `1 / num_replicas`); apply it
            with `apply_sharpness_aware_gradients`.
        y_pred: predictions of the clean pass, for metrics.
        state_updates: `(variable, new_value)` pairs of the clean pass:
            BatchNormalization statistics, dropout seeds, loss metrics. The
            perturbed pass's updates are discarded.
        finite: scalar bool, whether both gradients were finite on every
            replica; `apply_sharpness_aware_gradients` changes nothing when
            it is false.
        logs: scalar tensors `loss` (clean), `perturbed_loss`,
            `surrogate_gap`, `rho`, `grad_norm` (of the clean gradient) and
            `grad_cosine` (between clean and perturbed gradients), unscaled
            and for this replica's batch. With a stored `flatness`, also
            `perturbed_step` (1 when the perturbed pass ran, else 0); on a
            step without it, `perturbed_loss` is the clean loss, the gap 0
            and the cosine 1.
        perturbed: scalar bool (or Python `True`), whether the perturbed
            pass ran.
        flatness_updates: `(variable, u)` pairs for the stored flatness
            direction; `apply_sharpness_aware_gradients` assigns them only
            after a finite step that ran the perturbed pass. Empty without
            `flatness`.
    """


def sharpness_aware_gradients(
    model,
    x,
    y=None,
    sample_weight=None,
    *,
    rho,
    alpha,
    perturbation="sam",
    asam_eta=0.01,
    minimize_fp=True,
    sync_perturbation=False,
    eps=1e-12,
    perturb=True,
    flatness=None,
    reuse_scale=None,
):
    """One GSAM gradient computation on a batch; changes no state.

    Runs the model twice with `training=True`, at the weights `w` and at
    `w + e`, each time through Keras's own `compute_loss` (so sample weights,
    class weights and regularization losses count), and combines the two
    gradients into the GSAM direction. The perturbed pass reads the weights
    from tensors: no variable is ever assigned `w + e`. Both passes see the
    same dropout masks, as in big_vision.

    Call it in a replica context: directly, from a `train_step`, or inside
    `strategy.run`. Each replica perturbs along its own gradient, as the
    official implementation does, and the optimizer averages the directions
    across replicas. With `sync_perturbation=True` the replicas all-reduce
    `g` and `g_p` first, so the step equals the single-device step on the
    global batch.

    LookSAM-style reuse: with `flatness` (variables holding the stored
    direction `u`, see `gsam_math.flatness_direction`) and a scalar bool
    `perturb`, a `tf.cond` runs the perturbed pass only when `perturb` is
    true; then the direction is exact GSAM's and the new `u` goes to
    `flatness_updates`. Otherwise the clean pass alone gives
    `gsam_math.reused_gsam_direction(g, u, alpha, reuse_scale)`. Under
    `sync_perturbation` the all-reduce of `g_p` runs on every step (a
    replica cannot skip a collective inside a `tf.cond`); its result is
    unused on steps without the perturbed pass.

    Args:
        model: a compiled Keras model; its `compute_loss` and `optimizer`
            (for loss scaling) are used.
        x, y, sample_weight: the batch, as `train_step` unpacks it.
        rho: perturbation radius, a scalar (tensor or variable).
        alpha: the GSAM coefficient; `0` is SAM.
        perturbation: `"sam"`, `"adaptive"` or `"asam"`; see
            `gsam_math.perturbation`.
        asam_eta: ASAM's offset, used with `perturbation="asam"`.
        minimize_fp: the GSAM form; see `gsam_math.gsam_direction`.
        sync_perturbation: average gradients across replicas before
            perturbing (and before decomposing).
        eps: added to every norm before dividing.
        perturb: Python `True` (always run the perturbed pass), or a scalar
            bool tensor; anything else needs `flatness`.
        flatness: `None`, or one variable per `model.trainable_variables`
            entry, of its shape, holding the stored `u`.
        reuse_scale: `None` (adaptive) or LookSAM's fixed coefficient of the
            reused direction; see `gsam_math.reused_gsam_direction`. Only
            read with `flatness`.

    Returns:
        A `SharpnessAwareGradients`.

    Example, a custom training loop (`gsam_model` compiled under
    `strategy.scope()`, its optimizer built):

    ```python
    @tf.function
    def train_step(x, y):
        def replica_step(x, y):
            step = sharpness_aware_gradients(
                gsam_model,
                x,
                y,
                rho=gsam_model.current_rho(),
                alpha=gsam_model.alpha,
            )
            apply_sharpness_aware_gradients(gsam_model, step)
            return step.logs

        logs = strategy.run(replica_step, args=(x, y))
        return strategy.reduce("MEAN", logs, axis=None)
    ```
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            "`model` must be compiled with an optimizer before computing sharpness-aware gradients."
        )
    replica = tf.distribute.get_replica_context()
    if replica is None:
        raise ValueError(
            "sharpness_aware_gradients must run in a replica context: call "
            "it inside `strategy.run`, not in a `strategy.scope()`."
        )
    if flatness is None and perturb is not True:
        raise ValueError(
            "A step may skip the perturbed pass (`perturb` other than True) only with the "
            f"stored `flatness` direction to reuse. Received: perturb={perturb!r}, flatness=None"
        )
    if flatness is not None:
        _check_flatness(flatness, model.trainable_variables)
    num_replicas = replica.num_replicas_in_sync
    weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]

    loss, grads, y_pred, state_updates = _training_pass(model, weights, x, y, sample_weight)
    if sync_perturbation:
        grads = _sum_over_replicas(replica, grads)

    def perturbed_pass():
        e = gsam_math.perturbation(grads, weights, rho, perturbation, eps=eps, asam_eta=asam_eta)
        perturbed_weights = [w if ei is None else w + ei for w, ei in zip(weights, e)]
        perturbed_loss, perturbed_grads, _, _ = _training_pass(
            model, perturbed_weights, x, y, sample_weight
        )
        return perturbed_loss, perturbed_grads

    # Without the perturbed pass, the clean loss and gradient stand in for it.
    perturbed_loss, perturbed_grads = _cond(perturb, perturbed_pass, lambda: (loss, grads))
    if sync_perturbation:
        perturbed_grads = _sum_over_replicas(replica, perturbed_grads)

    def exact_direction():
        directions = gsam_math.gsam_direction(
            grads, perturbed_grads, alpha, minimize_fp=minimize_fp, eps=eps
        )
        new_flatness = None
        if flatness is not None:
            new_flatness = gsam_math.flatness_direction(grads, perturbed_grads, eps=eps)
        inner = gsam_math.inner_product(grads, perturbed_grads)
        return directions, new_flatness, gsam_math.global_norm(perturbed_grads), inner

    def reused_direction():
        directions = gsam_math.reused_gsam_direction(
            grads, flatness, alpha, reuse_scale, minimize_fp=minimize_fp, eps=eps
        )
        stored = [None if g is None else tf.convert_to_tensor(v) for g, v in zip(grads, flatness)]
        grad_norm = gsam_math.global_norm(grads)
        return directions, stored, grad_norm, tf.square(grad_norm)

    directions, new_flatness, perturbed_norm, inner = _cond(
        perturb, exact_direction, reused_direction
    )
    if sync_perturbation:
        # Every replica holds the global direction; the optimizer sums the
        # replicas' contributions.
        directions = [None if d is None else d / num_replicas for d in directions]

    grad_norm = gsam_math.global_norm(grads)
    finite = ops.logical_and(ops.isfinite(grad_norm), ops.isfinite(perturbed_norm))
    if num_replicas > 1:
        nonfinite = replica.all_reduce(
            tf.distribute.ReduceOp.SUM,
            ops.cast(ops.logical_not(finite), "float32"),
        )
        finite = ops.equal(nonfinite, 0.0)

    # Keras divides each replica's loss by the number of replicas (the
    # optimizer sums gradients across them) and the loss scale multiplies it.
    loss_scale = ops.cast(model.optimizer.scale_loss(1.0), "float32")
    grad_units = (1.0 if sync_perturbation else num_replicas) / loss_scale
    loss = ops.cast(loss, "float32") * num_replicas
    perturbed_loss = ops.cast(perturbed_loss, "float32") * num_replicas
    logs = {
        "loss": loss,
        "perturbed_loss": perturbed_loss,
        "surrogate_gap": perturbed_loss - loss,
        "rho": ops.cast(rho, "float32"),
        "grad_norm": grad_norm * grad_units,
        "grad_cosine": inner / (grad_norm * perturbed_norm + eps),
    }
    flatness_updates = []
    if flatness is not None:
        logs["perturbed_step"] = ops.cast(perturb, "float32")
        flatness_updates = [(v, u) for v, u in zip(flatness, new_flatness) if u is not None]
    return SharpnessAwareGradients(
        directions, y_pred, state_updates, finite, logs, perturb, flatness_updates
    )


def _cond(perturb, perturbed_fn, reused_fn):
    """`perturbed_fn()` when `perturb` is Python `True`, else a `tf.cond`.

    The branches return the same structure, with `None` (variables without
    a gradient) in the same places; `tf.cond` only sees the tensors.
    """
    if perturb is True:
        return perturbed_fn()
    traced = {}

    def tensors_of(fn):
        def branch():
            traced["output"] = fn()
            return [t for t in tf.nest.flatten(traced["output"]) if t is not None]

        return branch

    tensors = iter(ops.cond(perturb, tensors_of(perturbed_fn), tensors_of(reused_fn)))
    flat = [None if t is None else next(tensors) for t in tf.nest.flatten(traced["output"])]
    return tf.nest.pack_sequence_as(traced["output"], flat)


def _check_flatness(flatness, variables):
    shapes = [tuple(v.shape) for v in variables]
    stored = [tuple(v.shape) for v in flatness]
    if stored != shapes:
        raise ValueError(
            "`flatness` must hold one variable per trainable variable, of its shape; did the "
            f"trainable variables change since it was made? Received shapes {stored} for "
            f"trainable variables of shapes {shapes}"
        )


def _training_pass(model, weights, x, y, sample_weight):
    """Loss, loss-scaled gradients, predictions and state updates at `weights`.

    Runs in a `StatelessScope`: variables are read from `weights` (trainable)
    or their current values (the rest), and nothing is assigned.
    """
    with tf.GradientTape() as tape:
        tape.watch(weights)
        mapping = list(zip(model.trainable_variables, weights))
        with keras.StatelessScope(mapping, collect_losses=True) as scope:
            y_pred = model(x, training=True)
            loss = model.compute_loss(
                x=x,
                y=y,
                y_pred=y_pred,
                sample_weight=sample_weight,
                training=True,
            )
        scaled_loss = model.optimizer.scale_loss(loss)
    grads = tape.gradient(scaled_loss, weights)
    state_updates = []
    for variable in model.non_trainable_variables + model.metrics_variables:
        value = scope.get_current_value(variable)
        if value is not None:
            state_updates.append((variable, value))
    return loss, grads, y_pred, state_updates


def _sum_over_replicas(replica, tensors):
    present = [t for t in tensors if t is not None]
    summed = iter(replica.all_reduce(tf.distribute.ReduceOp.SUM, present))
    return [None if t is None else next(summed) for t in tensors]


def apply_sharpness_aware_gradients(model, step):
    """Applies a `SharpnessAwareGradients` to `model`, unless not finite.

    Assigns the clean pass's state updates and lets `model.optimizer` apply
    `step.directions` to `model.trainable_variables`. When `step.finite` is
    false nothing changes: no weight, optimizer slot, iteration count or
    BatchNormalization statistic. A `LossScaleOptimizer` is still called so
    that it lowers its loss scale.

    After a finite step that ran the perturbed pass it also stores the new
    flatness direction (`step.flatness_updates`).

    Call it in the same replica context as `sharpness_aware_gradients`.
    """
    for variable, value in step.state_updates:
        variable.assign(ops.where(step.finite, value, variable))
    if step.flatness_updates:

        def store_flatness():
            for variable, value in step.flatness_updates:
                variable.assign(value)

        ops.cond(ops.logical_and(step.perturbed, step.finite), store_flatness, lambda: None)
    optimizer = model.optimizer
    variables = model.trainable_variables
    directions = step.directions
    if not optimizer.built:
        optimizer.build(variables)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # It skips non-finite steps itself and lowers the loss scale; the
        # NaNs give every replica the verdict of `finite`.
        poison = ops.where(step.finite, 1.0, float("nan"))
        directions = [None if d is None else d * ops.cast(poison, d.dtype) for d in directions]
        optimizer.apply(directions, variables)
    elif tf.__internal__.distribute.strategy_supports_no_merge_call():
        ops.cond(
            step.finite,
            lambda: optimizer.apply(directions, variables),
            lambda: None,
        )
    else:
        # The optimizer synchronizes replicas with `merge_call`, which cannot
        # run inside a replica's `cond`: branch in cross-replica context
        # instead, as LossScaleOptimizer does.
        def apply_if_finite(strategy, finite, directions):
            ops.cond(
                strategy.experimental_local_results(finite)[0],
                lambda: strategy.extended.call_for_each_replica(
                    optimizer.apply, args=(directions, variables)
                ),
                lambda: None,
            )

        tf.distribute.get_replica_context().merge_call(
            apply_if_finite, args=(step.finite, directions)
        )


class _LiveHyperparameter:
    """A GSAM hyperparameter held in a non-trainable variable.

    Reading it gives the variable (or `None` when the model does not use it).
    Assigning a number writes the variable, so a compiled training step uses
    the new value without retracing.
    """

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, model, owner=None):
        if model is None:
            return self
        return getattr(model, f"_{self.name}")

    def __set__(self, model, value):
        variable = self.__get__(model)
        if variable is None:
            raise ValueError(
                f"`{self.name}` does not apply to {model.name!r}: rho is "
                "either constant (`rho`) or tied to the learning rate "
                "(`rho_max`, `rho_min`), as constructed."
            )
        _check_non_negative(self.name, value)
        if self.name in ("rho_min", "rho_max"):
            bounds = {
                "rho_min": float(ops.convert_to_numpy(model._rho_min)),
                "rho_max": float(ops.convert_to_numpy(model._rho_max)),
                self.name: float(value),
            }
            if bounds["rho_min"] > bounds["rho_max"]:
                raise ValueError(
                    f"`{self.name}` would put rho_min ({bounds['rho_min']:g}) "
                    f"above rho_max ({bounds['rho_max']:g})."
                )
        variable.assign(value)


@keras.saving.register_keras_serializable(package="gsam_tfx")
class GSAM(keras.Model):
    """Trains a Keras model with GSAM (or SAM, with `alpha=0`).

    Each step computes the clean gradient `g` at `w`, perturbs the weights to
    `w + e` with `e = rho_t * g / (|g| + eps)`, computes `g_p` there and
    descends along `d = g_p - alpha * (g - <g, g_p^> g_p^)` (big_vision's
    `gsam_gradient`; `minimize_fp=False` gives the other form). `alpha=0` is
    SAM; `rho=0` with `alpha=0` is the base optimizer.

    rho either is constant (`rho`, changed per epoch by a `RhoScheduler`) or
    follows the learning rate at every step, as in the paper (`rho_max`,
    `rho_min`):

        rho_t = rho_min + (rho_max - rho_min) * (lr_t - lr_min)
                          / (lr_max - lr_min)

    clamped to `[rho_min, rho_max]`. `lr_max` and `lr_min` are absolute
    learning rates; by default they come from the optimizer's schedule
    (`CosineDecay`, `CosineDecayRestarts`, `PolynomialDecay`,
    `PiecewiseConstantDecay`). With a constant learning rate, rho_t is
    `rho_max`; a learning rate that callbacks change (e.g.
    `LearningRateScheduler`) is followed only with explicit `lr_max` and
    `lr_min`.

    `rho`, `rho_max`, `rho_min` and `alpha` live in non-trainable variables:
    assigning `gsam_model.rho = 0.1` (or `.alpha`, ...) takes effect at the
    next step without recompiling, and checkpoints and `.keras` files save
    them.

    The wrapped model's weights are never assigned the perturbed values; if a
    gradient is non-finite on any replica the whole update (weights,
    optimizer, BatchNormalization statistics) is skipped and the
    `skipped_steps` counter grows. Under a `LossScaleOptimizer`
    (`mixed_float16`) that optimizer skips the step and lowers its scale.

    Logged every step: `loss` (clean, at `w`) and the compiled metrics (on
    the clean predictions), `perturbed_loss`, `surrogate_gap`
    (`perturbed_loss - loss`), `grad_norm` (`|g|`), `grad_cosine`
    (`cos(g, g_p)`), the first four as running means over the epoch like
    `loss`; `rho` (rho_t) and `skipped_steps` (total).

    Gradient accumulation: with the optimizer's
    `gradient_accumulation_steps=k`, every micro-batch computes its own
    perturbation and direction, and the optimizer applies the mean of `k`
    directions. That is m-sharpness with `m` the micro-batch size per
    replica; the perturbation never spans the accumulated batch.

    Perturbing only every k-th step (`perturb_every=k`, LookSAM's reuse, Liu
    et al., CVPR 2022): steps 0, k, 2k, ... are exact GSAM steps and also
    store the flatness direction, the part of the unit perturbed gradient
    orthogonal to `g`:

        u = g_p^ - <g_p^, g^> g^

    The k - 1 steps in between run only the clean pass (a `tf.cond` skips
    the perturbed one, also under `jit_compile`), estimate the perturbed
    gradient from the current `g` and the stored `u`,

        g~_p = g + |g| * u                          (reuse_scale=None)
        g~_p = g + reuse_scale * |g| / |u| * u      (LookSAM's fixed one)

    and descend along GSAM's direction of `(g, g~_p)`, so alpha enters as in
    an exact step: `d = g~_p - alpha * (g - <g, g~_p^> g~_p^)` (with
    `minimize_fp=False`, `d = g + alpha * (g~_p - <g~_p, g^> g^)`). With
    `alpha=0` and a fixed `reuse_scale` this is LookSAM. The default,
    adaptive form tilts `g` by about the angle between `g` and `g_p` that
    the last perturbed pass measured (`|u| = sin(angle)`), so it shrinks
    with rho and needs no tuning; LookSAM's fixed coefficient (0.7 in its
    public ports) does not follow rho. The stored direction is LookSAM's
    choice and, up to its norm, GSAM's own surrogate-gap component
    (`minimize_fp=False` is `d = g + alpha * |g_p| * u`); rebuilding
    `g_p` rather than storing the final direction keeps `alpha` live on
    every step. Forward-backward passes per step: `1 + 1 / k`. `u` lives in
    non-trainable variables
    (`flatness_direction`, one per trainable variable, its shape and dtype),
    saved with checkpoints and `.keras` files; under a distribution strategy
    each replica keeps its own (they are equal with `sync_perturbation`) and
    files hold their mean. `steps_until_perturbation` counts down to the
    next perturbing step; a non-finite perturbing step is retried at the
    next step. Each micro-batch of gradient accumulation is a step. On CPU,
    XLA (`jit_compile=True`) runs the perturbed pass's convolution gradients
    inside the conditional about 20x slower (TF 2.21); training warns.
    Logged:
    `perturbed_step` (1 when this step ran the perturbed pass, else 0);
    `perturbed_loss`, `surrogate_gap` and `grad_cosine` are running means
    over the perturbing steps only (0 before an epoch's first one).

    Args:
        model: the Keras model to train. Available as `gsam_model.model`,
            e.g. for `tf.saved_model.save(gsam_model.model, path)`.
        rho: constant perturbation radius, >= 0. Defaults to 0.05. Not with
            `rho_max`/`rho_min`.
        alpha: GSAM coefficient, >= 0; 0 is SAM. Defaults to 0.1, as in
            keras-gsam (the GSAM paper tunes it per task, e.g. 0.01).
        rho_max: rho at the largest learning rate; with `rho_min`, ties rho
            to the learning rate.
        rho_min: rho at the smallest learning rate, <= `rho_max`.
        lr_max: the learning rate at which rho is `rho_max`. Pass it with
            `lr_min`, or neither to read both from the optimizer's schedule.
        lr_min: the learning rate at which rho is `rho_min`, < `lr_max`.
        adaptive: scale the perturbation by `|w|`
            (`e = rho * |w| * g / |g|`), big_vision's
            `adaptive_perturbation`.
        asam: ASAM's perturbation `e = rho * T^2 g / |T g|` with
            `T = |w| + asam_eta`. Not with `adaptive`.
        asam_eta: ASAM's offset, >= 0.
        minimize_fp: `True` minimizes the perturbed loss and the surrogate
            gap (the paper's GSAM, big_vision's default); `False` minimizes
            the clean loss and the gap, `d = g + alpha * (g_p - <g_p, g^> g^)`.
        sync_perturbation: under a distribution strategy, perturb and
            decompose with the gradients averaged across replicas (the
            global batch) instead of each replica's own; costs two extra
            all-reduces.
        eps: added to every norm before dividing, > 0.
        perturb_every: run the perturbed pass every `perturb_every` steps,
            an integer >= 1; 1 (the default) is exact GSAM at every step.
        reuse_scale: `None` (the default) rebuilds the perturbed gradient
            at about the angle to `g` that the last perturbed pass
            measured; a number >= 0 is LookSAM's fixed coefficient instead
            (0.7 in its public ports; the paper tunes it). Only with
            `perturb_every > 1`.
        **kwargs: `name`, `trainable`, `dtype` as for any Keras model.

    Example, rho following a cosine learning rate from 0.04 down to 0.02:

    ```python
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 100, alpha=0.01)
    gsam_model = GSAM(model, rho_max=0.04, rho_min=0.02, alpha=0.01)
    gsam_model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    gsam_model.fit(keras.random.normal((32, 8)), keras.random.normal((32, 1)),
                   epochs=2, verbose=0)
    ```

    Example, the perturbed pass every 5th step (1.2 forward-backward passes
    per step instead of 2):

    ```python
    gsam_model = GSAM(model, rho=0.05, alpha=0.01, perturb_every=5)
    gsam_model.compile(optimizer="sgd", loss="mse")
    history = gsam_model.fit(keras.random.normal((64, 8)),
                             keras.random.normal((64, 1)), batch_size=8, verbose=0)
    # history.history["perturbed_step"]: 1.0 if the last step perturbed.
    ```
    """

    rho = _LiveHyperparameter()
    rho_max = _LiveHyperparameter()
    rho_min = _LiveHyperparameter()
    alpha = _LiveHyperparameter()

    def __init__(
        self,
        model,
        rho=None,
        alpha=0.1,
        *,
        rho_max=None,
        rho_min=None,
        lr_max=None,
        lr_min=None,
        adaptive=False,
        asam=False,
        asam_eta=0.01,
        minimize_fp=True,
        sync_perturbation=False,
        eps=1e-12,
        perturb_every=1,
        reuse_scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
        lr_tied = rho_max is not None or rho_min is not None
        if lr_tied:
            if rho is not None:
                raise ValueError(
                    "Pass either `rho` (constant) or `rho_max` and `rho_min` "
                    f"(tied to the learning rate), not both. Received: "
                    f"rho={rho}, rho_max={rho_max}, rho_min={rho_min}"
                )
            for name, value in (("rho_max", rho_max), ("rho_min", rho_min)):
                if value is None:
                    raise ValueError(
                        "`rho_max` and `rho_min` go together. Received: "
                        f"rho_max={rho_max}, rho_min={rho_min}"
                    )
                _check_non_negative(name, value)
            if rho_min > rho_max:
                raise ValueError(
                    "`rho_min` must be <= `rho_max`. Received: "
                    f"rho_min={rho_min}, rho_max={rho_max}"
                )
            if (lr_max is None) != (lr_min is None):
                raise ValueError(
                    "Pass both `lr_max` and `lr_min`, or neither to read them "
                    f"from the learning rate schedule. Received: "
                    f"lr_max={lr_max}, lr_min={lr_min}"
                )
            if lr_max is not None:
                _check_non_negative("lr_min", lr_min)
                if not lr_max > lr_min:
                    raise ValueError(
                        f"`lr_max` must be > `lr_min`. Received: lr_max={lr_max}, lr_min={lr_min}"
                    )
        else:
            rho = 0.05 if rho is None else rho
            _check_non_negative("rho", rho)
            for name, value in (("lr_max", lr_max), ("lr_min", lr_min)):
                if value is not None:
                    raise ValueError(
                        f"`{name}` only applies when rho follows the learning "
                        f"rate (`rho_max`, `rho_min`). Received: {name}={value}"
                    )
        _check_non_negative("alpha", alpha)
        _check_non_negative("asam_eta", asam_eta)
        if adaptive and asam:
            raise ValueError(
                "`adaptive` and `asam` are different perturbations; pass at "
                f"most one. Received: adaptive={adaptive}, asam={asam}"
            )
        if not eps > 0:
            raise ValueError(f"`eps` must be > 0. Received: eps={eps}")
        if (
            isinstance(perturb_every, bool)
            or not isinstance(perturb_every, numbers.Integral)
            or perturb_every < 1
        ):
            raise ValueError(
                "`perturb_every` must be an integer >= 1 (1 is exact GSAM). "
                f"Received: perturb_every={perturb_every!r}"
            )
        if reuse_scale is not None:
            if perturb_every == 1:
                raise ValueError(
                    "`reuse_scale` only applies when steps reuse the stored direction "
                    f"(`perturb_every` > 1). Received: reuse_scale={reuse_scale}, perturb_every=1"
                )
            _check_non_negative("reuse_scale", reuse_scale)

        self.model = model
        self.lr_max = lr_max
        self.lr_min = lr_min
        self.adaptive = bool(adaptive)
        self.asam = bool(asam)
        self.asam_eta = asam_eta
        self.minimize_fp = bool(minimize_fp)
        self.sync_perturbation = bool(sync_perturbation)
        self.eps = eps
        self.perturb_every = int(perturb_every)
        self.reuse_scale = None if reuse_scale is None else float(reuse_scale)
        self._rho = None if lr_tied else self._hyperparameter("rho", rho)
        self._rho_max = self._hyperparameter("rho_max", rho_max) if lr_tied else None
        self._rho_min = self._hyperparameter("rho_min", rho_min) if lr_tied else None
        self._alpha = self._hyperparameter("alpha", alpha)
        self.skipped_steps = self._counter("skipped_steps")
        self.flatness_direction = None
        if self.perturb_every > 1:
            self.steps_until_perturbation = self._counter("steps_until_perturbation")
            if model.built:
                self._build_flatness_direction()
        self._step_means = {
            name: keras.metrics.Mean(name=name)
            for name in (
                "perturbed_loss",
                "surrogate_gap",
                "grad_norm",
                "grad_cosine",
            )
        }

    def _hyperparameter(self, name, value):
        return self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(value),
            trainable=False,
            autocast=False,
            name=name,
        )

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def _counter(self, name):
        # Equal on every replica; assigned from the first.
        return self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _build_flatness_direction(self):
        # Per replica (ON_READ): each replica reuses the direction of its own
        # shard, as each perturbs along its own gradient; reads outside a
        # replica, as in saving, give the mean.
        with keras.name_scope(self.name, caller=self):
            directions = [
                keras.Variable(
                    keras.initializers.Zeros(),
                    shape=variable.shape,
                    dtype=variable.dtype,
                    trainable=False,
                    autocast=False,
                    aggregation="mean",
                    synchronization="on_read",
                    name=f"flatness_direction_{i}",
                )
                for i, variable in enumerate(self.model.trainable_variables)
            ]
        # One attribute each: TensorFlow checkpoints follow attributes, not
        # Keras's tracked lists.
        for i, direction in enumerate(directions):
            setattr(self, f"_flatness_direction_{i}", direction)
        self.flatness_direction = directions

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        if self.perturb_every > 1 and self.flatness_direction is None:
            self._build_flatness_direction()

    def current_rho(self):
        """rho for the next step: constant, or from the learning rate."""
        if self._rho is not None:
            return ops.convert_to_tensor(self._rho)
        bounds = self._learning_rate_bounds()
        if bounds is None:
            return ops.convert_to_tensor(self._rho_max)
        return rho_lib.rho_from_learning_rate(
            self.optimizer.learning_rate, self._rho_max, self._rho_min, *bounds
        )

    def _learning_rate_bounds(self):
        if self.lr_max is not None:
            return self.lr_max, self.lr_min
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        # The learning rate as configured: a variable or a schedule.
        return rho_lib.learning_rate_bounds(optimizer._learning_rate)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        rho_t = self.current_rho()
        reuse = {}
        if self.perturb_every > 1:
            if self.flatness_direction is None:
                raise ValueError(
                    "`perturb_every` > 1 stores a direction per weight, so the weights must "
                    "exist before training: give `model` an `Input`, or call "
                    "`gsam_model.build(input_shape)` first."
                )
            self._warn_if_xla_on_cpu()
            reuse = dict(
                perturb=ops.equal(self.steps_until_perturbation, 0),
                flatness=self.flatness_direction,
                reuse_scale=self.reuse_scale,
            )
        step = sharpness_aware_gradients(
            self,
            x,
            y,
            sample_weight,
            rho=rho_t,
            alpha=self._alpha,
            perturbation=self._perturbation,
            asam_eta=self.asam_eta,
            minimize_fp=self.minimize_fp,
            sync_perturbation=self.sync_perturbation,
            eps=self.eps,
            **reuse,
        )
        apply_sharpness_aware_gradients(self, step)
        self.skipped_steps.assign_add(ops.cast(ops.logical_not(step.finite), "int64"))
        if reuse:
            # A non-finite perturbing step stored nothing: perturb again next step.
            after_perturbing = ops.where(step.finite, self.perturb_every - 1, 0)
            countdown = self.steps_until_perturbation
            countdown.assign(
                ops.cast(ops.where(step.perturbed, after_perturbing, countdown - 1), "int64")
            )

        batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
        self._loss_tracker.update_state(step.logs["loss"], sample_weight=batch_size)
        for name, mean in self._step_means.items():
            weight = batch_size if name.endswith(("loss", "gap")) else 1
            if reuse and name in PERTURBED_PASS_LOGS:
                weight = ops.cast(weight, "float32") * step.logs["perturbed_step"]
            mean.update_state(step.logs[name], sample_weight=weight)
        logs = self.compute_metrics(x, y, step.y_pred, sample_weight)
        logs["rho"] = rho_t
        logs["skipped_steps"] = ops.convert_to_tensor(self.skipped_steps)
        if reuse:
            logs["perturbed_step"] = step.logs["perturbed_step"]
        return logs

    def _warn_if_xla_on_cpu(self):
        """Warns, once per trace, of XLA's slow perturbed pass on CPU."""
        accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
        if self.jit_compile is True and not accelerators:
            warnings.warn(
                "`perturb_every` > 1 with `jit_compile=True` on CPU: XLA's CPU backend runs "
                "convolution gradients inside a conditional (the perturbed pass) about 20x "
                "slower than outside one (TF 2.21), so perturbing steps can cost more than "
                "exact GSAM's. Compile with `jit_compile=False` on CPU.",
                stacklevel=2,
            )

    @property
    def _perturbation(self):
        if self.asam:
            return "asam"
        return "adaptive" if self.adaptive else "sam"

    def test_step(self, data):
        logs = super().test_step(data)
        return {k: v for k, v in logs.items() if k not in self._step_means}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "model": keras.saving.serialize_keras_object(self.model),
                "rho": _value(self._rho),
                "alpha": _value(self._alpha),
                "rho_max": _value(self._rho_max),
                "rho_min": _value(self._rho_min),
                "lr_max": self.lr_max,
                "lr_min": self.lr_min,
                "adaptive": self.adaptive,
                "asam": self.asam,
                "asam_eta": self.asam_eta,
                "minimize_fp": self.minimize_fp,
                "sync_perturbation": self.sync_perturbation,
                "eps": self.eps,
                "perturb_every": self.perturb_every,
                "reuse_scale": self.reuse_scale,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        return cls(**config)


def _check_non_negative(name, value):
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")


def _value(variable):
    return None if variable is None else float(ops.convert_to_numpy(variable))
