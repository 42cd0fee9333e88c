"""The data stage: ExampleGen -> RecordCheck -> StatisticsGen -> SchemaGen (or ImportSchemaGen)
-> ExampleValidator -> ValidationGate, and the checks of a local data root."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import tensorflow_data_validation as tfdv
from tfx import v1 as tfx
from tfx.dsl.io import fileio

from components.data_checks.checked_import import CheckedImportExampleGen
from components.data_checks.record_check import RecordCheck
from components.data_checks.schema_import import ContentKeyedImportSchemaGen
from components.data_checks.validation_gate import ValidationGate
from trainer.config import TrainingConfig

DATA_FORMATS = ("tfrecord", "csv")
# Folders that, when both exist under the data root, are the train and eval splits.
SPLIT_FOLDERS = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the examples are and what they look like.

    Args:
        data_root: a folder (local or gs://) of TFRecord files of tf.Examples or of CSV files.
        data_format: `"tfrecord"` or `"csv"`.
        split_folders: the data root's `train/` and `eval/` folders are the splits; if false,
            ExampleGen splits the examples 2:1 by hash.
        schema_path: a curated schema (ImportSchemaGen); `None` infers one with SchemaGen.
        validation_fraction: the share of the training examples held out as the Trainers'
            validation split (val_loss, early stopping, the learning rate plateau), in [0, 1);
            0 validates on the eval split, which the Evaluator scores
            (`components/comparison/validation_split.py`).
        max_bad_records: how many records the record check may find bad (all splits
            together) and leave out of statistics, training and evaluation; more stop the run
            before the Trainer. 0: any bad record stops it.
    """

    data_root: str
    data_format: str = "tfrecord"
    split_folders: bool = True
    schema_path: str | None = None
    validation_fraction: float = 0.0
    max_bad_records: int = 0

    def __post_init__(self):
        if not isinstance(self.data_root, str) or not self.data_root:
            raise ValueError(f"data_root must be a non-empty path, got {self.data_root!r}.")
        if self.data_format not in DATA_FORMATS:
            raise ValueError(
                f"data_format must be one of {', '.join(DATA_FORMATS)}, got {self.data_format!r}."
            )
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ValueError(f"validation_fraction must be a number, got {fraction!r}.")
        if not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}.")
        limit = self.max_bad_records
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"max_bad_records must be an integer >= 0, got {limit!r}.")

    def check_training(self, training: TrainingConfig) -> None:
        """Whether `training` can train on these data."""
        if self.data_format == "csv" and training.model != "mlp":
            raise ValueError(
                f"CSV data at {self.data_root} is tabular: the training config's model must be "
                f"'mlp', got {training.model!r}."
            )


@dataclasses.dataclass(frozen=True)
class DataStage:
    """ExampleGen -> RecordCheck -> StatisticsGen -> SchemaGen -> ExampleValidator ->
    ValidationGate."""

    example_gen: Any
    record_check: Any
    statistics_gen: Any
    schema_gen: Any
    example_validator: Any
    validation_gate: Any

    @property
    def examples(self):
        """The examples every later step reads: without the bad records when
        `max_bad_records` lets the RecordCheck leave them out, else ExampleGen's."""
        return _checked_examples(self.example_gen, self.record_check)

    @property
    def schema(self):
        """The schema, available only once the gate passed: training depends on the gate."""
        return self.validation_gate.outputs["validated_schema"]

    @property
    def components(self) -> list:
        return [
            self.example_gen,
            self.record_check,
            self.statistics_gen,
            self.schema_gen,
            self.example_validator,
            self.validation_gate,
        ]


def data_stage(settings: DataSettings, training: TrainingConfig) -> DataStage:
    """Reads the examples, checks every record, computes statistics, takes or infers the
    schema, and gates.

    TFRecords are imported by `CheckedImportExampleGen`, which names a file cut short or a
    record that is not a tf.Example (components/data_checks/checked_import.py). The
    RecordCheck, a Beam job, decodes every image to the model's `image_shape` and looks at
    every float (components/data_checks/record_check.py); with `max_bad_records` it also
    writes the examples without the bad records, and the statistics and everything after
    read those. For an image model the statistics include TFDV's image statistics (semantic
    domains), which a schema's `image_domain` constrains. A curated schema is imported with
    its cache keyed by its content (components/data_checks/schema_import.py). The gate also
    gives the label of an inferred schema its class range, from the statistics.
    """
    images = training.model == "resnet"
    example_gen = _example_gen(settings.data_root, settings.data_format, settings.split_folders)
    record_check = RecordCheck(
        examples=example_gen.outputs["examples"],
        image_key=training.image_key if images else "",
        image_shape=tuple(training.image_shape) if images else None,
        write_clean_examples=settings.max_bad_records > 0,
    )
    statistics_gen = tfx.components.StatisticsGen(
        examples=_checked_examples(example_gen, record_check),
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True) if images else None,
    )
    if settings.schema_path is None:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    else:
        schema_gen = ContentKeyedImportSchemaGen(schema_file=settings.schema_path).with_id(
            "ImportSchemaGen"
        )
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(
        schema=schema_gen.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"],
        statistics=statistics_gen.outputs["statistics"],
        record_check=record_check.outputs["report"],
        label_key=training.label_key,
        max_bad_records=settings.max_bad_records,
    )
    return DataStage(
        example_gen, record_check, statistics_gen, schema_gen, example_validator, validation_gate
    )


def inspect_local_data(
    data_root: str, data_format: str = "auto", schema_path: str | None = None
) -> tuple[str, bool]:
    """Checks a local data root; returns its format and whether it has split folders.

    `data_format="auto"` means CSV when the folder holds .csv files, else TFRecord.
    """
    if data_format != "auto" and data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be auto or one of {', '.join(DATA_FORMATS)}, got {data_format!r}."
        )
    if not fileio.isdir(data_root):
        raise ValueError(f"data_root is not a folder: {data_root}")
    files = [name for _, _, names in fileio.walk(data_root) for name in names]
    if not files:
        raise ValueError(f"data_root holds no files: {data_root}")
    if schema_path is not None and not fileio.exists(schema_path):
        raise ValueError(f"schema_path does not exist: {schema_path}")
    if data_format == "auto":
        data_format = "csv" if any(name.endswith(".csv") for name in files) else "tfrecord"
    split_folders = all(fileio.isdir(os.path.join(data_root, name)) for name in SPLIT_FOLDERS)
    return data_format, split_folders


def _checked_examples(example_gen, record_check):
    """ExampleGen's examples, or the RecordCheck's without the bad records when it writes
    them."""
    return record_check.outputs.get("clean_examples", example_gen.outputs["examples"])


def _example_gen(data_root: str, data_format: str, split_folders: bool):
    input_config = (
        tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name=name, pattern=f"{name}/*") for name in SPLIT_FOLDERS]
        )
        if split_folders
        else None
    )
    if data_format == "csv":
        return tfx.components.CsvExampleGen(input_base=data_root, input_config=input_config)
    return CheckedImportExampleGen(input_base=data_root, input_config=input_config).with_id(
        "ImportExampleGen"
    )
