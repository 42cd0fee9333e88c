"""A gate that stops the pipeline on bad data: schema anomalies or unusable records.

ExampleValidator only records anomalies; nothing downstream looks at them. `ValidationGate`
reads them, and passes over every record (`components/data_checks/record_check.py`: images
that do not decode to the model's shape, NaN or infinite floats, empty splits, which TFDV
cannot see or cannot place), and fails its own execution when it finds any, so Trainer,
Evaluator and Pusher never run on bad data. Its error lists every finding by split and feature, the records by
file and index. On clean data it passes the schema on: Trainer consumes `validated_schema`,
which makes the dependency real on every orchestrator. When the schema gives the label no
class range (an inferred schema), the gate takes it from the statistics
(`components/data_checks/label_domain.py`), so the Trainer knows the number of classes, and it
records each numeric feature's mean and standard deviation over the training split
(`components/data_checks/feature_moments.py`), which the built-in MLP standardizes with.

Example:

    gate = ValidationGate(schema=schema_gen.outputs["schema"],
                          anomalies=example_validator.outputs["anomalies"],
                          statistics=statistics_gen.outputs["statistics"],
                          examples=example_gen.outputs["examples"],
                          label_key="label", image_key="image", image_shape="[28, 28, 1]")
    trainer = tfx.components.Trainer(..., schema=gate.outputs["validated_schema"])
"""

import json
import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.data_checks.feature_moments import with_numeric_statistics
from components.data_checks.label_domain import with_label_domain
from components.data_checks.record_check import BadRecords, find_bad_records
from trainer.inputs import data

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """The examples do not match the schema, or some records cannot be trained on; the message
    lists every anomaly and every bad record."""


def find_anomalies(anomalies_artifact: tfx.dsl.Artifact) -> dict[str, list[str]]:
    """Maps each split with anomalies to readable `feature: description` lines."""
    found = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        split_uri = artifact_utils.get_split_uri([anomalies_artifact], split)
        path = os.path.join(split_uri, ANOMALIES_FILE)
        anomalies = anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))
        lines = [
            f"{feature}: {info.short_description} ({info.description})"
            for feature, info in sorted(anomalies.anomaly_info.items())
        ]
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            lines.append(f"<dataset>: {info.short_description} ({info.description})")
        if lines:
            found[split] = lines
    return found


def gate_report(anomalies: dict[str, list[str]], bad_records: list[BadRecords]) -> str:
    """The gate's error: the anomalies (`find_anomalies`), then the bad records."""
    if anomalies:
        headline = "ExampleValidator found anomalies against the schema"
    else:
        headline = "The record check found records that cannot be trained on"
    lines = [f"  [{split}] {line}" for split, found in anomalies.items() for line in found]
    if anomalies and bad_records:
        lines.append("The record check also found records that cannot be trained on:")
    lines += [f"  {bad.line()}" for bad in bad_records]
    return (
        f"{headline}; the run stops before training.\n" + "\n".join(lines) + "\nFix the data, "
        "or update the schema (or --image-shape) if the change is intended."
    )


@tfx.dsl.components.component
def ValidationGate(
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    label_key: tfx.dsl.components.Parameter[str],
    image_key: tfx.dsl.components.Parameter[str],
    image_shape: tfx.dsl.components.Parameter[str],
) -> None:
    """Fails on anomalies or bad records; else writes the schema, with the label's classes.

    `image_key` is the PNG feature the model reads (`""`: none), `image_shape` the JSON list
    [height, width, channels] each image must decode to.
    """
    found = find_anomalies(anomalies)
    bad_records = find_bad_records(examples, image_key, json.loads(image_shape))
    if found or bad_records:
        raise DataAnomaliesError(gate_report(found, bad_records))
    schema_file = io_utils.get_only_uri_in_dir(schema.uri)
    io_utils.write_pbtxt_file(
        os.path.join(validated_schema.uri, os.path.basename(schema_file)),
        with_numeric_statistics(
            with_label_domain(data.load_schema(schema_file), statistics, label_key), statistics
        ),
    )
