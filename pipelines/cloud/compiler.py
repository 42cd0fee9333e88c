"""What the Vertex AI and Kubeflow runners share: flags, the pipeline as the image sees it,
and compilation with KubeflowV2DagRunner (no network needed)."""

from __future__ import annotations

import argparse
import json
import os

import yaml
from tfx import v1 as tfx

from components.vertex.experiments import ExperimentSettings
from components.vertex.push import VertexPushSettings
from pipelines import configs, pipeline
from pipelines.cloud import kubeflow_spec
from pipelines.cloud.report_views import add_report_views
from pipelines.flags import groups, parsing, settings
from pipelines.stages.data import DataSettings

# The Dockerfile copies the checkout here, so the embedded sample ships in the image.
IMAGE_WORKDIR = "/pipeline"
IMAGE_DATA_ROOT = f"{IMAGE_WORKDIR}/data/fashion_mnist"
IMAGE_SCHEMA_PATH = f"{IMAGE_DATA_ROOT}/schema.pbtxt"


def parser(description: str, output_file: str) -> argparse.ArgumentParser:
    p = parsing.FlagParser(description=description)
    p.add_argument(
        "--output-file",
        default=output_file,
        help="where the compiled pipeline goes (default: %(default)s)",
    )
    p.add_argument(
        "--image",
        required=True,
        help="the pipeline image, built from the Dockerfile and pushed to a registry",
    )
    p.add_argument("--pipeline-root", required=True, help="e.g. gs://BUCKET/gsam-tfx")
    p.add_argument(
        "--serving-model-dir",
        default=None,
        help="where blessed models are pushed (default: PIPELINE_ROOT/serving)",
    )
    groups.add_data_arguments(
        p,
        IMAGE_DATA_ROOT,
        auto_format=(
            "TFRecord for the image's sample; any other --data-root needs --data-format "
            "tfrecord or csv, since compiling does not read the data"
        ),
    )
    groups.add_training_arguments(p)
    groups.add_tuning_arguments(p)
    groups.add_comparison_arguments(p)
    groups.add_blessing_arguments(p)
    groups.add_sharpness_arguments(p)
    # The data components run in the pipeline's own container, in one process, unless told
    # otherwise: as locally (configs.BEAM_PIPELINE_ARGS; README, "Performance").
    groups.add_beam_arguments(p)
    groups.add_cache_argument(p, default=False)
    p.add_argument(
        "--trainer-retries",
        type=int,
        default=0,
        help="how often the orchestrator reruns a failed or preempted Trainer task; a rerun "
        "resumes from the last completed epoch (default: %(default)s)",
    )
    submission = p.add_argument_group("submission")
    submission.add_argument("--submit", action="store_true", help="submit after compiling")
    submission.add_argument(
        "--wait",
        action="store_true",
        help="with --submit: wait for the run to finish, printing its state",
    )
    submission.add_argument(
        "--parameter",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="a runtime parameter value, repeatable",
    )
    return p


def build(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    vertex_training: dict | None = None,
    parallel_trials: int = 1,
    baseline: str = "latest-blessed",
    local_root: bool = False,
    push: VertexPushSettings | None = None,
    experiment: ExperimentSettings | None = None,
) -> tfx.dsl.Pipeline:
    """The pipeline with paths as the containers see them (gs:// or inside the image), passed
    on unchanged; `vertex_training`, `parallel_trials` and `experiment` as
    `pipeline.create_pipeline` takes them, `baseline` and `push` as `ReleaseSettings` do.
    `local_root`: the pipeline root is an absolute local path (kfp.local) rather than a bucket
    URI."""
    if args.trainer_retries < 0:
        parser.error(f"--trainer-retries must be 0 or more, got {args.trainer_retries}")
    if local_root and not os.path.isabs(args.pipeline_root):
        parser.error(f"--pipeline-root must be an absolute local path, got {args.pipeline_root!r}")
    if not local_root and not parsing.is_uri(args.pipeline_root):
        parser.error(
            f"--pipeline-root must be a bucket URI such as gs://BUCKET/root, "
            f"got {args.pipeline_root!r}"
        )
    schema = args.schema
    if schema is None and args.data_root == IMAGE_DATA_ROOT:
        schema = IMAGE_SCHEMA_PATH
    data_format = args.data_format
    if data_format == "auto":
        if args.data_root != IMAGE_DATA_ROOT:
            parser.error(
                f"--data-root {args.data_root} needs --data-format tfrecord or --data-format "
                f"csv: compiling does not read the data, so it cannot tell"
            )
        data_format = "tfrecord"
    with parsing.flag_errors(parser):
        serving_model_dir = args.serving_model_dir or f"{args.pipeline_root.rstrip('/')}/serving"
        return pipeline.create_pipeline(
            pipeline.PipelineSettings(
                pipeline_name=args.pipeline_name,
                pipeline_root=args.pipeline_root,
                beam_pipeline_args=args.beam_args or configs.BEAM_PIPELINE_ARGS,
                enable_cache=args.enable_cache,
            ),
            DataSettings(
                args.data_root,
                data_format,
                schema_path=schema,
                validation_fraction=args.validation_split,
                max_bad_records=args.max_bad_records,
            ),
            settings.training_config(
                args,
                data_format,
                configs.CLASS_NAMES_PATH if args.data_root == IMAGE_DATA_ROOT else None,
            ),
            settings.release_settings(
                args, parser, serving_model_dir, baseline=baseline, push=push
            ),
            tuning=settings.search_space(args),
            comparison=settings.comparison_spec(args),
            vertex_training=vertex_training,
            parallel_trials=parallel_trials,
            module_file=settings.module_file(args),
            experiment=experiment,
        )


def compile_pipeline(
    dag: tfx.dsl.Pipeline, image: str, output_file: str, trainer_retries: int = 0
) -> str:
    """Writes the pipeline: a PipelineJob JSON for Vertex AI, or (by the .yaml extension) a
    PipelineSpec YAML package for Kubeflow Pipelines, in pipeline spec schema 2.1 and adapted
    to the open-source backend (`kubeflow_spec.adapt`, checked by `kubeflow_spec.check_accepted`).

    `trainer_retries` becomes the retry policy of every Trainer task: KubeflowV2DagRunner
    compiles none, so it is added to the compiled spec. So are the tasks that show the
    comparison report and the sharpness summary in the console (`report_views`).
    """
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    kubeflow = output_file.endswith((".yaml", ".yml"))
    tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=image, use_pipeline_spec_2_1=kubeflow
        ),
        output_dir=os.path.dirname(output_file),
        output_filename=os.path.basename(output_file),
    ).run(dag)
    if kubeflow:
        _edit_yaml_spec(output_file, dag.pipeline_info.pipeline_root, trainer_retries, image)
    else:
        with open(output_file) as file:
            document = json.load(file)
        set_trainer_retries(document["pipelineSpec"], trainer_retries)
        add_report_views(document["pipelineSpec"], image)
        with open(output_file, "w") as file:
            json.dump(document, file, indent=2, sort_keys=True)
    return output_file


def set_trainer_retries(spec: dict, retries: int) -> None:
    """Gives the Trainer tasks of a compiled PipelineSpec (as a dict) `retries` retries."""
    if not retries:
        return
    for name, task in spec["root"]["dag"]["tasks"].items():
        if name == "Trainer" or name.startswith("Trainer."):
            task["retryPolicy"] = {"maxRetryCount": retries}


def _edit_yaml_spec(
    package_path: str, pipeline_root: str, trainer_retries: int, image: str
) -> None:
    """The JSON carries the root in its runtimeConfig; a YAML package keeps it in its spec,
    adapted to the open-source backend."""
    with open(package_path) as file:
        text = file.read()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    spec = yaml.safe_load(text)
    spec["defaultPipelineRoot"] = pipeline_root
    set_trainer_retries(spec, trainer_retries)
    add_report_views(spec, image)
    try:
        spec = kubeflow_spec.adapt(spec)
        kubeflow_spec.check_accepted(spec)
    except ValueError:
        os.remove(package_path)  # no package the backend would refuse is left behind
        raise
    with open(package_path, "w") as file:
        file.write(header + yaml.safe_dump(spec, sort_keys=True))
