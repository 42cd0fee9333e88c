"""Schedules for GSAM's perturbation radius rho.

Two ways to move rho during training:

- the GSAM paper's schedule, rho tied to the learning rate at every step
  (`rho_from_learning_rate`, used by `GSAM(rho_max=..., rho_min=...)`);
- a per-epoch schedule for a constant-rho `GSAM`, as in keras-gsam:
  `RhoScheduler(CosineAnnealingScheduler(...))`.

Example:

```python
import keras
from trainer.gsam import GSAM
from trainer.rho import CosineAnnealingScheduler, RhoScheduler  # or trainer.gsam.rho

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
gsam_model = GSAM(model, rho=0.05, alpha=0.01)
gsam_model.compile(optimizer="sgd", loss="mse")
x, y = keras.random.normal((32, 4)), keras.random.normal((32, 1))
schedule = CosineAnnealingScheduler(T_max=3, eta_max=0.1, eta_min=0.01)
gsam_model.fit(x, y, epochs=3, callbacks=[RhoScheduler(schedule)], verbose=0)
```
"""

import math

import keras
from keras import ops


def rho_from_learning_rate(learning_rate, rho_max, rho_min, lr_max, lr_min):
    """The GSAM paper's rho for the current learning rate.

    `rho_t = rho_min + (rho_max - rho_min) * (lr_t - lr_min) / (lr_max -
    lr_min)`, clamped to `[rho_min, rho_max]`. When `lr_max == lr_min` rho
    is `rho_max`, as in big_vision.

    Args:
        learning_rate: the current learning rate `lr_t`, a scalar.
        rho_max: rho at `lr_max`.
        rho_min: rho at `lr_min`.
        lr_max: the largest learning rate, a Python float.
        lr_min: the smallest learning rate, a Python float.

    Returns:
        A float32 scalar tensor.
    """
    rho_max = ops.cast(rho_max, "float32")
    rho_min = ops.cast(rho_min, "float32")
    if lr_max == lr_min:
        return rho_max
    fraction = (ops.cast(learning_rate, "float32") - lr_min) / (lr_max - lr_min)
    rho = rho_min + (rho_max - rho_min) * fraction
    return ops.clip(rho, rho_min, rho_max)


def learning_rate_bounds(learning_rate):
    """`(lr_max, lr_min)` of an optimizer's learning rate, where it has them.

    Args:
        learning_rate: what the optimizer was given: a number or variable
            (constant), or one of Keras's `CosineDecay`,
            `CosineDecayRestarts` (with `m_mul=1`), `PolynomialDecay` and
            `PiecewiseConstantDecay` schedules.

    Returns:
        `None` for a constant learning rate (nothing for rho to follow), else
        a tuple of Python floats `(lr_max, lr_min)`.

    Raises:
        ValueError: if the schedule has no known bounds (for example
            `ExponentialDecay`, which decays without a floor, or a custom
            schedule). Pass `lr_max` and `lr_min` to `GSAM` instead.
    """
    schedules = keras.optimizers.schedules
    if not isinstance(learning_rate, schedules.LearningRateSchedule):
        return None
    if isinstance(learning_rate, schedules.CosineDecay):
        config = learning_rate.get_config()
        start = config["initial_learning_rate"]
        if config["warmup_target"] is None:
            return start, start * config["alpha"]
        # With a warmup target the decay starts from it; the initial rate
        # is only reached when there are warmup steps.
        peak = config["warmup_target"]
        values = [peak, peak * config["alpha"]]
        values += [start] if config["warmup_steps"] else []
        return max(values), min(values)
    if isinstance(learning_rate, schedules.CosineDecayRestarts):
        config = learning_rate.get_config()
        if config["m_mul"] == 1.0:
            start = config["initial_learning_rate"]
            return start, start * config["alpha"]
    if isinstance(learning_rate, schedules.PolynomialDecay):
        config = learning_rate.get_config()
        values = (config["initial_learning_rate"], config["end_learning_rate"])
        return max(values), min(values)
    if isinstance(learning_rate, schedules.PiecewiseConstantDecay):
        values = learning_rate.get_config()["values"]
        return max(values), min(values)
    raise ValueError(
        "Cannot infer `lr_max` and `lr_min` from the learning rate schedule "
        f"{learning_rate.__class__.__name__}. Pass `lr_max` and `lr_min` to "
        "GSAM explicitly."
    )


@keras.saving.register_keras_serializable(package="gsam_tfx")
class CosineAnnealingScheduler:
    """Cosine annealing from `eta_max` at epoch 0 to `eta_min` at `T_max`.

    `eta = eta_min + (eta_max - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`.
    Called as `schedule(epoch, current_value)` (the current value is
    ignored), the signature `RhoScheduler` and
    `keras.callbacks.LearningRateScheduler` expect.

    Args:
        T_max: number of epochs of one half cosine period, > 0.
        eta_max: the value at epoch 0.
        eta_min: the value at epoch `T_max`, `0 <= eta_min <= eta_max`.

    Example:

    >>> schedule = CosineAnnealingScheduler(T_max=10, eta_max=0.1)
    >>> round(schedule(5, None), 6)
    0.05
    """

    def __init__(self, T_max, eta_max, eta_min=0.0):
        if not T_max > 0:
            raise ValueError(f"`T_max` must be > 0. Received: T_max={T_max}")
        if not eta_min >= 0:
            raise ValueError(f"`eta_min` must be >= 0. Received: eta_min={eta_min}")
        if not eta_max >= eta_min:
            raise ValueError(
                f"`eta_max` must be >= `eta_min`. Received: eta_max={eta_max}, eta_min={eta_min}"
            )
        self.T_max = T_max
        self.eta_max = eta_max
        self.eta_min = eta_min

    def __call__(self, epoch, value=None):
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.eta_max - self.eta_min) * cosine

    def get_config(self):
        return {
            "T_max": self.T_max,
            "eta_max": self.eta_max,
            "eta_min": self.eta_min,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class RhoScheduler(keras.callbacks.Callback):
    """Sets a constant-rho `GSAM`'s rho at the start of every epoch.

    The new value is written to the model's rho variable, so the compiled
    training step uses it without retracing. Not for a `GSAM` whose rho
    follows the learning rate (`rho_max`/`rho_min`).

    Args:
        schedule: a function `(epoch, rho) -> new rho`, `epoch` counted
            from 0 and `rho` the current value.
        verbose: 1 prints every update.

    Example:

    ```python
    callback = RhoScheduler(lambda epoch, rho: 0.05 if epoch < 5 else 0.1)
    gsam_model.fit(x, y, epochs=10, callbacks=[callback])
    ```
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise ValueError(f"`schedule` must be callable. Received: schedule={schedule}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        if getattr(self.model, "rho", None) is None:
            raise ValueError(
                "RhoScheduler needs a GSAM model with a constant `rho`. "
                f"Received: {self.model.__class__.__name__} "
                f"{self.model.name!r} without one."
            )
        current = float(ops.convert_to_numpy(self.model.rho))
        rho = float(self.schedule(epoch, current))
        self.model.rho = rho
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: RhoScheduler setting rho to {rho}.")
