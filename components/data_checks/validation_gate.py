"""A gate that stops the pipeline on bad data: schema anomalies or unusable records.

ExampleValidator only records anomalies; nothing downstream looks at them. `ValidationGate`
reads them and the RecordCheck's report (`components/data_checks/record_check.py`: images that
do not decode to the model's shape, NaN or infinite floats, empty splits, which TFDV cannot see
or cannot place), and fails its own execution when the data cannot be trained on, so Trainer,
Evaluator and Pusher never run on bad data. Its error lists every finding by split and
feature, the records by file and index. On good data it passes the schema on: Trainer consumes
`validated_schema`, which makes the dependency real on every orchestrator. When the schema
gives the label no class range (an inferred schema), the gate takes it from the statistics
(`components/data_checks/label_domain.py`), so the Trainer knows the number of classes, and it
records each numeric feature's mean and standard deviation over the training split
(`components/data_checks/feature_moments.py`), which the built-in MLP standardizes with.

`max_bad_records` (`--max-bad-records`) is the tolerance: with N > 0 the RecordCheck writes
the examples again without their bad records, and the statistics, ExampleValidator and
everything downstream read those (`pipelines/stages/data.py`); anomalies that only the left-out
records caused are then gone, since TFDV never sees them. The gate lets up to N bad records
(all splits together) go, and stops the run on more, on any anomaly of what is left, on a
split with no records, or on a split left with none. The number left out is the
`records_left_out` custom property of `validated_schema`.

Example:

    gate = ValidationGate(schema=schema_gen.outputs["schema"],
                          anomalies=example_validator.outputs["anomalies"],
                          statistics=statistics_gen.outputs["statistics"],
                          record_check=record_check.outputs["report"],
                          label_key="label", max_bad_records=0)
    trainer = tfx.components.Trainer(..., schema=gate.outputs["validated_schema"])
"""

import os

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.data_checks.artifact import RecordCheckReport
from components.data_checks.feature_moments import with_numeric_statistics
from components.data_checks.label_domain import with_label_domain
from components.data_checks.record_check import REPORT_FILE
from components.data_checks.record_findings import DATASET, RecordCheckResult
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


def gate_report(
    anomalies: dict[str, list[str]], result: RecordCheckResult, max_bad_records: int = 0
) -> str | None:
    """Why the run must stop (the anomalies of `find_anomalies`, then the record check's
    findings), or `None` when it may go on, leaving out up to `max_bad_records` records."""
    record_problems = [bad for bad in result.problems if bad.feature != DATASET]
    split_problems = [bad for bad in result.problems if bad.feature == DATASET]
    too_many = result.bad_record_count > max_bad_records
    emptied = [
        split
        for split, records in result.records.items()
        if records and records == result.bad[split] and not too_many
    ]
    if not (anomalies or split_problems or too_many or emptied):
        return None
    stopping = split_problems + record_problems if too_many else split_problems
    if anomalies:
        headline = "ExampleValidator found anomalies against the schema"
    elif too_many and max_bad_records:
        headline = (
            f"The record check found {result.bad_record_count} records that cannot be trained "
            f"on, more than max_bad_records (--max-bad-records) allows: {max_bad_records}"
        )
    elif stopping:
        headline = "The record check found records that cannot be trained on"
    else:
        headline = "Leaving out the bad records would leave a split with no records"
    lines = [f"  [{split}] {line}" for split, found in anomalies.items() for line in found]
    if anomalies and stopping:
        lines.append("The record check also found records that cannot be trained on:")
    lines += [f"  {bad.line()}" for bad in stopping]
    lines += [
        f"  [{split}] {DATASET}: every one of its {result.records[split]} records is bad"
        for split in emptied
    ]
    if record_problems and not too_many:
        lines.append(
            f"The record check left out {result.bad_record_count} bad records "
            f"(max_bad_records: {max_bad_records}):"
        )
        lines += [f"  {bad.line()}" for bad in record_problems]
    return (
        f"{headline}; the run stops before training.\n" + "\n".join(lines) + "\nFix the data, "
        "or update the schema (or --image-shape) if the change is intended."
    )


def read_record_check(report: tfx.dsl.Artifact) -> RecordCheckResult:
    """The RecordCheck's findings in its `report` artifact."""
    text = io_utils.read_string_file(os.path.join(report.uri, REPORT_FILE))
    return RecordCheckResult.from_json(text)


@tfx.dsl.components.component
def ValidationGate(
    schema: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Schema],
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    record_check: tfx.dsl.components.InputArtifact[RecordCheckReport],
    validated_schema: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.Schema],
    label_key: tfx.dsl.components.Parameter[str],
    max_bad_records: tfx.dsl.components.Parameter[int] = 0,
) -> None:
    """Fails on anomalies, or on more bad records than `max_bad_records`; else writes the
    schema, with the label's classes, and how many records were left out."""
    result = read_record_check(record_check)
    error = gate_report(find_anomalies(anomalies), result, max_bad_records)
    if error is not None:
        raise DataAnomaliesError(error)
    if result.bad_record_count:
        logging.warning(
            "Left out of training and evaluation: %d bad records.\n%s",
            result.bad_record_count,
            "\n".join(bad.line() for bad in result.problems),
        )
    schema_file = io_utils.get_only_uri_in_dir(schema.uri)
    io_utils.write_pbtxt_file(
        os.path.join(validated_schema.uri, os.path.basename(schema_file)),
        with_numeric_statistics(
            with_label_domain(data.load_schema(schema_file), statistics, label_key), statistics
        ),
    )
    validated_schema.set_int_custom_property("records_left_out", result.bad_record_count)
