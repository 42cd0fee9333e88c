"""A gsam-tfx module file for numeric tables: tf.Transform z-scores every column, and a small
Keras model classifies the result. The pipeline trains the model with GSAM.

    scripts/in-env python -m pipelines.local_runner --data-root /path/to/my-csv \
        --module-file examples/tabular_module.py
"""

import keras
import tensorflow as tf
import tensorflow_transform as tft

LABEL_KEY = "label"


def preprocessing_fn(inputs):
    """Each numeric column scaled to mean 0 and variance 1 over the training data; the label
    passes through unchanged, under its own name."""
    outputs = {}
    for name, value in inputs.items():
        if name == LABEL_KEY:
            outputs[name] = value
        elif value.dtype in (tf.float32, tf.float64, tf.int64):
            outputs[name] = tft.scale_to_z_score(tf.cast(value, tf.float32))
    return outputs


def build_model(feature_specs, num_classes):
    """One hidden layer over all the (transformed) features; class probabilities out."""
    inputs = {
        name: keras.Input(shape=spec.shape, dtype=spec.dtype, name=name)
        for name, spec in sorted(feature_specs.items())
    }
    x = keras.layers.Concatenate()([keras.layers.Reshape((-1,))(t) for t in inputs.values()])
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)
