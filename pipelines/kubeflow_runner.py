"""Compiles the pipeline for Kubeflow Pipelines v2 (a YAML package); --submit starts a run.

    python -m pipelines.kubeflow_runner --output-file pipeline.yaml --image IMAGE \\
        --pipeline-root gs://BUCKET/root [--submit --host http://localhost:8080 --wait]

KubeflowDagRunner (KFP v1) is gone from TFX 1.21; this is KubeflowV2DagRunner's YAML.
"""

import sys

from pipelines.cloud import compiler, submit
from pipelines.flags import parsing


def main(argv=None) -> int:
    parser = compiler.parser(__doc__.split("\n\n")[0], "pipeline.yaml")
    kubeflow = parser.add_argument_group("Kubeflow Pipelines")
    kubeflow.add_argument("--host", help="the Kubeflow Pipelines API URL")
    kubeflow.add_argument("--experiment", default=None, help="experiment name for the run")
    args = parser.parse_args(parsing.command_line(argv))
    if not args.output_file.endswith((".yaml", ".yml")):
        parser.error(
            f"--output-file must end in .yaml for Kubeflow Pipelines, got {args.output_file!r}"
        )

    path = compiler.compile_pipeline(
        compiler.build(args, parser), args.image, args.output_file, args.trainer_retries
    )
    print(f"compiled {path}")
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


if __name__ == "__main__":
    sys.exit(main())
