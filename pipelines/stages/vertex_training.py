"""Settings that run the Trainer (and the Tuner) as Vertex AI Training jobs
(tfx.extensions.google_cloud_ai_platform).

One worker with N accelerators trains with MirroredStrategy; several workers get a TF_CONFIG
from Vertex, and trainer/task.py then trains with the multi-worker GSAM loop. The Tuner's job
runs N parallel trials on N machines like the Trainer's chief: each runs KerasTuner trials,
the first also hosts the oracle that hands them out.

Example:

>>> settings = vertex_training_config(project="my-project", region="us-central1",
...     image="us-docker.pkg.dev/my-project/gsam/gsam-tfx:1", machine_type="a2-highgpu-2g",
...     accelerator_type="NVIDIA_TESLA_A100", accelerator_count=2)
>>> settings["ai_platform_training_args"]["worker_pool_specs"][0]["replica_count"]
1
"""

from __future__ import annotations

import re

from tfx import v1 as tfx

AI_PLATFORM = tfx.extensions.google_cloud_ai_platform
TENSORBOARD = re.compile(r"projects/[^/]+/locations/[a-z0-9-]+/tensorboards/[^/]+")


def vertex_training_config(
    *,
    project: str,
    region: str,
    image: str,
    machine_type: str = "n1-standard-8",
    accelerator_type: str | None = None,
    accelerator_count: int = 0,
    workers: int = 1,
    tensorboard: str | None = None,
    service_account: str | None = None,
) -> dict:
    """The `custom_config` entries that send the Trainer to Vertex AI Training.

    With `tensorboard` (`projects/P/locations/R/tensorboards/ID`), the job uploads its logs
    there; Vertex AI needs the job to run as a `service_account` for that (one that may write
    to the TensorBoard and the pipeline root). `uses_tensorboard` tells such settings apart.
    """
    if not machine_type:
        raise ValueError("machine_type must be a Vertex machine type, e.g. n1-standard-8.")
    if (
        isinstance(accelerator_count, bool)
        or not isinstance(accelerator_count, int)
        or accelerator_count < 0
    ):
        raise ValueError(f"accelerator_count must be an integer >= 0, got {accelerator_count!r}.")
    if bool(accelerator_type) != (accelerator_count > 0):
        raise ValueError(
            "accelerator_type and accelerator_count go together: set both "
            f"(got {accelerator_type!r} and {accelerator_count})."
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}.")
    if tensorboard is not None and not TENSORBOARD.fullmatch(tensorboard):
        raise ValueError(
            f"tensorboard must be a Vertex TensorBoard resource name, "
            f"projects/PROJECT/locations/REGION/tensorboards/ID, got {tensorboard!r}."
        )
    if tensorboard is not None and not service_account:
        raise ValueError(
            "tensorboard needs a service_account: Vertex AI uploads a job's TensorBoard logs "
            "only for a job that runs as a service account."
        )
    if service_account is not None and "@" not in service_account:
        raise ValueError(f"service_account must be an email address, got {service_account!r}.")
    machine_spec = {"machine_type": machine_type}
    if accelerator_count:
        machine_spec.update(accelerator_type=accelerator_type, accelerator_count=accelerator_count)
    pool = {"machine_spec": machine_spec, "container_spec": {"image_uri": image}}
    job = {"project": project, "worker_pool_specs": _worker_pools(pool, workers)}
    if service_account is not None:
        job["service_account"] = service_account
    if tensorboard is not None:
        job["tensorboard"] = tensorboard
    return {
        AI_PLATFORM.ENABLE_VERTEX_KEY: True,
        AI_PLATFORM.VERTEX_REGION_KEY: region,
        AI_PLATFORM.TRAINING_ARGS_KEY: job,
    }


def uses_tensorboard(training_settings: dict | None) -> bool:
    """Whether `vertex_training_config` settings name a Vertex TensorBoard."""
    if not training_settings:
        return False
    return bool(training_settings[AI_PLATFORM.TRAINING_ARGS_KEY].get("tensorboard"))


def vertex_tuning_config(training_settings: dict, parallel_trials: int) -> dict:
    """The Tuner's `custom_config` entries: the Trainer's project, region and machine
    (`training_settings`, from `vertex_training_config`), `parallel_trials` of them.

    Example:

    >>> settings = vertex_tuning_config(vertex_training_config(project="p", region="r",
    ...     image="gcr.io/p/gsam-tfx"), parallel_trials=3)
    >>> pools = settings["ai_platform_tuning_args"]["job_spec"]["worker_pool_specs"]
    >>> [pool["replica_count"] for pool in pools]
    [1, 2]
    """
    training_args = training_settings[AI_PLATFORM.TRAINING_ARGS_KEY]
    chief = {
        name: value
        for name, value in training_args["worker_pool_specs"][0].items()
        if name != "replica_count"
    }
    return {
        AI_PLATFORM.ENABLE_VERTEX_KEY: True,
        AI_PLATFORM.VERTEX_REGION_KEY: training_settings[AI_PLATFORM.VERTEX_REGION_KEY],
        AI_PLATFORM.experimental.TUNING_ARGS_KEY: {
            "project": training_args["project"],
            "job_spec": {"worker_pool_specs": _worker_pools(chief, parallel_trials)},
        },
    }


def _worker_pools(pool: dict, replicas: int) -> list[dict]:
    """Vertex's first pool is the chief; the second holds the other replicas."""
    pools = [{**pool, "replica_count": 1}]
    if replicas > 1:
        pools.append({**pool, "replica_count": replicas - 1})
    return pools
