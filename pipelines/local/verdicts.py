"""A component's verdict in a few words, read back from ML Metadata once it has finished.

`VERDICTS` maps a component type (the last part of its class path: `"Evaluator"`, the same
for `Evaluator.gsam.seed1`) to a function that takes the finished `Execution` (its output
artifacts and execution properties, as ML Metadata recorded them) and returns a short text,
or `None` when there is nothing to say. The console prints it on the component's line. A new
component gets its verdict with one entry:

    VERDICTS["LabelNoise"] = lambda execution: (
        f"{execution.output('noisy_examples').get_int_custom_property('labels_flipped')} "
        "labels flipped"
    )
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import tensorflow as tf
from ml_metadata import metadata_store
from tfx.dsl.io import fileio
from tfx.orchestration import data_types_utils
from tfx.types import artifact, artifact_utils
from tfx.utils import io_utils

from pipelines.local import summary
from trainer.inputs import data
from trainer.training import history

# ExampleGen's rows are counted from its output files when they are at most this large.
ROW_COUNT_MAX_BYTES = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class Execution:
    """A finished component execution: its output artifacts by key, and its properties."""

    outputs: dict[str, list[artifact.Artifact]]
    properties: dict[str, Any]

    def output(self, key: str) -> artifact.Artifact:
        return artifact_utils.get_single_instance(self.outputs[key])


def read_execution(store: metadata_store.MetadataStore, execution_id: int) -> Execution:
    """The output artifacts and properties of execution `execution_id`, from ML Metadata."""
    [execution] = store.get_executions_by_id([execution_id])
    events = [
        event
        for event in store.get_events_by_execution_ids([execution_id])
        if event.type in (event.OUTPUT, event.INTERNAL_OUTPUT)  # the Resolver's: internal
    ]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    type_ids = list({found.type_id for found in artifacts.values()})
    types = {found.id: found for found in store.get_artifact_types_by_id(type_ids)}
    outputs = {}
    for event in events:
        found = artifacts[event.artifact_id]
        outputs.setdefault(event.path.steps[0].key, []).append(
            artifact_utils.deserialize_artifact(types[found.type_id], found)
        )
    properties = data_types_utils.build_value_dict(execution.custom_properties)
    return Execution(outputs, properties)


def example_gen(execution: Execution) -> str:
    examples = execution.output("examples")
    parts = []
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = fileio.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*"))
        size = sum(fileio.stat(path).length for path in files)
        if size > ROW_COUNT_MAX_BYTES:
            parts.append(f"{split} {size / 2**20:.0f} MiB")
        else:
            parts.append(f"{split} {count_records(files)} rows")
    return ", ".join(parts)


def count_records(files: list[str]) -> int:
    """TFRecords in `files` (GZIP-compressed when their names end with .gz)."""
    if not files:
        return 0
    compression = data.tfrecord_compression(files[0])
    batches = tf.data.TFRecordDataset(files, compression_type=compression).batch(4096)
    return int(batches.reduce(tf.constant(0, tf.int64), lambda n, b: n + tf.size(b, tf.int64)))


def record_check(execution: Execution) -> str:
    """How many records were checked and found bad, by split and kind; with
    --max-bad-records, how many were written for the later steps."""
    report = execution.output("report")
    records = report.get_int_custom_property("records")
    bad = report.get_int_custom_property("bad_records")
    if not bad:
        return f"{records} records, none bad"
    counts = json.loads(report.get_string_custom_property("bad_records_by_split_and_kind"))
    kinds = "; ".join(
        f"[{split}] {kind.replace(': ', f': {count} ', 1)}"
        for split, by_kind in counts.items()
        for kind, count in by_kind.items()
    )
    text = f"{bad} of {records} records bad ({kinds})"
    if "clean_examples" in execution.outputs:
        text += f"; {records - bad} written without them"
    return text


def validation_gate(execution: Execution) -> str:
    label_key = execution.properties["label_key"]
    validated = execution.output("validated_schema")
    schema_file = io_utils.get_only_uri_in_dir(validated.uri)
    domain = data.label_int_domain(data.load_schema(schema_file), label_key)
    left_out = validated.get_int_custom_property("records_left_out")
    return (
        "no anomalies"
        + (f"; {left_out} bad records left out" if left_out else "")
        + f"; label {label_key!r} in 0..{domain.max}: {domain.max + 1} classes"
    )


def trainer(execution: Execution) -> str | None:
    path = os.path.join(execution.output("model_run").uri, history.HISTORY_FILE)
    if not fileio.exists(path):
        return None  # the multi-worker loop writes no history
    epochs = history.read_history(path)["epochs"]
    final = epochs[-1]
    accuracy = f", val accuracy {final['val_accuracy']:.4f}" if "val_accuracy" in final else ""
    return f"{len(epochs)} epoch{'s' if len(epochs) > 1 else ''}{accuracy}"


def resolver(execution: Execution) -> str:
    models = execution.outputs.get("model", [])
    return f"baseline: blessed model #{models[0].id}" if models else "no blessed model yet"


def evaluator(execution: Execution) -> str:
    blessed = execution.output("blessing").get_int_custom_property("blessed") == 1
    evaluation = summary.read_evaluation(execution.output("evaluation").uri)
    text = f"{'blessed' if blessed else 'not blessed'}, accuracy {evaluation.accuracy:.4f}"
    if evaluation.baseline_accuracy is not None:
        text += f" (baseline {evaluation.baseline_accuracy:.4f})"
    return text


def sharpness_probe(execution: Execution) -> str:
    """The measured model's top Hessian eigenvalue and surrogate gap (the probe's custom
    properties); the Pusher's line says whether its gate let the model through."""
    measures = execution.output("sharpness")
    return (
        f"top eigenvalue {measures.get_float_custom_property('top_eigenvalue'):.4g}, "
        f"surrogate gap {measures.get_float_custom_property('surrogate_gap'):.4g}"
    )


def pusher(execution: Execution) -> str:
    pushed = execution.output("pushed_model")
    if pushed.get_int_custom_property("pushed") != 1:
        return "nothing pushed: the model is not blessed"
    return f"pushed version {pushed.get_string_custom_property('pushed_version')}"


VERDICTS: dict[str, Callable[[Execution], str | None]] = {
    "ImportExampleGen": example_gen,
    "CheckedImportExampleGen": example_gen,
    "CsvExampleGen": example_gen,
    "RecordCheck": record_check,
    "ValidationGate": validation_gate,
    "Trainer": trainer,
    "Resolver": resolver,
    "Evaluator": evaluator,
    "SharpnessProbe": sharpness_probe,
    "Pusher": pusher,
    "AtomicPusher": pusher,
}


def verdict_of(component_type: str) -> Callable[[Execution], str | None] | None:
    """The verdict function of a component type, given as its class path or its name."""
    return VERDICTS.get(component_type.rsplit(".", 1)[-1])
