"""The gsam-tfx pipeline DAG. It holds no configuration: see configs.py and the runners.

ExampleGen -> StatisticsGen -> SchemaGen (or ImportSchemaGen) -> ExampleValidator
-> ValidationGate -> Trainer (GSAM) -> Evaluator (against the last blessed model) -> Pusher.

Example:

    from pipelines import configs, pipeline
    dag = pipeline.create_pipeline(
        pipeline_name="gsam-tfx", pipeline_root="/tmp/root", data_root=configs.DATA_ROOT,
        schema_path=configs.SCHEMA_PATH, serving_model_dir="/tmp/serving",
        training=configs.TRAINING, accuracy_threshold=0.7, max_accuracy_drop=0.01)
    tfx.orchestration.LocalDagRunner().run(dag)
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import config_pb2 as tfma_config
from tfx import v1 as tfx
from tfx.dsl.io import fileio

from components.atomic_pusher import AtomicPusher
from components.validation_gate import ValidationGate
from trainer import export
from trainer.config import TrainingConfig

RUN_FN = "trainer.task.run_fn"
DATA_FORMATS = ("tfrecord", "csv")
# Folders that, when both exist under the data root, are the train and eval splits.
SPLIT_FOLDERS = ("train", "eval")


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_model_dir: str,
    training: TrainingConfig,
    accuracy_threshold: float,
    max_accuracy_drop: float,
    schema_path: str | None = None,
    data_format: str = "tfrecord",
    split_folders: bool = True,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None,
    beam_pipeline_args: Sequence[str] = (),
    vertex_training: dict[str, Any] | None = None,
    enable_cache: bool = False,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline; every value is checked here, before anything runs.

    Paths are taken as the components will see them (local, gs://, or inside the image):
    `inspect_local_data` checks a local data root first.

    Args:
        data_root: a folder of TFRecord files of tf.Examples or of CSV files.
        data_format: `"tfrecord"` or `"csv"`.
        split_folders: the data root's `train/` and `eval/` folders are the splits; if false,
            ExampleGen splits the examples 2:1 by hash.
        schema_path: a curated schema (ImportSchemaGen). `None` infers one with SchemaGen.
        training: the Trainer's hyperparameters, passed as its `custom_config`.
        accuracy_threshold: the eval accuracy a model needs to be blessed.
        max_accuracy_drop: how far (absolute) the candidate may trail the last blessed model.
        vertex_training: when set, the Trainer runs as a Vertex AI Training job: a dict of
            `tfx.extensions.google_cloud_ai_platform` settings (see `pipelines/vertex_training.py`).
    """
    if not isinstance(training, TrainingConfig):
        raise ValueError(f"training must be a TrainingConfig, got {type(training).__name__}.")
    _check_fraction("accuracy_threshold", accuracy_threshold)
    _check_fraction("max_accuracy_drop", max_accuracy_drop)
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}."
        )
    if data_format == "csv" and training.model != "mlp":
        raise ValueError(
            f"CSV data at {data_root} is tabular: the training config's model must be 'mlp', "
            f"got {training.model!r}."
        )

    example_gen = _example_gen(data_root, data_format, split_folders)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    if schema_path is None:
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True
        )
    else:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    validation_gate = ValidationGate(
        schema=schema_gen.outputs["schema"], anomalies=example_validator.outputs["anomalies"]
    )

    trainer_args = dict(
        run_fn=RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=validation_gate.outputs["validated_schema"],
        custom_config=training.to_custom_config(),
    )
    if vertex_training is None:
        trainer = tfx.components.Trainer(**trainer_args)
    else:
        trainer_args["custom_config"] = {**trainer_args["custom_config"], **vertex_training}
        trainer = tfx.extensions.google_cloud_ai_platform.Trainer(**trainer_args)

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(training.label_key, accuracy_threshold, max_accuracy_drop),
    )
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)
        ),
    ).with_id("Pusher")

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            validation_gate,
            trainer,
            model_resolver,
            evaluator,
            pusher,
        ],
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def eval_config(
    label_key: str, accuracy_threshold: float, max_accuracy_drop: float
) -> tfma.EvalConfig:
    """TFMA on the serving signature.

    Blessing looks at the overall accuracy: it must clear `accuracy_threshold` and may trail
    the baseline by at most `max_accuracy_drop`. Per-class slices are reported, not gated.
    """
    overall = tfma.SlicingSpec()
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                model_type="tf_generic",
                signature_name=export.SIGNATURE_NAME,
                label_key=label_key,
                prediction_key=export.OUTPUT_KEY,
            )
        ],
        slicing_specs=[overall, tfma.SlicingSpec(feature_keys=[label_key])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(class_name="SparseCategoricalCrossentropy"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        per_slice_thresholds=[
                            tfma_config.PerSliceMetricThreshold(
                                slicing_specs=[overall],
                                threshold=tfma.MetricThreshold(
                                    value_threshold=tfma.GenericValueThreshold(
                                        lower_bound={"value": accuracy_threshold}
                                    ),
                                    change_threshold=tfma.GenericChangeThreshold(
                                        direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                        absolute={"value": -max_accuracy_drop},
                                    ),
                                ),
                            )
                        ],
                    ),
                ]
            )
        ],
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


def _example_gen(data_root: str, data_format: str, split_folders: bool):
    input_config = (
        tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name=name, pattern=f"{name}/*") for name in SPLIT_FOLDERS]
        )
        if split_folders
        else None
    )
    example_gen = (
        tfx.components.CsvExampleGen if data_format == "csv" else tfx.components.ImportExampleGen
    )
    return example_gen(input_base=data_root, input_config=input_config)


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
