"""The training stage: Transform (with a module file's `preprocessing_fn`), the Tuner
(optional) and the Trainer, locally or on Vertex AI Training.

Trainers and Tuners read `TrainingInputs`: the examples (raw, or transformed by TFX's
Transform), the validated schema, the transform graph, and the user's module file, which
travels in their `custom_config` (`trainer.user_module.ModuleFile`). With a validation
fraction, a `ValidationSplit` first holds that share of the training examples out as a
`validation` split, which the Trainers and Tuners validate on (val_loss, early stopping, the
plateau) instead of the `eval` split that the Evaluator scores.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfx import v1 as tfx

from components.comparison.validation_split import VALIDATION, ValidationSplit
from components.vertex.experiments import ExperimentSettings, experiment_logger
from components.vertex.training import VertexTensorBoardTrainer
from pipelines.stages.vertex_training import uses_tensorboard, vertex_tuning_config
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace
from trainer.user_module import PREPROCESSING_FN, ModuleFile

RUN_FN = "trainer.task.run_fn"
TUNER_FN = "trainer.tuning.tuner_fn"


@dataclasses.dataclass(frozen=True)
class TrainingInputs:
    """What the Trainers and Tuners of a pipeline read.

    Args:
        examples: the examples they train on: the data stage's, or Transform's.
        schema: the validated schema of the raw examples (it tells the classes).
        transform_graph: Transform's graph, when there is a Transform.
        module_file: the user's module file, when the pipeline has one.
        components: the components that make these inputs (ValidationSplit, Transform), to
            add to the DAG.
        validation_fraction: the share of the training examples held out as the validation
            split (`ValidationSplit`); 0 when they validate on the eval split.
    """

    examples: Any
    schema: Any
    transform_graph: Any = None
    module_file: ModuleFile | None = None
    components: tuple = ()
    validation_fraction: float = 0.0

    @property
    def eval_split(self) -> str:
        """The split the Trainers and Tuners validate on."""
        return VALIDATION if self.validation_fraction else "eval"

    def with_examples(self, examples) -> TrainingInputs:
        """The same, training on other examples (e.g. with some labels flipped)."""
        return dataclasses.replace(self, examples=examples)

    def custom_config(self, training: TrainingConfig) -> dict[str, Any]:
        """A Trainer's or Tuner's custom_config: the training config and the module file."""
        module = {} if self.module_file is None else self.module_file.to_custom_config()
        return {**training.to_custom_config(), **module}

    def channels(self) -> dict[str, Any]:
        """The Trainer's and Tuner's input channels."""
        channels = dict(examples=self.examples, schema=self.schema)
        if self.transform_graph is not None:
            channels["transform_graph"] = self.transform_graph
        return channels

    def split_args(self) -> dict[str, Any]:
        """The Trainer's and Tuner's `train_args` and `eval_args` when they validate on a held
        out split (else TFX's defaults: train on `train`, validate on `eval`)."""
        if self.eval_split == "eval":
            return {}
        return dict(
            train_args=tfx.proto.TrainArgs(splits=["train"]),
            eval_args=tfx.proto.EvalArgs(splits=[self.eval_split]),
        )


def training_inputs(
    examples, schema, module_file: ModuleFile | None = None, validation_fraction: float = 0.0
) -> TrainingInputs:
    """The Trainers' inputs. With `validation_fraction`, a `ValidationSplit` holds that share
    of the training examples out as their validation split; with a module file that defines
    `preprocessing_fn`, TFX's Transform then runs it on the raw examples (it analyzes the
    train split and transforms all), and they train on its output.

    The module file is loaded here, so a module that defines neither hook, or a hook of the
    wrong signature, stops the pipeline before anything runs, naming the file and function.
    """
    components = []
    if validation_fraction:
        # The schema is the gate's: the split runs once the data passed it.
        held_out = ValidationSplit(
            examples=examples, fraction=validation_fraction, schema=schema
        )
        components.append(held_out)
        examples = held_out.outputs["split_examples"]
    inputs = TrainingInputs(examples, schema, validation_fraction=validation_fraction)
    if module_file is not None:
        inputs = dataclasses.replace(inputs, module_file=module_file)
    if module_file is None or not module_file.load().defines("preprocessing_fn"):
        return dataclasses.replace(inputs, components=tuple(components))
    transform = tfx.components.Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn=PREPROCESSING_FN,
        custom_config=module_file.to_custom_config(),
    )
    return dataclasses.replace(
        inputs,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        components=(*components, transform),
    )


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
    inputs: TrainingInputs,
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
        **inputs.channels(),
        **inputs.split_args(),
        custom_config={**inputs.custom_config(training), **tuning.to_custom_config()},
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
    inputs: TrainingInputs,
    training: TrainingConfig,
    vertex_training: dict[str, Any] | None = None,
    component_id: str = "Trainer",
    hyperparameters=None,
):
    """The Trainer running `trainer.task.run_fn` with `training` (and the module file) as its
    custom_config, and the tuned values of `hyperparameters` (a Tuner's
    `best_hyperparameters`) laid over it; its Vertex AI Training job logs to Vertex
    TensorBoard when `vertex_training` names one."""
    trainer_args = dict(
        run_fn=RUN_FN,
        **inputs.channels(),
        **inputs.split_args(),
        hyperparameters=hyperparameters,
        custom_config=inputs.custom_config(training),
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
