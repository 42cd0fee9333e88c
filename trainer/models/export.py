"""Exports a trained Keras model as a SavedModel that serves serialized tf.Examples.

`serving_signatures(model, inputs)` gives the project's two signatures, both taking `examples`,
a 1-D string tensor of serialized raw tf.Examples, and preprocessing them in the graph exactly
as training did (`trainer.inputs.features.ModelInputs.serve`: PNG decoding, the numeric
features, or the tf.Transform graph):

- `serving_default` returns `{"probabilities": float32 [batch, num_classes]}`;
- `model_inputs` returns what the model takes (`{"model_input": tensor}` for a built-in model,
  the dict of features for a user's model): the SharpnessProbe feeds them to the Keras model.

`serving_default` is the shape TFMA expects for `ModelSpec(model_type="tf_generic",
signature_name="serving_default", prediction_key="probabilities", label_key=...)`: a signature
with a single string input whose name is not a feature of the data is fed the batch of
serialized examples (`tensorflow_model_analysis/utils/model_util.py`, `get_inputs` and
`ModelSignaturesDoFn`). TF Serving's Predict API calls it the same way, and trainer/predict.py
loads it for the demo. The label's class names, when known, go to `assets.extra/class_names.txt`
inside the SavedModel (TF Serving's folder for extra files), one a line.

A failed export leaves no half-written `export_dir`: the SavedModel goes to a temporary
sibling that is renamed into place. (TFX would not publish the Model artifact of a failed
Trainer run anyway, but a local `serving_model_dir` is then never ambiguous. On GCS a
directory rename copies object by object, so there it narrows the window, not closes it.)

Beside it, `export_keras_model` keeps the Keras model itself (`.keras`) in the same Model
artifact, at `keras_model_path(model_uri)`: the SharpnessProbe differentiates the loss with
respect to the weights, which needs the Keras model, not the serving signature.

Example:

>>> export_serving_model(model, "/tmp/serving_model", serving_signatures(model, inputs))
>>> serve = tf.saved_model.load("/tmp/serving_model").signatures["serving_default"]
>>> serve(examples=tf.constant([serialized_example]))["probabilities"].shape
TensorShape([1, 10])
"""

from __future__ import annotations

import os
import uuid

import keras
import tensorflow as tf

SIGNATURE_NAME = "serving_default"
INPUTS_SIGNATURE_NAME = "model_inputs"
INPUT_NAME = "examples"
OUTPUT_KEY = "probabilities"
# model_inputs' key for a model that takes one tensor.
SINGLE_INPUT_KEY = "model_input"
CLASS_NAMES_FILE = os.path.join("assets.extra", "class_names.txt")
# Beside the Trainer's "Format-Serving" folder in the Model artifact.
KERAS_MODEL_DIR = "Format-Keras"
KERAS_MODEL_FILE = "model.keras"


def serving_signatures(model: keras.Model, inputs) -> dict:
    """`serving_default` and `model_inputs` of `model`, which takes what `inputs` (a
    `ModelInputs`) makes of serialized raw examples."""
    if inputs.transformed:
        # The SavedModel must track the transform graph its signatures call.
        model.tft_layer = inputs.transform_layer()
    examples = tf.TensorSpec([None], tf.string, name=INPUT_NAME)

    @tf.function(input_signature=[examples])
    def serve(examples):
        probabilities = model(inputs.serve(examples, model), training=False)
        return {OUTPUT_KEY: tf.cast(probabilities, tf.float32)}

    @tf.function(input_signature=[examples])
    def model_inputs(examples):
        taken = inputs.serve(examples, model)
        return taken if isinstance(taken, dict) else {SINGLE_INPUT_KEY: taken}

    return {SIGNATURE_NAME: serve, INPUTS_SIGNATURE_NAME: model_inputs}


def export_serving_model(
    model: keras.Model,
    export_dir: str,
    signatures: dict | None = None,
    class_names: list[str] | None = None,
) -> None:
    """Writes `model` (the inner Keras model, not a GSAM wrapper) to `export_dir`.

    Args:
        signatures: name -> `tf.function` with an input signature; `None`: the model's own
            call as `serving_default` (Keras's `model.export`).
        class_names: written to `CLASS_NAMES_FILE` when given.

    The SavedModel is written to a temporary sibling first and renamed into place, so
    `export_dir` either holds a complete model or does not exist. It must not exist yet.
    """
    if tf.io.gfile.exists(export_dir):
        raise ValueError(f"export_dir {export_dir!r} already exists; export needs a new one.")
    temp_dir = f"{export_dir.rstrip('/')}.tmp-{uuid.uuid4().hex}"
    try:
        if signatures is None:
            model.export(temp_dir, format="tf_saved_model", verbose=False)
        else:
            module = tf.Module()
            module.model = model
            tf.saved_model.save(module, temp_dir, signatures=signatures)
        if class_names:
            path = os.path.join(temp_dir, CLASS_NAMES_FILE)
            tf.io.gfile.makedirs(os.path.dirname(path))
            with tf.io.gfile.GFile(path, "w") as file:
                file.write("".join(f"{name}\n" for name in class_names))
        tf.io.gfile.rename(temp_dir, export_dir)
    finally:
        if tf.io.gfile.exists(temp_dir):
            tf.io.gfile.rmtree(temp_dir)


def read_class_names(model_dir: str) -> list[str] | None:
    """The class names recorded with a serving model, or `None`."""
    path = os.path.join(model_dir, CLASS_NAMES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as file:
        return file.read().splitlines()


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
