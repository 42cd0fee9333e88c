"""Resuming a preempted Trainer: per-epoch backups at a path stable for the same training job.

TFX gives every Trainer execution a new `model_run_dir`, so a backup kept there is lost when a
preempted Trainer is retried. `backup_dir(fn_args)` instead keys the backup by what defines the
job: the Trainer's input files (the URIs of its examples and schema artifacts), its
`custom_config`, its hyperparameters and its step arguments. A retried or rerun Trainer with the
same inputs finds the same folder; changed data or config gets a fresh one and never resumes
someone else's training. The folders sit beside the execution folders of the Trainer's
`model_run` output, `PIPELINE_ROOT/Trainer/model_run/resume/KEY`.

`EpochBackup` (a Keras callback) writes one folder per completed epoch, `epoch-0003/`, and its
`complete.json` marker last; a folder without the marker (the writer was killed) is never read.
Besides the weights (the optimizer's, its learning rate included), it saves the state of the
callbacks it is given as `resumable` (the learning rate plateau's counters, early stopping's
best weights: trainer/training/callbacks.py) and whether training was stopping, so a run
killed after early stopping ended it trains no further epoch. `remove_backup` deletes the
job's backups once the model is exported.

Example:

```python
backup = EpochBackup(backup_dir(fn_args), epochs=4, history=training_history)
model.fit(dataset, epochs=4, callbacks=[training_history, backup])  # resumes if it can
remove_backup(backup_dir(fn_args))
```
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import keras
import tensorflow as tf
from absl import logging

from trainer.training import history as training_history

RESUME_FOLDER = "resume"
MARKER_FILE = "complete.json"
WEIGHTS_FILE = "training.weights.h5"
EPOCH_PREFIX = "epoch-"


def training_key(fn_args) -> str:
    """A digest of what defines the training job: inputs, custom_config, hyperparameters."""
    job = {
        "train_files": list(fn_args.train_files),
        "eval_files": list(fn_args.eval_files),
        "schema_path": fn_args.schema_path,
        "custom_config": fn_args.custom_config,
        "hyperparameters": fn_args.hyperparameters,
        "train_steps": fn_args.train_steps,
        "eval_steps": fn_args.eval_steps,
    }
    text = json.dumps(job, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def backup_dir(fn_args) -> str:
    """The job's backup folder: `resume/KEY` beside the Trainer's `model_run` folders."""
    run_dir = fn_args.model_run_dir.rstrip("/")
    return os.path.join(os.path.dirname(run_dir), RESUME_FOLDER, training_key(fn_args))


def latest_backup(directory: str) -> tuple[str, dict] | None:
    """The newest complete epoch folder under `directory` and its marker, or None."""
    if not tf.io.gfile.isdir(directory):
        return None
    epochs = sorted(
        name.rstrip("/")
        for name in tf.io.gfile.listdir(directory)
        if name.startswith(EPOCH_PREFIX)
    )
    for name in reversed(epochs):
        marker = os.path.join(directory, name, MARKER_FILE)
        if tf.io.gfile.exists(marker):
            with tf.io.gfile.GFile(marker) as file:
                return os.path.join(directory, name), json.load(file)
    return None


def write_marker(folder: str, content: dict) -> None:
    """Writes `folder`'s marker, last and atomically."""
    training_history.write_json(os.path.join(folder, MARKER_FILE), content)


def epoch_folder(directory: str, epoch: int) -> str:
    """The folder of the backup taken after `epoch` completed epochs."""
    return os.path.join(directory, f"{EPOCH_PREFIX}{epoch:04d}")


def prune_backups(directory: str, keep: str) -> None:
    """Deletes every epoch folder under `directory` but `keep`."""
    for name in tf.io.gfile.listdir(directory):
        folder = os.path.join(directory, name.rstrip("/"))
        if name.startswith(EPOCH_PREFIX) and folder != keep:
            tf.io.gfile.rmtree(folder)


def remove_backup(directory: str) -> None:
    """Deletes the job's backups; called once the trained model is exported."""
    if tf.io.gfile.exists(directory):
        tf.io.gfile.rmtree(directory)


class EpochBackup(keras.callbacks.Callback):
    """Backs up the model and optimizer after every epoch; restores the latest at the start.

    Place it after the callbacks it backs up: Keras calls callbacks in list order, so their
    `on_train_begin` resets them before this one restores them, and their `on_epoch_end` has
    updated them before this one saves them.

    Args:
        directory: the job's backup folder, `backup_dir(fn_args)`.
        epochs: the epochs the run trains in all, for the log line.
        history: a `TrainingHistory` whose epochs are saved with the backup and given back on
            resume, so the history counts each epoch once; `None` for none.
        log: receives the "resuming from epoch k of E" line.
        resumable: callbacks whose state is saved with every backup and restored on resume:
            each has a unique `backup_name`, `backup_state(folder) -> dict` (JSON values; it
            may write files into `folder`) and `restore_state(state, folder)`.
    """

    def __init__(
        self,
        directory: str,
        epochs: int,
        history=None,
        log: Callable = logging.info,
        resumable=(),
    ):
        super().__init__()
        if not directory:
            raise ValueError("directory must name the backup folder, got an empty value.")
        names = [callback.backup_name for callback in resumable]
        if len(set(names)) != len(names):
            raise ValueError(f"resumable callbacks need distinct backup_name values, got {names}.")
        self.directory = directory
        self.epochs = epochs
        self.history = history
        self.log = log
        self.resumable = list(resumable)

    def on_train_begin(self, logs=None):
        latest = latest_backup(self.directory)
        if latest is None:
            return
        folder, marker = latest
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(folder, WEIGHTS_FILE))
        states = marker.get("callbacks", {})
        for callback in self.resumable:
            if callback.backup_name in states:
                callback.restore_state(states[callback.backup_name], folder)
        # Keras' own BackupAndRestore resumes `fit` the same way; a run that was stopping
        # (early stopping) trains no further epoch.
        self.model._initial_epoch = self.epochs if marker.get("stopped") else marker["epoch"]
        if self.history is not None:
            self.history.resume(marker["history"])
        self.log(f"resuming from epoch {marker['epoch']} of {self.epochs} ({folder})")

    def on_epoch_end(self, epoch, logs=None):
        folder = epoch_folder(self.directory, epoch + 1)
        if tf.io.gfile.exists(folder):  # left incomplete by a killed attempt
            tf.io.gfile.rmtree(folder)
        tf.io.gfile.makedirs(folder)
        self.model.save_weights(os.path.join(folder, WEIGHTS_FILE))
        history = [] if self.history is None else self.history.epochs
        states = {
            callback.backup_name: callback.backup_state(folder) for callback in self.resumable
        }
        write_marker(
            folder,
            {
                "epoch": epoch + 1,
                "history": history,
                "stopped": bool(self.model.stop_training),
                "callbacks": states,
            },
        )
        prune_backups(self.directory, keep=folder)


class WorkerCheckpoints:
    """Per-epoch backups for the multi-worker loop (trainer/training/multi_worker.py).

    A `tf.train.CheckpointManager` of the model, its optimizer and the epochs' logs. Every
    worker takes part in saving a distributed model: the chief writes into `directory`, the
    others into a scratch folder they delete. Every worker restores the chief's latest
    checkpoint, so all resume from the same epoch; the manager names a checkpoint in its state
    file only once the checkpoint is written, so a half-written one is never read.

    Args:
        model: the model being trained, built and compiled under the strategy's scope.
        directory: the job's backup folder, `backup_dir(fn_args)`.
        chief: whether this worker keeps its checkpoints.
        task_id: this worker's index, naming its scratch folder.
    """

    def __init__(self, model, directory: str, *, chief: bool, task_id: int):
        if not directory:
            raise ValueError("directory must name the backup folder, got an empty value.")
        self.directory = directory
        self.chief = chief
        self.history_json = tf.Variable("[]", dtype=tf.string, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, history=self.history_json
        )
        self.write_dir = directory if chief else os.path.join(directory, f".worker-{task_id}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir, max_to_keep=1)

    def restore(self) -> list[dict]:
        """Restores the chief's latest checkpoint; returns the logs of its epochs ([] if none)."""
        latest = tf.train.latest_checkpoint(self.directory)
        if latest is None:
            return []
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return json.loads(self.history_json.numpy().decode())

    def save(self, history: list[dict]) -> None:
        """Saves the model, optimizer and `history`, the logs of the epochs completed."""
        self.history_json.assign(json.dumps(history))
        self.manager.save()
        if not self.chief:
            tf.io.gfile.rmtree(self.write_dir)
