"""The whole pipeline on LocalDagRunner (SQLite ML Metadata, Beam DirectRunner in memory).

Three runs share one output folder, each read back as soon as it ends, so no test depends on
another's order: a trained model (blessed, pushed), then a clearly worse one and one held to
an impossible threshold, both evaluated against the first.
"""

import dataclasses
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines.local import summary
from pipelines.local.layout import OutputLayout
from tests import trainer_examples
from tests.pipeline_support import (
    ALL_NODES,
    RING_TRAINING,
    executed_nodes,
    ring,
    run_pipeline,
    versions,
    write_ring_sample,
    write_split_sample,
)
from trainer.inputs import data
from trainer.models.builtin import build_model

# A trained model clears it, an untrained one does not (test_the_floor_needs_training).
ACCURACY_FLOOR = 0.7
MAX_ACCURACY_DROP = 0.1
# One step at a tiny learning rate: hardly trained.
WORSE_TRAINING = dataclasses.replace(
    RING_TRAINING, epochs=1, train_steps_per_epoch=1, learning_rate=1e-5
)
# CSV data: its ExampleGen, and an inferred schema.
CSV_NODES = ALL_NODES - {"ImportExampleGen", "ImportSchemaGen"} | {"CsvExampleGen", "SchemaGen"}


@dataclasses.dataclass
class Run:
    summary: summary.RunSummary
    versions: list[str]
    executed_nodes: set[str]


@pytest.fixture(scope="module")
def ring_data(tmp_path_factory):
    return write_ring_sample(tmp_path_factory.mktemp("rings"), train=300, eval=100)


@pytest.fixture(scope="module")
def runs(ring_data, tmp_path_factory):
    layout = OutputLayout(str(tmp_path_factory.mktemp("out")))
    settings = {
        "first": dict(training=RING_TRAINING, max_accuracy_drop=MAX_ACCURACY_DROP),
        "worse": dict(training=WORSE_TRAINING, max_accuracy_drop=MAX_ACCURACY_DROP),
        "impossible": dict(training=WORSE_TRAINING, accuracy_threshold=1.0),
    }
    done = {}
    for name, arguments in settings.items():
        run_pipeline(ring_data, layout.output_dir, data_format="csv", **arguments)
        done[name] = Run(
            summary.latest_run(layout.metadata_path, "e2e"),
            versions(layout),
            executed_nodes(layout),
        )
    return layout, done


def eval_rows(ring_data):
    """The eval split as (serialized tf.Examples, labels), typed as CsvExampleGen types them."""
    rows = np.loadtxt(ring_data / "eval" / "rows.csv", delimiter=",", skiprows=1)
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={
                    "x0": tf.train.Feature(float_list=tf.train.FloatList(value=[x0])),
                    "x1": tf.train.Feature(float_list=tf.train.FloatList(value=[x1])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                }
            )
        ).SerializeToString()
        for x0, x1, label in rows
    ]
    return examples, rows[:, 2].astype(int)


def accuracy(model_dir, examples, labels):
    probabilities = tf.saved_model.load(model_dir).signatures["serving_default"](
        examples=tf.constant(examples)
    )["probabilities"]
    return float(np.mean(np.argmax(probabilities.numpy(), axis=1) == labels))


def test_the_sample_labels_are_the_radius_tertiles(ring_data):
    _, labels = eval_rows(ring_data)
    assert (ring(0.5, 0.5), ring(1.0, 0.5), ring(1.5, 1.0)) == (0, 1, 2)
    assert np.bincount(labels).min() > 20  # balanced: chance is about 1/3


def test_every_component_runs_and_the_trained_model_is_blessed_and_pushed(runs):
    layout, done = runs
    first = done["first"]
    assert first.executed_nodes == CSV_NODES
    assert first.summary.blessed is True and first.summary.baseline_accuracy is None
    assert first.summary.accuracy >= ACCURACY_FLOOR
    [version] = first.versions
    assert first.summary.pushed_model == os.path.join(layout.serving_model_dir, version)


def test_the_floor_needs_training(runs, ring_data):
    """The same model and settings, untrained, evaluated as the Evaluator does."""
    layout, _ = runs
    # Each run inferred the same schema from the same data.
    schemas = glob.glob(os.path.join(layout.pipeline_root, "SchemaGen", "schema", "*", "*"))
    schema = data.load_schema(min(schemas))
    keras.utils.set_random_seed(0)
    untrained = build_model(RING_TRAINING, 3, data.model_input_shape(RING_TRAINING, schema))
    model_dir = os.path.join(layout.output_dir, "untrained")
    trainer_examples.export_model(untrained, RING_TRAINING, schema, model_dir)
    assert accuracy(model_dir, *eval_rows(ring_data)) < ACCURACY_FLOOR


def test_the_pushed_model_scores_what_the_evaluator_measured(runs, ring_data):
    _, done = runs
    first = done["first"]
    measured = accuracy(first.summary.pushed_model, *eval_rows(ring_data))
    assert measured == pytest.approx(first.summary.accuracy, abs=1e-6)


def test_a_model_that_trails_the_last_blessed_one_is_neither_blessed_nor_pushed(runs):
    _, done = runs
    first, worse = done["first"].summary, done["worse"].summary
    assert worse.baseline_accuracy == pytest.approx(first.accuracy)
    change = worse.accuracy - first.accuracy
    assert change < -MAX_ACCURACY_DROP
    assert worse.blessed is False and worse.pushed_model is None
    assert worse.why == [
        f"sparse_categorical_accuracy changed by {change:+.4f} against the baseline; "
        f"the least allowed is {-MAX_ACCURACY_DROP:+.4f}"
    ]
    assert done["worse"].versions == done["first"].versions


def test_an_impossible_threshold_blocks_the_push(runs):
    _, done = runs
    run = done["impossible"].summary
    assert run.blessed is False and run.pushed_model is None
    assert run.baseline_accuracy == pytest.approx(done["first"].summary.accuracy)
    assert run.why == [
        f"sparse_categorical_accuracy {run.accuracy:.4f} is below the threshold 1.0000"
    ]
    assert done["impossible"].versions == done["first"].versions


def test_an_anomaly_stops_the_run_before_the_trainer(tmp_path):
    data_root = write_split_sample(tmp_path / "data", train=48, eval=16, bad_eval_label=12)
    layout = OutputLayout(str(tmp_path / "out"))
    with pytest.raises(RuntimeError) as error:
        run_pipeline(data_root, layout.output_dir)
    message = str(error.value)
    assert "ExampleValidator found anomalies" in message
    assert "[eval] label: Out-of-range values" in message
    done = executed_nodes(layout)
    assert {"ExampleValidator"} <= done
    assert not done & {"ValidationGate", "Trainer", "Evaluator", "Pusher"}
    assert versions(layout) == []
