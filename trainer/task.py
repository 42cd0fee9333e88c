"""The TFX Trainer entry point: `Trainer(run_fn="trainer.task.run_fn", custom_config=...)`.

`custom_config` is `TrainingConfig(...).to_custom_config()` (trainer/config.py); with a
Tuner upstream (`hyperparameters=tuner.outputs["best_hyperparameters"]`), its best values are
laid over that config (trainer/search_space.py).
`run_fn` reads the data through the Trainer's DataAccessor, builds the model,
trains it plainly or with GSAM/SAM, and exports the inner model's serving
SavedModel to `fn_args.serving_model_dir` and, beside it in the same Model artifact, the
Keras model itself (`trainer.models.export.keras_model_path`, read by the SharpnessProbe).

Steps per epoch, first match wins:

* `TrainArgs(num_steps=N)` (`fn_args.train_steps`) is the TOTAL number of training steps, as
  everywhere in TFX: each of the `epochs` epochs runs ceil(N / epochs) steps;
* else `train_steps_per_epoch` from the config;
* else one pass over the training split, counted before training.

Setting both `TrainArgs.num_steps` and `train_steps_per_epoch` is an error. Validation after
each epoch runs over the first `EvalArgs(num_steps=...)` (else `eval_steps`) batches of the
eval split, at most one full pass: the same batches every epoch.

Example (what the pipeline does):

```python
trainer = tfx.components.Trainer(
    run_fn="trainer.task.run_fn",
    examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
    custom_config=TrainingConfig(optimizer="gsam", epochs=3).to_custom_config())
```
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile

import keras
import keras_tuner
import tensorflow as tf
from absl import logging

from trainer import search_space
from trainer.config import TrainingConfig
from trainer.gsam import GSAM
from trainer.inputs import data
from trainer.models import export
from trainer.models.builtin import build_model, training_loss
from trainer.training import history, multi_worker, resume, tensorboard

SGD_MOMENTUM = 0.9
MULTI_WORKER_SHUFFLE_SEED = 20220420


def run_fn(fn_args) -> None:
    """Trains and exports the model described by `fn_args.custom_config`.

    Args:
        fn_args: the Trainer's `tfx.components.FnArgs`; reads `custom_config`, `schema_path`,
            `train_files`, `eval_files`, `train_steps`, `eval_steps`, `data_accessor`,
            `hyperparameters` (the Tuner's best values, laid over the config),
            `model_run_dir` (TensorBoard logs, `history.json`; resume backups beside it, see
            trainer/training/resume.py) and `serving_model_dir` (export).
    """
    config = TrainingConfig.from_custom_config(fn_args.custom_config)
    if fn_args.hyperparameters:
        # The Tuner's best values, checked as flags are.
        tuned = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters).values
        config = search_space.tuned_config(config, tuned)
        logging.info("Training with the tuned hyperparameters %s.", tuned)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    # MultiWorkerMirroredStrategy must exist before the first TensorFlow op.
    workers = multi_worker.cluster_workers()
    strategy = distribution_strategy(workers)
    schema = data.load_schema(fn_args.schema_path)
    num_classes = data.resolve_num_classes(config, schema)
    steps_per_epoch = training_steps_per_epoch(fn_args, config, schema)
    input_shape = data.model_input_shape(config, schema)
    with strategy.scope():
        model, trained = compile_for_training(config, num_classes, input_shape, steps_per_epoch)
    logging.info(
        "Training %s (%s, %d classes) for %d epochs x %d steps on %d replica(s), %d worker(s).",
        config.model,
        config.optimizer,
        num_classes,
        config.epochs,
        steps_per_epoch,
        strategy.num_replicas_in_sync,
        max(workers, 1),
    )
    if workers > 1:
        _fit_multi_worker(trained, fn_args, config, schema, strategy, steps_per_epoch)
    else:
        _fit(trained, fn_args, config, schema, steps_per_epoch)
    if multi_worker.is_chief():
        export.export_serving_model(model, config, schema, fn_args.serving_model_dir)
        # The Model artifact's folder holds Format-Serving; the Keras model goes beside it.
        model_uri = os.path.dirname(fn_args.serving_model_dir.rstrip("/"))
        export.export_keras_model(model, export.keras_model_path(model_uri))
        resume.remove_backup(resume.backup_dir(fn_args))
    else:
        # Every worker takes part in saving a distributed model; only the
        # chief's copy is kept.
        with tempfile.TemporaryDirectory() as scratch:
            export.export_serving_model(model, config, schema, os.path.join(scratch, "model"))
    if workers > 1:
        # The workers share the output folder, and the Trainer executor of
        # each checks the export: none may return before the chief's is there.
        multi_worker.barrier(strategy)


def compile_for_training(
    config: TrainingConfig, num_classes: int, input_shape, steps_per_epoch: int
) -> tuple[keras.Model, keras.Model]:
    """The model, and what `fit` trains (the model or its GSAM wrapper), compiled.

    One recipe for `run_fn` and the Tuner's trials (trainer/tuning.py): the model of
    `config.model`, wrapped for GSAM/SAM, its base optimizer on the learning rate schedule,
    cross-entropy loss and accuracy.

    Example:

    >>> model, trained = compile_for_training(TrainingConfig(model="mlp", epochs=1),
    ...     num_classes=3, input_shape=(4,), steps_per_epoch=10)
    >>> type(trained).__name__, model.output_shape
    ('GSAM', (None, 3))
    """
    learning_rate, lr_max, lr_min = learning_rate_schedule(config, steps_per_epoch)
    model = build_model(config, num_classes, input_shape)
    trained = wrap_for_training(model, config, input_shape, lr_max, lr_min)
    trained.compile(
        optimizer=make_optimizer(config, learning_rate),
        loss=training_loss(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model, trained


def distribution_strategy(workers: int) -> tf.distribute.Strategy:
    """Several workers: the multi-worker loop; several GPUs: MirroredStrategy."""
    if workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def wrap_for_training(model, config: TrainingConfig, input_shape, lr_max, lr_min):
    """The model itself for plain training, else the GSAM wrapper (SAM: alpha 0)."""
    if config.optimizer == "plain":
        return model
    # With a constant learning rate (lr_max == lr_min) GSAM uses rho_max.
    lr_bounds = {"lr_max": lr_max, "lr_min": lr_min} if lr_max > lr_min else {}
    trained = GSAM(
        model,
        rho_max=config.rho_max,
        rho_min=config.rho_min,
        alpha=config.effective_alpha,
        adaptive=config.adaptive,
        perturb_every=config.perturb_every,
        reuse_scale=config.reuse_scale if config.perturb_every > 1 else None,
        **lr_bounds,
    )
    # Restoring a backup needs a built model.
    trained.build((None, *input_shape))
    return trained


def training_datasets(fn_args, config: TrainingConfig, schema):
    """`(train, eval)`: the training split shuffled (by `config.seed`) and repeated, and the
    validation batches of `eval_batches`."""
    train_dataset = data.make_dataset(
        fn_args.train_files,
        fn_args.data_accessor,
        schema,
        config,
        training=True,
        shuffle_seed=config.seed,
    )
    eval_dataset = data.make_dataset(
        fn_args.eval_files,
        fn_args.data_accessor,
        schema,
        config,
        training=False,
        num_batches=eval_batches(fn_args, config, schema),
    )
    return train_dataset, eval_dataset


def _fit(trained, fn_args, config, schema, steps_per_epoch):
    train_dataset, eval_dataset = training_datasets(fn_args, config, schema)
    training_history = history.TrainingHistory(
        os.path.join(fn_args.model_run_dir, history.HISTORY_FILE),
        config,
        hparams_dir=os.path.join(fn_args.model_run_dir, "hparams"),
    )
    trained.fit(
        train_dataset,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_dataset,
        shuffle=False,  # The DataAccessor's dataset is shuffled already.
        verbose=1 if sys.stdout.isatty() else 2,  # a progress bar, or a line per epoch
        callbacks=[
            keras.callbacks.TensorBoard(log_dir=tensorboard.log_dir(fn_args.model_run_dir)),
            training_history,
            resume.EpochBackup(
                resume.backup_dir(fn_args), epochs=config.epochs, history=training_history
            ),
        ],
    )


def _fit_multi_worker(trained, fn_args, config, schema, strategy, steps_per_epoch):
    """The distributed custom loop; the Evaluator does the evaluation."""

    def dataset_fn(context):
        per_replica = dataclasses.replace(
            config, batch_size=context.get_per_replica_batch_size(config.batch_size)
        )
        # Every worker shuffles in the same order, so the shards are disjoint.
        dataset = data.make_dataset(
            fn_args.train_files,
            fn_args.data_accessor,
            schema,
            per_replica,
            training=True,
            shuffle_seed=MULTI_WORKER_SHUFFLE_SEED if config.seed is None else config.seed,
        )
        return dataset.shard(context.num_input_pipelines, context.input_pipeline_id)

    history = multi_worker.fit(
        trained,
        dataset_fn,
        strategy=strategy,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        log=logging.info,
        backup=resume.WorkerCheckpoints(
            trained,
            resume.backup_dir(fn_args),
            chief=multi_worker.is_chief(),
            task_id=strategy.cluster_resolver.task_id,
        ),
    )
    if multi_worker.is_chief():
        with tf.summary.create_file_writer(
            os.path.join(fn_args.model_run_dir, "train")
        ).as_default():
            for epoch, logs in enumerate(history):
                for name, value in logs.items():
                    tf.summary.scalar(f"epoch_{name}", value, step=epoch)


def training_steps_per_epoch(fn_args, config: TrainingConfig, schema) -> int:
    """Steps per epoch, from `fn_args.train_steps` (total), the config, or the data."""
    if fn_args.train_steps and config.train_steps_per_epoch:
        raise ValueError(
            f"Set either the Trainer's TrainArgs.num_steps ({fn_args.train_steps}, total "
            f"steps) or train_steps_per_epoch ({config.train_steps_per_epoch}), not both."
        )
    if fn_args.train_steps:
        return math.ceil(fn_args.train_steps / config.epochs)
    if config.train_steps_per_epoch:
        return config.train_steps_per_epoch
    return _batches_in(fn_args.train_files, fn_args, config, schema, "training")


def eval_batches(fn_args, config: TrainingConfig, schema) -> int:
    """Validation batches per epoch: the EvalArgs or config cap, at most one pass."""
    if fn_args.eval_steps and config.eval_steps:
        raise ValueError(
            f"Set either the Trainer's EvalArgs.num_steps ({fn_args.eval_steps}) "
            f"or eval_steps ({config.eval_steps}), not both."
        )
    full_pass = _batches_in(fn_args.eval_files, fn_args, config, schema, "eval")
    return min(fn_args.eval_steps or config.eval_steps or full_pass, full_pass)


def learning_rate_schedule(config: TrainingConfig, steps_per_epoch: int):
    """The learning rate over training, and its largest and smallest values.

    A linear warmup (`warmup_epochs`) ramps from `learning_rate * lr_min_ratio` up to
    `learning_rate`; then `"cosine"` decays to `learning_rate * lr_min_ratio` at the last
    step and `"constant"` stays. The rate thus stays within [lr_min, lr_max], the range
    GSAM maps onto [rho_min, rho_max].

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
    """The base optimizer: SGD with momentum 0.9, or Adam."""
    if config.base_optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=SGD_MOMENTUM)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def _batches_in(file_patterns, fn_args, config, schema, split: str) -> int:
    num_examples = data.count_examples(
        file_patterns, fn_args.data_accessor, schema, config.label_key
    )
    if num_examples == 0:
        raise ValueError(f"No {split} examples in {file_patterns}.")
    return math.ceil(num_examples / config.batch_size)
