"""Submits a compiled pipeline: to Vertex AI Pipelines, or to a Kubeflow Pipelines v2 host.

Everything is checked before the first call to the cloud client, so a typo never starts a job.
The client modules are arguments, so tests can record what would be sent.
"""

from __future__ import annotations

import importlib
import json
import re
import time
from typing import Any, Callable

import yaml

PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
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
    wait: bool = False,
    poll_seconds: float = 30,
    aiplatform=None,
    log: Callable = print,
):
    """Creates a Vertex AI PipelineJob from the compiled JSON and submits it."""
    if not PROJECT_ID.fullmatch(project or ""):
        raise ValueError(
            f"--project must be a Google Cloud project ID (6-30 lowercase letters, "
            f"digits, hyphens), got {project!r}."
        )
    if not REGION.fullmatch(region or ""):
        raise ValueError(
            f"--region must be a Vertex AI region such as us-central1, got {region!r}."
        )
    if service_account is not None and "@" not in service_account:
        raise ValueError(f"--service-account must be an email address, got {service_account!r}.")
    parameter_values = dict(parameter_values or {})
    check_parameters(template_path, parameter_values)
    aiplatform = aiplatform or importlib.import_module("google.cloud.aiplatform")
    aiplatform.init(project=project, location=region)
    job = aiplatform.PipelineJob(
        display_name=display_name,
        template_path=template_path,
        pipeline_root=pipeline_root,
        parameter_values=parameter_values,
        enable_caching=False,
    )
    job.submit(service_account=service_account)
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
