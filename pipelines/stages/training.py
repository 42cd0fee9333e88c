"""The training stage: the Tuner (optional) and the Trainer, locally or on Vertex AI Training."""

from __future__ import annotations

from typing import Any

from tfx import v1 as tfx

from components.vertex.experiments import ExperimentSettings, experiment_logger
from components.vertex.training import VertexTensorBoardTrainer
from pipelines.stages.vertex_training import uses_tensorboard, vertex_tuning_config
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace

RUN_FN = "trainer.task.run_fn"
TUNER_FN = "trainer.tuning.tuner_fn"


def check_tuning(
    tuning: SearchSpace | None,
    training: TrainingConfig,
    vertex_training: dict[str, Any] | None,
    parallel_trials: int,
) -> None:
    """The checks of the tuning settings, before building anything."""
    if tuning is not None:
        if not isinstance(tuning, SearchSpace):
            raise ValueError(f"tuning must be a SearchSpace, got {type(tuning).__name__}.")
        tuning.check_training(training)
    if (
        isinstance(parallel_trials, bool)
        or not isinstance(parallel_trials, int)
        or parallel_trials < 1
    ):
        raise ValueError(f"parallel_trials must be an integer >= 1, got {parallel_trials!r}.")
    if parallel_trials > 1 and (tuning is None or vertex_training is None):
        raise ValueError(
            f"parallel_trials ({parallel_trials}) needs tuning on Vertex AI Training (tuning "
            f"and vertex_training); elsewhere the Tuner runs one trial at a time."
        )


def tuner_component(
    examples,
    schema,
    training: TrainingConfig,
    tuning: SearchSpace,
    vertex_training: dict[str, Any] | None = None,
    parallel_trials: int = 1,
    component_id: str = "Tuner",
):
    """The Tuner running `trainer.tuning.tuner_fn` over `tuning`, its trials trained like
    `training`; on Vertex AI Training with `vertex_training`, `parallel_trials` at a time."""
    tuner_args = dict(
        tuner_fn=TUNER_FN,
        examples=examples,
        schema=schema,
        custom_config={**training.to_custom_config(), **tuning.to_custom_config()},
    )
    if vertex_training is None:
        tuner = tfx.components.Tuner(**tuner_args)
    else:
        tuner_args["custom_config"].update(vertex_tuning_config(vertex_training, parallel_trials))
        tuner = tfx.extensions.google_cloud_ai_platform.Tuner(
            **tuner_args, tune_args=tfx.proto.TuneArgs(num_parallel_trials=parallel_trials)
        )
    return tuner if component_id == "Tuner" else tuner.with_id(component_id)


def trainer_component(
    examples,
    schema,
    training: TrainingConfig,
    vertex_training: dict[str, Any] | None = None,
    component_id: str = "Trainer",
    hyperparameters=None,
):
    """The Trainer running `trainer.task.run_fn` with `training` as its custom_config, and
    the tuned values of `hyperparameters` (a Tuner's `best_hyperparameters`) laid over it;
    its Vertex AI Training job logs to Vertex TensorBoard when `vertex_training` names one."""
    trainer_args = dict(
        run_fn=RUN_FN,
        examples=examples,
        schema=schema,
        hyperparameters=hyperparameters,
        custom_config=training.to_custom_config(),
    )
    if vertex_training is None:
        trainer = tfx.components.Trainer(**trainer_args)
    else:
        trainer_args["custom_config"] = {**trainer_args["custom_config"], **vertex_training}
        trainer_class = (
            VertexTensorBoardTrainer
            if uses_tensorboard(vertex_training)
            else tfx.extensions.google_cloud_ai_platform.Trainer
        )
        trainer = trainer_class(**trainer_args)
    # with_id even for "Trainer": a Trainer subclass's id is its class name.
    return trainer.with_id(component_id)


def experiment_component(components: list, settings: ExperimentSettings):
    """An ExperimentLogger over the `model_run` of every Trainer among `components`."""
    model_runs = {
        component.id: component.outputs["model_run"]
        for component in components
        if isinstance(component, tfx.components.Trainer)
    }
    return experiment_logger(model_runs, settings)
