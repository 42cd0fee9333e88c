"""A task of a compiled Vertex AI pipeline as Vertex AI runs it: its container, and the
executor input that takes the place of `{{$}}` in its arguments; or, for a TFX task, the same
command run in this process (where tests can swap the cloud client for a fake).

    container = task_container(job, "Trainer")
    argv = task_command(container, executor_input(job, "Trainer", inputs, "/out/Trainer_1"))
    executor_output = run_in_process(job, "Pusher", inputs, "/out/Pusher_2")
"""

from __future__ import annotations

import json
import os

from google.protobuf import json_format
from tfx.orchestration.kubeflow.v2.container import (
    kubeflow_v2_entrypoint_utils,
    kubeflow_v2_run_executor,
)
from tfx.types.artifact import Artifact

# Vertex AI names artifacts by their resource in its ML Metadata store.
ARTIFACTS_RESOURCE = "projects/123456789/locations/us-central1/metadataStores/default/artifacts"
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"


def _task(pipeline_job: dict, task: str) -> tuple[dict, dict]:
    spec = pipeline_job["pipelineSpec"]
    task_spec = spec["root"]["dag"]["tasks"][task]
    return task_spec, spec["components"][task_spec["componentRef"]["name"]]


def task_container(pipeline_job: dict, task: str) -> dict:
    """The container (image, command, args) that runs `task` of a compiled PipelineJob."""
    _, component = _task(pipeline_job, task)
    executors = pipeline_job["pipelineSpec"]["deploymentSpec"]["executors"]
    return executors[component["executorLabel"]]["container"]


def executor_input(
    pipeline_job: dict, task: str, inputs: dict[str, Artifact], output_dir: str
) -> dict:
    """The ExecutorInput that Vertex AI gives `task`.

    `inputs` maps each input artifact key to the TFX artifact an upstream task wrote: Vertex
    passes its URI and its properties as metadata, typed by the task's input definitions.
    Parameters are the compiled constants, in the `parameters` field the TFX entry point reads
    when it gets no inputs spec. Outputs get URIs under `output_dir`, which also holds the
    executor output file, as Vertex lays out a task's folder under the pipeline root.
    """
    task_spec, component = _task(pipeline_job, task)
    definitions = component["inputDefinitions"]["artifacts"]
    if set(inputs) != set(definitions):
        raise ValueError(f"inputs must be {sorted(definitions)}, got {sorted(inputs)}")
    input_artifacts = {
        key: {
            "artifacts": [
                {
                    "name": f"{ARTIFACTS_RESOURCE}/{artifact.id}",
                    "type": definitions[key]["artifactType"],
                    "uri": artifact.uri,
                    "metadata": json_format.MessageToDict(
                        kubeflow_v2_entrypoint_utils.to_runtime_artifact(artifact, {}).metadata
                    ),
                }
            ]
        }
        for key, artifact in inputs.items()
    }
    parameters = {
        name: value["runtimeValue"]["constantValue"]
        for name, value in task_spec["inputs"]["parameters"].items()
    }
    output_artifacts = {
        key: {
            "artifacts": [
                {
                    "name": f"{ARTIFACTS_RESOURCE}/{task}-{key}",
                    "type": definition["artifactType"],
                    "uri": os.path.join(output_dir, key),
                }
            ]
        }
        for key, definition in component["outputDefinitions"]["artifacts"].items()
    }
    return {
        "inputs": {"artifacts": input_artifacts, "parameters": parameters},
        "outputs": {
            "artifacts": output_artifacts,
            "outputFile": os.path.join(output_dir, "executor_output.json"),
        },
    }


def task_command(container: dict, invocation: dict) -> list[str]:
    """The container's command and arguments with the executor input filled in."""
    args = [
        arg.replace(EXECUTOR_INPUT_PLACEHOLDER, json.dumps(invocation)) for arg in container["args"]
    ]
    unfilled = [arg for arg in args if "{{$" in arg]
    if unfilled:
        raise ValueError(f"placeholders this helper does not fill: {unfilled}")
    return container["command"] + args


def run_in_process(
    pipeline_job: dict, task: str, inputs: dict[str, Artifact], output_dir: str
) -> dict:
    """Runs a TFX task's container command (TFX's Kubeflow V2 entry point) in this process
    and returns the executor output it wrote."""
    command = task_command(
        task_container(pipeline_job, task), executor_input(pipeline_job, task, inputs, output_dir)
    )
    if command[:3] != ["python", "-m", kubeflow_v2_run_executor.__name__]:
        raise ValueError(f"{task} does not run TFX's Kubeflow V2 entry point: {command[:3]}")
    kubeflow_v2_run_executor.main(kubeflow_v2_run_executor._parse_flags(command[3:]))
    with open(os.path.join(output_dir, "executor_output.json")) as file:
        return json.load(file)
