"""A gate that stops the pipeline when ExampleValidator finds anomalies.

ExampleValidator only records anomalies; nothing downstream looks at them. `ValidationGate`
reads them and fails its own execution when any split has one, so Trainer, Evaluator and
Pusher never run on invalid data. On clean data it passes the schema on: Trainer consumes
`validated_schema`, which makes the dependency real on every orchestrator. When the schema
gives the label no class range (an inferred schema), the gate takes it from the statistics
(`components/label_domain.py`), so the Trainer knows the number of classes.

Example:

    gate = ValidationGate(schema=schema_gen.outputs["schema"],
                          anomalies=example_validator.outputs["anomalies"],
                          statistics=statistics_gen.outputs["statistics"],
                          label_key="label")
    trainer = tfx.components.Trainer(..., schema=gate.outputs["validated_schema"])
"""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.label_domain import with_label_domain
from trainer import data

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(RuntimeError):
    """The examples do not match the schema; the message lists every anomaly."""


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


@tfx.dsl.components.component
def ValidationGate(
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    label_key: tfx.dsl.components.Parameter[str],
) -> None:
    found = find_anomalies(anomalies)
    if found:
        report = "\n".join(
            f"  [{split}] {line}" for split, lines in found.items() for line in lines
        )
        raise DataAnomaliesError(
            f"ExampleValidator found anomalies against the schema; the run stops before "
            f"training.\n{report}\nFix the data, or update the schema if the change is intended."
        )
    schema_file = io_utils.get_only_uri_in_dir(schema.uri)
    io_utils.write_pbtxt_file(
        os.path.join(validated_schema.uri, os.path.basename(schema_file)),
        with_label_domain(data.load_schema(schema_file), statistics, label_key),
    )
