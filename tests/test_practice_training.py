"""Training as practitioners do, through the public training function (`fit.train`): early
stopping exports the best epoch; the plateau lowers the learning rate and GSAM's rho with it;
a killed run resumes both where they were; class weights, label smoothing and weight decay
enter both passes of SAM and GSAM as Keras defines them."""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.config import TrainingConfig
from trainer.gsam import GSAM
from trainer.gsam.gradients import sharpness_aware_gradients
from trainer.gsam.rho import rho_from_learning_rate
from trainer.models import export
from trainer.models.builtin import SmoothedSparseCategoricalCrossentropy, training_loss
from trainer.training import fit, history, resume

FEATURES, CLASSES, EXAMPLES = 8, 4, 64
STEPS = EXAMPLES // 16
# val_loss rises from the first epoch on: the validation labels are the training labels
# shifted by one class, so the better the model fits the training data, the worse it does.
STALLING = TrainingConfig(
    optimizer="gsam",
    base_optimizer="adam",
    learning_rate=0.05,
    lr_schedule="plateau",
    plateau_patience=1,
    plateau_factor=0.5,
    min_learning_rate=0.005,
    rho_max=0.04,
    rho_min=0.02,
    early_stopping=3,
    epochs=7,
    batch_size=16,
    seed=0,
)


def datasets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=EXAMPLES)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    validation = tf.data.Dataset.from_tensor_slices((x, (y + 1) % CLASSES)).batch(32)
    return train, validation


def mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def fn_args(root, config):
    return types.SimpleNamespace(
        model_run_dir=str(root / "model_run" / "1"),
        serving_model_dir=str(root / "model" / "Format-Serving"),
        custom_config=config.to_custom_config(),
        train_files=["train"],
        eval_files=["eval"],
        schema_path=None,
        hyperparameters=None,
        train_steps=None,
        eval_steps=None,
    )


class EpochWeights(keras.callbacks.Callback):
    """The inner model's weights after every epoch; raises `Preempted` after `kill_after`."""

    def __init__(self, kill_after=None):
        super().__init__()
        self.weights = {}
        self.kill_after = kill_after

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = self.model.model.get_weights()
        if epoch + 1 == self.kill_after:
            raise Preempted(epoch + 1)


class Preempted(Exception):
    pass


def train(root, config=STALLING, kill_after=None):
    """`fit.train` on the stalling data; returns the history document, the per-epoch weights
    and the exported Keras model (None when killed)."""
    args = fn_args(root, config)
    train_dataset, validation = datasets()
    epochs = EpochWeights(kill_after)
    try:
        fit.train(mlp(), args, train_dataset, validation, config=config, callbacks=[epochs],
                  steps_per_epoch=STEPS)  # fmt: skip
    except Preempted:
        return None, epochs.weights, None
    document = history.read_history(os.path.join(args.model_run_dir, history.HISTORY_FILE))
    model = keras.saving.load_model(export.keras_model_path(str(root / "model")))
    return document, epochs.weights, model


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train(tmp_path_factory.mktemp("straight"))


def test_early_stopping_stops_and_exports_the_best_epoch_not_the_last(straight):
    document, weights, model = straight
    epochs = document["epochs"]
    val_losses = [record["val_loss"] for record in epochs]
    best = int(np.argmin(val_losses)) + 1
    stopped = document["early_stopping"]["stopped_epoch"]
    assert stopped == len(epochs) == best + STALLING.early_stopping < STALLING.epochs
    assert document["early_stopping"]["best_epoch"] == best
    assert document["early_stopping"]["best_val_loss"] == pytest.approx(min(val_losses))
    for got, want in zip(model.get_weights(), weights[best]):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights[stopped]))


def test_the_plateau_lowers_the_rate_and_rho_follows_it_in_the_same_epoch(straight):
    epochs = straight[0]["epochs"]
    rates = [record["learning_rate"] for record in epochs]
    assert rates[0] == pytest.approx(STALLING.learning_rate)
    # val_loss stalls after epoch 1: each later epoch halves the rate for the next.
    assert rates == pytest.approx([0.05, 0.05, 0.025, 0.0125][: len(rates)])
    for record in epochs:
        expected = rho_from_learning_rate(
            record["learning_rate"],
            STALLING.rho_max,
            STALLING.rho_min,
            STALLING.learning_rate,
            STALLING.plateau_floor,
        )
        assert record["rho"] == pytest.approx(float(expected), rel=1e-6)
        assert STALLING.rho_min <= record["rho"] <= STALLING.rho_max
    rhos = [record["rho"] for record in epochs]
    assert rhos[2] < rhos[1] and rhos[3] < rhos[2]


def test_a_killed_run_resumes_with_its_rate_rho_counters_and_best_weights(straight, tmp_path):
    # Killed after epoch 3, once the rate was lowered and early stopping had counted 2 epochs.
    assert train(tmp_path, kill_after=3)[0] is None
    [folder] = os.listdir(os.path.join(tmp_path, "model_run", resume.RESUME_FOLDER))
    backup = resume.latest_backup(os.path.join(tmp_path, "model_run", resume.RESUME_FOLDER, folder))
    states = backup[1]["callbacks"]
    assert states["plateau"]["wait"] == 0 and states["early_stopping"]["wait"] == 2
    document, _, model = train(tmp_path)
    want, _, want_model = straight
    for name in ("learning_rate", "rho", "epoch", "steps"):
        assert [r[name] for r in document["epochs"]] == pytest.approx(
            [r[name] for r in want["epochs"]]
        ), name
    np.testing.assert_allclose(
        [r["val_loss"] for r in document["epochs"]],
        [r["val_loss"] for r in want["epochs"]],
        rtol=1e-4,
    )
    assert document["early_stopping"] == want["early_stopping"]
    for got, expected in zip(model.get_weights(), want_model.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_run_killed_after_stopping_early_trains_no_further_epoch(tmp_path):
    config = TrainingConfig(**{**STALLING.to_dict(), "early_stopping": 1, "epochs": 5})
    killed = train(tmp_path, config, kill_after=2)  # epoch 2 stopped it: the backup says so
    assert killed[0] is None
    document, weights, model = train(tmp_path, config)
    assert weights == {}  # no epoch trained
    assert [r["epoch"] for r in document["epochs"]] == [1, 2]
    assert document["early_stopping"]["stopped_epoch"] == 2  # restored from the backup
    for got, want in zip(model.get_weights(), killed[1][1]):
        np.testing.assert_array_equal(got, want)


def gsam_on(x, y, loss, **config):
    keras.utils.set_random_seed(0)
    model = GSAM(mlp(), rho=0.05, alpha=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1, **config), loss=loss)
    model.build((None, FEATURES))
    return model


def both_losses(model, x, y, sample_weight, loss):
    """The clean and perturbed losses, computed by hand: `loss` at w, and at w + e with
    e = rho g / |g|, g its gradient at w."""
    inner = model.model
    weights = [tf.identity(v) for v in inner.trainable_variables]
    with tf.GradientTape() as tape:
        clean = loss(y, inner(x, training=True), sample_weight=sample_weight)
    grads = tape.gradient(clean, inner.trainable_variables)
    norm = tf.linalg.global_norm(grads)
    for variable, w, g in zip(inner.trainable_variables, weights, grads):
        variable.assign(w + 0.05 * g / (norm + 1e-12))
    perturbed = loss(y, inner(x, training=True), sample_weight=sample_weight)
    for variable, w in zip(inner.trainable_variables, weights):
        variable.assign(w)
    return float(clean), float(perturbed)


def test_class_weights_change_both_passes_loss_exactly_as_keras_defines_them():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=32)
    class_weight = {0: 0.5, 1: 2.0, 2: 1.0, 3: 4.0}
    loss = keras.losses.SparseCategoricalCrossentropy()
    logged = {}
    for weighted in (True, False):
        model = gsam_on(x, y, loss)
        keras_weights = np.array([class_weight[int(label)] for label in y], "float32")
        expected = both_losses(model, x, y, keras_weights if weighted else None, loss)
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: logged.update(logs)
        )
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False, callbacks=[record],
                  class_weight=class_weight if weighted else None)  # fmt: skip
        # Keras's definition: sum(w_i * l_i) / batch size, in the clean and perturbed pass.
        assert float(logged["loss"]) == pytest.approx(expected[0], rel=1e-5)
        assert float(logged["perturbed_loss"]) == pytest.approx(expected[1], rel=1e-5)
        if weighted:
            weighted_losses = expected
    assert weighted_losses[0] != pytest.approx(expected[0], rel=1e-3)  # the weights mattered


def test_balanced_class_weights_follow_the_counts():
    assert fit.balanced_class_weights([30, 10, 0]) == [40 / 90, 40 / 30, 0.0]
    with pytest.raises(ValueError, match="needs training examples"):
        fit.balanced_class_weights([0, 0])


def test_label_smoothing_is_kerass_categorical_smoothing_in_both_passes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(16, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=16)
    smoothed = training_loss(0.2)
    assert isinstance(smoothed, SmoothedSparseCategoricalCrossentropy)
    probabilities = mlp()(x)
    keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)
    np.testing.assert_allclose(
        float(smoothed(y, probabilities)),
        float(keras_loss(keras.ops.one_hot(y, CLASSES), probabilities)),
        rtol=1e-6,
    )
    model = gsam_on(x, y, smoothed)
    expected = both_losses(model, x, y, None, smoothed)
    step = sharpness_aware_gradients(model, x, y, rho=0.05, alpha=0.1)
    assert float(step.logs["loss"]) == pytest.approx(expected[0], rel=1e-5)
    assert float(step.logs["perturbed_loss"]) == pytest.approx(expected[1], rel=1e-5)


def test_weight_decay_is_decoupled_from_the_loss_both_passes_see():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=16)
    loss = keras.losses.SparseCategoricalCrossentropy()
    models = {decay: gsam_on(x, y, loss, weight_decay=decay or None) for decay in (0.0, 0.1)}
    steps = {}
    before = models[0.0].model.get_weights()
    for decay, model in models.items():
        logs = model.train_on_batch(x, y, return_dict=True)
        steps[decay] = (logs, model.model.get_weights())
    for name in ("loss", "perturbed_loss"):
        assert steps[0.1][0][name] == pytest.approx(steps[0.0][0][name], rel=1e-6)
    # w' = w - lr * d - lr * decay * w: the same step, then the decay of the weights.
    for w, plain, decayed in zip(before, steps[0.0][1], steps[0.1][1]):
        np.testing.assert_allclose(decayed, plain - 0.1 * 0.1 * w, rtol=1e-5, atol=1e-6)
    optimizer = fit.make_optimizer(TrainingConfig(weight_decay=5e-4), 0.1)
    assert optimizer.weight_decay == pytest.approx(5e-4)


def test_the_practice_settings_are_checked_naming_the_field():
    for values, message in (
        (dict(plateau_factor=0.5, lr_schedule="plateau", min_learning_rate=0.2), "below learn"),
        (dict(plateau_patience=5), "plateau_patience only apply with lr_schedule 'plateau'"),
        (dict(lr_schedule="plateau", plateau_factor=1.0), "plateau_factor must be < 1"),
        (dict(early_stopping=0), "early_stopping must be an integer >= 1"),
        (dict(class_weights=(1.0,)), "class_weights must be 'balanced' or one"),
        (dict(class_weights="even"), "class_weights must be 'balanced'"),
        (dict(label_smoothing=1.0), "label_smoothing must be < 1"),
        (dict(weight_decay=-1.0), "weight_decay must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainingConfig(learning_rate=0.1, **values)
    config = TrainingConfig(augment=["brightness", "crop"], class_weights=[1, 2])
    assert config.augment == ("crop", "brightness") and config.class_weights == (1.0, 2.0)
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_plateau_and_early_stopping_need_validation_data(tmp_path):
    train_dataset, _ = datasets()
    with pytest.raises(ValueError, match="watch val_loss: pass an eval_dataset"):
        fit.train(mlp(), fn_args(tmp_path, STALLING), train_dataset, None, config=STALLING,
                  steps_per_epoch=STEPS)  # fmt: skip


def test_a_model_compiled_with_its_own_loss_refuses_the_loss_settings(tmp_path):
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for values in (dict(label_smoothing=0.1), dict(weight_decay=1e-4)):
        with pytest.raises(ValueError, match="compiled with its own"):
            fit.compile_for_training(model, TrainingConfig(**values), steps_per_epoch=4)


def test_the_plateau_warms_up_linearly_from_its_floor_first(tmp_path):
    config = TrainingConfig(
        **{**STALLING.to_dict(), "warmup_epochs": 1.0, "epochs": 2, "early_stopping": None}
    )
    rates = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: rates.append(
            float(record.model.optimizer.learning_rate)
        )
    )
    train_dataset, validation = datasets()
    fit.train(mlp(), fn_args(tmp_path, config), train_dataset, validation, config=config,
              callbacks=[record], steps_per_epoch=STEPS)  # fmt: skip
    floor, peak = config.plateau_floor, config.learning_rate
    ramp = [floor + (peak - floor) * step / STEPS for step in range(STEPS)]
    assert rates == pytest.approx([*ramp, peak, peak, peak, peak], rel=1e-6)


def test_balanced_class_weights_are_counted_from_the_training_split(tmp_path):
    from tests import trainer_examples

    rng = np.random.default_rng(5)
    labels = [0] * 40 + [1] * 10 + [2] * 10
    splits = {
        "train": [
            trainer_examples.tabular_example(rng.normal(size=2).tolist(), 1, b"x", label)
            for label in labels
        ],
        "eval": trainer_examples.random_tabular_examples(rng, 8),
    }
    config = TrainingConfig(
        model="mlp", optimizer="sam", alpha=None, epochs=1, batch_size=16, min_train_steps=0,
        class_weights="balanced",
    )  # fmt: skip
    _, run_dir = trainer_examples.run_trainer(
        tmp_path, config, splits, trainer_examples.TABULAR_SCHEMA
    )
    document = history.read_history(os.path.join(run_dir, history.HISTORY_FILE))
    assert document["class_weights"] == pytest.approx([60 / 120, 60 / 30, 60 / 30])
