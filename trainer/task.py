"""The TFX Trainer entry point: `Trainer(run_fn="trainer.task.run_fn", custom_config=...)`.

`run_fn` reads the config (`TrainingConfig`, with a Tuner's best values laid over it), the
user's module file if the pipeline has one (`trainer/user_module.py`), and the input (raw
examples, or tf.Transform's with a `transform_graph`: `trainer/inputs/features.py`); builds
the model (built-in, or the user's `build_model`); and trains and exports it with the public
training function, `trainer.training.fit.train`: the serving SavedModel to
`fn_args.serving_model_dir` and, beside it in the same Model artifact, the Keras model
(`trainer.models.export.keras_model_path`, read by the SharpnessProbe). Several workers train
with the multi-worker loop (`trainer/training/multi_worker.py`) and export the same way.

Steps per epoch, first match wins:

* `TrainArgs(num_steps=N)` (`fn_args.train_steps`) is the TOTAL number of training steps, as
  everywhere in TFX: each of the `epochs` epochs runs ceil(N / epochs) steps;
* else `train_steps_per_epoch` from the config;
* else one pass over the training split, counted before training, and at least
  `min_train_steps / epochs` steps, so that small data still trains long enough.

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

import copy
import dataclasses
import math
import os

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

from trainer import search_space
from trainer.config import TrainingConfig
from trainer.inputs import data
from trainer.inputs.features import ModelInputs
from trainer.models import builtin, export
from trainer.training import fit, multi_worker, resume
from trainer.user_module import ModuleFile, UserModule

MULTI_WORKER_SHUFFLE_SEED = 20220420


def run_fn(fn_args) -> None:
    """Trains and exports the model described by `fn_args.custom_config`.

    Args:
        fn_args: the Trainer's `tfx.components.FnArgs`; reads `custom_config`, `schema_path`,
            `transform_graph_path`, `train_files`, `eval_files`, `train_steps`, `eval_steps`,
            `data_accessor`, `hyperparameters` (the Tuner's best values, laid over the
            config), `model_run_dir` (TensorBoard logs, `history.json`; resume backups beside
            it, see trainer/training/resume.py) and `serving_model_dir` (export).
    """
    # MultiWorkerMirroredStrategy must exist before the first TensorFlow op.
    workers = multi_worker.cluster_workers()
    strategy = fit.distribution_strategy(workers)
    user = user_module(fn_args.custom_config)
    config = tuned_config(fn_args, user)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    inputs = model_inputs(fn_args, config, user)
    num_classes = data.resolve_num_classes(config, inputs.schema)
    steps_per_epoch = training_steps_per_epoch(fn_args, config, inputs)
    with strategy.scope():
        model = build_model(config, inputs, num_classes, user, _hyperparameters(fn_args))
    logging.info(
        "Training %s (%s, %d classes) for %d epochs x %d steps on %d replica(s), %d worker(s).",
        "the model of build_model" if user and user.build_model else config.model,
        config.method,
        num_classes,
        config.epochs,
        steps_per_epoch,
        strategy.num_replicas_in_sync,
        max(workers, 1),
    )
    signatures = export.serving_signatures(model, inputs)
    class_names = check_class_names(config, num_classes)
    if workers > 1:
        _fit_multi_worker(model, fn_args, config, inputs, strategy, steps_per_epoch)
        fit.export_trained(model, fn_args, signatures, class_names)
        # The workers share the output folder, and the Trainer executor of each checks the
        # export: none may return before the chief's is there.
        multi_worker.barrier(strategy)
        return
    train_dataset, eval_dataset = training_datasets(fn_args, config, inputs, model)
    fit.train(
        model,
        fn_args,
        train_dataset,
        eval_dataset,
        config=config,
        signatures=signatures,
        steps_per_epoch=steps_per_epoch,
        class_names=class_names,
    )


def tuned_config(fn_args, user: UserModule | None = None) -> TrainingConfig:
    """The run's config, with a Tuner's best values (checked as flags are) laid over it; the
    values a user's `build_model` declared stay its own."""
    config = TrainingConfig.from_custom_config(fn_args.custom_config)
    if fn_args.hyperparameters:
        tuned = _hyperparameters(fn_args).values
        own = user is not None and user.takes_hyperparameters
        config = search_space.tuned_config(config, tuned, model_hyperparameters=own)
        logging.info("Training with the tuned hyperparameters %s.", tuned)
    return config


def user_module(custom_config) -> UserModule | None:
    """The hooks of the pipeline's module file, or `None` without one."""
    module = ModuleFile.from_custom_config(custom_config)
    return None if module is None else module.load()


def model_inputs(fn_args, config: TrainingConfig, user: UserModule | None) -> ModelInputs:
    """Raw or transformed examples (a `transform_graph` input), as a built-in model's tensor
    or a user model's dict of features."""
    transform_output = None
    if fn_args.transform_graph_path:
        transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    return ModelInputs(
        config,
        data.load_schema(fn_args.schema_path),
        transform_output,
        feature_dict=user is not None and user.build_model is not None,
    )


def build_model(
    config: TrainingConfig,
    inputs: ModelInputs,
    num_classes: int,
    user: UserModule | None = None,
    hp: keras_tuner.HyperParameters | None = None,
) -> keras.Model:
    """The user's `build_model`'s model (checked), or the built-in model of `config.model`;
    the built-in MLP standardizes raw numeric features with the statistics the validation
    gate recorded in the schema."""
    if user is not None and user.build_model is not None:
        return user.build(inputs.feature_specs(), num_classes, hp)
    moments = None
    if config.model == "mlp" and not inputs.transformed:
        moments = data.input_moments(config, inputs.schema)
        if moments is None:
            logging.warning(
                "The schema records no statistics of the numeric features (the validation "
                "gate writes them): the MLP standardizes them with BatchNormalization instead."
            )
    return builtin.build_model(config, num_classes, inputs.input_shape(), input_moments=moments)


def check_class_names(config: TrainingConfig, num_classes: int) -> list[str] | None:
    """`config.class_names`, which must name every class."""
    if config.class_names is None:
        return None
    if len(config.class_names) != num_classes:
        raise ValueError(
            f"class_names names {len(config.class_names)} classes, but the label has "
            f"{num_classes}: {', '.join(config.class_names)}."
        )
    return list(config.class_names)


def training_datasets(fn_args, config: TrainingConfig, inputs: ModelInputs, model=None):
    """`(train, eval)`: the training split shuffled (by `config.seed`) and repeated, and the
    validation batches of `eval_batches`, as `model`'s inputs."""
    train_dataset = inputs.dataset(
        fn_args.train_files,
        fn_args.data_accessor,
        training=True,
        model=model,
        shuffle_seed=config.seed,
    )
    eval_dataset = inputs.dataset(
        fn_args.eval_files,
        fn_args.data_accessor,
        training=False,
        model=model,
        num_batches=eval_batches(fn_args, config, inputs),
    )
    return train_dataset, eval_dataset


def training_steps_per_epoch(fn_args, config: TrainingConfig, inputs: ModelInputs) -> int:
    """Steps per epoch, from `fn_args.train_steps` (total), the config, or the data."""
    steps = fit.steps_from_args(fn_args, config)
    if steps:
        return steps
    one_pass = _batches_in(fn_args.train_files, fn_args, config, inputs, "training")
    return max(one_pass, math.ceil(config.min_train_steps / config.epochs))


def eval_batches(fn_args, config: TrainingConfig, inputs: ModelInputs) -> int:
    """Validation batches per epoch: the EvalArgs or config cap, at most one pass."""
    if fn_args.eval_steps and config.eval_steps:
        raise ValueError(
            f"Set either the Trainer's EvalArgs.num_steps ({fn_args.eval_steps}) "
            f"or eval_steps ({config.eval_steps}), not both."
        )
    full_pass = _batches_in(fn_args.eval_files, fn_args, config, inputs, "eval")
    return min(fn_args.eval_steps or config.eval_steps or full_pass, full_pass)


def _hyperparameters(fn_args) -> keras_tuner.HyperParameters | None:
    """The Tuner's best hyperparameters. Read from a copy: `from_config` replaces the
    conditions in the config it reads with objects, so the same config cannot be read twice."""
    if not fn_args.hyperparameters:
        return None
    return keras_tuner.HyperParameters.from_config(copy.deepcopy(fn_args.hyperparameters))


def _fit_multi_worker(model, fn_args, config, inputs: ModelInputs, strategy, steps_per_epoch):
    """The distributed custom loop; the Evaluator does the evaluation. Class weights become
    sample weights in the dataset, as Keras's `fit` makes them."""
    watching = [
        name
        for name, set_ in (
            ("lr_schedule 'plateau'", config.lr_schedule == "plateau"),
            ("early_stopping", config.early_stopping is not None),
        )
        if set_
    ]
    if watching:
        raise ValueError(
            f"{' and '.join(watching)} watch val_loss, which the multi-worker loop does not "
            f"compute (the Evaluator evaluates the model): train on one worker, or unset them."
        )
    with strategy.scope():
        trained = fit.compile_for_training(model, config, steps_per_epoch)
    class_weight = fit.class_weights(config, fn_args, model)

    def dataset_fn(context):
        per_replica = inputs.with_config(
            dataclasses.replace(
                config, batch_size=context.get_per_replica_batch_size(config.batch_size)
            )
        )
        # Every worker shuffles in the same order, so the shards are disjoint.
        dataset = per_replica.dataset(
            fn_args.train_files,
            fn_args.data_accessor,
            training=True,
            model=model,
            shuffle_seed=MULTI_WORKER_SHUFFLE_SEED if config.seed is None else config.seed,
        )
        dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
        if class_weight is None:
            return dataset
        weights = tf.constant(list(class_weight.values()), tf.float32)
        return dataset.map(lambda x, y: (x, y, tf.gather(weights, y)))

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


def _batches_in(file_patterns, fn_args, config, inputs: ModelInputs, split: str) -> int:
    num_examples = inputs.count_examples(file_patterns, fn_args.data_accessor)
    if num_examples == 0:
        raise ValueError(f"No {split} examples in {file_patterns}.")
    return math.ceil(num_examples / config.batch_size)
