"""Small slices of the embedded sample, and running and inspecting pipelines, for tests."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils

from pipelines import configs, pipeline
from pipelines.local.layout import OutputLayout
from pipelines.stages.data import DataSettings
from pipelines.stages.release import ReleaseSettings

REPO = Path(__file__).resolve().parent.parent
# The local runner's first line: the run id and its log file.
HEADER = re.compile(r"^Run (\S+); full log: (\S+)$", re.MULTILINE)


def write_split_sample(
    root: Path,
    train: int,
    eval: int,
    bad_eval_label: int | None = None,
    relabel: Callable[[int], tf.train.Feature] | None = None,
) -> Path:
    """Writes `train/` and `eval/` TFRecords with the first examples of each split.

    With `bad_eval_label`, the first eval example gets that label (an anomaly for the schema).
    With `relabel`, every example's label feature becomes `relabel(its label)`.
    """
    for split, count in (("train", train), ("eval", eval)):
        source = Path(configs.DATA_ROOT) / split / "data.tfrecord"
        (root / split).mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(root / split / "data.tfrecord")) as writer:
            for index, record in enumerate(tf.data.TFRecordDataset(str(source)).take(count)):
                example = tf.train.Example.FromString(record.numpy())
                label = example.features.feature["label"]
                if split == "eval" and index == 0 and bad_eval_label is not None:
                    label.int64_list.value[:] = [bad_eval_label]
                if relabel is not None:
                    label.CopyFrom(relabel(label.int64_list.value[0]))
                writer.write(example.SerializeToString())
    return root


def write_ring_sample(root: Path, train: int, eval: int, seed: int = 0) -> Path:
    """Writes `train/` and `eval/` CSV files of points x0, x1 ~ N(0, 1) whose label (0, 1, 2)
    is the tertile of their radius.

    The classes are balanced and concentric: a trained MLP tells them apart (about 0.9 eval
    accuracy with RING_TRAINING) and a random one, close to linear, hardly better than chance.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("eval", eval)):
        points = rng.normal(size=(count, 2))
        (root / split).mkdir(parents=True, exist_ok=True)
        with open(root / split / "rows.csv", "w") as file:
            file.write("x0,x1,label\n")
            file.writelines(f"{x0:.5f},{x1:.5f},{ring(x0, x1)}\n" for x0, x1 in points)
    return root


def ring(x0: float, x1: float) -> int:
    """0, 1 or 2: the tertile of x0**2 + x1**2 (chi-squared, 2 degrees of freedom)."""
    radius_squared = x0**2 + x1**2
    return int(radius_squared > -2 * np.log(2 / 3)) + int(radius_squared > -2 * np.log(1 / 3))


TRAINING = dataclasses.replace(configs.TRAINING, epochs=1, batch_size=32, train_steps_per_epoch=4)
# The MLP on write_ring_sample(train=300): 5 epochs of 19 steps.
RING_TRAINING = dataclasses.replace(
    configs.TRAINING,
    model="mlp",
    num_classes=3,
    epochs=5,
    batch_size=16,
    base_optimizer="adam",
    learning_rate=0.01,
    min_train_steps=0,
)
# SharpnessProbe settings small enough that each probe takes seconds.
SMALL_PROBE = dict(max_examples=32, ascent_steps=1, power_iterations=3, hutchinson_samples=2)
ALL_NODES = {
    "ImportExampleGen",
    "RecordCheck",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "ValidationGate",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "Pusher",
}


def build_pipeline(tmp_path, **overrides):
    """The pipeline over the embedded sample. `overrides` name fields of the settings objects
    (`PipelineSettings`, `DataSettings`, `ReleaseSettings`) or arguments of `create_pipeline`
    (`training`, `tuning`, `comparison`, ...)."""
    fields = dict(
        pipeline_name="test",
        pipeline_root=str(tmp_path / "root"),
        data_root=configs.DATA_ROOT,
        schema_path=configs.SCHEMA_PATH,
        serving_model_dir=str(tmp_path / "serving"),
        accuracy_threshold=0.5,
        max_accuracy_drop=0.01,
    )
    fields.update(overrides)

    def settings(kind):
        names = {field.name for field in dataclasses.fields(kind)}
        return kind(**{name: fields.pop(name) for name in names if name in fields})

    return pipeline.create_pipeline(
        settings(pipeline.PipelineSettings),
        settings(DataSettings),
        fields.pop("training", configs.TRAINING),
        settings(ReleaseSettings),
        **fields,
    )


def run_pipeline(
    data_root,
    output_dir,
    accuracy_threshold=0.0,
    max_accuracy_drop=1.0,
    training=TRAINING,
    runner=None,
    sharpness=None,
    data_format="tfrecord",
):
    """Runs the pipeline "e2e" on `data_root`: the sample's TFRecords with its schema, or CSV
    files with an inferred schema."""
    layout = OutputLayout(str(output_dir))
    dag = pipeline.create_pipeline(
        pipeline.PipelineSettings(
            pipeline_name="e2e",
            pipeline_root=layout.pipeline_root,
            metadata_connection_config=(
                tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
            ),
            beam_pipeline_args=["--direct_running_mode=in_memory"],
        ),
        DataSettings(
            str(data_root),
            data_format,
            schema_path=configs.SCHEMA_PATH if data_format == "tfrecord" else None,
        ),
        training,
        ReleaseSettings(
            layout.serving_model_dir, accuracy_threshold, max_accuracy_drop, sharpness=sharpness
        ),
    )
    (runner or tfx.orchestration.LocalDagRunner()).run(dag)
    return layout


def _store(layout):
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(layout.metadata_path)
    return metadata_store.MetadataStore(config)


def executed_nodes(layout):
    """Node ids with a completed execution, per the metadata store."""
    store = _store(layout)
    done = set()
    for context in store.get_contexts_by_type("node"):
        executions = store.get_executions_by_context(context.id)
        if any(e.last_known_state == metadata_store_pb2.Execution.COMPLETE for e in executions):
            done.add(context.name.split(".", 1)[1])
    return done


def node_outputs(layout, node, key):
    """The artifacts that `node`'s last completed execution output under `key`."""
    return _node_artifacts(layout, node, key, metadata_store_pb2.Event.OUTPUT)


def node_inputs(layout, node, key):
    """The artifacts that `node`'s last completed execution read under `key`."""
    return _node_artifacts(layout, node, key, metadata_store_pb2.Event.INPUT)


def _node_artifacts(layout, node, key, event_type):
    store = _store(layout)
    [context] = [c for c in store.get_contexts_by_type("node") if c.name.endswith(f".{node}")]
    last = max(
        (
            e
            for e in store.get_executions_by_context(context.id)
            if e.last_known_state == metadata_store_pb2.Execution.COMPLETE
        ),
        key=lambda execution: execution.id,
    )
    ids = [
        event.artifact_id
        for event in store.get_events_by_execution_ids([last.id])
        if event.type == event_type and event.path.steps[0].key == key
    ]
    artifacts = store.get_artifacts_by_id(ids)
    types = {t.id: t for t in store.get_artifact_types_by_id({a.type_id for a in artifacts})}
    return [artifact_utils.deserialize_artifact(types[a.type_id], a) for a in artifacts]


def versions(layout):
    if not os.path.isdir(layout.serving_model_dir):
        return []
    return sorted(name for name in os.listdir(layout.serving_model_dir) if name.isdigit())


def done_line(node: str) -> re.Pattern:
    """The console's line for a component that finished, with its wall time."""
    return re.compile(rf"^  done   {re.escape(node)} +\d+\.\d s", re.MULTILINE)


def run_local_runner(*flags: str) -> subprocess.CompletedProcess:
    """`python -m pipelines.local_runner FLAGS`, as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.local_runner", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def compiled_tasks(output: Path):
    """The root DAG's tasks of a compiled pipeline: a Vertex AI job (`.json`, checked as a
    `PipelineJob`) or a Kubeflow pipeline spec (`.yaml`)."""
    if output.suffix == ".json":
        document = json.loads(output.read_text())
        json_format.ParseDict(document, pipeline_spec_pb2.PipelineJob())
        document = document["pipelineSpec"]
    else:
        [document] = yaml.safe_load_all(output.read_text())
    return json_format.ParseDict(document, pipeline_spec_pb2.PipelineSpec()).root.dag.tasks


def constant(parameter):
    """A compiled task's constant input, as Python: pipeline spec 2.1's `constant` (the
    Kubeflow YAML), or `constant_value` before it (the Vertex AI job)."""
    value = parameter.runtime_value
    if value.HasField("constant"):
        return json_format.MessageToDict(value.constant)
    return getattr(value.constant_value, value.constant_value.WhichOneof("value"))
