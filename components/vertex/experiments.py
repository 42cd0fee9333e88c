"""ExperimentLogger: each Trainer's hyperparameters and final metrics, as a Vertex AI
Experiments run.

The component runs after the Trainer(s). For each, it reads the `history.json` the Trainer
wrote to its `model_run` (`trainer/training/history.py`: the config it trained with, tuned
values included, and every epoch's logs) and logs one experiment run: the method, rho_max,
rho_min and alpha (for SAM and GSAM), learning rate, base optimizer, seed, epochs and batch
size as parameters; the last epoch's validation and training accuracy and loss (and GSAM's
surrogate gap) and the training seconds as metrics. `--compare` logs one run per Trainer, so
the Experiments page compares methods and seeds side by side. No cloud call happens inside
`trainer/`.

A run is named `<pipeline job ID>-<Trainer id>`, e.g. `gsam-tfx-20250101120000-trainer-gsam-seed1`,
beside the pipeline job's own run when it was submitted with --experiment. The job ID is read
from the task's output URI, which Vertex AI lays out as
`<pipeline root>/<project number>/<job ID>/<task>_<id>/<output>` (the layout TFX's
`kubeflow_v2_run_executor` documents). A rerun of the same job updates its runs.

Example:

    logger = experiment_logger(
        {"Trainer": trainer.outputs["model_run"]},
        ExperimentSettings(name="gsam-sweep", project="my-project", region="us-central1"),
    )
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from collections.abc import Mapping

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from components.vertex import client
from trainer.config import TrainingConfig
from trainer.training import history

COMPONENT_ID = "ExperimentLogger"
RUNS_FILE = "runs.json"
EXPERIMENT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
# Vertex AI caps `<experiment>-<run>` at 121 characters.
RUN_ID_LENGTH = 121
FINAL_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss", "surrogate_gap")


class ExperimentRuns(types.Artifact):
    """`runs.json`: Trainer id -> the resource name of the experiment run logged for it."""

    TYPE_NAME = "components.ExperimentRuns"


@dataclasses.dataclass(frozen=True)
class ExperimentSettings:
    """The Vertex AI experiment the runs go to.

    Args:
        name: the experiment, created if missing: lowercase letters, digits and -, at most 80
            characters.
        project, region: where it lives.
    """

    name: str
    project: str
    region: str

    def __post_init__(self):
        if not isinstance(self.name, str) or not EXPERIMENT_NAME.fullmatch(self.name):
            raise ValueError(
                f"experiment must be lowercase letters, digits and -, starting with a letter "
                f"or digit, at most 80 characters, got {self.name!r}."
            )
        client.check_project(self.project, "project")
        client.check_region(self.region, "region")

    def get_config(self) -> dict:
        return dataclasses.asdict(self)


def hyperparameters(config: TrainingConfig) -> dict:
    """What a run is compared by: the method, its rho and alpha (not for plain training), the
    learning rate and base optimizer, and the seed when one was set."""
    values = history.hparams(config)
    if config.optimizer == "plain":
        for name in ("rho_max", "rho_min", "alpha"):
            del values[name]
    if config.seed is None:
        del values["seed"]
    return values


def run_record(document: dict) -> tuple[dict, dict]:
    """The parameters and metrics of a run from its `history.json` document."""
    config = TrainingConfig.from_dict(document["config"])
    params = {**hyperparameters(config), "epochs": config.epochs, "batch_size": config.batch_size}
    epochs = document["epochs"]
    metrics = {}
    if epochs:
        final = epochs[-1]
        metrics = {name: final[name] for name in FINAL_METRICS if name in final}
        metrics["epochs_trained"] = final["epoch"]
        metrics["training_seconds"] = sum(epoch.get("seconds", 0.0) for epoch in epochs)
    return params, metrics


def pipeline_job_id(output_uri: str) -> str:
    """The pipeline job ID in a Vertex AI task's output URI; a random one elsewhere."""
    parts = output_uri.rstrip("/").split("/")
    if len(parts) >= 3 and re.fullmatch(r"[a-z0-9][a-z0-9-]*", parts[-3]):
        return parts[-3]
    logging.warning("No Vertex AI pipeline job ID in %s; naming the runs at random.", output_uri)
    return f"run-{uuid.uuid4().hex[:12]}"


def run_name(experiment: str, job_id: str, trainer_id: str) -> str:
    """`<job ID>-<Trainer id>` as a Vertex AI run name; the job ID is shortened (from its
    start, keeping the timestamp) if the run ID would pass 121 characters."""
    trainer = re.sub(r"[^a-z0-9-]+", "-", trainer_id.lower()).strip("-")
    room = RUN_ID_LENGTH - len(experiment) - 1 - len(trainer) - 1
    return f"{job_id[-room:].lstrip('-')}-{trainer}"


class ExperimentLoggerExecutor(base_executor.BaseExecutor):
    """Logs one experiment run per Trainer; writes `runs.json`."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = ExperimentSettings(**json.loads(exec_properties["experiment"]))
        output = artifact_utils.get_single_instance(output_dict["experiment_runs"])
        job_id = pipeline_job_id(output.uri)
        vertex = client.VertexClient(settings.project, settings.region)
        logged = {}
        for key, trainer_id in json.loads(exec_properties["trainers"]).items():
            model_run = artifact_utils.get_single_uri(input_dict[key])
            params, metrics = run_record(
                history.read_history(os.path.join(model_run, history.HISTORY_FILE))
            )
            name = run_name(settings.name, job_id, trainer_id)
            logged[trainer_id] = vertex.log_experiment_run(settings.name, name, params, metrics)
            logging.info("Logged %s as %s.", trainer_id, logged[trainer_id])
        io_utils.write_string_file(
            os.path.join(output.uri, RUNS_FILE), json.dumps(logged, indent=1, sort_keys=True)
        )


def experiment_logger(model_runs: Mapping[str, types.BaseChannel], settings: ExperimentSettings):
    """The ExperimentLogger over `model_runs` (Trainer id -> its `model_run` channel)."""
    if not isinstance(settings, ExperimentSettings):
        raise ValueError(f"settings must be an ExperimentSettings, got {type(settings).__name__}.")
    if not model_runs:
        raise ValueError("model_runs must name at least one Trainer.")
    inputs = {}
    for index, (trainer_id, channel) in enumerate(model_runs.items()):
        if getattr(channel, "type", None) is not standard_artifacts.ModelRun:
            raise ValueError(f"model_runs[{trainer_id!r}] must be a ModelRun channel.")
        inputs[f"model_run_{index}"] = (trainer_id, channel)
    spec_class = type(
        "ExperimentLoggerSpec",
        (types.ComponentSpec,),
        {
            "PARAMETERS": {
                "experiment": ExecutionParameter(type=str),
                "trainers": ExecutionParameter(type=str),
            },
            "INPUTS": {key: ChannelParameter(type=standard_artifacts.ModelRun) for key in inputs},
            "OUTPUTS": {"experiment_runs": ChannelParameter(type=ExperimentRuns)},
        },
    )
    component_class = type(
        COMPONENT_ID,
        (base_component.BaseComponent,),
        {
            "SPEC_CLASS": spec_class,
            "EXECUTOR_SPEC": executor_spec.ExecutorClassSpec(ExperimentLoggerExecutor),
            "__doc__": "Logs each Trainer's hyperparameters and final metrics to Vertex AI.",
        },
    )
    spec = spec_class(
        experiment=json.dumps(settings.get_config(), sort_keys=True),
        trainers=json.dumps({key: trainer_id for key, (trainer_id, _) in inputs.items()}),
        experiment_runs=types.Channel(type=ExperimentRuns),
        **{key: channel for key, (_, channel) in inputs.items()},
    )
    return component_class(spec=spec)
