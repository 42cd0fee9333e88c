"""The data stage: ExampleGen -> StatisticsGen -> SchemaGen (or ImportSchemaGen) ->
ExampleValidator -> ValidationGate, and the checks of a local data root."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import tensorflow_data_validation as tfdv
from tfx import v1 as tfx
from tfx.dsl.io import fileio

from components.data_checks.checked_import import CheckedImportExampleGen
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
    """

    data_root: str
    data_format: str = "tfrecord"
    split_folders: bool = True
    schema_path: str | None = None
    validation_fraction: float = 0.0

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

    def check_training(self, training: TrainingConfig) -> None:
        """Whether `training` can train on these data."""
        if self.data_format == "csv" and training.model != "mlp":
            raise ValueError(
                f"CSV data at {self.data_root} is tabular: the training config's model must be "
                f"'mlp', got {training.model!r}."
            )


@dataclasses.dataclass(frozen=True)
class DataStage:
    """ExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> ValidationGate."""

    example_gen: Any
    statistics_gen: Any
    schema_gen: Any
    example_validator: Any
    validation_gate: Any

    @property
    def examples(self):
        return self.example_gen.outputs["examples"]

    @property
    def schema(self):
        """The schema, available only once the gate passed: training depends on the gate."""
        return self.validation_gate.outputs["validated_schema"]

    @property
    def components(self) -> list:
        return [
            self.example_gen,
            self.statistics_gen,
            self.schema_gen,
            self.example_validator,
            self.validation_gate,
        ]


def data_stage(settings: DataSettings, training: TrainingConfig) -> DataStage:
    """Reads the examples, computes statistics, takes or infers the schema, and gates.

    TFRecords are imported by `CheckedImportExampleGen`, which names a file cut short or a
    record that is not a tf.Example (components/data_checks/checked_import.py). For an image
    model the statistics include TFDV's image statistics (semantic domains), which a schema's
    `image_domain` constrains, and the gate decodes every image to the model's `image_shape`.
    The gate also gives the label of an inferred schema its class range, from the statistics.
    """
    images = training.model == "resnet"
    example_gen = _example_gen(settings.data_root, settings.data_format, settings.split_folders)
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True) if images else None,
    )
    if settings.schema_path is None:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    else:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=settings.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(
        schema=schema_gen.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"],
        statistics=statistics_gen.outputs["statistics"],
        examples=example_gen.outputs["examples"],
        label_key=training.label_key,
        image_key=training.image_key if images else "",
        image_shape=json.dumps(list(training.image_shape) if images else None),
    )
    return DataStage(example_gen, statistics_gen, schema_gen, example_validator, validation_gate)


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
