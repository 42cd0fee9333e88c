"""The serving signature: serialized tf.Examples in, the model's probabilities out."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from tests import trainer_examples
from tests.trainer_examples import bytes_feature, with_image
from trainer.config import TrainingConfig
from trainer.inputs import data
from trainer.models import export
from trainer.models.builtin import build_model


def load_signature(export_dir):
    return tf.saved_model.load(export_dir).signatures["serving_default"]


def tabular_schema():
    return text_format.Parse(trainer_examples.TABULAR_SCHEMA, schema_pb2.Schema())


def test_image_signature_matches_the_keras_model(tmp_path):
    config = TrainingConfig()
    schema = data.load_schema(trainer_examples.SAMPLE_SCHEMA)
    model = build_model(config, 10, config.image_shape)
    images = trainer_examples.random_images(np.random.default_rng(0), 6)
    examples = [trainer_examples.image_example(image, 3) for image in images]
    export_dir = str(tmp_path / "serving")

    trainer_examples.export_model(model, config, schema, export_dir)

    signature = load_signature(export_dir)
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["examples"]
    assert inputs["examples"].dtype == tf.string
    assert inputs["examples"].shape.as_list() == [None]
    assert list(signature.structured_outputs) == ["probabilities"]
    probabilities = signature(examples=tf.constant(examples))["probabilities"]
    assert probabilities.dtype == tf.float32
    expected = model(images.astype("float32") / 255.0, training=False)
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert os.listdir(tmp_path) == ["serving"]  # no temporary sibling left


def test_images_of_another_size_are_resized(tmp_path):
    config = TrainingConfig()
    model = build_model(config, 10, config.image_shape)
    export_dir = str(tmp_path / "serving")
    trainer_examples.export_model(
        model, config, data.load_schema(trainer_examples.SAMPLE_SCHEMA), export_dir
    )
    image = trainer_examples.random_images(np.random.default_rng(1), 1, (56, 40, 1))[0]

    probabilities = load_signature(export_dir)(
        examples=tf.constant([trainer_examples.image_example(image, 0)])
    )["probabilities"]

    expected = model(tf.image.resize(image[None] / 255.0, (28, 28)), training=False)
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)


def test_an_input_size_resizes_training_and_serving_images_alike(tmp_path):
    config = TrainingConfig(input_size=(14, 14))
    schema = data.load_schema(trainer_examples.SAMPLE_SCHEMA)
    assert data.model_input_shape(config, schema) == (14, 14, 1)
    model = build_model(config, 10, data.model_input_shape(config, schema))
    export_dir = str(tmp_path / "serving")
    trainer_examples.export_model(model, config, schema, export_dir)
    images = trainer_examples.random_images(np.random.default_rng(2), 3)
    examples = [trainer_examples.image_example(image, 0) for image in images]

    probabilities = load_signature(export_dir)(examples=tf.constant(examples))["probabilities"]

    resized = tf.image.resize(images.astype("float32") / 255.0, (14, 14))
    np.testing.assert_allclose(probabilities.numpy(), model(resized, training=False), atol=1e-5)
    # The Trainer's batches go through the same path.
    parsed = tf.io.parse_example(tf.constant(examples), data.parse_spec(config, schema))
    np.testing.assert_allclose(data.features_to_inputs(parsed, config, schema), resized, atol=1e-6)


@pytest.fixture(scope="module")
def image_signature(tmp_path_factory):
    """The serving signature of an (untrained) image model, and one well-formed example."""
    config = TrainingConfig()
    export_dir = str(tmp_path_factory.mktemp("malformed") / "serving")
    trainer_examples.export_model(
        build_model(config, 10, config.image_shape),
        config,
        data.load_schema(trainer_examples.SAMPLE_SCHEMA),
        export_dir,
    )
    [example] = trainer_examples.random_image_examples(np.random.default_rng(3), 1)
    return load_signature(export_dir), example


def test_a_well_formed_request_is_classified(image_signature):
    signature, example = image_signature
    assert signature(examples=tf.constant([example]))["probabilities"].shape == (1, 10)


@pytest.mark.parametrize(
    "image, message",
    [
        (None, "Feature: image (data type: string) is required but could not be found"),
        (bytes_feature(b"these bytes are no PNG"), "Unknown image file format"),
        (
            tf.train.Feature(float_list=tf.train.FloatList(value=[0.5])),
            "Data types don't match",
        ),
    ],
    ids=["missing image", "not a PNG", "float image"],
)
def test_a_malformed_request_fails_and_returns_no_probabilities(image_signature, image, message):
    signature, example = image_signature
    malformed = with_image(example, image)
    # Alone, or beside a well-formed example: the whole request fails.
    for batch in ([malformed], [example, malformed]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            signature(examples=tf.constant(batch))


def test_a_request_of_another_dtype_is_refused(image_signature):
    signature, _ = image_signature
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="expected to be a string tensor but is a float"
    ):
        signature(examples=tf.constant([0.5, 1.5]))


def test_tabular_signature_concatenates_numeric_features_by_name(tmp_path):
    config = TrainingConfig(model="mlp")
    schema = tabular_schema()
    assert data.model_input_shape(config, schema) == (3,)  # count, size[0], size[1]
    model = build_model(config, 3, (3,))
    export_dir = str(tmp_path / "serving")
    trainer_examples.export_model(model, config, schema, export_dir)
    examples = [
        trainer_examples.tabular_example([0.5, -1.0], 7, b"a", 1),
        trainer_examples.tabular_example([2.0, 3.0], 1, b"b", 2),
    ]

    probabilities = load_signature(export_dir)(examples=tf.constant(examples))["probabilities"]

    expected = model(np.array([[7, 0.5, -1.0], [1, 2.0, 3.0]], "float32"), training=False)
    np.testing.assert_allclose(probabilities.numpy(), expected, atol=1e-5)


def test_export_refuses_an_existing_dir_and_leaves_nothing_when_it_fails(tmp_path, monkeypatch):
    config = TrainingConfig(model="mlp")
    model = build_model(config, 3, (3,))
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        trainer_examples.export_model(model, config, tabular_schema(), str(tmp_path / "taken"))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.io.gfile, "rename", fail)
    with pytest.raises(OSError, match="disk full"):
        trainer_examples.export_model(model, config, tabular_schema(), str(tmp_path / "new"))
    assert os.listdir(tmp_path) == ["taken"]


def test_keras_model_beside_the_serving_export(tmp_path, monkeypatch):
    config = TrainingConfig(model="mlp")
    model = build_model(config, 3, (3,))
    path = export.keras_model_path(str(tmp_path / "model"))
    assert path == str(tmp_path / "model" / "Format-Keras" / "model.keras")

    export.export_keras_model(model, path)

    inputs = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6)
    assert os.listdir(os.path.dirname(path)) == ["model.keras"]
    with pytest.raises(ValueError, match="already exists"):
        export.export_keras_model(model, path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.io.gfile, "rename", fail)
    other = str(tmp_path / "other" / "model.keras")
    with pytest.raises(OSError, match="disk full"):
        export.export_keras_model(model, other)
    assert os.listdir(tmp_path / "other") == []


def test_tfma_tf_generic_evaluates_the_exported_model(tmp_path):
    """What the pipeline's Evaluator does: tf_generic feeds the serialized examples.

    8 of the 12 examples are labelled with the class the model predicts, 4 with another: the
    accuracy must be exactly 8/12.
    """
    config = TrainingConfig()
    model = build_model(config, 10, config.image_shape)
    export_dir = str(tmp_path / "serving")
    trainer_examples.export_model(
        model, config, data.load_schema(trainer_examples.SAMPLE_SCHEMA), export_dir
    )
    images = trainer_examples.random_images(np.random.default_rng(2), 12)
    predicted = np.argmax(model(images.astype("float32") / 255.0, training=False), axis=1)
    labels = [int(p) if index < 8 else (int(p) + 1) % 10 for index, p in enumerate(predicted)]
    data_path = str(tmp_path / "eval.tfrecord")
    with tf.io.TFRecordWriter(data_path) as writer:
        for image, label in zip(images, labels):
            writer.write(trainer_examples.image_example(image, label))
    eval_config = tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                model_type="tf_generic",
                signature_name="serving_default",
                prediction_key="probabilities",
                label_key="label",
            )
        ],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="SparseCategoricalAccuracy"),
                ]
            )
        ],
        slicing_specs=[tfma.SlicingSpec()],
    )

    result = tfma.run_model_analysis(
        eval_shared_model=tfma.default_eval_shared_model(export_dir, eval_config=eval_config),
        eval_config=eval_config,
        data_location=data_path,
        output_path=str(tmp_path / "tfma"),
    )

    [(_, metrics)] = result.slicing_metrics
    values = {key: value["doubleValue"] for key, value in metrics[""][""].items()}
    assert values["example_count"] == 12
    assert values["sparse_categorical_accuracy"] == pytest.approx(8 / 12)
