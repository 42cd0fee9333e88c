"""Compiles the pipeline for Vertex AI Pipelines (KubeflowV2DagRunner JSON); --submit runs it.

    python -m pipelines.vertex_runner --output-file pipeline.json --image IMAGE \\
        --pipeline-root gs://BUCKET/root [--project P --region R --submit --wait]
    GSAM_TFX_ARGS="--image IMAGE --pipeline-root gs://BUCKET/root" \\
        tfx pipeline create --engine vertex --pipeline_path pipelines/vertex_runner.py

Compiling needs no network. --vertex-training also runs the Trainer as a Vertex AI Training
job (GPUs, several workers), and with --tune the Tuner too (--parallel-trials machines); it
needs --project even to compile, since the compiled pipeline names the project that job runs in.
--push-to, --experiment, --schedule and --tensorboard are production on Vertex AI (README,
"Production on Vertex AI").
"""

import sys

from pipelines.cloud import compiler, submit
from pipelines.flags import parsing, vertex


def main(argv=None) -> int:
    parser = compiler.parser(__doc__.split("\n\n")[0], "pipeline.json")
    vertex.add_vertex_arguments(parser)
    vertex.add_production_arguments(parser)
    args = parser.parse_args(parsing.command_line(argv))
    vertex.check_combinations(args, parser)
    schedule = vertex.schedule_settings(args, parser)
    dag = compiler.build(
        args,
        parser,
        vertex.vertex_training(args, parser),
        args.parallel_trials,
        push=vertex.push_settings(args, parser),
        experiment=vertex.experiment_settings(args, parser),
    )
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
                enable_caching=args.enable_cache,
                experiment=args.experiment,
                schedule=schedule,
                wait=args.wait,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
