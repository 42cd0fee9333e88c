"""The command-line flags the runners share, and the pipeline a local run builds from them."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import sys

from tfx import v1 as tfx

from pipelines import configs, pipeline
from trainer.config import MODELS, OPTIMIZERS, TrainingConfig

# Flag -> TrainingConfig field, for the flags that map one to one.
TRAINING_FLAGS = {
    "--model": "model",
    "--epochs": "epochs",
    "--batch-size": "batch_size",
    "--learning-rate": "learning_rate",
    "--optimizer": "optimizer",
    "--rho-max": "rho_max",
    "--rho-min": "rho_min",
    "--alpha": "alpha",
    "--perturb-every": "perturb_every",
    "--train-steps-per-epoch": "train_steps_per_epoch",
    "--label-key": "label_key",
    "--num-classes": "num_classes",
}
# Other flags named in error messages by the value they set.
OTHER_FLAGS = {
    "data_root": "--data-root",
    "schema_path": "--schema",
    "data_format": "--data-format",
    "accuracy_threshold": "--accuracy-threshold",
    "max_accuracy_drop": "--max-accuracy-drop",
}


ARGS_VARIABLE = "GSAM_TFX_ARGS"


def command_line(argv: list[str] | None = None) -> list[str]:
    """The runner's flags: $GSAM_TFX_ARGS, then the command line's (which win).

    The tfx CLI runs a runner file with no arguments; $GSAM_TFX_ARGS is how flags reach it.
    """
    return shlex.split(os.environ.get(ARGS_VARIABLE, "")) + list(
        sys.argv[1:] if argv is None else argv
    )


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """Where a local run writes: everything under one output folder."""

    output_dir: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.output_dir, "serving")


def add_data_arguments(
    parser: argparse.ArgumentParser,
    data_root: str,
    auto_format: str = "CSV if the folder holds .csv files, else TFRecord",
) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data-root",
        default=data_root,
        help="folder of TFRecord (tf.Example) or CSV files, with train/ and eval/ "
        "split folders (default: the embedded Fashion-MNIST sample, "
        "%(default)s)",
    )
    group.add_argument(
        "--data-format",
        choices=("auto",) + pipeline.DATA_FORMATS,
        default="auto",
        help=f"auto: {auto_format}",
    )
    group.add_argument(
        "--schema",
        default=None,
        help="curated schema.pbtxt (default: the sample's own for the sample, "
        "else inferred by SchemaGen)",
    )
    group.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = configs.TRAINING
    group = parser.add_argument_group("training")
    group.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="default: resnet for TFRecord images, mlp for CSV",
    )
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--batch-size", type=int, default=defaults.batch_size)
    group.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.learning_rate,
        help="peak learning rate (default: %(default)s)",
    )
    group.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    group.add_argument("--rho-max", type=float, default=defaults.rho_max)
    group.add_argument("--rho-min", type=float, default=defaults.rho_min)
    group.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"GSAM's alpha (default: {defaults.alpha} for gsam; sam is alpha 0)",
    )
    group.add_argument("--adaptive", action="store_true", help="|w|-scaled perturbation")
    group.add_argument(
        "--perturb-every",
        type=int,
        default=defaults.perturb_every,
        help="sam/gsam: run the perturbed pass every K steps and reuse its flatness direction "
        "in between, LookSAM-style (default: %(default)s, exact)",
    )
    group.add_argument(
        "--train-steps-per-epoch",
        type=int,
        default=None,
        help="cap the steps of an epoch (default: one pass over the data)",
    )
    group.add_argument(
        "--label-key",
        default=defaults.label_key,
        help="the integer class label feature (default: %(default)s)",
    )
    group.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="default: from the schema's label domain (an inferred schema, as for CSV, has none)",
    )


def add_blessing_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("blessing")
    group.add_argument(
        "--accuracy-threshold",
        type=float,
        default=configs.ACCURACY_THRESHOLD,
        help="eval accuracy needed for blessing (default: %(default)s)",
    )
    group.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=configs.MAX_ACCURACY_DROP,
        help="how far the candidate may trail the last blessed model (default: %(default)s)",
    )


def add_beam_arguments(
    parser: argparse.ArgumentParser, defaults=configs.BEAM_PIPELINE_ARGS
) -> None:
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        dest="beam_args",
        help="a Beam pipeline argument for the data components, repeatable "
        f"(default: {' '.join(defaults) or 'none'})",
    )


def local_parser(description: str) -> argparse.ArgumentParser:
    """The flags of the runners that run here: local and Beam."""
    parser = argparse.ArgumentParser(description=description)
    add_data_arguments(parser, configs.DATA_ROOT)
    parser.add_argument(
        "--output-dir",
        default=configs.OUTPUT_DIR,
        help="pipeline root, metadata DB and pushed models (default: %(default)s)",
    )
    add_training_arguments(parser)
    add_blessing_arguments(parser)
    add_beam_arguments(parser)
    return parser


def training_config(args: argparse.Namespace, data_format: str) -> TrainingConfig:
    values = {
        field: getattr(args, flag[2:].replace("-", "_")) for flag, field in TRAINING_FLAGS.items()
    }
    if values["alpha"] is None:
        values["alpha"] = configs.TRAINING.alpha if args.optimizer == "gsam" else None
    if values["model"] is None:
        values["model"] = "mlp" if data_format == "csv" else "resnet"
    return dataclasses.replace(configs.TRAINING, adaptive=args.adaptive, **values)


def build_local(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tfx.dsl.Pipeline:
    """The pipeline for a run on this machine; a bad value exits naming its flag."""
    layout = OutputLayout(os.path.abspath(args.output_dir))
    data_root = absolute(args.data_root)
    schema = args.schema and absolute(args.schema)
    if schema is None and data_root == configs.DATA_ROOT:
        schema = configs.SCHEMA_PATH
    with flag_errors(parser):
        data_format, split_folders = pipeline.inspect_local_data(
            data_root, args.data_format, schema
        )
        return pipeline.create_pipeline(
            pipeline_name=args.pipeline_name,
            pipeline_root=layout.pipeline_root,
            data_root=data_root,
            data_format=data_format,
            split_folders=split_folders,
            schema_path=schema,
            serving_model_dir=layout.serving_model_dir,
            training=training_config(args, data_format),
            accuracy_threshold=args.accuracy_threshold,
            max_accuracy_drop=args.max_accuracy_drop,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                layout.metadata_path
            ),
            beam_pipeline_args=args.beam_args or configs.BEAM_PIPELINE_ARGS,
        )


@contextlib.contextmanager
def flag_errors(parser: argparse.ArgumentParser):
    """Turns a ValueError from building the pipeline into a usage error naming the flags."""
    try:
        yield
    except ValueError as error:
        parser.error(name_flags(str(error)))


def name_flags(message: str) -> str:
    flags = {field: flag for flag, field in TRAINING_FLAGS.items()} | OTHER_FLAGS
    named = [flag for field, flag in flags.items() if re.search(rf"\b{field}\b", message)]
    return f"{message} (flag: {', '.join(named)})" if named else message


def absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)
