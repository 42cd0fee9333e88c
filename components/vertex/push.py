"""VertexPusher: the blessed model into Vertex AI Model Registry, and optionally onto an endpoint.

TFX 1.21's `google_cloud_ai_platform` Pusher falls short of a release step
(`tfx/extensions/google_cloud_ai_platform/prediction_clients.py`, `VertexPredictionClient`):
it uploads every push as a new Model named `v<timestamp>` (no `parent_model`, so no versions
of one model), puts no labels on the model, always deploys (no registry-only push), and never
undeploys the previous model: each push leaves one more deployed model, with 0% traffic, on
the endpoint's nodes. Its deploy error handling catches `googleapiclient.errors.HttpError`,
which the `google.cloud.aiplatform` SDK never raises.

`VertexPusher` does the release in this order, every call going through
`components.vertex.client.VertexClient`:

1. Nothing happens unless the blessing (the Evaluator's, or the SharpnessProbe's with
   --sharpness) says blessed.
2. The SavedModel is copied, all or nothing, into a new numbered folder under the serving
   directory (`components.release.atomic_pusher.push_to_directory`; a model pushed before
   keeps its folder). That folder is the registry version's `artifact_uri`.
3. It is uploaded as the new default version of one model, `model_id`, with the alias
   `v<folder number>`, labels (method, rho, alpha, learning rate, eval accuracy, top Hessian
   eigenvalue with --sharpness) and a description with the exact values. A rerun finds the
   version by its alias and uploads nothing.
4. With an endpoint (created if missing), the version is deployed with 100% of the traffic.
   Only once the deploy returned and the endpoint reports 100% for it are the model's other
   versions undeployed. A failed deploy raises and leaves the endpoint as it was.

Example:

    pusher = VertexPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        model_run=trainer.outputs["model_run"],
        evaluation=evaluator.outputs["evaluation"],
        settings=VertexPushSettings(project="my-project", region="us-central1",
                                    model_id="gsam-tfx", endpoint="gsam-tfx",
                                    serving_image=default_serving_image("us-central1")),
        serving_model_dir="gs://bucket/gsam-tfx/serving",
    ).with_id("Pusher")
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from components.comparison.report import read_evaluation
from components.release.atomic_pusher import push_to_directory
from components.sharpness.probe import SharpnessReport, read_report
from components.vertex import client
from components.vertex.experiments import hyperparameters
from trainer.config import TrainingConfig
from trainer.training import history

PUSH_TARGETS = ("filesystem", "vertex-model", "vertex-endpoint")
MODEL_ID = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE_LENGTH = 63


@dataclasses.dataclass(frozen=True)
class VertexPushSettings:
    """Where and how a blessed model is released on Vertex AI.

    Args:
        project, region: where the model and the endpoint live.
        model_id: the Model Registry model whose new version each push is (the pipeline's
            name): a lowercase letter, then up to 62 lowercase letters, digits, _ and -.
        serving_image: the serving container of the uploaded versions.
        endpoint: the display name of the endpoint to deploy to, created if missing;
            `None` uploads to the registry only.
        machine_type, accelerator_type, accelerator_count, max_replicas: the deployment's
            nodes (one node, autoscaling up to `max_replicas`).
    """

    project: str
    region: str
    model_id: str
    serving_image: str
    endpoint: str | None = None
    machine_type: str = "n1-standard-4"
    accelerator_type: str | None = None
    accelerator_count: int = 0
    max_replicas: int = 1

    def __post_init__(self):
        client.check_project(self.project, "project")
        client.check_region(self.region, "region")
        if not isinstance(self.model_id, str) or not MODEL_ID.fullmatch(self.model_id):
            raise ValueError(
                f"model_id must be a lowercase letter followed by up to 62 lowercase letters, "
                f"digits, _ and - (the pipeline's name), got {self.model_id!r}."
            )
        if not isinstance(self.serving_image, str) or "/" not in self.serving_image:
            raise ValueError(
                f"serving_image must be a container image such as "
                f"us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest, "
                f"got {self.serving_image!r}."
            )
        if self.endpoint is not None and not (
            isinstance(self.endpoint, str) and 0 < len(self.endpoint) <= 128
        ):
            raise ValueError(
                f"endpoint must be a name of 1 to 128 characters, got {self.endpoint!r}."
            )
        if not isinstance(self.machine_type, str) or not self.machine_type:
            raise ValueError(f"machine_type must be a machine type, got {self.machine_type!r}.")
        count = self.accelerator_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"accelerator_count must be an integer >= 0, got {count!r}.")
        if bool(self.accelerator_type) != (count > 0):
            raise ValueError(
                f"accelerator_type and accelerator_count go together: set both "
                f"(got {self.accelerator_type!r} and {count})."
            )
        replicas = self.max_replicas
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"max_replicas must be an integer >= 1, got {replicas!r}.")

    @property
    def push_to(self) -> str:
        """The --push-to value these settings stand for."""
        return "vertex-model" if self.endpoint is None else "vertex-endpoint"

    def machine(self) -> dict:
        """`Model.deploy`'s machine arguments."""
        machine = {
            "machine_type": self.machine_type,
            "min_replica_count": 1,
            "max_replica_count": self.max_replicas,
        }
        if self.accelerator_count:
            machine.update(
                accelerator_type=self.accelerator_type, accelerator_count=self.accelerator_count
            )
        return machine

    def get_config(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: dict) -> VertexPushSettings:
        return cls(**config)


def label_value(value) -> str:
    """`value` as a Vertex AI label value: lowercase letters, digits, _ and -, at most 63
    characters; a number keeps 6 significant digits, its `.` written `_` (0.05 -> 0_05)."""
    text = format(value, ".6g") if isinstance(value, float) else str(value)
    text = re.sub(r"[^a-z0-9_-]", "_", text.lower().replace(".", "_"))
    return text[:LABEL_VALUE_LENGTH]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """What the registry records of a blessed model: how it trained and how it scored."""

    config: TrainingConfig
    eval_accuracy: float
    top_eigenvalue: float | None = None

    def values(self) -> dict:
        """Its hyperparameters (`experiments.hyperparameters`), then its scores."""
        values = hyperparameters(self.config)
        values["eval_accuracy"] = self.eval_accuracy
        if self.top_eigenvalue is not None:
            values["top_eigenvalue"] = self.top_eigenvalue
        return values

    def labels(self) -> dict[str, str]:
        return {name: label_value(value) for name, value in self.values().items()}

    def description(self, serving_path: str) -> str:
        shown = ", ".join(
            f"{name} {value:.6g}" if isinstance(value, float) else f"{name} {value}"
            for name, value in self.values().items()
        )
        return f"Blessed by the gsam-tfx pipeline: {shown}. SavedModel: {serving_path}"


def read_candidate(model_run_uri: str, evaluation_uri: str, sharpness_uri: str | None) -> Candidate:
    """The candidate's training config (its `history.json`), its eval accuracy (the release
    Evaluator's overall accuracy) and, when probed, its top Hessian eigenvalue."""
    document = history.read_history(os.path.join(model_run_uri, history.HISTORY_FILE))
    config = TrainingConfig.from_dict(document["config"])
    accuracy, _ = read_evaluation(evaluation_uri, config.label_key)
    top = (
        None if sharpness_uri is None else read_report(sharpness_uri)["candidate"]["top_eigenvalue"]
    )
    return Candidate(config, accuracy, top)


def release(
    vertex: client.VertexClient,
    settings: VertexPushSettings,
    serving_path: str,
    candidate: Candidate,
) -> tuple:
    """Uploads the SavedModel folder `serving_path` as a version of `settings.model_id`
    (unless a version already has its alias) and, with an endpoint, serves it there.

    Returns the model version and the deployed model's ID (None without an endpoint).
    """
    alias = f"v{os.path.basename(serving_path.rstrip('/'))}"
    model = vertex.model(settings.model_id, alias=alias)
    if model is None:
        model = vertex.upload_model(
            settings.model_id,
            first_version=vertex.model(settings.model_id) is None,
            artifact_uri=serving_path,
            serving_image=settings.serving_image,
            alias=alias,
            labels=candidate.labels(),
            description=candidate.description(serving_path),
        )
        logging.info(
            "Uploaded %s as version %s of %s.", serving_path, model.version_id, settings.model_id
        )
    else:
        logging.info(
            "%s is version %s of %s already.", serving_path, model.version_id, settings.model_id
        )
    if settings.endpoint is None:
        return model, None
    return model, serve(vertex, settings, model, alias)


def serve(vertex: client.VertexClient, settings: VertexPushSettings, model, alias: str) -> str:
    """Deploys `model` to the settings' endpoint with all the traffic, then undeploys the
    model's other versions there; returns the new deployed model's ID."""
    endpoint = vertex.endpoint(settings.endpoint) or vertex.create_endpoint(
        settings.endpoint, labels={"model": label_value(settings.model_id)}
    )
    ours = [
        deployed
        for deployed in vertex.deployed_models(endpoint)
        if _model_id(deployed.model) == settings.model_id
    ]
    serving = [deployed for deployed in ours if deployed.model_version_id == model.version_id]
    if not serving:
        vertex.deploy(
            model, endpoint, display_name=f"{settings.model_id}-{alias}", machine=settings.machine()
        )
        serving = [
            deployed
            for deployed in vertex.deployed_models(endpoint)
            if _model_id(deployed.model) == settings.model_id
            and deployed.model_version_id == model.version_id
        ]
        if not serving:
            raise RuntimeError(
                f"version {model.version_id} of {settings.model_id} is not among the deployed "
                f"models of {endpoint.resource_name} after its deploy returned; nothing was "
                f"undeployed."
            )
    new_id = serving[0].id
    traffic = vertex.traffic_split(endpoint).get(new_id, 0)
    if traffic != 100:
        raise RuntimeError(
            f"{endpoint.resource_name} sends {traffic}% of its traffic to version "
            f"{model.version_id} of {settings.model_id} (deployed model {new_id}), not 100%; "
            f"the previous versions stay deployed."
        )
    for deployed in ours:
        if deployed.id != new_id:
            logging.info("Undeploying %s (version %s).", deployed.id, deployed.model_version_id)
            vertex.undeploy(endpoint, deployed.id)
    return new_id


def _model_id(model_resource_name: str) -> str:
    """`gsam-tfx` of `projects/1/locations/r/models/gsam-tfx` (or `...@3`)."""
    return model_resource_name.rsplit("/", 1)[-1].split("@")[0]


class VertexPushExecutor(pusher_executor.Executor):
    """Pushes a blessed model to the serving directory and Vertex AI (see the module doc)."""

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict["pushed_model"])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        settings = VertexPushSettings.from_config(json.loads(exec_properties["push_settings"]))
        uris = {
            key: artifact_utils.get_single_uri(value) for key, value in input_dict.items() if value
        }
        candidate = read_candidate(uris["model_run"], uris["evaluation"], uris.get("sharpness"))
        model_path = self.GetModelPath(input_dict)
        serving_path = push_to_directory(model_path, exec_properties["serving_model_dir"])
        vertex = client.VertexClient(settings.project, settings.region)
        model, deployed_id = release(vertex, settings, serving_path, candidate)
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(
            model_push,
            pushed_destination=f"{model.resource_name}@{model.version_id}",
            pushed_version=str(model.version_id),
        )
        model_push.set_string_custom_property("serving_path", serving_path)
        if deployed_id is not None:
            model_push.set_string_custom_property("vertex_endpoint", settings.endpoint)
            model_push.set_string_custom_property("deployed_model_id", deployed_id)


class VertexPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        "push_settings": ExecutionParameter(type=str),
        "serving_model_dir": ExecutionParameter(type=str),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "sharpness": ChannelParameter(type=SharpnessReport, optional=True),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class VertexPusher(base_component.BaseComponent):
    """Releases a blessed model to Vertex AI Model Registry and, optionally, an endpoint.

    Args:
        model, model_blessing: the candidate and its blessing.
        model_run: the candidate's Trainer `model_run` (its `history.json`).
        evaluation: the release Evaluator's evaluation of the candidate.
        settings: a `VertexPushSettings`.
        serving_model_dir: the folder (gs://) of the numbered SavedModel copies the registry
            versions point at.
        sharpness: the SharpnessProbe's report, for the top eigenvalue label.
    """

    SPEC_CLASS = VertexPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(VertexPushExecutor)

    def __init__(
        self,
        model,
        model_blessing,
        model_run,
        evaluation,
        settings: VertexPushSettings,
        serving_model_dir: str,
        sharpness=None,
    ):
        if not isinstance(settings, VertexPushSettings):
            raise ValueError(
                f"settings must be a VertexPushSettings, got {type(settings).__name__}."
            )
        super().__init__(
            spec=VertexPusherSpec(
                model=model,
                model_blessing=model_blessing,
                model_run=model_run,
                evaluation=evaluation,
                sharpness=sharpness,
                push_settings=json.dumps(settings.get_config(), sort_keys=True),
                serving_model_dir=serving_model_dir,
                pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            )
        )
