"""The `GSAM` Keras model: a model wrapper that trains with GSAM or SAM.

`GSAM` wraps a Keras model and trains it with Surrogate Gap Guided
Sharpness-Aware Minimization (Zhuang et al., ICLR 2022); `alpha=0` is SAM
(Foret et al., ICLR 2021). Its `train_step` computes the step with
`trainer.gsam.gradients.sharpness_aware_gradients` and applies it with
`apply_sharpness_aware_gradients`; it owns rho (constant or following the learning rate),
the hyperparameters as live variables, the stored direction of LookSAM-style reuse, the
logs and the Keras config.
"""

import numbers
import warnings

import keras
import tensorflow as tf
from keras import ops

from trainer.gsam import rho as rho_lib
from trainer.gsam import schedule
from trainer.gsam.gradients import apply_sharpness_aware_gradients, sharpness_aware_gradients

# Logs measured by the perturbed pass; with `perturb_every > 1` (or "auto"),
# averaged over the steps that ran it.
PERTURBED_PASS_LOGS = ("perturbed_loss", "surrogate_gap", "grad_cosine")
# `perturb_every="auto"`: the perturbed pass runs when the stored direction looks stale.
AUTO = "auto"


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
    `perturbed_step` (1 when this step ran the perturbed pass, else 0),
    `perturbed_fraction` (its mean over the epoch's steps) and
    `perturbed_steps` (the total, saved with the model);
    `perturbed_loss`, `surrogate_gap` and `grad_cosine` are running means
    over the perturbing steps only (0 before an epoch's first one).

    Deciding by itself (`perturb_every="auto"`): the perturbed pass runs when
    the stored direction looks staler than usual, within a budget
    (`trainer.gsam.schedule`). Staleness is `1 - cos(g, g_ref)`, the turn of
    the clean gradient since the step that stored `u` (`g_ref` is kept as a
    unit vector per weight, `reference_gradient`, like `u`); a step earns
    `perturb_budget` credit and a perturbing step costs 1, so over a run
    `perturb_budget` of the steps perturb (about `1 + perturb_budget`
    passes per step) and no stored direction is older than about
    `2 / perturb_budget` steps. The next step perturbs when the credit is at
    least 1 and this step found the direction staler than the running mean
    of its reusing steps, or when the credit reaches 2. The decision for the
    next step is taken from scalars every replica holds alike (the cosine
    averaged over replicas, the credit and mean in variables assigned from
    the first replica), so all replicas decide alike; the credit and mean
    (`perturb_credit`, `staleness_mean`) are saved with checkpoints and
    `.keras` files, so a restored run continues with the same decisions.
    Deciding costs one inner product and one norm per step.

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
            an integer >= 1; 1 (the default) is exact GSAM at every step;
            `"auto"` decides at each step, within `perturb_budget`.
        reuse_scale: `None` (the default) rebuilds the perturbed gradient
            at about the angle to `g` that the last perturbed pass
            measured; a number >= 0 is LookSAM's fixed coefficient instead
            (0.7 in its public ports; the paper tunes it). Only with
            `perturb_every` other than 1.
        perturb_budget: with `perturb_every="auto"`, the fraction of steps
            that run the perturbed pass, in (0, 1]. Defaults to 0.1 (about
            the cost of `perturb_every=10`). Unused otherwise.
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

    Example, the perturbed pass on about 1 step in 8, when the stored
    direction is stalest:

    ```python
    gsam_model = GSAM(model, rho=0.05, alpha=0.01, perturb_every="auto",
                      perturb_budget=0.125)
    gsam_model.compile(optimizer="sgd", loss="mse")
    history = gsam_model.fit(keras.random.normal((256, 8)),
                             keras.random.normal((256, 1)), batch_size=8, verbose=0)
    # history.history["perturbed_fraction"]: [0.125]
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
        perturb_budget=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(model, keras.layers.Layer):
            raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
        lr_tied = rho_max is not None or rho_min is not None
        if lr_tied:
            _check_tied_rho(rho, rho_max, rho_min, lr_max, lr_min)
        else:
            rho = 0.05 if rho is None else rho
            _check_constant_rho(rho, lr_max, lr_min)
        _check_non_negative("alpha", alpha)
        _check_non_negative("asam_eta", asam_eta)
        if adaptive and asam:
            raise ValueError(
                "`adaptive` and `asam` are different perturbations; pass at "
                f"most one. Received: adaptive={adaptive}, asam={asam}"
            )
        if not eps > 0:
            raise ValueError(f"`eps` must be > 0. Received: eps={eps}")
        _check_reuse(perturb_every, reuse_scale, perturb_budget)

        self.model = model
        self.lr_max = lr_max
        self.lr_min = lr_min
        self.adaptive = bool(adaptive)
        self.asam = bool(asam)
        self.asam_eta = asam_eta
        self.minimize_fp = bool(minimize_fp)
        self.sync_perturbation = bool(sync_perturbation)
        self.eps = eps
        self.perturb_every = perturb_every if perturb_every == AUTO else int(perturb_every)
        self.reuse_scale = None if reuse_scale is None else float(reuse_scale)
        self.perturb_budget = float(perturb_budget)
        self._rho = None if lr_tied else self._hyperparameter("rho", rho)
        self._rho_max = self._hyperparameter("rho_max", rho_max) if lr_tied else None
        self._rho_min = self._hyperparameter("rho_min", rho_min) if lr_tied else None
        self._alpha = self._hyperparameter("alpha", alpha)
        self.skipped_steps = self._counter("skipped_steps")
        self.flatness_direction = None
        self.reference_gradient = None
        step_means = ["perturbed_loss", "surrogate_gap", "grad_norm", "grad_cosine"]
        if self.reuses:
            self.steps_until_perturbation = self._counter("steps_until_perturbation")
            self.perturbed_steps = self._counter("perturbed_steps")
            step_means.append("perturbed_fraction")
            if self.perturb_every == AUTO:
                self.perturb_credit = self._state("perturb_credit", 1.0)
                self.staleness_mean = self._state("staleness_mean", 0.0)
            if model.built:
                self._build_stored_directions()
        self._step_means = {name: keras.metrics.Mean(name=name) for name in step_means}

    def _hyperparameter(self, name, value):
        return self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(value),
            trainable=False,
            autocast=False,
            name=name,
        )

    @property
    def reuses(self):
        """Whether some steps skip the perturbed pass and reuse the stored direction."""
        return self.perturb_every != 1

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def _counter(self, name):
        return self._state(name, 0, dtype="int64")

    def _state(self, name, initial, dtype="float32"):
        # Equal on every replica; assigned from the first.
        return self.add_weight(
            shape=(),
            dtype=dtype,
            initializer=keras.initializers.Constant(initial),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _build_stored_directions(self):
        self.flatness_direction = self._per_weight_state("flatness_direction")
        if self.perturb_every == AUTO:
            self.reference_gradient = self._per_weight_state("reference_gradient")

    def _per_weight_state(self, name):
        # Per replica (ON_READ): each replica reuses the direction of its own
        # shard, as each perturbs along its own gradient; reads outside a
        # replica, as in saving, give the mean.
        with keras.name_scope(self.name, caller=self):
            variables = [
                keras.Variable(
                    keras.initializers.Zeros(),
                    shape=variable.shape,
                    dtype=variable.dtype,
                    trainable=False,
                    autocast=False,
                    aggregation="mean",
                    synchronization="on_read",
                    name=f"{name}_{i}",
                )
                for i, variable in enumerate(self.model.trainable_variables)
            ]
        # One attribute each: TensorFlow checkpoints follow attributes, not
        # Keras's tracked lists.
        for i, variable in enumerate(variables):
            setattr(self, f"_{name}_{i}", variable)
        return variables

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        if self.reuses and self.flatness_direction is None:
            self._build_stored_directions()

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
        if self.reuses:
            if self.flatness_direction is None:
                raise ValueError(
                    "`perturb_every` other than 1 stores a direction per weight, so the weights "
                    "must exist before training: give `model` an `Input`, or call "
                    "`gsam_model.build(input_shape)` first."
                )
            self._warn_if_xla_on_cpu()
            reuse = dict(
                perturb=ops.equal(self.steps_until_perturbation, 0),
                flatness=self.flatness_direction,
                reuse_scale=self.reuse_scale,
                reference=self.reference_gradient,
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
            self._schedule_next_step(step)

        batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
        self._loss_tracker.update_state(step.logs["loss"], sample_weight=batch_size)
        for name, mean in self._step_means.items():
            weight = batch_size if name.endswith(("loss", "gap")) else 1
            if reuse and name in PERTURBED_PASS_LOGS:
                weight = ops.cast(weight, "float32") * step.logs["perturbed_step"]
            value = step.logs["perturbed_step" if name == "perturbed_fraction" else name]
            mean.update_state(value, sample_weight=weight)
        logs = self.compute_metrics(x, y, step.y_pred, sample_weight)
        logs["rho"] = rho_t
        logs["skipped_steps"] = ops.convert_to_tensor(self.skipped_steps)
        if reuse:
            logs["perturbed_step"] = step.logs["perturbed_step"]
            logs["perturbed_steps"] = ops.convert_to_tensor(self.perturbed_steps)
        return logs

    def _schedule_next_step(self, step):
        """Counts the perturbed pass and decides whether the next step runs it."""
        self.perturbed_steps.assign_add(ops.cast(step.perturbed, "int64"))
        countdown = self.steps_until_perturbation
        if self.perturb_every == AUTO:
            perturb_next, credit, staleness_mean = schedule.next_decision(
                step.perturbed,
                step.finite,
                step.logs["reference_cosine"],
                self.perturb_credit,
                self.staleness_mean,
                self.perturb_budget,
            )
            self.perturb_credit.assign(credit)
            self.staleness_mean.assign(staleness_mean)
            countdown.assign(ops.cast(ops.where(perturb_next, 0, 1), "int64"))
            return
        # A non-finite perturbing step stored nothing: perturb again next step.
        after_perturbing = ops.where(step.finite, self.perturb_every - 1, 0)
        countdown.assign(
            ops.cast(ops.where(step.perturbed, after_perturbing, countdown - 1), "int64")
        )

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
                "perturb_budget": self.perturb_budget,
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


def _check_tied_rho(rho, rho_max, rho_min, lr_max, lr_min):
    """The arguments of rho following the learning rate, from rho_min to rho_max."""
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
            f"`rho_min` must be <= `rho_max`. Received: rho_min={rho_min}, rho_max={rho_max}"
        )
    if (lr_max is None) != (lr_min is None):
        raise ValueError(
            "Pass both `lr_max` and `lr_min`, or neither to read them "
            f"from the learning rate schedule. Received: lr_max={lr_max}, lr_min={lr_min}"
        )
    if lr_max is not None:
        _check_non_negative("lr_min", lr_min)
        if not lr_max > lr_min:
            raise ValueError(
                f"`lr_max` must be > `lr_min`. Received: lr_max={lr_max}, lr_min={lr_min}"
            )


def _check_constant_rho(rho, lr_max, lr_min):
    _check_non_negative("rho", rho)
    for name, value in (("lr_max", lr_max), ("lr_min", lr_min)):
        if value is not None:
            raise ValueError(
                f"`{name}` only applies when rho follows the learning "
                f"rate (`rho_max`, `rho_min`). Received: {name}={value}"
            )


def _check_reuse(perturb_every, reuse_scale, perturb_budget):
    if perturb_every != AUTO and (
        isinstance(perturb_every, bool)
        or not isinstance(perturb_every, numbers.Integral)
        or perturb_every < 1
    ):
        raise ValueError(
            f"`perturb_every` must be an integer >= 1 (1 is exact GSAM) or {AUTO!r}. "
            f"Received: perturb_every={perturb_every!r}"
        )
    if (
        isinstance(perturb_budget, bool)
        or not isinstance(perturb_budget, numbers.Real)
        or not 0 < perturb_budget <= 1
    ):
        raise ValueError(
            "`perturb_budget` must be a number in (0, 1]: the fraction of steps that run the "
            f"perturbed pass under perturb_every={AUTO!r}. Received: "
            f"perturb_budget={perturb_budget!r}"
        )
    if reuse_scale is not None:
        if perturb_every == 1:
            raise ValueError(
                "`reuse_scale` only applies when steps reuse the stored direction "
                f"(`perturb_every` > 1). Received: reuse_scale={reuse_scale}, perturb_every=1"
            )
        _check_non_negative("reuse_scale", reuse_scale)
