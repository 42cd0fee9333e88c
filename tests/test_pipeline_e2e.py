"""The whole pipeline on LocalDagRunner (SQLite ML Metadata, Beam DirectRunner in memory)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import summary
from pipelines.options import OutputLayout
from tests.pipeline_support import (
    ALL_NODES,
    executed_nodes,
    run_pipeline,
    versions,
    write_split_sample,
)


@pytest.fixture(scope="module")
def first_run(sample, tmp_path_factory):
    return run_pipeline(sample, tmp_path_factory.mktemp("out"))


def test_every_component_runs_and_the_model_is_blessed_and_pushed(first_run):
    assert executed_nodes(first_run) == ALL_NODES
    run = summary.latest_run(first_run.metadata_path, "e2e")
    assert run.blessed is True
    assert 0.0 <= run.accuracy <= 1.0 and run.baseline_accuracy is None
    [version] = versions(first_run)
    assert run.pushed_model == os.path.join(first_run.serving_model_dir, version)


def test_the_pushed_model_classifies_serialized_examples(first_run, sample):
    [version] = versions(first_run)
    serving = tf.saved_model.load(os.path.join(first_run.serving_model_dir, version))
    records = [r.numpy() for r in tf.data.TFRecordDataset(str(sample / "eval" / "data.tfrecord"))]
    probabilities = serving.signatures["serving_default"](examples=tf.constant(records[:16]))[
        "probabilities"
    ].numpy()
    assert probabilities.shape == (16, 10)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_an_impossible_threshold_blocks_the_push(sample, first_run):
    """A second run against the first: evaluated with a baseline, not blessed, nothing pushed."""
    before = versions(first_run)
    run_pipeline(sample, first_run.output_dir, accuracy_threshold=1.0)
    run = summary.latest_run(first_run.metadata_path, "e2e")
    assert run.blessed is False and run.pushed_model is None
    assert run.baseline_accuracy is not None
    assert any(
        reason.startswith("sparse_categorical_accuracy ")
        and reason.endswith("is below the threshold 1.0000")
        for reason in run.why
    ), run.why
    assert versions(first_run) == before


def test_an_anomaly_stops_the_run_before_the_trainer(tmp_path):
    data = write_split_sample(tmp_path / "data", train=48, eval=16, bad_eval_label=12)
    layout = OutputLayout(str(tmp_path / "out"))
    with pytest.raises(RuntimeError) as error:
        run_pipeline(data, layout.output_dir)
    message = str(error.value)
    assert "ExampleValidator found anomalies" in message
    assert "[eval] label: Out-of-range values" in message
    done = executed_nodes(layout)
    assert {"ExampleValidator"} <= done
    assert not done & {"ValidationGate", "Trainer", "Evaluator", "Pusher"}
    assert versions(layout) == []
