"""The sharpness-aware gradient of one batch, and its application: GSAM's step, written once.

`sharpness_aware_gradients` computes big_vision's `gsam_gradient`
(`big_vision/trainers/proj/gsam/gsam.py`) for a Keras model, without changing any state;
`apply_sharpness_aware_gradients` applies it. `GSAM.train_step` calls both, and so can a
custom distributed loop inside `strategy.run` (trainer/training/multi_worker.py). The
formulas themselves are in `trainer.gsam.formulas`.
"""

import collections

import keras
import tensorflow as tf
from keras import ops

from trainer.gsam import formulas


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
            "stored_updates",
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
            and the cosine 1. With a `reference`, also `reference_cosine`,
            the cosine between `g` and the stored reference gradient
            (averaged over replicas, so every replica holds the same value).
        perturbed: scalar bool (or Python `True`), whether the perturbed
            pass ran.
        stored_updates: `(variable, value)` pairs for the stored flatness
            direction `u` and, with a `reference`, the unit clean gradient;
            `apply_sharpness_aware_gradients` assigns them only after a
            finite step that ran the perturbed pass. Empty without
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
    reference=None,
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
    direction `u`, see `formulas.flatness_direction`) and a scalar bool
    `perturb`, a `tf.cond` runs the perturbed pass only when `perturb` is
    true; then the direction is exact GSAM's and the new `u` goes to
    `flatness_updates`. Otherwise the clean pass alone gives
    `formulas.reused_gsam_direction(g, u, alpha, reuse_scale)`. Under
    `sync_perturbation` the all-reduce of `g_p` runs on every step (a
    replica cannot skip a collective inside a `tf.cond`); its result is
    unused on steps without the perturbed pass. With `reference` (variables
    holding the unit clean gradient of the last step that stored `u`), the
    step also measures how far `g` has turned from it (`reference_cosine`)
    and, when it perturbs, stores its own unit `g` there: the staleness
    signal of `perturb_every="auto"` (`trainer.gsam.schedule`).

    Args:
        model: a compiled Keras model; its `compute_loss` and `optimizer`
            (for loss scaling) are used.
        x, y, sample_weight: the batch, as `train_step` unpacks it.
        rho: perturbation radius, a scalar (tensor or variable).
        alpha: the GSAM coefficient; `0` is SAM.
        perturbation: `"sam"`, `"adaptive"` or `"asam"`; see
            `formulas.perturbation`.
        asam_eta: ASAM's offset, used with `perturbation="asam"`.
        minimize_fp: the GSAM form; see `formulas.gsam_direction`.
        sync_perturbation: average gradients across replicas before
            perturbing (and before decomposing).
        eps: added to every norm before dividing.
        perturb: Python `True` (always run the perturbed pass), or a scalar
            bool tensor; anything else needs `flatness`.
        flatness: `None`, or one variable per `model.trainable_variables`
            entry, of its shape, holding the stored `u`.
        reuse_scale: `None` (adaptive) or LookSAM's fixed coefficient of the
            reused direction; see `formulas.reused_gsam_direction`. Only
            read with `flatness`.
        reference: `None`, or one variable per `model.trainable_variables`
            entry, of its shape, holding the unit clean gradient of the last
            step that stored `u`. Only with `flatness`.

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
    replica = _replica_context(model, perturb, flatness, reference)
    weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]

    loss, grads, y_pred, state_updates = training_pass(model, weights, x, y, sample_weight)
    if sync_perturbation:
        grads = _sum_over_replicas(replica, grads)

    def perturbed_pass():
        e = formulas.perturbation(grads, weights, rho, perturbation, eps=eps, asam_eta=asam_eta)
        perturbed_weights = [w if ei is None else w + ei for w, ei in zip(weights, e)]
        perturbed_loss, perturbed_grads, _, _ = training_pass(
            model, perturbed_weights, x, y, sample_weight
        )
        return perturbed_loss, perturbed_grads

    # Without the perturbed pass, the clean loss and gradient stand in for it.
    perturbed_loss, perturbed_grads = _cond(perturb, perturbed_pass, lambda: (loss, grads))
    if sync_perturbation:
        perturbed_grads = _sum_over_replicas(replica, perturbed_grads)
    directions, new_flatness, perturbed_norm, inner = _cond(
        perturb,
        lambda: _exact_direction(
            grads, perturbed_grads, alpha, minimize_fp, eps, store_flatness=flatness is not None
        ),
        lambda: _reused_direction(grads, flatness, alpha, reuse_scale, minimize_fp, eps),
    )
    if sync_perturbation:
        # Every replica holds the global direction; the optimizer sums the
        # replicas' contributions.
        directions = [None if d is None else d / replica.num_replicas_in_sync for d in directions]

    grad_norm = formulas.global_norm(grads)
    finite = _finite_on_every_replica(replica, grad_norm, perturbed_norm)
    logs = _step_logs(
        model,
        replica,
        sync_perturbation,
        loss=loss,
        perturbed_loss=perturbed_loss,
        rho=rho,
        grad_norm=grad_norm,
        perturbed_norm=perturbed_norm,
        inner=inner,
        eps=eps,
    )
    stored_updates = []
    if flatness is not None:
        logs["perturbed_step"] = ops.cast(perturb, "float32")
        stored_updates = [(v, u) for v, u in zip(flatness, new_flatness) if u is not None]
    if reference is not None:
        cosine, unit_grads = _reference_cosine(
            replica, sync_perturbation, grads, grad_norm, reference, eps
        )
        logs["reference_cosine"] = cosine
        stored_updates += [(v, u) for v, u in zip(reference, unit_grads) if u is not None]
    return SharpnessAwareGradients(
        directions, y_pred, state_updates, finite, logs, perturb, stored_updates
    )


def _replica_context(model, perturb, flatness, reference):
    """The replica context the step runs in, once the arguments are checked."""
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
    if reference is not None and flatness is None:
        raise ValueError(
            "`reference` measures how stale the stored `flatness` direction is, so it needs "
            "one. Received: flatness=None"
        )
    for name, stored in (("flatness", flatness), ("reference", reference)):
        if stored is not None:
            _check_stored(name, stored, model.trainable_variables)
    return replica


def _exact_direction(grads, perturbed_grads, alpha, minimize_fp, eps, store_flatness):
    """GSAM's direction from both passes, the flatness direction to store (or `None`), |g_p|
    and <g, g_p>."""
    directions = formulas.gsam_direction(
        grads, perturbed_grads, alpha, minimize_fp=minimize_fp, eps=eps
    )
    new_flatness = None
    if store_flatness:
        new_flatness = formulas.flatness_direction(grads, perturbed_grads, eps=eps)
    inner = formulas.inner_product(grads, perturbed_grads)
    return directions, new_flatness, formulas.global_norm(perturbed_grads), inner


def _reused_direction(grads, flatness, alpha, reuse_scale, minimize_fp, eps):
    """The same four from the clean pass and the stored direction: the stored direction is
    kept, and |g| stands in for |g_p| (so the logged cosine is 1)."""
    directions = formulas.reused_gsam_direction(
        grads, flatness, alpha, reuse_scale, minimize_fp=minimize_fp, eps=eps
    )
    stored = [None if g is None else tf.convert_to_tensor(v) for g, v in zip(grads, flatness)]
    grad_norm = formulas.global_norm(grads)
    return directions, stored, grad_norm, tf.square(grad_norm)


def _reference_cosine(replica, sync_perturbation, grads, grad_norm, reference, eps):
    """cos(g, reference), averaged over replicas unless `g` is already the global gradient,
    and the unit `g` to store as the next reference."""
    reference = [None if g is None else v for g, v in zip(grads, reference)]
    cosine = formulas.inner_product(grads, reference) / (
        (grad_norm + eps) * (formulas.global_norm(reference) + eps)
    )
    if replica.num_replicas_in_sync > 1 and not sync_perturbation:
        cosine = replica.all_reduce(tf.distribute.ReduceOp.MEAN, cosine)
    unit = 1.0 / (grad_norm + eps)
    return cosine, [None if g is None else g * tf.cast(unit, g.dtype) for g in grads]


def _finite_on_every_replica(replica, grad_norm, perturbed_norm):
    finite = ops.logical_and(ops.isfinite(grad_norm), ops.isfinite(perturbed_norm))
    if replica.num_replicas_in_sync > 1:
        nonfinite = replica.all_reduce(
            tf.distribute.ReduceOp.SUM,
            ops.cast(ops.logical_not(finite), "float32"),
        )
        finite = ops.equal(nonfinite, 0.0)
    return finite


def _step_logs(
    model,
    replica,
    sync_perturbation,
    *,
    loss,
    perturbed_loss,
    rho,
    grad_norm,
    perturbed_norm,
    inner,
    eps,
):
    """The step's logs, unscaled: Keras divides each replica's loss by the number of replicas
    (the optimizer sums gradients across them) and the loss scale multiplies it."""
    num_replicas = replica.num_replicas_in_sync
    loss_scale = ops.cast(model.optimizer.scale_loss(1.0), "float32")
    grad_units = (1.0 if sync_perturbation else num_replicas) / loss_scale
    loss = ops.cast(loss, "float32") * num_replicas
    perturbed_loss = ops.cast(perturbed_loss, "float32") * num_replicas
    return {
        "loss": loss,
        "perturbed_loss": perturbed_loss,
        "surrogate_gap": perturbed_loss - loss,
        "rho": ops.cast(rho, "float32"),
        "grad_norm": grad_norm * grad_units,
        "grad_cosine": inner / (grad_norm * perturbed_norm + eps),
    }


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


def _check_stored(name, stored, variables):
    shapes = [tuple(v.shape) for v in variables]
    stored_shapes = [tuple(v.shape) for v in stored]
    if stored_shapes != shapes:
        raise ValueError(
            f"`{name}` must hold one variable per trainable variable, of its shape; did the "
            f"trainable variables change since it was made? Received shapes {stored_shapes} "
            f"for trainable variables of shapes {shapes}"
        )


def training_pass(model, weights, x, y, sample_weight):
    """Loss, loss-scaled gradients, predictions and state updates at `weights`.

    Runs in a `StatelessScope`: variables are read from `weights` (trainable)
    or their current values (the rest), and nothing is assigned. Both passes
    of `sharpness_aware_gradients` are this function; a study of the two
    gradients (bench/reuse_staleness.py) calls it directly.

    Args:
        model: a compiled Keras model (its `compute_loss` and optimizer's
            loss scale are used).
        weights: one tensor per `model.trainable_variables` entry.
        x, y, sample_weight: the batch.

    Returns:
        `(loss, grads, y_pred, state_updates)`, `state_updates` as
        `(variable, value)` pairs.
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
    flatness direction and reference gradient (`step.stored_updates`).

    Call it in the same replica context as `sharpness_aware_gradients`.
    """
    for variable, value in step.state_updates:
        variable.assign(ops.where(step.finite, value, variable))
    if step.stored_updates:

        def store():
            for variable, value in step.stored_updates:
                variable.assign(value)

        ops.cond(ops.logical_and(step.perturbed, step.finite), store, lambda: None)
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
