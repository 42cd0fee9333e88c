"""Compiles the pipeline for Vertex AI Pipelines (KubeflowV2DagRunner JSON); --submit runs it.

    python -m pipelines.vertex_runner --output-file pipeline.json --image IMAGE \\
        --pipeline-root gs://BUCKET/root [--project P --region R --submit --wait]
    GSAM_TFX_ARGS="--image IMAGE --pipeline-root gs://BUCKET/root" \\
        tfx pipeline create --engine vertex --pipeline_path pipelines/vertex_runner.py

Compiling needs no network. --vertex-training also runs the Trainer as a Vertex AI Training
job (GPUs, several workers), and with --tune the Tuner too (--parallel-trials machines); it
needs --project even to compile, since the compiled pipeline names the project that job runs in.
"""

import sys

from pipelines.cloud import compiler, submit
from pipelines.flags import parsing
from pipelines.stages.vertex_training import vertex_training_config


def main(argv=None) -> int:
    parser = compiler.parser(__doc__.split("\n\n")[0], "pipeline.json")
    vertex = parser.add_argument_group("Vertex AI")
    vertex.add_argument("--project", help="Google Cloud project ID")
    vertex.add_argument("--region", default="us-central1")
    vertex.add_argument("--service-account", help="the service account the job runs as")
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
    args = parser.parse_args(parsing.command_line(argv))

    vertex_training = None
    if args.vertex_training:
        if not args.project:
            parser.error(
                "--vertex-training needs --project, even to compile: the compiled pipeline "
                "names the project the Trainer's Vertex AI Training job runs in"
            )
        with parsing.flag_errors(parser):
            vertex_training = vertex_training_config(
                project=args.project,
                region=args.region,
                image=args.image,
                machine_type=args.machine_type,
                accelerator_type=args.accelerator_type,
                accelerator_count=args.accelerator_count,
                workers=args.workers,
            )
    dag = compiler.build(args, parser, vertex_training, args.parallel_trials)
    path = compiler.compile_pipeline(dag, args.image, args.output_file, args.trainer_retries)
    print(f"compiled {path}")
    if args.submit:
        with parsing.flag_errors(parser):
            submit.submit_to_vertex(
                path,
                project=args.project,
                region=args.region,
                pipeline_root=args.pipeline_root,
                display_name=args.pipeline_name,
                service_account=args.service_account,
                parameter_values=submit.parse_parameters(args.parameter),
                wait=args.wait,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
