"""TFX's own penguin example, trained with GSAM: its module file with `run_fn` changed.

TFX's `preprocessing_fn` and `tuner_fn` are imported from the tfx package
(`tfx/examples/penguin/penguin_utils_keras.py`). Its model is rebuilt here layer for layer with
Keras 3: TFX's `_make_keras_model` builds it with `tf.keras`, which is Keras 2 (tf_keras) in a
Trainer that imports tensorflow_transform (it sets `TF_USE_LEGACY_KERAS=1`), and GSAM wraps
Keras 3 models. `run_fn` is TFX's with its last lines changed as a user would: the model trains
with GSAM through `trainer.training.fit.train`, which also keeps `history.json`, the TensorBoard
logs and per-epoch backups, and exports the serving model with TFX's own signatures. Run it
with TFX's penguin pipeline:

    penguin_pipeline_local.create_pipeline(..., module_file="examples/penguin_gsam.py", ...)
"""

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.examples.penguin import penguin_utils_base as base
from tfx.examples.penguin.penguin_utils_keras import (  # noqa: F401 - the module's other hooks
    _get_hyperparameters,
    preprocessing_fn,
    tuner_fn,
)

from trainer.config import TrainingConfig
from trainer.training.fit import train

# GSAM as the paper tunes it for small models: a constant rho, a small alpha.
GSAM = TrainingConfig(optimizer="gsam", rho_max=0.05, rho_min=0.05, alpha=0.01, epochs=1)


def make_keras_model(hparams: keras_tuner.HyperParameters) -> keras.Model:
    """TFX's `_make_keras_model`, in Keras 3."""
    inputs = [
        keras.layers.Input(shape=(1,), name=base.transformed_name(f)) for f in base.FEATURE_KEYS
    ]
    d = keras.layers.concatenate(inputs)
    for _ in range(int(hparams.get("num_layers"))):
        d = keras.layers.Dense(8, activation="relu")(d)
    outputs = keras.layers.Dense(3)(d)
    model = keras.Model(inputs=inputs, outputs=outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(hparams.get("learning_rate")),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


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
        model = make_keras_model(hparams)

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
