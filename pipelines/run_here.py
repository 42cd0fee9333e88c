"""Running the pipeline on this machine with a given runner, then printing what it did."""

import sys

from absl import logging
from tfx.orchestration import tfx_runner

from pipelines import options, run_lock, summary


def run(runner: tfx_runner.TfxRunner, description: str, argv: list[str] | None = None) -> int:
    """Builds the pipeline from the flags, runs it with `runner`, and prints the summary.

    Returns the exit status: 1, with the failing component's error, if the run failed.
    """
    parser = options.local_parser(description)
    args = parser.parse_args(options.command_line(argv))
    dag = options.build_local(args, parser)
    runner = run_lock.LockedRunner(runner, run_lock.lock_path(args.output_dir, args.metadata_path))
    logging.set_verbosity(logging.INFO)
    try:
        runner.run(dag)
    except Exception as error:  # the component's own error, reported after the summary
        summary.report(args.output_dir, args.pipeline_name, args.data_root, args.metadata_path)
        logging.exception("The pipeline run failed.")
        print(f"\nThe run failed: {error}", file=sys.stderr)
        return 1
    summary.report(args.output_dir, args.pipeline_name, args.data_root, args.metadata_path)
    return 0
