"""GSAM in anyone's TFX Trainer: `train(model, fn_args, train_dataset, eval_dataset)`.

The public training function for a user's own `run_fn`, and the one the project's own
`trainer.task.run_fn` calls: it wraps the model for GSAM or SAM (`trainer.gsam.GSAM`, rho tied
to the learning rate as `TrainingConfig` says), compiles it with the model's own compile
settings (or the config's optimizer, schedule and loss when the model is not compiled), trains
it with TensorBoard logs, `history.json` and per-epoch backups that a retried Trainer resumes
from, then exports the serving SavedModel (with the signatures you pass) to
`fn_args.serving_model_dir` and the Keras model beside it, all or nothing.

Example, TFX's penguin example's `run_fn` with GSAM (only the last lines change):

```python
from trainer.config import TrainingConfig
from trainer.training.fit import train

def run_fn(fn_args):
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train_dataset = base.input_fn(fn_args.train_files, fn_args.data_accessor,
                                  tf_transform_output, base.TRAIN_BATCH_SIZE)
    eval_dataset = base.input_fn(fn_args.eval_files, fn_args.data_accessor,
                                 tf_transform_output, base.EVAL_BATCH_SIZE)
    model = _make_keras_model(_get_hyperparameters())
    train(model, fn_args, train_dataset, eval_dataset,
          config=TrainingConfig(optimizer="gsam", rho_max=0.05, rho_min=0.05, alpha=0.01,
                                epochs=1),
          signatures=lambda model: base.make_serving_signatures(model, tf_transform_output))
```
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from typing import Callable

import keras
import tensorflow as tf
from absl import logging

from trainer.config import BALANCED, CUSTOM_CONFIG_KEY, DEFAULT_PERTURB_BUDGET, TrainingConfig
from trainer.gsam import GSAM
from trainer.inputs import data
from trainer.models import export
from trainer.models.builtin import training_loss
from trainer.training import history, multi_worker, resume, tensorboard
from trainer.training.callbacks import BestWeightsEarlyStopping, PlateauSchedule

SGD_MOMENTUM = 0.9


def train(
    model: keras.Model,
    fn_args,
    train_dataset: tf.data.Dataset,
    eval_dataset: tf.data.Dataset | None = None,
    *,
    config: TrainingConfig | None = None,
    signatures: dict | Callable[[keras.Model], dict] | None = None,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    callbacks: list | None = None,
    class_names: list[str] | None = None,
) -> keras.Model:
    """Trains `model` with the method of `config` and exports it; returns the trained model.

    Args:
        model: a Keras model, compiled or not. If compiled, its optimizer, loss and metrics
            are kept (fresh copies, from `model.get_compile_config()`); if not, the config's
            base optimizer and learning rate schedule, and cross-entropy on probabilities.
        fn_args: the Trainer's `FnArgs`: `model_run_dir` (TensorBoard, `history.json`, resume
            backups beside it), `serving_model_dir`, `train_steps` (TFX's total steps).
        train_dataset: batches of (inputs, label); it may repeat forever.
        eval_dataset: validation batches, or `None`.
        config: what to train with; default: `fn_args.custom_config`'s training entry, else
            `TrainingConfig()` (GSAM).
        signatures: the serving signatures, a dict of `tf.function`s or a function of the
            model returning one (built after training); default: the model's own call as
            `serving_default`.
        steps_per_epoch: default: `fn_args.train_steps` (TFX's total) spread over the epochs,
            else `config.train_steps_per_epoch`, else one pass of a finite `train_dataset`.
        validation_steps: batches of `eval_dataset` per validation; default: all of them.
        callbacks: more Keras callbacks.
        class_names: the label's class names, recorded with the serving model.
    """
    check_keras_3(model)
    config = config or _config_of(fn_args)
    steps_per_epoch = steps_per_epoch or steps_from_args(fn_args, config, train_dataset)
    strategy = getattr(model, "distribute_strategy", tf.distribute.get_strategy())
    with strategy.scope():
        trained = compile_for_training(model, config, steps_per_epoch)
    training_history = history.TrainingHistory(
        os.path.join(fn_args.model_run_dir, history.HISTORY_FILE),
        config,
        hparams_dir=os.path.join(fn_args.model_run_dir, "hparams"),
    )
    practice = training_callbacks(config, steps_per_epoch, training_history)
    if practice and eval_dataset is None:
        raise ValueError(
            "lr_schedule 'plateau' and early_stopping watch val_loss: pass an eval_dataset."
        )
    class_weight = class_weights(config, fn_args, model)
    if class_weight is not None:
        training_history.note("class_weights", list(class_weight.values()))
    trained.fit(
        train_dataset,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_dataset,
        validation_steps=validation_steps,
        class_weight=class_weight,
        shuffle=False,  # A TFX DataAccessor's dataset is shuffled already.
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar, or a line per epoch
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=tensorboard.log_dir(fn_args.model_run_dir)),
            training_history,
            # Before the backup, which saves and restores their state (see EpochBackup).
            *practice,
            resume.EpochBackup(
                resume.backup_dir(fn_args),
                epochs=config.epochs,
                history=training_history,
                resumable=practice,
            ),
            *(callbacks or []),
        ],
    )
    export_trained(model, fn_args, signatures, class_names)
    return model


def training_callbacks(config: TrainingConfig, steps_per_epoch: int, training_history=None):
    """The config's learning rate plateau and early stopping, as Keras callbacks (none when
    it asks for neither): see trainer/training/callbacks.py."""
    found = []
    if config.lr_schedule == "plateau":
        found.append(
            PlateauSchedule(
                peak=config.learning_rate,
                floor=config.plateau_floor,
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            )
        )
    if config.early_stopping is not None:
        found.append(BestWeightsEarlyStopping(config.early_stopping, history=training_history))
    return found


def class_weights(config: TrainingConfig, fn_args, model: keras.Model) -> dict | None:
    """Keras's `class_weight` for `config.class_weights`: its own weights, or `"balanced"`'s
    n / (classes x count) from the training split's label counts (`fn_args.train_files`, one
    pass that reads only the label); `None` without class weights.

    Keras turns them into sample weights, which both passes of SAM and GSAM use
    (`trainer.gsam.gradients.sharpness_aware_gradients`); the validation loss is unweighted.
    """
    if config.class_weights is None:
        return None
    num_classes = _num_classes(model)
    if config.class_weights == BALANCED:
        schema = data.load_schema(fn_args.schema_path)
        counts = data.count_labels(
            fn_args.train_files, fn_args.data_accessor, schema, config.label_key, num_classes
        )
        weights = balanced_class_weights(counts)
        logging.info("Class counts %s: balanced class weights %s.", counts, weights)
    else:
        weights = list(config.class_weights)
        if len(weights) != num_classes:
            raise ValueError(
                f"class_weights gives {len(weights)} weights, but the model has {num_classes} "
                f"classes."
            )
    return dict(enumerate(weights))


def balanced_class_weights(counts: list[int]) -> list[float]:
    """n / (classes x count) per class, scikit-learn's "balanced" (a weighted example of each
    class counts alike in all); 0 for a class without examples.

    >>> balanced_class_weights([30, 10])
    [0.6666666666666666, 2.0]
    """
    total = sum(counts)
    if total == 0:
        raise ValueError("class_weights 'balanced' needs training examples; the split has none.")
    return [total / (len(counts) * count) if count else 0.0 for count in counts]


def export_trained(model, fn_args, signatures=None, class_names=None) -> None:
    """Exports the serving SavedModel and, beside it, the Keras model; removes the backups.

    Under several workers every worker takes part in saving a distributed model; only the
    chief's copy is kept.
    """
    if callable(signatures):
        signatures = signatures(model)
    if not multi_worker.is_chief():
        with tempfile.TemporaryDirectory() as scratch:
            export.export_serving_model(model, os.path.join(scratch, "model"), signatures)
        return
    export.export_serving_model(model, fn_args.serving_model_dir, signatures, class_names)
    # The Model artifact's folder holds Format-Serving; the Keras model goes beside it.
    model_uri = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
    export.export_keras_model(model, export.keras_model_path(model_uri))
    resume.remove_backup(resume.backup_dir(fn_args))


def check_keras_3(model) -> None:
    """GSAM wraps Keras 3 models. `tf.keras` is Keras 2 (tf_keras) in a process where
    tensorflow_transform was imported first: it sets `TF_USE_LEGACY_KERAS=1`."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"model must be a Keras 3 model (keras.Model), got {type(model).__module__}."
            f"{type(model).__name__}. Build it with `import keras`, not `tf.keras`: where "
            f"tensorflow_transform is imported (as in a Trainer with Transform), it sets "
            f"TF_USE_LEGACY_KERAS=1 and `tf.keras` becomes Keras 2."
        )


def compile_for_training(model: keras.Model, config: TrainingConfig, steps_per_epoch: int):
    """What `fit` trains: `model` itself for plain training, else its GSAM wrapper (SAM: alpha
    0), compiled. Call it in the distribution strategy's scope.

    Example:

    >>> trained = compile_for_training(model, TrainingConfig(optimizer="sam"), 100)
    >>> type(trained).__name__, float(trained.alpha.numpy())
    ('GSAM', 0.0)
    """
    compile_config = model.get_compile_config() if model.compiled else None
    if compile_config:
        _check_own_compile(config)
    learning_rate, lr_max, lr_min = learning_rate_schedule(config, steps_per_epoch)
    trained = wrap_for_training(model, config, lr_max, lr_min, own_optimizer=compile_config)
    if compile_config:
        if trained is not model:
            trained.compile_from_config(compile_config)
        return trained
    trained.compile(
        optimizer=make_optimizer(config, learning_rate),
        loss=training_loss(config.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return trained


def _check_own_compile(config: TrainingConfig) -> None:
    """A model compiled by its builder keeps its optimizer and loss: the config's settings of
    the ones the Trainer builds would be ignored, so they are errors."""
    ignored = {
        "lr_schedule 'plateau'": config.lr_schedule == "plateau",
        "label_smoothing": config.label_smoothing > 0,
        "weight_decay": config.weight_decay > 0,
    }
    given = [name for name, set_ in ignored.items() if set_]
    if given:
        raise ValueError(
            f"{', '.join(given)} set the optimizer or loss the Trainer compiles, but the model "
            f"is compiled with its own: compile it without an optimizer and loss (the Trainer's "
            f"are cross-entropy and base_optimizer), or set these in your own compile()."
        )


def wrap_for_training(model, config: TrainingConfig, lr_max, lr_min, own_optimizer=None):
    """The model itself for plain training, else the GSAM wrapper (SAM: alpha 0).

    rho follows the config's learning rate schedule between `lr_max` and `lr_min`; with a
    constant rate, or with the model's own optimizer (`own_optimizer`, whose schedule GSAM
    reads itself), rho is `rho_max` or follows that schedule.
    """
    if config.optimizer == "plain":
        return model
    tied = lr_max > lr_min and not own_optimizer
    lr_bounds = {"lr_max": lr_max, "lr_min": lr_min} if tied else {}
    trained = GSAM(
        model,
        rho_max=config.rho_max,
        rho_min=config.rho_min,
        alpha=config.effective_alpha,
        adaptive=config.adaptive,
        perturb_every=config.perturb_every,
        reuse_scale=config.reuse_scale if config.perturb_every != 1 else None,
        perturb_budget=config.effective_perturb_budget or DEFAULT_PERTURB_BUDGET,
        **lr_bounds,
    )
    if model.built:
        # Restoring a backup, and the reuse's stored direction, need a built model.
        trained.build(None)
    return trained


def learning_rate_schedule(config: TrainingConfig, steps_per_epoch: int):
    """The learning rate over training, and its largest and smallest values.

    A linear warmup (`warmup_epochs`) ramps from `learning_rate * lr_min_ratio` up to
    `learning_rate`; then `"cosine"` decays to `learning_rate * lr_min_ratio` at the last
    step and `"constant"` stays. `"plateau"` starts the optimizer at `learning_rate` (at its
    floor, `config.plateau_floor`, with a warmup) and leaves the rate to `PlateauSchedule`
    (`training_callbacks`), which ramps it up and lowers it down to the floor. The rate thus
    stays within [lr_min, lr_max], the range GSAM maps onto [rho_min, rho_max].

    Returns:
        `(learning_rate, lr_max, lr_min)`: a float or a Keras schedule, and two floats.
    """
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_epochs ({config.warmup_epochs}) must be shorter than training "
            f"({config.epochs} epochs)."
        )
    peak = config.learning_rate
    if config.lr_schedule == "plateau":
        floor = config.plateau_floor
        return (floor if warmup_steps else peak), peak, floor
    floor = peak * config.lr_min_ratio
    if config.lr_schedule == "constant" and not warmup_steps:
        return peak, peak, peak
    # CosineDecay with alpha=1 is flat after its warmup: the "constant" schedule's shape.
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=floor if warmup_steps else peak,
        decay_steps=total_steps - warmup_steps,
        alpha=config.lr_min_ratio if config.lr_schedule == "cosine" else 1.0,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    return schedule, peak, floor


def make_optimizer(config: TrainingConfig, learning_rate) -> keras.optimizers.Optimizer:
    """The base optimizer: SGD with momentum 0.9, or Adam; with `config.weight_decay`, Keras's
    decoupled weight decay (after each update, w -= learning_rate * weight_decay * w; Adam
    becomes AdamW), outside the loss, so SAM and GSAM perturb along the data loss's gradient
    alone, as big_vision's GSAM does."""
    decay = {"weight_decay": config.weight_decay} if config.weight_decay else {}
    if config.base_optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=SGD_MOMENTUM, **decay)
    return keras.optimizers.Adam(learning_rate=learning_rate, **decay)


def steps_from_args(fn_args, config: TrainingConfig, train_dataset=None) -> int | None:
    """Steps per epoch from TFX's `TrainArgs(num_steps)` (the TOTAL, spread over the epochs)
    or `config.train_steps_per_epoch`; setting both is an error. Without either, `None` when
    `train_dataset` is finite (one pass); a dataset that repeats forever needs one of them."""
    if fn_args.train_steps and config.train_steps_per_epoch:
        raise ValueError(
            f"Set either the Trainer's TrainArgs.num_steps ({fn_args.train_steps}, total "
            f"steps) or train_steps_per_epoch ({config.train_steps_per_epoch}), not both."
        )
    if fn_args.train_steps:
        return math.ceil(fn_args.train_steps / config.epochs)
    if config.train_steps_per_epoch:
        return config.train_steps_per_epoch
    if train_dataset is not None and (train_dataset.cardinality() == tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            "The training dataset repeats forever: pass steps_per_epoch, set the Trainer's "
            "TrainArgs(num_steps=...) or the config's train_steps_per_epoch."
        )
    return None


def distribution_strategy(workers: int) -> tf.distribute.Strategy:
    """Several workers: the multi-worker loop; several GPUs: MirroredStrategy."""
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _num_classes(model: keras.Model) -> int:
    """The classes of a model that outputs `[batch, num_classes]` probabilities."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise ValueError(
            "class_weights needs a model with one output of shape [batch, num_classes] (a "
            "functional or Sequential model with an Input)."
        )
    return int(outputs[0].shape[-1])


def _config_of(fn_args) -> TrainingConfig:
    custom_config = fn_args.custom_config or {}
    if CUSTOM_CONFIG_KEY in custom_config:
        return TrainingConfig.from_custom_config(custom_config)
    logging.info("No training config in custom_config: training with TrainingConfig()'s.")
    return TrainingConfig()
