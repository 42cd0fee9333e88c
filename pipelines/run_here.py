"""Running the pipeline on this machine with a given runner, then printing what it did."""

from absl import logging
from tfx.orchestration import tfx_runner

from pipelines import options, summary


def run(runner: tfx_runner.TfxRunner, description: str, argv: list[str] | None = None) -> int:
    """Builds the pipeline from the flags, runs it with `runner`, and prints the summary."""
    parser = options.local_parser(description)
    args = parser.parse_args(options.command_line(argv))
    dag = options.build_local(args, parser)
    logging.set_verbosity(logging.INFO)
    try:
        runner.run(dag)
    finally:
        summary.report(args.output_dir, args.pipeline_name, args.data_root)
    return 0
