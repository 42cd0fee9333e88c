"""The per-epoch training history, as JSON beside the Trainer's outputs, and HParams summaries.

`TrainingHistory` is a Keras callback. After every epoch it rewrites `history.json` (atomically,
so a reader never sees half a file) with what the comparison report plots: the epoch's
training and validation logs, GSAM's `perturbed_loss`, `surrogate_gap` and `rho` (and, when
steps may skip the perturbed pass, `perturbed_fraction`: the share of the epoch's steps that ran
it), the learning rate, wall seconds, and the cumulative optimizer steps and forward-backward
passes. At the end
of training it writes a TensorBoard HParams summary (method, seed, rho_max, rho_min, alpha,
learning rate -> final validation accuracy), so `tensorboard --logdir PIPELINE_ROOT` compares
runs too.

Example:

```python
history = TrainingHistory("/tmp/run/history.json", TrainingConfig(optimizer="plain"))
model.fit(x, y, epochs=2, callbacks=[history])
json.load(open("/tmp/run/history.json"))["epochs"][-1]["val_accuracy"]
```
"""

from __future__ import annotations

import json
import os
import time
import uuid

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from trainer.config import TrainingConfig

HISTORY_FILE = "history.json"
# Keras log name -> history field.
RENAMED_LOGS = {
    "sparse_categorical_accuracy": "accuracy",
    "val_sparse_categorical_accuracy": "val_accuracy",
}
HPARAMS = ("method", "seed", "rho_max", "rho_min", "alpha", "learning_rate", "base_optimizer")


class TrainingHistory(keras.callbacks.Callback):
    """Writes the per-epoch history of a training run to `path`, and HParams to `hparams_dir`.

    Args:
        path: the JSON file to (re)write after every epoch.
        config: the run's `TrainingConfig`; recorded in the file, and it tells how many
            forward-backward passes each step costs.
        hparams_dir: a TensorBoard log folder for the HParams summary; `None` writes none.
    """

    def __init__(self, path: str, config: TrainingConfig, hparams_dir: str | None = None):
        super().__init__()
        if not isinstance(config, TrainingConfig):
            raise ValueError(f"config must be a TrainingConfig, got {type(config).__name__}.")
        self.path = path
        self.config = config
        self.hparams_dir = hparams_dir
        self.epochs: list[dict] = []
        self.notes: dict = {}
        self._steps = 0
        self._epoch_start = 0.0

    def resume(self, epochs: list[dict]) -> None:
        """Continues the history of an interrupted run, whose `epochs` were recorded already.

        Writes them at once: a run killed after its last epoch trains none on resuming.
        """
        self.epochs = list(epochs)
        self._steps = self.epochs[-1]["steps"] if self.epochs else 0
        write_history(self.path, self.config, self.epochs, self.notes)

    def note(self, key: str, value) -> None:
        """Records `value` (JSON) under `key` in the history file, beside the epochs: e.g. early
        stopping's stop and best epochs."""
        self.notes[key] = value
        write_history(self.path, self.config, self.epochs, self.notes)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        for name, value in (logs or {}).items():
            record[RENAMED_LOGS.get(name, name)] = float(value)
        # The epoch's rate: a plateau callback may have put it in the logs before lowering it.
        record.setdefault("learning_rate", _current_learning_rate(self.model.optimizer))
        record["seconds"] = time.perf_counter() - self._epoch_start
        record["steps"] = self._steps
        record["passes"] = self._passes(record)
        self.epochs.append(record)
        write_history(self.path, self.config, self.epochs, self.notes)

    def _passes(self, record: dict) -> int:
        """Cumulative forward-backward passes: GSAM counts the steps that ran the perturbed pass
        when some skip it (`perturbed_steps`); otherwise the config tells."""
        if "perturbed_steps" in record:
            return self._steps + round(record["perturbed_steps"])
        return self.config.forward_backward_passes(self._steps)

    def on_train_end(self, logs=None):
        if self.hparams_dir is None or not self.epochs:
            return
        final = self.epochs[-1]
        with tf.summary.create_file_writer(self.hparams_dir).as_default():
            hparams_api.hparams(hparams(self.config), trial_id=os.path.basename(self.hparams_dir))
            for name in ("val_accuracy", "val_loss", "accuracy", "loss", "surrogate_gap"):
                if name in final:
                    tf.summary.scalar(f"final_{name}", final[name], step=final["epoch"])


def hparams(config: TrainingConfig) -> dict:
    """The hyperparameters a comparison varies, as TensorBoard HParams values."""
    values = config.to_dict()
    values["method"] = config.method
    values["alpha"] = config.effective_alpha
    values["seed"] = -1 if config.seed is None else config.seed
    return {name: values[name] for name in HPARAMS}


def write_history(
    path: str, config: TrainingConfig, epochs: list[dict], notes: dict | None = None
) -> None:
    """Writes the history file atomically: the method, the config, the epochs, and the notes
    (e.g. `early_stopping`) at the top level."""
    document = {"method": config.method, "config": config.to_dict(), "epochs": epochs}
    write_json(path, {**document, **(notes or {})})


def write_json(path: str, document) -> None:
    """Writes `document` as JSON atomically: a temporary sibling renamed into place (its
    folder made if missing: a note can come before any epoch or TensorBoard log)."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    temp_path = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(temp_path, "w") as file:
        json.dump(document, file, indent=1)
    tf.io.gfile.rename(temp_path, path, overwrite=True)


def read_history(path: str) -> dict:
    """The document `write_history` wrote; a clear error when it is missing or not JSON."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no training history at {path}")
    with tf.io.gfile.GFile(path) as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"training history {path} is not valid JSON: {error}") from error


def _current_learning_rate(optimizer) -> float:
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
