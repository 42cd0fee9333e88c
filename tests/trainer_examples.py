"""Tiny tf.Example data for the trainer tests: PNG images, tabular rows, Examples artifacts."""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf
from tfx.components.trainer import executor as trainer_executor
from tfx.components.tuner import executor as tuner_executor
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2, trainer_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import io_utils, json_utils, proto_utils

from trainer.inputs.features import ModelInputs
from trainer.models import export

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_DIR = os.path.join(REPO_ROOT, "data", "fashion_mnist")
SAMPLE_SCHEMA = os.path.join(SAMPLE_DIR, "schema.pbtxt")

TABULAR_SCHEMA = """
feature { name: "label" type: INT int_domain { min: 0 max: 2 }
          presence { min_fraction: 1 } shape { dim { size: 1 } } }
feature { name: "size" type: FLOAT presence { min_fraction: 1 } shape { dim { size: 2 } } }
feature { name: "count" type: INT presence { min_fraction: 1 } shape { dim { size: 1 } } }
feature { name: "name" type: BYTES presence { min_fraction: 1 } shape { dim { size: 1 } } }
"""


def image_example(image: np.ndarray, label: int) -> bytes:
    """A serialized tf.Example with `image` (PNG of the uint8 HxWxC array) and `label`."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": bytes_feature(tf.io.encode_png(image).numpy()),
                "label": _int64([label]),
            }
        )
    ).SerializeToString()


def tabular_example(size: list[float], count: int, name: bytes, label: int) -> bytes:
    """A serialized tf.Example matching `TABULAR_SCHEMA`."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "size": tf.train.Feature(float_list=tf.train.FloatList(value=size)),
                "count": _int64([count]),
                "name": bytes_feature(name),
                "label": _int64([label]),
            }
        )
    ).SerializeToString()


def random_images(rng: np.random.Generator, count: int, shape=(28, 28, 1)) -> np.ndarray:
    return rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)


def random_image_examples(rng: np.random.Generator, count: int) -> list[bytes]:
    """`count` random 28x28x1 images with labels cycling through 0..9."""
    return [
        image_example(image, index % 10) for index, image in enumerate(random_images(rng, count))
    ]


def random_tabular_examples(rng: np.random.Generator, count: int) -> list[bytes]:
    return [
        tabular_example(rng.normal(size=2).tolist(), int(rng.integers(0, 50)), b"x", index % 3)
        for index in range(count)
    ]


def examples_artifact(
    root: str, splits: dict[str, list[bytes]] | list[str]
) -> standard_artifacts.Examples:
    """An Examples artifact laid out as ExampleGen writes it (Split-<name>/*.gz, GZIP).

    `splits` maps split names to the records to write, or names the splits already at `root`.
    """
    artifact = standard_artifacts.Examples()
    artifact.uri = root
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
    examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
    if isinstance(splits, dict):
        for split, records in splits.items():
            os.makedirs(os.path.join(root, f"Split-{split}"))
            path = os.path.join(root, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for record in records:
                    writer.write(record)
    return artifact


def schema_artifact(root: str, schema_text: str | None) -> standard_artifacts.Schema:
    """A Schema artifact holding `schema.pbtxt` with `schema_text` (None: already there)."""
    artifact = standard_artifacts.Schema()
    artifact.uri = root
    if schema_text is not None:
        os.makedirs(root)
        with open(os.path.join(root, "schema.pbtxt"), "w") as f:
            f.write(schema_text)
    return artifact


def bytes_feature(*values: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def with_image(serialized: bytes, image: tf.train.Feature | None) -> bytes:
    """The serialized example with its `image` feature replaced by `image` (`None`: removed)."""
    example = tf.train.Example.FromString(serialized)
    if image is None:
        del example.features.feature["image"]
    else:
        example.features.feature["image"].CopyFrom(image)
    return example.SerializeToString()


def _int64(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def run_trainer(
    tmp_path,
    config,
    splits,
    schema_text,
    train_steps=0,
    eval_steps=0,
    examples_root=None,
    schema_root=None,
    custom_config=None,
    hyperparameters=None,
):
    """Runs the Trainer executor with `run_fn="trainer.task.run_fn"`; returns the model dirs.

    `splits` as for `examples_artifact`; the examples go to (or, given the split names, are
    read from) `examples_root`, by default tmp_path/examples. Likewise the schema: written
    from `schema_text`, or read from `schema_root` when the text is None. The Trainer's
    custom_config is `custom_config`, by default `config`'s; `hyperparameters` (a KerasTuner
    `HyperParameters` config, as the Tuner writes it) is its `hyperparameters` input.
    """
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    model_run = standard_artifacts.ModelRun()
    model_run.uri = str(tmp_path / "model_run")
    input_dict = {
        specs.EXAMPLES_KEY: [
            examples_artifact(str(examples_root or tmp_path / "examples"), splits)
        ],
        specs.SCHEMA_KEY: [schema_artifact(str(schema_root or tmp_path / "schema"), schema_text)],
    }
    if hyperparameters is not None:
        tuned = standard_artifacts.HyperParameters()
        tuned.uri = str(tmp_path / "hyperparameters")
        os.makedirs(tuned.uri)
        with open(os.path.join(tuned.uri, "best_hyperparameters.txt"), "w") as file:
            json.dump(hyperparameters, file)
        input_dict[specs.HYPERPARAMETERS_KEY] = [tuned]
    exec_properties = {
        specs.RUN_FN_KEY: "trainer.task.run_fn",
        specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(
            trainer_pb2.TrainArgs(num_steps=train_steps)
        ),
        specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs(num_steps=eval_steps)),
        specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom_config or config.to_custom_config()),
    }
    trainer_executor.GenericExecutor().Do(
        input_dict, {specs.MODEL_KEY: [model], specs.MODEL_RUN_KEY: [model_run]}, exec_properties
    )
    return os.path.join(model.uri, "Format-Serving"), model_run.uri


def export_model(model, config, schema, export_dir, class_names=None):
    """Exports `model` as run_fn does for `config` and `schema`: serving_default and
    model_inputs, on raw serialized examples."""
    signatures = export.serving_signatures(model, ModelInputs(config, schema))
    export.export_serving_model(model, export_dir, signatures, class_names)


def serve(serving_dir, examples):
    signature = tf.saved_model.load(serving_dir).signatures["serving_default"]
    return signature(examples=tf.constant(examples))["probabilities"].numpy()


def run_tuner(tmp_path, custom_config, splits, schema_text):
    """Runs TFX's Tuner executor with `tuner_fn="trainer.tuning.tuner_fn"`.

    Returns `(best_hyperparameters, tuner_results)` as the executor wrote them: the best
    trial's `HyperParameters` config and the completed trials' rows, best first.
    """
    outputs = {
        specs.BEST_HYPERPARAMETERS_KEY: [standard_artifacts.HyperParameters()],
        specs.TUNER_RESULTS_KEY: [standard_artifacts.TunerResults()],
    }
    for name, [artifact] in outputs.items():
        artifact.uri = str(tmp_path / name)
        os.makedirs(artifact.uri)
    input_dict = {
        specs.EXAMPLES_KEY: [examples_artifact(str(tmp_path / "examples"), splits)],
        specs.SCHEMA_KEY: [schema_artifact(str(tmp_path / "schema"), schema_text)],
    }
    exec_properties = {
        specs.TUNER_FN_KEY: "trainer.tuning.tuner_fn",
        specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.TrainArgs()),
        specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs()),
        specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom_config),
    }
    context = tuner_executor.Executor.Context(tmp_dir=str(tmp_path / "tmp"), unique_id="1")
    tuner_executor.Executor(context).Do(input_dict, outputs, exec_properties)
    [best, results] = [
        json.loads(io_utils.read_string_file(io_utils.get_only_uri_in_dir(artifact.uri)))
        for [artifact] in outputs.values()
    ]
    return best, results
