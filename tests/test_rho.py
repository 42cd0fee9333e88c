"""rho schedules: the learning-rate-tied rule, schedule bounds, and the
per-epoch `RhoScheduler` with `CosineAnnealingScheduler`."""

import math

import keras
import numpy as np
import pytest

from trainer.gsam import GSAM
from trainer.gsam.rho import (
    CosineAnnealingScheduler,
    RhoScheduler,
    learning_rate_bounds,
    rho_from_learning_rate,
)

schedules = keras.optimizers.schedules


@pytest.mark.parametrize(
    "lr, expected",
    [
        (0.1, 0.04),
        (0.01, 0.02),
        (0.055, 0.03),
        (0.5, 0.04),
        (0.0, 0.02),  # Clamped.
    ],
)
def test_rho_is_linear_in_the_learning_rate_and_clamped(lr, expected):
    rho = rho_from_learning_rate(
        keras.ops.convert_to_tensor(lr), 0.04, 0.02, lr_max=0.1, lr_min=0.01
    )
    np.testing.assert_allclose(rho, expected, rtol=1e-6)


def test_equal_learning_rate_bounds_give_rho_max():
    np.testing.assert_allclose(
        rho_from_learning_rate(0.3, 0.04, 0.02, lr_max=0.1, lr_min=0.1), 0.04
    )


@pytest.mark.parametrize(
    "schedule, bounds",
    [
        (schedules.CosineDecay(0.1, 100, alpha=0.01), (0.1, 0.001)),
        (
            schedules.CosineDecay(0.001, 100, alpha=0.1, warmup_target=0.2, warmup_steps=10),
            (0.2, 0.001),
        ),
        (
            schedules.CosineDecay(0.001, 100, alpha=0.1, warmup_target=0.2, warmup_steps=0),
            (0.2, 0.02),
        ),
        (schedules.CosineDecayRestarts(0.1, 10, alpha=0.2), (0.1, 0.02)),
        (
            schedules.PolynomialDecay(0.1, 100, end_learning_rate=0.005),
            (0.1, 0.005),
        ),
        (
            schedules.PiecewiseConstantDecay([10, 20], [0.1, 0.3, 0.02]),
            (0.3, 0.02),
        ),
    ],
    ids=[
        "cosine",
        "cosine_warmup",
        "cosine_target_without_warmup",
        "restarts",
        "polynomial",
        "piecewise",
    ],
)
def test_bounds_come_from_the_schedule(schedule, bounds):
    assert learning_rate_bounds(schedule) == pytest.approx(bounds)
    # Every value the schedule takes lies within them.
    values = [float(schedule(step)) for step in range(0, 120, 3)]
    assert min(values) >= bounds[1] * (1 - 1e-6)
    assert max(values) <= bounds[0] * (1 + 1e-6)


def test_a_constant_learning_rate_has_no_bounds():
    assert learning_rate_bounds(0.1) is None
    assert learning_rate_bounds(keras.Variable(0.1)) is None


class _Halving(schedules.LearningRateSchedule):
    def __call__(self, step):
        return 0.1 * 0.5 ** keras.ops.cast(step, "float32")


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.ExponentialDecay(0.1, 10, 0.9),
        schedules.InverseTimeDecay(0.1, 10, 0.5),
        schedules.CosineDecayRestarts(0.1, 10, m_mul=0.5),
        _Halving(),
    ],
)
def test_schedules_without_known_bounds_ask_for_them(schedule):
    with pytest.raises(ValueError, match="lr_max"):
        learning_rate_bounds(schedule)


def test_cosine_annealing_values():
    schedule = CosineAnnealingScheduler(T_max=10, eta_max=0.1, eta_min=0.01)
    assert schedule(0, None) == pytest.approx(0.1)
    assert schedule(5, 0.07) == pytest.approx(0.055)
    assert schedule(10) == pytest.approx(0.01)
    assert schedule(3) == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 0.3)) / 2)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(T_max=0, eta_max=0.1), "T_max"),
        (dict(T_max=5, eta_max=0.1, eta_min=-0.1), "eta_min"),
        (dict(T_max=5, eta_max=0.01, eta_min=0.1), "eta_max"),
    ],
)
def test_cosine_annealing_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CosineAnnealingScheduler(**kwargs)


def test_cosine_annealing_serializes():
    schedule = CosineAnnealingScheduler(T_max=7, eta_max=0.2, eta_min=0.02)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, CosineAnnealingScheduler)
    assert restored.get_config() == schedule.get_config()


def _gsam(**kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    gsam_model = GSAM(model, **kwargs)
    gsam_model.compile(optimizer="sgd", loss="mse")
    return gsam_model


def _xy():
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(16, 3)).astype("float32"),
        rng.normal(size=(16, 1)).astype("float32"),
    )


def test_rho_scheduler_sets_rho_every_epoch_in_the_compiled_step(capsys):
    gsam_model = _gsam(rho=0.05, alpha=0.01)
    schedule = CosineAnnealingScheduler(T_max=3, eta_max=0.1, eta_min=0.01)
    history = gsam_model.fit(
        *_xy(),
        batch_size=8,
        epochs=4,
        verbose=0,
        callbacks=[RhoScheduler(schedule, verbose=1)],
    )
    expected = [schedule(epoch) for epoch in range(4)]
    # `rho` in the logs is what the training step used.
    np.testing.assert_allclose(history.history["rho"], expected, rtol=1e-6)
    np.testing.assert_allclose(gsam_model.rho.numpy(), expected[-1], rtol=1e-6)
    assert "Epoch 4: RhoScheduler setting rho to 0.01" in capsys.readouterr().out


def test_rho_scheduler_passes_the_current_rho():
    gsam_model = _gsam(rho=0.01)
    history = gsam_model.fit(
        *_xy(),
        batch_size=16,
        epochs=3,
        verbose=0,
        callbacks=[RhoScheduler(lambda epoch, rho: 2 * rho)],
    )
    np.testing.assert_allclose(history.history["rho"], [0.02, 0.04, 0.08], rtol=1e-6)


def test_rho_scheduler_rejects_a_negative_rho():
    with pytest.raises(ValueError, match="`rho` must be >= 0"):
        _gsam(rho=0.05).fit(*_xy(), verbose=0, callbacks=[RhoScheduler(lambda epoch, rho: -1.0)])


def test_rho_scheduler_needs_a_constant_rho():
    gsam_model = _gsam(rho_max=0.04, rho_min=0.02)
    with pytest.raises(ValueError, match="constant `rho`"):
        gsam_model.fit(*_xy(), verbose=0, callbacks=[RhoScheduler(lambda epoch, rho: 0.1)])


def test_rho_scheduler_needs_a_callable():
    with pytest.raises(ValueError, match="schedule"):
        RhoScheduler(0.1)
