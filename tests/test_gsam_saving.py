"""Saving GSAM: `.keras` files, TF checkpoints, and the inner model's
SavedModel export."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.gsam import GSAM


def _data(n=32):
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(n, 6)).astype("float32"),
        rng.normal(size=(n, 1)).astype("float32"),
    )


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(1),
        ]
    )


def _canonical(config):
    return json.loads(json.dumps(config, default=list))


@pytest.mark.parametrize(
    "options",
    [
        dict(rho=0.07, alpha=0.2, asam=True, asam_eta=0.02, eps=1e-10),
        dict(
            rho_max=0.04,
            rho_min=0.02,
            lr_max=0.1,
            lr_min=0.01,
            alpha=0.05,
            adaptive=True,
            minimize_fp=False,
            sync_perturbation=True,
        ),
    ],
    ids=["constant_rho", "lr_tied_rho"],
)
def test_keras_file_round_trips_wrapper_model_and_hyperparameters(tmp_path, options):
    x, y = _data()
    gsam_model = GSAM(_model(), name="wrapped", **options)
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 8, alpha=0.1)
    gsam_model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9),
        loss="mse",
        metrics=["mae"],
    )
    gsam_model.fit(x, y, batch_size=8, verbose=0)
    # Changed after construction: must survive through the variables.
    gsam_model.alpha = 0.3
    if gsam_model.rho is not None:
        gsam_model.rho = 0.09
    else:
        gsam_model.rho_min = 0.01

    path = tmp_path / "gsam.keras"
    gsam_model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, GSAM)
    assert _canonical(loaded.get_config()) == _canonical(gsam_model.get_config())
    assert loaded.get_config()["alpha"] == pytest.approx(0.3)
    for name in ("rho", "rho_max", "rho_min", "alpha", "skipped_steps"):
        original, restored = getattr(gsam_model, name), getattr(loaded, name)
        assert (original is None) == (restored is None), name
        if original is not None:
            assert restored.numpy() == original.numpy(), name
    for original, restored in zip(gsam_model.model.variables, loaded.model.variables):
        np.testing.assert_array_equal(restored.numpy(), original.numpy())
    for original, restored in zip(gsam_model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(restored.numpy(), original.numpy())
    # Bit for bit: a round trip, the same weights through the same compiled graph.
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), gsam_model.predict(x, verbose=0))

    # Training resumes identically.
    gsam_model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    for original, restored in zip(gsam_model.model.variables, loaded.model.variables):
        np.testing.assert_allclose(restored.numpy(), original.numpy(), atol=1e-6)


def test_checkpoint_restores_hyperparameters_and_counters(tmp_path):
    x, y = _data()
    x[0, 0] = np.nan
    gsam_model = GSAM(_model(), rho=0.05, alpha=0.1)
    gsam_model.compile(optimizer="sgd", loss="mse")
    gsam_model.fit(x, y, batch_size=32, verbose=0)
    assert int(gsam_model.skipped_steps.numpy()) == 1
    checkpoint = tf.train.Checkpoint(model=gsam_model)
    path = checkpoint.save(str(tmp_path / "ckpt"))

    gsam_model.rho = 0.5
    gsam_model.alpha = 0.0
    gsam_model.skipped_steps.assign(0)
    checkpoint.restore(path).assert_existing_objects_matched()
    assert gsam_model.rho.numpy() == np.float32(0.05)
    assert gsam_model.alpha.numpy() == np.float32(0.1)
    assert int(gsam_model.skipped_steps.numpy()) == 1


def test_inner_model_exports_as_saved_model(tmp_path):
    x, y = _data()
    gsam_model = GSAM(_model(), rho=0.05, alpha=0.1)
    gsam_model.compile(optimizer="sgd", loss="mse")
    gsam_model.fit(x, y, batch_size=8, verbose=0)

    tf.saved_model.save(gsam_model.model, str(tmp_path / "export"))
    serving = tf.saved_model.load(str(tmp_path / "export"))
    outputs = serving.signatures["serving_default"](tf.constant(x))
    (prediction,) = outputs.values()
    np.testing.assert_allclose(
        prediction.numpy(), gsam_model.model.predict(x, verbose=0), atol=1e-6
    )
