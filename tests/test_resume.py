"""EpochBackup: a run interrupted after k epochs resumes where it stopped, with its history."""

import os
import types

import keras
import numpy as np
import pytest

from trainer.config import TrainingConfig
from trainer.gsam import GSAM
from trainer.training import history, resume

CONFIG = TrainingConfig(optimizer="gsam", epochs=4)


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, size=64)


def gsam_model():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    model = GSAM(inner, rho=0.05, alpha=0.1)
    model.build((None, 6))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    return model


class StopAfter(keras.callbacks.Callback):
    """Ends training after `epochs` epochs, as a preemption would."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            self.model.stop_training = True


def train(tmp_path, run, backup_dir, extra=(), lines=None):
    x, y = data()
    model = gsam_model()
    training_history = history.TrainingHistory(str(tmp_path / run / "history.json"), CONFIG)
    os.makedirs(tmp_path / run, exist_ok=True)
    backup = resume.EpochBackup(backup_dir, 4, history=training_history, log=lines.append)
    model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
              callbacks=[training_history, backup, *extra])  # fmt: skip
    return model, history.read_history(str(tmp_path / run / "history.json"))["epochs"]


def test_resumed_training_matches_uninterrupted_training(tmp_path):
    lines = []
    straight, straight_history = train(tmp_path, "straight", str(tmp_path / "a"), lines=lines)
    backup_dir = str(tmp_path / "b")
    train(tmp_path, "killed", backup_dir, extra=[StopAfter(2)], lines=lines)
    # The next epoch's backup was being written when the process died: never read.
    os.makedirs(resume.epoch_folder(backup_dir, 3))
    resumed, resumed_history = train(tmp_path, "resumed", backup_dir, lines=lines)

    assert lines == [f"resuming from epoch 2 of 4 ({resume.epoch_folder(backup_dir, 2)})"]
    assert int(resumed.optimizer.iterations) == int(straight.optimizer.iterations) == 16
    for got, want in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [r["epoch"] for r in resumed_history] == [1, 2, 3, 4]
    assert [r["steps"] for r in resumed_history] == [r["steps"] for r in straight_history]
    np.testing.assert_allclose(
        [r["loss"] for r in resumed_history], [r["loss"] for r in straight_history], rtol=1e-5
    )


def test_a_run_killed_after_its_last_epoch_resumes_with_its_whole_history(tmp_path):
    lines = []
    backup_dir = str(tmp_path / "b")
    _, trained_history = train(tmp_path, "killed", backup_dir, lines=lines)
    resumed, resumed_history = train(tmp_path, "resumed", backup_dir, lines=lines)

    assert lines == [f"resuming from epoch 4 of 4 ({resume.epoch_folder(backup_dir, 4)})"]
    assert int(resumed.optimizer.iterations) == 16
    assert resumed_history == trained_history


def fn_args(**changes):
    values = dict(
        train_files=["/root/ExampleGen/examples/1/Split-train/*"],
        eval_files=["/root/ExampleGen/examples/1/Split-eval/*"],
        schema_path="/root/SchemaGen/schema/2/schema.pbtxt",
        custom_config={"epochs": 4},
        hyperparameters=None,
        train_steps=None,
        eval_steps=None,
        model_run_dir="/root/Trainer/model_run/7",
    )
    return types.SimpleNamespace(**{**values, **changes})


def test_the_backup_folder_is_stable_for_the_job_and_new_for_changed_data_or_config():
    folder = resume.backup_dir(fn_args())
    assert folder.startswith("/root/Trainer/model_run/resume/")
    assert resume.backup_dir(fn_args(model_run_dir="/root/Trainer/model_run/8")) == folder
    for change in (
        dict(train_files=["/root/ExampleGen/examples/9/Split-train/*"]),
        dict(custom_config={"epochs": 5}),
        dict(hyperparameters={"learning_rate": 0.1}),
        dict(train_steps=100),
    ):
        assert resume.backup_dir(fn_args(**change)) != folder


def test_an_empty_backup_folder_is_an_error():
    with pytest.raises(ValueError, match="directory must name the backup folder"):
        resume.EpochBackup("", 4)
