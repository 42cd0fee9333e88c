"""Submits a compiled pipeline: to Vertex AI Pipelines (one run, or a schedule), or to a
Kubeflow Pipelines v2 host.

Everything is checked before the first call to the cloud client, so a typo never starts a job.
Vertex AI is reached through `components.vertex.client.VertexClient`; the client modules are
arguments, so tests can record what would be sent.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from typing import Any, Callable

import yaml

from components.vertex.client import VertexClient, check_project, check_region
from pipelines.cloud.schedule import ScheduleSettings

HOST = re.compile(r"https?://[^\s/]+(/\S*)?")
VERTEX_DONE = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}


def parse_parameters(pairs: list[str] | None) -> dict[str, str]:
    """`["name=value", ...]` from repeated --parameter flags."""
    values = {}
    for pair in pairs or []:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise ValueError(f"--parameter must be NAME=VALUE, got {pair!r}.")
        values[name] = value
    return values


def declared_parameters(template_path: str) -> set[str]:
    """The runtime parameters a compiled pipeline (JSON or YAML) declares."""
    with open(template_path) as file:
        document = (
            json.load(file) if template_path.endswith(".json") else next(yaml.safe_load_all(file))
        )
    spec = document.get("pipelineSpec", document)
    return set(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def check_parameters(template_path: str, values: dict[str, Any]) -> None:
    declared = declared_parameters(template_path)
    unknown = sorted(set(values) - declared)
    if unknown:
        declared = ", ".join(sorted(declared)) or "none"
        raise ValueError(
            f"--parameter {', '.join(unknown)}: not declared by {template_path} "
            f"(declared: {declared})."
        )


def submit_to_vertex(
    template_path: str,
    *,
    project: str,
    region: str,
    pipeline_root: str,
    display_name: str,
    service_account: str | None = None,
    parameter_values: dict[str, Any] | None = None,
    enable_caching: bool = False,
    experiment: str | None = None,
    schedule: ScheduleSettings | None = None,
    wait: bool = False,
    poll_seconds: float = 30,
    aiplatform=None,
    log: Callable = print,
):
    """Submits the compiled JSON as a Vertex AI PipelineJob, or with `schedule` creates a
    PipelineJobSchedule that starts one at every cron time.

    `enable_caching` is the job's cache setting, which overrides the compiled one; a run is
    attached to the Vertex AI `experiment` when given (a schedule's runs are not: the schedule
    API takes no experiment; their ExperimentLogger runs still are). Returns the job or the
    schedule.
    """
    check_project(project)
    check_region(region)
    if service_account is not None and "@" not in service_account:
        raise ValueError(f"--service-account must be an email address, got {service_account!r}.")
    if schedule is not None and not isinstance(schedule, ScheduleSettings):
        raise ValueError(f"schedule must be a ScheduleSettings, got {type(schedule).__name__}.")
    if schedule is not None and wait:
        raise ValueError("--wait waits for one run; a --schedule starts many: drop --wait.")
    parameter_values = dict(parameter_values or {})
    check_parameters(template_path, parameter_values)
    vertex = VertexClient(project, region, aiplatform=aiplatform)
    job = vertex.pipeline_job(
        template_path=template_path,
        display_name=display_name,
        pipeline_root=pipeline_root,
        parameter_values=parameter_values,
        enable_caching=enable_caching,
    )
    if schedule is not None:
        created = vertex.create_schedule(
            job,
            cron=schedule.cron,
            display_name=display_name,
            max_run_count=schedule.max_runs,
            service_account=service_account,
        )
        log(f"created schedule {created.resource_name} ({schedule.cron})")
        return created
    vertex.submit(job, service_account=service_account, experiment=experiment)
    log(f"submitted {job.resource_name}")
    if wait:
        state = None
        while state not in VERTEX_DONE:
            time.sleep(poll_seconds)
            state = job.state.name
            log(f"job state: {state}")
        if state != "PIPELINE_STATE_SUCCEEDED":
            raise RuntimeError(f"Vertex AI pipeline job {job.resource_name} ended {state}")
    return job


def submit_to_kubeflow(
    package_path: str,
    *,
    host: str,
    run_name: str,
    pipeline_root: str,
    experiment_name: str | None = None,
    arguments: dict[str, Any] | None = None,
    wait: bool = False,
    timeout_seconds: int = 24 * 3600,
    kfp_client=None,
    log: Callable = print,
):
    """Starts a run of the compiled YAML on a Kubeflow Pipelines v2 host."""
    if not HOST.fullmatch(host or ""):
        raise ValueError(
            f"--host must be the Kubeflow Pipelines URL, e.g. http://localhost:8080, got {host!r}."
        )
    arguments = dict(arguments or {})
    check_parameters(package_path, arguments)
    client_class = kfp_client or importlib.import_module("kfp").Client
    client = client_class(host=host)
    run = client.create_run_from_pipeline_package(
        package_path,
        arguments=arguments,
        run_name=run_name,
        experiment_name=experiment_name,
        pipeline_root=pipeline_root,
    )
    log(f"started run {run.run_id}")
    if wait:
        result = client.wait_for_run_completion(run.run_id, timeout=timeout_seconds)
        state = getattr(result, "state", None)
        log(f"run state: {state}")
        if state != "SUCCEEDED":
            raise RuntimeError(f"Kubeflow run {run.run_id} ended {state}")
    return run
