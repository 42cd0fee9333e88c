"""The TFX Tuner entry point: `Tuner(tuner_fn="trainer.tuning.tuner_fn", custom_config=...)`.

`custom_config` holds the `TrainingConfig` and the `SearchSpace`
(`{**training.to_custom_config(), **space.to_custom_config()}`). Every trial builds its model
with the Trainer's own recipe (`trainer.task.build_model`, the built-in model or the module
file's `build_model`, which gets the trial's `hp`; `trainer.training.fit.compile_for_training`)
from the training config with the trial's values laid over it, and trains `epochs_per_trial`
epochs on the Trainer's datasets; steps per epoch and validation batches follow the same rules
as `run_fn`'s. With a `seed` in the training config, every trial starts from the same initial
weights. A trial trains with the Trainer's callbacks for its config (the learning rate plateau
and its warmup, early stopping: `trainer.training.fit.training_callbacks`).

TFX's Tuner executor runs `tuner.search(**fit_kwargs)` and writes the best trial's values
(`best_hyperparameters`, which the Trainer takes) and every trial's (`tuner_results`).

Example (what the pipeline does):

```python
tuner = tfx.components.Tuner(
    tuner_fn="trainer.tuning.tuner_fn",
    examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
    custom_config={**TrainingConfig().to_custom_config(),
                   **SearchSpace(max_trials=4).to_custom_config()})
trainer = tfx.components.Trainer(..., hyperparameters=tuner.outputs["best_hyperparameters"])
```
"""

from __future__ import annotations

import dataclasses

import keras
import keras_tuner
from tfx import v1 as tfx

from trainer import task
from trainer.config import TrainingConfig
from trainer.inputs import data
from trainer.search_space import OBJECTIVES, SearchSpace
from trainer.training import fit

# The KerasTuner project folder under the Tuner's working directory.
PROJECT_NAME = "gsam_tuning"


def tuner_fn(fn_args) -> tfx.components.TunerFnResult:
    """The tuner and its `search` arguments for `fn_args.custom_config`.

    Args:
        fn_args: the Tuner's `tfx.components.FnArgs`; reads `custom_config`, `schema_path`,
            `train_files`, `eval_files`, `train_steps`, `eval_steps`, `data_accessor` and
            `working_dir` (KerasTuner's trial folders).
    """
    space = SearchSpace.from_custom_config(fn_args.custom_config)
    training = TrainingConfig.from_custom_config(fn_args.custom_config)
    space.check_training(training)
    trials = dataclasses.replace(training, epochs=space.epochs_per_trial)
    user = task.user_module(fn_args.custom_config)
    model_hyperparameters = user is not None and user.takes_hyperparameters
    inputs = task.model_inputs(fn_args, trials, user)
    num_classes = data.resolve_num_classes(trials, inputs.schema)
    steps_per_epoch = task.training_steps_per_epoch(fn_args, trials, inputs)
    train_dataset, eval_dataset = task.training_datasets(fn_args, trials, inputs)

    def build(hp) -> tuple[keras.Model, TrainingConfig]:
        config = space.trial_config(trials, hp, model_hyperparameters)
        if config.seed is not None:
            keras.utils.set_random_seed(config.seed)
        model = task.build_model(config, inputs, num_classes, user, hp)
        return fit.compile_for_training(model, config, steps_per_epoch), config

    tuner = make_tuner(space, TrialModel(build, steps_per_epoch), fn_args.working_dir)
    return tfx.components.TunerFnResult(
        tuner=tuner,
        fit_kwargs=dict(
            x=train_dataset,
            validation_data=eval_dataset,
            epochs=space.epochs_per_trial,
            steps_per_epoch=steps_per_epoch,
            shuffle=False,  # The DataAccessor's dataset is shuffled already.
            verbose=2,
        ),
    )


class TrialModel(keras_tuner.HyperModel):
    """A trial's model, and its training with the callbacks of the trial's config.

    Args:
        build: `build(hp)` -> (the compiled model, the trial's `TrainingConfig`).
        steps_per_epoch: optimizer steps of an epoch (the learning rate warmup's unit).
    """

    def __init__(self, build, steps_per_epoch: int):
        super().__init__()
        # Not `_build`: HyperModel keeps the subclass's own `build` there.
        self._build_trial = build
        self.steps_per_epoch = steps_per_epoch
        self._config = None

    def build(self, hp) -> keras.Model:
        model, self._config = self._build_trial(hp)
        return model

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        # KerasTuner builds each trial's model right before fitting it.
        practice = fit.training_callbacks(self._config, self.steps_per_epoch)
        return model.fit(*args, callbacks=[*(callbacks or []), *practice], **kwargs)


def make_tuner(space: SearchSpace, build, directory: str) -> keras_tuner.Tuner:
    """KerasTuner's tuner of `space.algorithm`, building trial models with `build` (a
    `HyperModel`, or a function of `hp`)."""
    settings = dict(
        objective=keras_tuner.Objective(*OBJECTIVES[space.objective]),
        seed=space.search_seed,
        directory=directory,
        project_name=PROJECT_NAME,
        # A trial trains on this machine alone, also in a Vertex pool of parallel trials.
        distribution_strategy=fit.distribution_strategy(workers=1),
    )
    if space.algorithm == "random":
        return keras_tuner.RandomSearch(build, max_trials=space.max_trials, **settings)
    if space.algorithm == "bayesian":
        return keras_tuner.BayesianOptimization(build, max_trials=space.max_trials, **settings)
    tuner = keras_tuner.Hyperband(build, max_epochs=space.epochs_per_trial, **settings)
    # Hyperband has no trial limit of its own; TFX's executor lists oracle.max_trials trials.
    tuner.oracle.max_trials = space.max_trials
    return tuner
