"""Running the pipeline on this machine with a given runner, then printing what it did."""

import sys

from tfx.orchestration import tfx_runner

from pipelines import console, options, run_lock


def run(runner: tfx_runner.TfxRunner, description: str, argv: list[str] | None = None) -> int:
    """Builds the pipeline from the flags and runs it with `runner` (see pipelines/console.py).

    Returns the exit status: 1 if the run failed.
    """
    parser = options.local_parser(description)
    args = parser.parse_args(options.command_line(argv))
    dag = options.build_local(args, parser)
    try:
        with run_lock.hold(run_lock.lock_path(args.output_dir, args.metadata_path)):
            return console.run_pipeline(
                runner,
                dag,
                options.output_layout(args.output_dir, args.metadata_path),
                verbose=args.verbose,
                data_root=args.data_root,
            )
    except run_lock.RunLockedError as error:
        print(f"Not started: {error}", file=sys.stderr)
        return 1
