"""TFX's own penguin example, trained with GSAM: its module file with `run_fn` changed.

Everything but `run_fn` is TFX's, imported from the tfx package
(`tfx/examples/penguin/penguin_utils_keras.py`): `preprocessing_fn`, `tuner_fn`, the model and
its hyperparameters. `run_fn` is TFX's with its last lines changed as a user would: the model
trains with GSAM through `trainer.training.fit.train`, which also keeps `history.json`, the
TensorBoard logs and per-epoch backups, and exports the serving model with TFX's own
signatures. Run it with TFX's penguin pipeline:

    penguin_pipeline_local.create_pipeline(..., module_file="examples/penguin_gsam.py", ...)
"""

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.examples.penguin import penguin_utils_base as base
from tfx.examples.penguin.penguin_utils_keras import (  # noqa: F401 - the module's other hooks
    _get_hyperparameters,
    _make_keras_model,
    preprocessing_fn,
    tuner_fn,
)

from trainer.config import TrainingConfig
from trainer.training.fit import train

# GSAM as the paper tunes it for small models: a constant rho, a small alpha.
GSAM = TrainingConfig(optimizer="gsam", rho_max=0.05, rho_min=0.05, alpha=0.01, epochs=1)


def run_fn(fn_args):
    """TFX's penguin `run_fn`, training with GSAM."""
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train_dataset = base.input_fn(
        fn_args.train_files, fn_args.data_accessor, tf_transform_output, base.TRAIN_BATCH_SIZE
    )
    eval_dataset = base.input_fn(
        fn_args.eval_files, fn_args.data_accessor, tf_transform_output, base.EVAL_BATCH_SIZE
    )
    if fn_args.hyperparameters:
        hparams = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
    else:
        hparams = _get_hyperparameters()
    with tf.distribute.MirroredStrategy().scope():
        model = _make_keras_model(hparams)

    # Instead of model.fit(...) and tf.saved_model.save(...):
    train(
        model,
        fn_args,
        train_dataset,
        eval_dataset,
        config=GSAM,
        steps_per_epoch=fn_args.train_steps,
        validation_steps=fn_args.eval_steps,
        signatures=lambda trained: base.make_serving_signatures(trained, tf_transform_output),
    )
