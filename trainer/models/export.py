"""Exports a trained Keras model as a SavedModel that serves serialized tf.Examples.

The SavedModel's one signature, `serving_default`, takes `examples`: a 1-D string tensor of
serialized tf.Examples, parses and preprocesses them in the graph exactly as training did
(`trainer.inputs.data.features_to_inputs`: PNG decode for images, numeric features for the MLP) and
returns `{"probabilities": float32 [batch, num_classes]}`.

This is the shape TFMA expects for `ModelSpec(model_type="tf_generic",
signature_name="serving_default", prediction_key="probabilities", label_key=...)`: a
signature with a single string input whose name is not a feature of the data is fed the
batch of serialized examples (`tensorflow_model_analysis/utils/model_util.py`, `get_inputs`
and `ModelSignaturesDoFn`). TF Serving's Predict API calls it the same way, and
trainer/predict.py loads it for the demo.

A failed export leaves no half-written `export_dir`: the SavedModel goes to a temporary
sibling that is renamed into place. (TFX would not publish the Model artifact of a failed
Trainer run anyway, but a local `serving_model_dir` is then never ambiguous. On GCS a
directory rename copies object by object, so there it narrows the window, not closes it.)

Beside it, `export_keras_model` keeps the Keras model itself (`.keras`) in the same Model
artifact, at `keras_model_path(model_uri)`: the SharpnessProbe differentiates the loss with
respect to the weights, which needs the Keras model, not the serving signature.

Example:

>>> export_serving_model(model, config, schema, "/tmp/serving_model")
>>> serve = tf.saved_model.load("/tmp/serving_model").signatures["serving_default"]
>>> serve(examples=tf.constant([serialized_example]))["probabilities"].shape
TensorShape([1, 10])
"""

from __future__ import annotations

import os
import uuid

import keras
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2

from trainer.config import TrainingConfig
from trainer.inputs import data

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "examples"
OUTPUT_KEY = "probabilities"
# Beside the Trainer's "Format-Serving" folder in the Model artifact.
KERAS_MODEL_DIR = "Format-Keras"
KERAS_MODEL_FILE = "model.keras"


def export_serving_model(
    model: keras.Model,
    config: TrainingConfig,
    schema: schema_pb2.Schema,
    export_dir: str,
) -> None:
    """Writes `model` (the inner Keras model, not a GSAM wrapper) to `export_dir`.

    The SavedModel is written to a temporary sibling first and renamed into place, so
    `export_dir` either holds a complete model or does not exist. It must not exist yet.
    """
    if tf.io.gfile.exists(export_dir):
        raise ValueError(f"export_dir {export_dir!r} already exists; export needs a new one.")
    spec = data.parse_spec(config, schema)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(examples):
        features = tf.io.parse_example(examples, spec)
        inputs = data.features_to_inputs(features, config, schema)
        return {OUTPUT_KEY: tf.cast(model(inputs, training=False), tf.float32)}

    module = tf.Module()
    module.model = model
    module.serve = serve
    temp_dir = f"{export_dir.rstrip('/')}.tmp-{uuid.uuid4().hex}"
    try:
        tf.saved_model.save(module, temp_dir, signatures={SIGNATURE_NAME: serve})
        tf.io.gfile.rename(temp_dir, export_dir)
    finally:
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)


def keras_model_path(model_uri: str) -> str:
    """Where a Model artifact at `model_uri` keeps the Keras model (`export_keras_model`)."""
    return os.path.join(model_uri, KERAS_MODEL_DIR, KERAS_MODEL_FILE)


def export_keras_model(model: keras.Model, path: str) -> None:
    """Saves `model` (the inner Keras model) as a `.keras` file at `path`, all or nothing.

    Like `export_serving_model`, it is written to a temporary sibling and renamed into
    place; `path` must not exist yet.
    """
    if tf.io.gfile.exists(path):
        raise ValueError(f"Keras model path {path!r} already exists; export needs a new one.")
    folder, name = os.path.split(path)
    tf.io.gfile.makedirs(folder)
    temp_path = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{name}")
    try:
        model.save(temp_path)
        tf.io.gfile.rename(temp_path, path)
    finally:
        if tf.io.gfile.exists(temp_path):
            tf.io.gfile.remove(temp_path)
