"""The callbacks of a practitioner's training run: a learning rate lowered on a plateau of
val_loss, and early stopping that restores the best weights, both resumable.

They are Keras's own `ReduceLROnPlateau` and `EarlyStopping`, so they decide exactly as Keras
does, with what a preemptible TFX Trainer needs on top:

- `PlateauSchedule` ramps the learning rate up linearly first (`warmup_steps`, as the cosine
  schedule's warmup does) and starts watching val_loss after it. GSAM's rho follows the rate
  it sets at every step (`GSAM(..., lr_max=..., lr_min=...)`), so rho falls with the rate in
  the epoch right after a reduction.
- `BestWeightsEarlyStopping` watches val_loss, always restores the weights of the best epoch
  at the end of training (so the exported model is the best one), and records the stop epoch
  and the best epoch in `history.json`.
- Both hand their state to the per-epoch backups (`resume.EpochBackup(..., resumable=[...])`):
  counters and best values in the backup's marker, the best weights in a file beside it. The
  learning rate itself is an optimizer variable, saved with the weights. A preempted Trainer
  thus resumes with the rate, the plateau's counters and early stopping's best weights where
  they were.

Example:

```python
plateau = PlateauSchedule(peak=1e-3, floor=0.0, factor=0.5, patience=3)
stopping = BestWeightsEarlyStopping(patience=10, history=training_history)
model.fit(train, validation_data=val, epochs=100,
          callbacks=[training_history, plateau, stopping,
                     resume.EpochBackup(folder, 100, training_history,
                                        resumable=[plateau, stopping])])
```
"""

from __future__ import annotations

import io
import os

import keras
import numpy as np
import tensorflow as tf

MONITOR = "val_loss"
BEST_WEIGHTS_FILE = "best_weights.npz"


class PlateauSchedule(keras.callbacks.ReduceLROnPlateau):
    """Keras's `ReduceLROnPlateau` on val_loss, after a linear warmup, resumable.

    Args:
        peak: the learning rate after the warmup (the optimizer's at the start without one).
        floor: the lowest rate a reduction goes to (`min_lr`); the warmup starts from it.
        factor: each reduction multiplies the rate by this, in (0, 1).
        patience: epochs without a lower val_loss (by Keras's `min_delta`, 1e-4) before a
            reduction.
        warmup_steps: optimizer steps of the linear warmup from `floor` to `peak`; the epochs
            that end inside it do not count towards a plateau.
    """

    backup_name = "plateau"

    def __init__(self, peak: float, floor: float, factor: float, patience: int, warmup_steps=0):
        super().__init__(
            monitor=MONITOR, factor=factor, patience=patience, min_lr=floor, verbose=1
        )
        if not peak > floor >= 0:
            raise ValueError(f"peak ({peak}) must exceed floor ({floor}), which must be >= 0.")
        self.peak = float(peak)
        self.floor = float(floor)
        self.warmup_steps = int(warmup_steps)
        self._step = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._step = None  # read from the optimizer at the first step, once resumed

    def on_train_batch_begin(self, batch, logs=None):
        if self._step is None:
            self._step = int(self.model.optimizer.iterations)
        if self._step < self.warmup_steps:
            fraction = self._step / self.warmup_steps
            self.model.optimizer.learning_rate = self.floor + (self.peak - self.floor) * fraction
            self._step += 1
        elif self._step == self.warmup_steps and self.warmup_steps:
            self.model.optimizer.learning_rate = self.peak
            self._step += 1

    def on_epoch_end(self, epoch, logs=None):
        if self._step is not None and self._step < self.warmup_steps:
            return
        super().on_epoch_end(epoch, logs)

    def backup_state(self, folder: str) -> dict:
        """The plateau's counters, for `resume.EpochBackup`'s marker."""
        best = None if self.best is None else float(self.best)
        return {"best": best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def restore_state(self, state: dict, folder: str) -> None:
        """Continues from the counters `backup_state` returned."""
        self.best = state["best"]
        self.wait = state["wait"]
        self.cooldown_counter = state["cooldown_counter"]


class BestWeightsEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's `EarlyStopping` on val_loss with `restore_best_weights=True`, resumable.

    At the end of training (stopped early or not) the model holds the weights of the epoch
    with the lowest val_loss, and `history` (a `TrainingHistory`) records under
    `early_stopping` the patience, the epoch training stopped after (`None` if it ran every
    epoch), the best epoch and its val_loss (epochs counted from 1).

    Args:
        patience: epochs without a lower val_loss before stopping.
        history: the run's `TrainingHistory`, or `None`.
    """

    backup_name = "early_stopping"

    def __init__(self, patience: int, history=None):
        super().__init__(monitor=MONITOR, patience=patience, restore_best_weights=True, verbose=1)
        self.history = history

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.history is not None and self.best_weights is not None:
            self.history.note(
                "early_stopping",
                {
                    "monitor": self.monitor,
                    "patience": self.patience,
                    "stopped_epoch": self.stopped_epoch + 1 if self.stopped_epoch else None,
                    "best_epoch": self.best_epoch + 1,
                    f"best_{self.monitor}": None if self.best is None else float(self.best),
                    "restored_best_weights": True,
                },
            )

    def backup_state(self, folder: str) -> dict:
        """The counters for `resume.EpochBackup`'s marker; the best weights go to `folder`."""
        if self.best_weights is not None:
            buffer = io.BytesIO()
            np.savez(buffer, *self.best_weights)
            with tf.io.gfile.GFile(os.path.join(folder, BEST_WEIGHTS_FILE), "wb") as file:
                file.write(buffer.getvalue())
        return {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": None if self.best is None else float(self.best),
            "best_epoch": self.best_epoch,
            "has_best_weights": self.best_weights is not None,
        }

    def restore_state(self, state: dict, folder: str) -> None:
        """Continues from what `backup_state` saved in `folder`."""
        self.wait = state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.best_weights = None
        if state["has_best_weights"]:
            with tf.io.gfile.GFile(os.path.join(folder, BEST_WEIGHTS_FILE), "rb") as file:
                arrays = np.load(io.BytesIO(file.read()))
                self.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
