"""Compiles the pipeline for Kubeflow Pipelines v2 (a YAML package); --submit starts a run on a
cluster, --run-local runs it here with kfp.local's DockerRunner.

    python -m pipelines.kubeflow_runner --output-file pipeline.yaml --image IMAGE \\
        --pipeline-root gs://BUCKET/root [--submit --host http://localhost:8080 --wait]
    python -m pipelines.kubeflow_runner --run-local --image gsam-tfx:KEY \\
        --pipeline-root kubeflow-local-output --output-file kubeflow-local-output/pipeline.yaml

KubeflowDagRunner (KFP v1) is gone from TFX 1.21; this is KubeflowV2DagRunner's YAML, adapted
to the open-source backend (pipelines/cloud/kubeflow_spec.py). The Evaluator's baseline is the
newest pushed model (the PushedBaseline component), since that backend runs no resolvers.
"""

import sys

from pipelines.cloud import compiler, kfp_local, kubeflow_spec, submit
from pipelines.flags import parsing


def main(argv=None) -> int:
    parser = compiler.parser(__doc__.split("\n\n")[0], "pipeline.yaml")
    kubeflow = parser.add_argument_group("Kubeflow Pipelines")
    kubeflow.add_argument("--host", help="the Kubeflow Pipelines API URL")
    kubeflow.add_argument("--experiment", default=None, help="experiment name for the run")
    kubeflow.add_argument(
        "--run-local",
        action="store_true",
        help="run the compiled pipeline here with kfp.local's DockerRunner, in --image (a "
        "local tag); --pipeline-root is then a local folder, holding the push destination",
    )
    args = parser.parse_args(parsing.command_line(argv))
    if not args.output_file.endswith((".yaml", ".yml")):
        parser.error(
            f"--output-file must end in .yaml for Kubeflow Pipelines, got {args.output_file!r}"
        )
    if not kubeflow_spec.PIPELINE_NAME.match(args.pipeline_name):
        parser.error(
            f"--pipeline-name must be lowercase letters, digits, '-' and '.' for Kubeflow "
            f"Pipelines, which names Kubernetes objects after it; got {args.pipeline_name!r}"
        )
    if args.run_local:
        check_local_run(args, parser)

    dag = compiler.build(args, parser, baseline="latest-pushed", local_root=args.run_local)
    path = compiler.compile_pipeline(dag, args.image, args.output_file, args.trainer_retries)
    print(f"compiled {path}")
    if args.run_local:
        return run_local(path, args.pipeline_root)
    if args.submit:
        with parsing.flag_errors(parser):
            submit.submit_to_kubeflow(
                path,
                host=args.host,
                run_name=args.pipeline_name,
                pipeline_root=args.pipeline_root,
                experiment_name=args.experiment,
                arguments=submit.parse_parameters(args.parameter),
                wait=args.wait,
            )
    return 0


def check_local_run(args, parser) -> None:
    """--run-local's paths: a local root (made absolute) that holds what the tasks write."""
    if args.submit:
        parser.error("--run-local runs here: it does not go with --submit")
    if parsing.is_uri(args.pipeline_root):
        parser.error(
            f"--pipeline-root must be a local folder with --run-local, got {args.pipeline_root!r}"
        )
    for name in ("pipeline_root", "serving_model_dir", "data_root", "schema"):
        if getattr(args, name):
            setattr(args, name, parsing.absolute(getattr(args, name)))
    reads = {"--data-root": args.data_root, "--schema": args.schema}
    with parsing.flag_errors(parser):
        kfp_local.check_paths(
            args.pipeline_root,
            reads={flag: path for flag, path in reads.items() if path},
            writes={"--serving-model-dir": args.serving_model_dir or args.pipeline_root},
        )


def run_local(package_path: str, pipeline_root: str) -> int:
    result = kfp_local.run(package_path, pipeline_root)
    if not result.succeeded:
        print(f"error: {result.failure}", file=sys.stderr)
        return 1
    print(f"pushed model: {result.pushed}" if result.pushed else "pushed model: none (not blessed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
