"""Running the pipeline on this machine with a given runner, then printing what it did: the
flags of the local and Beam runners, the pipeline they build, the run lock and the console."""

from __future__ import annotations

import argparse
import os
import sys

from tfx import v1 as tfx
from tfx.orchestration import tfx_runner

from pipelines import configs, pipeline
from pipelines.flags import groups, parsing, settings
from pipelines.local import console, run_lock
from pipelines.local.layout import output_layout
from pipelines.stages import data


def run(runner: tfx_runner.TfxRunner, description: str, argv: list[str] | None = None) -> int:
    """Builds the pipeline from the flags and runs it with `runner`
    (see pipelines/local/console.py).

    Returns the exit status: 1 if the run failed.
    """
    parser = local_parser(description)
    args = parser.parse_args(parsing.command_line(argv))
    dag = build_local(args, parser)
    try:
        with run_lock.hold(run_lock.lock_path(args.output_dir, args.metadata_path)):
            return console.run_pipeline(
                runner,
                dag,
                output_layout(args.output_dir, args.metadata_path),
                verbose=args.verbose,
                data_root=args.data_root,
            )
    except run_lock.RunLockedError as error:
        print(f"Not started: {error}", file=sys.stderr)
        return 1


def local_parser(description: str) -> argparse.ArgumentParser:
    """The flags of the runners that run here: local and Beam."""
    parser = parsing.FlagParser(description=description)
    groups.add_data_arguments(parser, configs.DATA_ROOT)
    parser.add_argument(
        "--output-dir",
        default=configs.OUTPUT_DIR,
        help="pipeline root, metadata DB, pushed models and logs/, a folder or a URI such as "
        "gs://BUCKET/out (default: %(default)s)",
    )
    parser.add_argument(
        "--metadata-path",
        default=None,
        help="the ML Metadata SQLite file, always local (default: OUTPUT_DIR/metadata.sqlite; "
        "needed when --output-dir is a URI); with a URI, logs/ goes beside it",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the full log (absl, TFX, Beam, TensorFlow) here too; it is always written "
        "to OUTPUT_DIR/logs/<run id>.log",
    )
    groups.add_training_arguments(parser)
    groups.add_tuning_arguments(parser)
    groups.add_comparison_arguments(parser)
    groups.add_blessing_arguments(parser)
    groups.add_sharpness_arguments(parser)
    groups.add_beam_arguments(parser)
    groups.add_cache_argument(parser, default=False)
    return parser


def build_local(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tfx.dsl.Pipeline:
    """The pipeline for a run on this machine; a bad value exits naming its flag."""
    data_root = parsing.absolute(args.data_root)
    schema = args.schema and parsing.absolute(args.schema)
    sample = data_root == configs.DATA_ROOT
    if sample and not os.path.isdir(data_root):
        parser.error(
            f"--data-root: the embedded sample is part of a checkout, not of an installed "
            f"package ({data_root} does not exist); give your data's folder with --data-root"
        )
    if schema is None and sample:
        schema = configs.SCHEMA_PATH
    with parsing.flag_errors(parser):
        layout = output_layout(args.output_dir, args.metadata_path)
        data_format, split_folders = data.inspect_local_data(data_root, args.data_format, schema)
        return pipeline.create_pipeline(
            pipeline.PipelineSettings(
                pipeline_name=args.pipeline_name,
                pipeline_root=layout.pipeline_root,
                metadata_connection_config=(
                    tfx.orchestration.metadata.sqlite_metadata_connection_config(
                        layout.metadata_path
                    )
                ),
                beam_pipeline_args=args.beam_args or configs.BEAM_PIPELINE_ARGS,
                enable_cache=args.enable_cache,
            ),
            data.DataSettings(
                data_root,
                data_format,
                split_folders,
                schema,
                validation_fraction=args.validation_split,
                max_bad_records=args.max_bad_records,
            ),
            settings.training_config(
                args, data_format, configs.CLASS_NAMES_PATH if sample else None
            ),
            settings.release_settings(args, parser, layout.serving_model_dir),
            tuning=settings.search_space(args),
            comparison=settings.comparison_spec(args),
            module_file=settings.module_file(args),
        )
