"""The Vertex AI runner's own flags, and the settings they become: the project and Vertex AI
Training, and production (the push to Model Registry and an endpoint, Experiments, schedules,
Vertex TensorBoard).

Every combination is checked here, before compiling, with errors that name the flags: a push,
an experiment or a TensorBoard without --project, --vertex-endpoint without
--push-to vertex-endpoint, a malformed --schedule.
"""

from __future__ import annotations

import argparse

from components.vertex.client import default_serving_image
from components.vertex.experiments import ExperimentSettings
from components.vertex.push import PUSH_TARGETS, VertexPushSettings
from pipelines.cloud.schedule import ScheduleSettings
from pipelines.flags.parsing import flag_errors
from pipelines.stages.vertex_training import vertex_training_config

# Settings field -> flag, for the errors of the settings objects built here.
FIELD_FLAGS = {
    "project": "--project",
    "region": "--region",
    "model_id": "--pipeline-name",
    "serving_image": "--serving-image",
    "endpoint": "--vertex-endpoint",
    "machine_type": "--serving-machine-type",
    "accelerator_type": "--serving-accelerator-type",
    "accelerator_count": "--serving-accelerator-count",
    "max_replicas": "--serving-max-replicas",
    "experiment": "--experiment",
    "cron": "--schedule",
    "max_runs": "--schedule-max-runs",
    "tensorboard": "--tensorboard",
    "service_account": "--service-account",
}
SERVING_FLAGS = {
    "serving_machine_type": "--serving-machine-type",
    "serving_accelerator_type": "--serving-accelerator-type",
    "serving_accelerator_count": "--serving-accelerator-count",
    "serving_max_replicas": "--serving-max-replicas",
}


def add_vertex_arguments(parser: argparse.ArgumentParser) -> None:
    vertex = parser.add_argument_group("Vertex AI")
    vertex.add_argument("--project", help="Google Cloud project ID")
    vertex.add_argument("--region", default="us-central1")
    vertex.add_argument(
        "--service-account",
        help="the service account the job runs as (and, with --tensorboard, the Trainer's job)",
    )
    vertex.add_argument(
        "--vertex-training", action="store_true", help="run the Trainer on Vertex AI Training"
    )
    vertex.add_argument("--machine-type", default="n1-standard-8")
    vertex.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4, NVIDIA_L4")
    vertex.add_argument("--accelerator-count", type=int, default=0)
    vertex.add_argument(
        "--workers",
        type=int,
        default=1,
        help="several workers train with the multi-worker GSAM loop",
    )
    vertex.add_argument(
        "--parallel-trials",
        type=int,
        default=1,
        help="with --tune --vertex-training: trials run at once, one machine each "
        "(default: %(default)s)",
    )
    vertex.add_argument(
        "--tensorboard",
        metavar="RESOURCE",
        help="with --vertex-training and --service-account: the Vertex TensorBoard "
        "(projects/P/locations/R/tensorboards/ID) the Trainer's job uploads its logs to",
    )


def add_production_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "production on Vertex AI", 'README, "Production on Vertex AI"'
    )
    group.add_argument(
        "--push-to",
        choices=PUSH_TARGETS,
        default="filesystem",
        help="filesystem: numbered folders under --serving-model-dir; vertex-model: also a new "
        "version of the Model Registry model named --pipeline-name; vertex-endpoint: also "
        "deployed with all the traffic to --vertex-endpoint (default: %(default)s)",
    )
    group.add_argument(
        "--vertex-endpoint",
        metavar="NAME",
        help="with --push-to vertex-endpoint: the endpoint's display name, created if missing "
        "(default: --pipeline-name)",
    )
    group.add_argument(
        "--serving-image",
        help="the registry version's serving container (default: Vertex AI's prebuilt "
        "TensorFlow 2 container for the region, the GPU one with --serving-accelerator-type)",
    )
    group.add_argument(
        "--serving-machine-type", help="the endpoint's nodes (default: n1-standard-4)"
    )
    group.add_argument("--serving-accelerator-type", help="e.g. NVIDIA_TESLA_T4")
    group.add_argument("--serving-accelerator-count", type=int)
    group.add_argument("--serving-max-replicas", type=int, help="autoscaling bound (default: 1)")
    group.add_argument(
        "--experiment",
        metavar="NAME",
        help="the Vertex AI experiment the job, and each Trainer's parameters and metrics, go to",
    )
    group.add_argument(
        "--schedule",
        metavar="CRON",
        help='with --submit: create a schedule instead of one run, e.g. "0 3 * * 1" '
        "(UTC; prefix CRON_TZ=Area/City for another time zone)",
    )
    group.add_argument(
        "--schedule-max-runs", type=int, help="the schedule ends after this many runs"
    )


def check_combinations(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The flags that need others, named before anything is built."""
    needs = []
    if args.push_to != "filesystem" and not args.project:
        needs.append(f"--push-to {args.push_to} needs --project: the model registry is a project's")
    if args.experiment and not args.project:
        needs.append("--experiment needs --project: the experiment is a project's")
    if args.vertex_endpoint and args.push_to != "vertex-endpoint":
        needs.append("--vertex-endpoint needs --push-to vertex-endpoint")
    if args.serving_image and args.push_to == "filesystem":
        needs.append("--serving-image needs --push-to vertex-model or vertex-endpoint")
    given = [flag for name, flag in SERVING_FLAGS.items() if getattr(args, name) is not None]
    if given and args.push_to != "vertex-endpoint":
        needs.append(f"{', '.join(given)} needs --push-to vertex-endpoint")
    if args.tensorboard and not args.vertex_training:
        needs.append("--tensorboard needs --vertex-training: Vertex AI Training jobs upload to it")
    if args.schedule and not args.submit:
        needs.append("--schedule needs --submit: the schedule is created when submitting")
    if args.schedule and args.wait:
        needs.append("--wait waits for one run, and --schedule starts many: drop --wait")
    if args.schedule_max_runs is not None and not args.schedule:
        needs.append("--schedule-max-runs needs --schedule")
    if needs:
        parser.error("; ".join(needs))


def vertex_training(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict | None:
    """The Trainer's Vertex AI Training settings, or None without --vertex-training."""
    if not args.vertex_training:
        return None
    if not args.project:
        parser.error(
            "--vertex-training needs --project, even to compile: the compiled pipeline "
            "names the project the Trainer's Vertex AI Training job runs in"
        )
    with flag_errors(parser, FIELD_FLAGS):
        return vertex_training_config(
            project=args.project,
            region=args.region,
            image=args.image,
            machine_type=args.machine_type,
            accelerator_type=args.accelerator_type,
            accelerator_count=args.accelerator_count,
            workers=args.workers,
            tensorboard=args.tensorboard,
            service_account=args.service_account if args.tensorboard else None,
        )


def push_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> VertexPushSettings | None:
    """The Vertex AI push of --push-to, or None for the filesystem."""
    if args.push_to == "filesystem":
        return None
    endpoint = None
    if args.push_to == "vertex-endpoint":
        endpoint = args.vertex_endpoint or args.pipeline_name
    accelerator_count = args.serving_accelerator_count
    if accelerator_count is None:
        accelerator_count = 1 if args.serving_accelerator_type else 0
    with flag_errors(parser, FIELD_FLAGS):
        return VertexPushSettings(
            project=args.project,
            region=args.region,
            model_id=args.pipeline_name,
            serving_image=args.serving_image
            or default_serving_image(args.region, gpu=bool(args.serving_accelerator_type)),
            endpoint=endpoint,
            machine_type=args.serving_machine_type or "n1-standard-4",
            accelerator_type=args.serving_accelerator_type,
            accelerator_count=accelerator_count,
            max_replicas=1 if args.serving_max_replicas is None else args.serving_max_replicas,
        )


def experiment_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ExperimentSettings | None:
    if not args.experiment:
        return None
    with flag_errors(parser, FIELD_FLAGS):
        return ExperimentSettings(name=args.experiment, project=args.project, region=args.region)


def schedule_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ScheduleSettings | None:
    if not args.schedule:
        return None
    with flag_errors(parser, FIELD_FLAGS):
        return ScheduleSettings(args.schedule, max_runs=args.schedule_max_runs)
