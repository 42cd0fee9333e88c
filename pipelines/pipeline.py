"""The gsam-tfx pipeline DAG. It holds no configuration: see configs.py and the runners.

ExampleGen -> StatisticsGen -> SchemaGen (or ImportSchemaGen) -> ExampleValidator
-> ValidationGate -> [Tuner] -> Trainer (GSAM) -> Evaluator (against the last blessed model)
[-> SharpnessProbe] -> Pusher.

`create_pipeline` composes small builders, one per stage, in `pipelines/stages/`: `data_stage`
(examples, statistics, schema and the validation gate), `tuner_component` (with `tuning`),
`trainer_component` and `release_stage` (resolver, Evaluator, optionally the SharpnessProbe,
Pusher). The pipeline variants (comparison, tuning, sharpness) compose the same builders;
`comparison_stage` trains, evaluates and, with sharpness, probes every run.

Example:

    from tfx import v1 as tfx
    from pipelines import configs, pipeline
    dag = pipeline.create_pipeline(
        pipeline_name="gsam-tfx", pipeline_root="/tmp/root", data_root=configs.DATA_ROOT,
        schema_path=configs.SCHEMA_PATH, serving_model_dir="/tmp/serving",
        training=configs.TRAINING, accuracy_threshold=0.7, max_accuracy_drop=0.01,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            "/tmp/metadata.sqlite"))
    tfx.orchestration.LocalDagRunner().run(dag)
"""

from __future__ import annotations

from typing import Any, Sequence

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.sharpness.probe import ProbeSettings
from pipelines.stages.comparison import ComparisonSpec, comparison_stage
from pipelines.stages.data import DATA_FORMATS, data_stage
from pipelines.stages.release import SharpnessInputs, release_stage
from pipelines.stages.training import check_tuning, trainer_component, tuner_component
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace


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
    tuning: SearchSpace | None = None,
    parallel_trials: int = 1,
    sharpness: ProbeSettings | None = None,
    enable_cache: bool = False,
    comparison: ComparisonSpec | None = None,
    stock_resolver: bool = False,
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
            `tfx.extensions.google_cloud_ai_platform` settings (see
            `pipelines/stages/vertex_training.py`).
            With `tuning`, the Tuner runs there too, on the same machines.
        tuning: when set, a Tuner searches this space between the validation gate and the
            Trainer, and the Trainer trains with its best values.
        parallel_trials: trials the Tuner runs at once, one per machine; more than one needs
            `vertex_training`.
        comparison: when set, the comparison variant: one Trainer and Evaluator per method and
            seed (`training` with each method's optimizer), optional label noise before them,
            and a ComparisonReport whose winning model goes on to the release stage.
        sharpness: when set, a SharpnessProbe measures the candidate (and the baseline) after
            the Evaluator, and the Pusher takes its blessing (see
            `components/sharpness/probe.py`). In a comparison, a SharpnessProbe also measures
            every run's model for the report (ungated).
        enable_cache: reuse the outputs of steps whose inputs and settings are unchanged.
        stock_resolver: the baseline from TFX's LatestBlessedModelStrategy (needed by
            KubeflowV2DagRunner) rather than the latest model blessed before the candidate.
    """
    check_settings(training, data_root, data_format, accuracy_threshold, max_accuracy_drop)
    check_tuning(tuning, training, vertex_training, parallel_trials)
    if comparison is not None and not isinstance(comparison, ComparisonSpec):
        raise ValueError(f"comparison must be a ComparisonSpec, got {type(comparison).__name__}.")
    if comparison is not None and tuning is not None and tuning.searches_the_method:
        raise ValueError(
            "tuning's method_choices and perturb_every_choices cannot be searched in a "
            "comparison: every compared method is tuned on its own."
        )
    data = data_stage(data_root, data_format, split_folders, schema_path, training)
    probe_inputs = None if sharpness is None else SharpnessInputs(sharpness, data.schema, training)
    training_components = []
    if comparison is None:
        hyperparameters = None
        if tuning is not None:
            tuner = tuner_component(
                data.examples, data.schema, training, tuning, vertex_training, parallel_trials
            )
            training_components.append(tuner)
            hyperparameters = tuner.outputs["best_hyperparameters"]
        trainer = trainer_component(
            data.examples, data.schema, training, vertex_training, hyperparameters=hyperparameters
        )
        training_components.append(trainer)
        candidate = trainer.outputs["model"]
    else:
        stage = comparison_stage(
            data, training, comparison, vertex_training, tuning, parallel_trials, sharpness
        )
        training_components, candidate = stage.components, stage.best_model
    release = release_stage(
        data.examples,
        candidate,
        label_key=training.label_key,
        accuracy_threshold=accuracy_threshold,
        max_accuracy_drop=max_accuracy_drop,
        serving_model_dir=serving_model_dir,
        sharpness=probe_inputs,
        stock_resolver=stock_resolver,
    )
    return assemble(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[*data.components, *training_components, *release.components],
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args,
        enable_cache=enable_cache,
    )


def check_settings(
    training: TrainingConfig,
    data_root: str,
    data_format: str,
    accuracy_threshold: float,
    max_accuracy_drop: float,
) -> None:
    """The checks every pipeline variant makes before building anything."""
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


def assemble(
    *,
    pipeline_name: str,
    pipeline_root: str,
    components: list,
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None,
    beam_pipeline_args: Sequence[str],
    enable_cache: bool,
) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(beam_pipeline_args),
    )


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
