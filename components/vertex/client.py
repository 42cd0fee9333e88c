"""Every call this project makes to Vertex AI, in one thin class over `google.cloud.aiplatform`.

The pipeline's components (the VertexPusher, the ExperimentLogger) and the submitting side
(`pipelines/cloud/submit.py`: pipeline jobs and schedules) all go through `VertexClient`, so
the tests replace `load_aiplatform` with a recording fake in this one place and nothing
reaches the cloud. The policy (what is uploaded when, what is undeployed after what) stays with
the callers; each method here is one SDK call, or a lookup that turns "not found" into `None`.

Example:

    vertex = VertexClient("my-project", "us-central1")
    model = vertex.model("gsam-tfx", alias="v1712345678")  # None if no version has that alias
    endpoint = vertex.endpoint("gsam-tfx") or vertex.create_endpoint("gsam-tfx", labels={})
"""

from __future__ import annotations

import importlib
import re
from typing import Any

PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
# The newest TensorFlow 2 prebuilt prediction container google-cloud-aiplatform 1.165 lists.
PREBUILT_TF_VERSION = "2.15"


def load_aiplatform():
    """`google.cloud.aiplatform`; the tests swap this function for one returning a fake."""
    return importlib.import_module("google.cloud.aiplatform")


def check_project(project: str | None, flag: str = "--project") -> None:
    if not PROJECT_ID.fullmatch(project or ""):
        raise ValueError(
            f"{flag} must be a Google Cloud project ID (6-30 lowercase letters, digits, "
            f"hyphens), got {project!r}."
        )


def check_region(region: str | None, flag: str = "--region") -> None:
    if not REGION.fullmatch(region or ""):
        raise ValueError(f"{flag} must be a Vertex AI region such as us-central1, got {region!r}.")


def default_serving_image(region: str, gpu: bool = False) -> str:
    """Vertex AI's prebuilt TensorFlow 2 serving container nearest `region` (no network)."""
    helpers = importlib.import_module("google.cloud.aiplatform.helpers")
    return helpers.get_prebuilt_prediction_container_uri(
        "tensorflow", PREBUILT_TF_VERSION, region=region, accelerator="gpu" if gpu else "cpu"
    )


class VertexClient:
    """Vertex AI in `project` and `region`: Model Registry, endpoints, pipeline jobs,
    schedules and Experiments.

    Args:
        project: the Google Cloud project ID.
        region: the Vertex AI region, e.g. us-central1.
        aiplatform: the SDK module; `load_aiplatform()` when not given.
    """

    def __init__(self, project: str, region: str, aiplatform=None):
        check_project(project)
        check_region(region)
        self.project, self.region = project, region
        self.aiplatform = aiplatform or load_aiplatform()
        self.aiplatform.init(project=project, location=region)

    def _not_found(self):
        return importlib.import_module("google.api_core.exceptions").NotFound

    # Model Registry

    def model(self, model_id: str, alias: str | None = None):
        """The model's version with `alias` (its default version without), or None."""
        name = model_id if alias is None else f"{model_id}@{alias}"
        try:
            return self.aiplatform.Model(model_name=name)
        except self._not_found():
            return None

    def upload_model(
        self,
        model_id: str,
        *,
        first_version: bool,
        artifact_uri: str,
        serving_image: str,
        alias: str,
        labels: dict[str, str],
        description: str,
    ):
        """Uploads a SavedModel folder as the new default version of `model_id` (with
        `first_version`, as the model itself)."""
        return self.aiplatform.Model.upload(
            display_name=model_id,
            model_id=model_id if first_version else None,
            parent_model=None if first_version else model_id,
            is_default_version=True,
            version_aliases=[alias],
            version_description=description,
            artifact_uri=artifact_uri,
            serving_container_image_uri=serving_image,
            labels=labels,
            sync=True,
        )

    # Endpoints

    def endpoint(self, display_name: str):
        """The endpoint named `display_name`, or None; several of that name are an error."""
        found = self.aiplatform.Endpoint.list(filter=f'display_name="{display_name}"')
        if len(found) > 1:
            names = ", ".join(endpoint.resource_name for endpoint in found)
            raise ValueError(
                f"several Vertex AI endpoints are named {display_name!r} ({names}); name one "
                f"that is unique with --vertex-endpoint."
            )
        return found[0] if found else None

    def create_endpoint(self, display_name: str, labels: dict[str, str]):
        return self.aiplatform.Endpoint.create(display_name=display_name, labels=labels, sync=True)

    def deployed_models(self, endpoint) -> list:
        """The endpoint's DeployedModels (`id`, `model`, `model_version_id`, `display_name`)."""
        return list(endpoint.list_models())

    def traffic_split(self, endpoint) -> dict[str, int]:
        """Deployed model ID -> percent of traffic, as the endpoint reports it now."""
        return dict(endpoint.traffic_split)

    def deploy(self, model, endpoint, *, display_name: str, machine: dict[str, Any]) -> None:
        """Deploys `model` to `endpoint` with 100% of the traffic; returns once it serves."""
        model.deploy(
            endpoint=endpoint,
            deployed_model_display_name=display_name,
            traffic_percentage=100,
            sync=True,
            **machine,
        )

    def undeploy(self, endpoint, deployed_model_id: str) -> None:
        endpoint.undeploy(deployed_model_id=deployed_model_id, sync=True)

    # Pipelines

    def pipeline_job(
        self,
        *,
        template_path: str,
        display_name: str,
        pipeline_root: str,
        parameter_values: dict[str, Any],
        enable_caching: bool,
    ):
        """A PipelineJob of the compiled pipeline, not yet submitted."""
        return self.aiplatform.PipelineJob(
            display_name=display_name,
            template_path=template_path,
            pipeline_root=pipeline_root,
            parameter_values=parameter_values,
            enable_caching=enable_caching,
        )

    def submit(self, job, *, service_account: str | None, experiment: str | None) -> None:
        """Starts one run of `job`, attached to `experiment` if given."""
        arguments = {"service_account": service_account}
        if experiment is not None:
            arguments["experiment"] = experiment
        job.submit(**arguments)

    def create_schedule(
        self,
        job,
        *,
        cron: str,
        display_name: str,
        max_run_count: int | None,
        service_account: str | None,
    ):
        """A schedule that starts a run of `job`'s pipeline at every `cron` time."""
        return job.create_schedule(
            cron=cron,
            display_name=display_name,
            max_run_count=max_run_count,
            max_concurrent_run_count=1,
            service_account=service_account,
        )

    # Experiments

    def log_experiment_run(
        self, experiment: str, run_name: str, params: dict[str, Any], metrics: dict[str, Any]
    ) -> str:
        """Records `params` and `metrics` as the run `run_name` of `experiment` (both created
        if missing; a rerun updates the run) and returns the run's resource name."""
        self.aiplatform.Experiment.get_or_create(experiment)
        run = self.aiplatform.ExperimentRun.get(run_name, experiment=experiment)
        if run is None:
            run = self.aiplatform.ExperimentRun.create(run_name, experiment=experiment)
        run.log_params(params)
        run.log_metrics(metrics)
        run.end_run()
        return run.resource_name
