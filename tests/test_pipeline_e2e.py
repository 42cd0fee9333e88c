"""The whole pipeline on LocalDagRunner (SQLite ML Metadata, Beam DirectRunner in memory)."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from pipelines import configs, pipeline, summary
from pipelines.options import OutputLayout
from tests.pipeline_data import write_split_sample

TRAINING = dataclasses.replace(
    configs.TRAINING, epochs=1, batch_size=32, train_steps_per_epoch=4, optimizer="gsam")
ALL_NODES = {"ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
             "ValidationGate", "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"}


def run_pipeline(data_root, output_dir, accuracy_threshold=0.0, max_accuracy_drop=1.0,
                 training=TRAINING, runner=None):
    layout = OutputLayout(str(output_dir))
    dag = pipeline.create_pipeline(
        pipeline_name="e2e", pipeline_root=layout.pipeline_root, data_root=str(data_root),
        schema_path=configs.SCHEMA_PATH, serving_model_dir=layout.serving_model_dir,
        training=training, accuracy_threshold=accuracy_threshold,
        max_accuracy_drop=max_accuracy_drop,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            layout.metadata_path),
        beam_pipeline_args=["--direct_running_mode=in_memory"],
    )
    (runner or tfx.orchestration.LocalDagRunner()).run(dag)
    return layout


def executed_nodes(layout):
    """Node ids with a completed execution, per the metadata store."""
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
    store = metadata_store.MetadataStore(config)
    done = set()
    for context in store.get_contexts_by_type("node"):
        executions = store.get_executions_by_context(context.id)
        if any(e.last_known_state == metadata_store_pb2.Execution.COMPLETE for e in executions):
            done.add(context.name.split(".", 1)[1])
    return done


def versions(layout):
    if not os.path.isdir(layout.serving_model_dir):
        return []
    return sorted(name for name in os.listdir(layout.serving_model_dir) if name.isdigit())


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_split_sample(tmp_path_factory.mktemp("data"), train=96, eval=64)


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
    probabilities = serving.signatures["serving_default"](
        examples=tf.constant(records[:16]))["probabilities"].numpy()
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
    assert any("sparse_categorical_accuracy" in reason for reason in run.why), run.why
    assert versions(first_run) == before


def test_an_anomaly_stops_the_run_before_the_trainer(tmp_path):
    data = write_split_sample(tmp_path / "data", train=48, eval=16, bad_eval_label=12)
    layout = OutputLayout(str(tmp_path / "out"))
    with pytest.raises(Exception) as error:
        run_pipeline(data, layout.output_dir)
    assert "ValidationGate" in str(error.value) or "anomal" in str(error.value).lower()
    done = executed_nodes(layout)
    assert {"ExampleValidator"} <= done
    assert not done & {"ValidationGate", "Trainer", "Evaluator", "Pusher"}
    assert versions(layout) == []
