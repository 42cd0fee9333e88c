"""What a Kubeflow Pipelines YAML needs beyond KubeflowV2DagRunner's output, and the checks
that the open-source backend's compiler would make.

KubeflowV2DagRunner targets Vertex AI. For the open-source backend (and `kfp.local`),
`adapt` changes a compiled PipelineSpec (as a dict) in three ways:

* Task names become names Argo accepts: the backend makes each task an Argo DAG task (and a
  `<task>-driver` one), and Argo allows only `[A-Za-z0-9-]`, 128 characters at most
  (workflowFieldNameFmt in argoproj/argo-workflows), so `Trainer.gsam.seed1` becomes
  `Trainer-gsam-seed1`. Components are named `comp-<task>`, as KFP's own SDK names them:
  `kfp.local` names a task's output folder after its component, less those 5 characters.
* Every TFX container runs the image's entrypoint `ENTRYPOINT_MODULE`
  (`pipelines/cloud/kfp_entrypoint.py`) instead of TFX's, which fixes the input artifact types
  these orchestrators send before TFX reads them.
* Nothing else: the pipeline spec schema 2.1 comes from the runner's config
  (`use_pipeline_spec_2_1`), so TFX writes parameter constants as kfp.local reads them.

`check_accepted` raises when the spec holds what the backend refuses: an executor other than
a container or an importer ("resolver executors not implemented", kubeflow/pipelines
backend/src/v2/compiler/argocompiler/dag.go), a task or pipeline name Argo or Kubernetes
rejects, or a reference to a missing component or executor.

Example:

    spec = yaml.safe_load(open("pipeline.yaml"))
    spec = adapt(spec)
    check_accepted(spec)
"""

from __future__ import annotations

import re
from collections import Counter

TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
ENTRYPOINT_MODULE = "pipelines.cloud.kfp_entrypoint"
COMPONENT_PREFIX = "comp-"
# Argo's workflowFieldNameFmt, and its 128-character limit less the "-driver" suffix.
TASK_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9]*$")
MAX_TASK_NAME = 128 - len("-driver")
# Argo names the workflow `<pipeline name>-<suffix>`: a Kubernetes object name.
PIPELINE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ACCEPTED_EXECUTORS = ("container", "importer")


def task_name(name: str) -> str:
    """`name` with every run of characters Argo refuses replaced by one '-'."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")


def adapt(spec: dict) -> dict:
    """The spec with Argo-valid task names, `comp-` component names and the image's
    entrypoint (see the module's docstring); `spec` itself is left unchanged."""
    tasks = spec["root"]["dag"]["tasks"]
    names = {name: task_name(name) for name in tasks}
    clashes = sorted(new for new, count in Counter(names.values()).items() if count > 1)
    if clashes:
        raise ValueError(f"task names clash once made Argo-valid: {', '.join(clashes)}.")
    components = {}
    new_tasks = {}
    for name, task in tasks.items():
        task = dict(task, taskInfo={"name": names[name]})
        component = COMPONENT_PREFIX + names[name]
        components[component] = spec["components"][task["componentRef"]["name"]]
        task["componentRef"] = {"name": component}
        if "dependentTasks" in task:
            task["dependentTasks"] = [names[upstream] for upstream in task["dependentTasks"]]
        new_tasks[names[name]] = _rename_producers(task, names)
    root = dict(spec["root"], dag=dict(spec["root"]["dag"], tasks=new_tasks))
    if "outputs" in root["dag"]:
        root["dag"]["outputs"] = _rename_producers(root["dag"]["outputs"], names)
    executors = {
        label: _with_entrypoint(executor)
        for label, executor in spec["deploymentSpec"]["executors"].items()
    }
    return dict(spec, root=root, components=components, deploymentSpec={"executors": executors})


def _rename_producers(value, names: dict):
    """A copy of `value` whose `producerTask` and `producerSubtask` fields are renamed."""
    if isinstance(value, dict):
        return {
            key: names[item] if key in ("producerTask", "producerSubtask") else
            _rename_producers(item, names)
            for key, item in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_rename_producers(item, names) for item in value]
    return value


def _with_entrypoint(executor: dict) -> dict:
    container = executor.get("container")
    if container is None or container.get("command") != ["python", "-m", TFX_ENTRYPOINT]:
        return executor
    return dict(executor, container=dict(container, command=["python", "-m", ENTRYPOINT_MODULE]))


def check_accepted(spec: dict) -> None:
    """Raises ValueError naming what the open-source backend would refuse in `spec`."""
    name = spec.get("pipelineInfo", {}).get("name", "")
    if not PIPELINE_NAME.match(name):
        raise ValueError(
            f"the pipeline name {name!r} cannot name a Kubernetes object (lowercase letters, "
            "digits, '-' and '.'), which the Kubeflow Pipelines backend makes of it."
        )
    executors = spec["deploymentSpec"]["executors"]
    for label, executor in executors.items():
        kind = next(iter(executor), "unknown")
        if kind not in ACCEPTED_EXECUTORS:
            raise ValueError(
                f"executor {label} is a {kind} executor: the open-source "
                f"Kubeflow Pipelines backend runs only {' and '.join(ACCEPTED_EXECUTORS)} "
                "executors."
            )
    for task, body in spec["root"]["dag"]["tasks"].items():
        if not TASK_NAME.match(task) or len(task) > MAX_TASK_NAME:
            raise ValueError(
                f"task {task!r}: Argo takes task names of letters, digits and '-', starting "
                f"with a letter or digit, at most {MAX_TASK_NAME} characters."
            )
        component = spec["components"].get(body["componentRef"]["name"])
        if component is None or component.get("executorLabel") not in executors:
            raise ValueError(f"task {task!r} names a component or executor the spec lacks.")
