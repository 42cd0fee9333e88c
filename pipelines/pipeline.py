"""The gsam-tfx pipeline DAG. It holds no configuration: see configs.py and the runners.

ExampleGen -> RecordCheck -> StatisticsGen -> SchemaGen (or ImportSchemaGen)
-> ExampleValidator -> ValidationGate -> [ValidationSplit] -> [Transform] -> [Tuner]
-> Trainer (GSAM) -> Evaluator (against the last blessed model) [-> SharpnessProbe] -> Pusher.

`create_pipeline` composes small builders, one per stage, in `pipelines/stages/`: `data_stage`
(examples, the record check, statistics, schema and the validation gate), `tuner_component`
(with `tuning`), `trainer_component` and `release_stage` (resolver, Evaluator, optionally the
SharpnessProbe, Pusher). The pipeline variants (comparison, tuning, sharpness) compose the same
builders; `comparison_stage` trains, evaluates and, with sharpness, probes every run.

Example:

    from tfx import v1 as tfx
    from pipelines import configs
    from pipelines.pipeline import PipelineSettings, create_pipeline
    from pipelines.stages.data import DataSettings
    from pipelines.stages.release import ReleaseSettings
    dag = create_pipeline(
        PipelineSettings("gsam-tfx", "/tmp/root",
            metadata_connection_config=tfx.orchestration.metadata
            .sqlite_metadata_connection_config("/tmp/metadata.sqlite")),
        DataSettings(configs.DATA_ROOT, schema_path=configs.SCHEMA_PATH),
        configs.TRAINING,
        ReleaseSettings("/tmp/serving", accuracy_threshold=0.7, max_accuracy_drop=0.01))
    tfx.orchestration.LocalDagRunner().run(dag)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from components.vertex.experiments import ExperimentSettings
from pipelines.stages.comparison import ComparisonSpec, comparison_stage
from pipelines.stages.data import DataSettings, data_stage
from pipelines.stages.release import ReleaseSettings, release_stage
from pipelines.stages.training import (
    check_tuning,
    experiment_component,
    trainer_component,
    training_inputs,
    tuner_component,
)
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace
from trainer.user_module import ModuleFile


@dataclasses.dataclass(frozen=True)
class PipelineSettings:
    """Where the pipeline lives and how its orchestrator runs it.

    Args:
        pipeline_name: the pipeline's name (ML Metadata context, Vertex display name).
        pipeline_root: where the components write their artifacts (local, gs://).
        metadata_connection_config: ML Metadata's store, for the local and Beam runners.
        beam_pipeline_args: Beam arguments of the data components.
        enable_cache: reuse the outputs of steps whose inputs and settings are unchanged.
    """

    pipeline_name: str
    pipeline_root: str
    metadata_connection_config: metadata_store_pb2.ConnectionConfig | None = None
    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = False

    def __post_init__(self):
        for name in ("pipeline_name", "pipeline_root"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}.")
        object.__setattr__(self, "beam_pipeline_args", tuple(self.beam_pipeline_args))


def create_pipeline(
    pipeline: PipelineSettings,
    data: DataSettings,
    training: TrainingConfig,
    release: ReleaseSettings,
    *,
    tuning: SearchSpace | None = None,
    comparison: ComparisonSpec | None = None,
    vertex_training: dict[str, Any] | None = None,
    parallel_trials: int = 1,
    module_file: ModuleFile | None = None,
    experiment: ExperimentSettings | None = None,
) -> tfx.dsl.Pipeline:
    """Builds the pipeline; every value is checked here, before anything runs.

    Paths are taken as the components will see them (local, gs://, or inside the image):
    `pipelines.stages.data.inspect_local_data` checks a local data root first.

    Args:
        pipeline: its name, root, ML Metadata, Beam arguments and cache.
        data: where the examples are, their format, the schema and how many bad records may
            be left out (`DataSettings`).
        training: the Trainer's hyperparameters, passed as its `custom_config`.
        release: blessing and pushing: thresholds, the baseline, the SharpnessProbe, the push
            destination (`ReleaseSettings`).
        tuning: when set, a Tuner searches this space between the validation gate and the
            Trainer, and the Trainer trains with its best values.
        comparison: when set, the comparison variant: one Trainer and Evaluator per method and
            seed (`training` with each method's optimizer), optional label noise before them,
            and a ComparisonReport whose winning model goes on to the release stage. With
            `release.sharpness`, a SharpnessProbe also measures every run's model for the
            report (ungated).
        vertex_training: when set, the Trainer runs as a Vertex AI Training job: a dict of
            `tfx.extensions.google_cloud_ai_platform` settings (see
            `pipelines/stages/vertex_training.py`). With `tuning`, the Tuner runs there too,
            on the same machines.
        parallel_trials: trials the Tuner runs at once, one per machine; more than one needs
            `vertex_training`.
        module_file: the user's module file (`trainer.user_module`): with `preprocessing_fn`,
            TFX's Transform runs before the Trainers, which train on its output; with
            `build_model`, the Trainers train the model it builds.
        experiment: when set, an ExperimentLogger after the Trainer(s) logs each one's
            hyperparameters and final metrics as a run of this Vertex AI experiment
            (components/vertex/experiments.py).
    """
    for name, value, kind in (
        ("pipeline", pipeline, PipelineSettings),
        ("data", data, DataSettings),
        ("training", training, TrainingConfig),
        ("release", release, ReleaseSettings),
    ):
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}.")
    data.check_training(training)
    check_tuning(tuning, training, vertex_training, parallel_trials)
    if experiment is not None and not isinstance(experiment, ExperimentSettings):
        raise ValueError(
            f"experiment must be an ExperimentSettings, got {type(experiment).__name__}."
        )
    if comparison is not None and not isinstance(comparison, ComparisonSpec):
        raise ValueError(f"comparison must be a ComparisonSpec, got {type(comparison).__name__}.")
    if comparison is not None and tuning is not None and tuning.searches_the_method:
        raise ValueError(
            "tuning's method_choices and perturb_every_choices cannot be searched in a "
            "comparison: every compared method is tuned on its own."
        )
    data_components = data_stage(data, training)
    inputs = training_inputs(
        data_components.examples, data_components.schema, module_file, data.validation_fraction
    )
    if comparison is None:
        hyperparameters = None
        training_components = [*inputs.components]
        if tuning is not None:
            tuner = tuner_component(inputs, training, tuning, vertex_training, parallel_trials)
            training_components.append(tuner)
            hyperparameters = tuner.outputs["best_hyperparameters"]
        trainer = trainer_component(
            inputs, training, vertex_training, hyperparameters=hyperparameters
        )
        training_components.append(trainer)
        candidate, candidate_run = trainer.outputs["model"], trainer.outputs["model_run"]
    else:
        stage = comparison_stage(
            data_components,
            inputs,
            training,
            comparison,
            vertex_training,
            tuning,
            parallel_trials,
            release.sharpness,
        )
        training_components = [*inputs.components, *stage.components]
        candidate, candidate_run = stage.best_model, stage.best_model_run
    if experiment is not None:
        training_components.append(experiment_component(training_components, experiment))
    release_components = release_stage(
        data_components.examples, candidate, training, release, model_run=candidate_run
    )
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline.pipeline_name,
        pipeline_root=pipeline.pipeline_root,
        components=[
            *data_components.components,
            *training_components,
            *release_components.components,
        ],
        enable_cache=pipeline.enable_cache,
        metadata_connection_config=pipeline.metadata_connection_config,
        beam_pipeline_args=list(pipeline.beam_pipeline_args),
    )
