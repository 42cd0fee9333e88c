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
from pipelines.comparison import BUDGETS, ComparisonSpec
from trainer.config import BASE_OPTIMIZERS, LR_SCHEDULES, MODELS, OPTIMIZERS, TrainingConfig

# Flag -> TrainingConfig field, for the flags that map one to one.
TRAINING_FLAGS = {
    "--model": "model",
    "--epochs": "epochs",
    "--batch-size": "batch_size",
    "--learning-rate": "learning_rate",
    "--lr-schedule": "lr_schedule",
    "--base-optimizer": "base_optimizer",
    "--optimizer": "optimizer",
    "--rho-max": "rho_max",
    "--rho-min": "rho_min",
    "--alpha": "alpha",
    "--train-steps-per-epoch": "train_steps_per_epoch",
    "--label-key": "label_key",
    "--num-classes": "num_classes",
    "--image-key": "image_key",
    "--image-shape": "image_shape",
}
# Other flags named in error messages by the value they set.
OTHER_FLAGS = {
    "data_root": "--data-root",
    "schema_path": "--schema",
    "data_format": "--data-format",
    "output_dir": "--output-dir",
    "metadata_path": "--metadata-path",
    "accuracy_threshold": "--accuracy-threshold",
    "max_accuracy_drop": "--max-accuracy-drop",
    "methods": "--methods",
    "seeds": "--seeds",
    "budget": "--budget",
    "label_noise": "--label-noise",
    "label_noise_seed": "--label-noise-seed",
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
    """Where a local run writes: everything under one output folder, local or a URI such as
    gs://BUCKET/out, except ML Metadata's SQLite file when `metadata_file` puts it elsewhere.
    """

    output_dir: str
    metadata_file: str | None = None

    def __post_init__(self):
        if self.metadata_file is None and is_uri(self.output_dir):
            raise ValueError(
                f"output_dir {self.output_dir} is not local, and ML Metadata's SQLite file must "
                f"be: set metadata_path, e.g. to metadata.sqlite."
            )

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline")

    @property
    def metadata_path(self) -> str:
        return self.metadata_file or os.path.join(self.output_dir, "metadata.sqlite")

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
    group.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=defaults.lr_schedule,
        help="cosine decay after the warmup, or constant (default: %(default)s)",
    )
    group.add_argument(
        "--base-optimizer",
        choices=BASE_OPTIMIZERS,
        default=defaults.base_optimizer,
        help="the optimizer SAM and GSAM wrap: sgd (momentum 0.9) or adam "
        "(default: %(default)s)",
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
    group.add_argument(
        "--image-key",
        default=defaults.image_key,
        help="the PNG-encoded image feature, for resnet (default: %(default)s)",
    )
    group.add_argument(
        "--image-shape",
        type=image_shape,
        default=defaults.image_shape,
        metavar="HxWxC",
        help="height, width and channels (1, 3 or 4) the images are decoded to; images of "
        "another size are resized (default: %s)" % "x".join(map(str, defaults.image_shape)),
    )


def image_shape(text: str) -> tuple[int, ...]:
    """`--image-shape` as `(height, width, channels)`, from e.g. `32x32x3`."""
    if not re.fullmatch(r"\d+x\d+x\d+", text):
        raise argparse.ArgumentTypeError(
            f"must be HEIGHTxWIDTHxCHANNELS, e.g. 32x32x3, got {text!r}"
        )
    return tuple(int(size) for size in text.split("x"))


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ComparisonSpec()
    group = parser.add_argument_group(
        "comparison",
        "--compare trains every method with every seed on the same data, reports them side "
        "by side, and releases the winner",
    )
    group.add_argument("--compare", action="store_true", help="run the comparison pipeline")
    group.add_argument(
        "--methods",
        default=",".join(defaults.methods),
        help=f"comma-separated, from {', '.join(OPTIMIZERS)} (default: %(default)s)",
    )
    group.add_argument(
        "--seeds", type=int, default=defaults.seeds, help="runs per method (default: %(default)s)"
    )
    group.add_argument(
        "--budget",
        choices=BUDGETS,
        default=defaults.budget,
        help="equal-compute trains plain for as many forward-backward passes as SAM/GSAM "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--label-noise",
        type=float,
        default=defaults.label_noise,
        help="fraction of training labels flipped to another class (default: %(default)s)",
    )
    group.add_argument("--label-noise-seed", type=int, default=defaults.label_noise_seed)


def comparison_spec(args: argparse.Namespace) -> ComparisonSpec | None:
    """The comparison the flags ask for, or `None` without --compare."""
    if not args.compare:
        return None
    return ComparisonSpec(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        seeds=args.seeds,
        budget=args.budget,
        label_noise=args.label_noise,
        label_noise_seed=args.label_noise_seed,
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
        help="pipeline root, metadata DB and pushed models, a folder or a URI such as "
        "gs://BUCKET/out (default: %(default)s)",
    )
    parser.add_argument(
        "--metadata-path",
        default=None,
        help="the ML Metadata SQLite file, always local (default: OUTPUT_DIR/metadata.sqlite; "
        "needed when --output-dir is a URI)",
    )
    add_training_arguments(parser)
    add_comparison_arguments(parser)
    add_blessing_arguments(parser)
    add_beam_arguments(parser)
    add_cache_argument(parser, default=False)
    return parser


def add_cache_argument(parser: argparse.ArgumentParser, default: bool) -> None:
    """`--enable-cache` / `--no-enable-cache`: whether unchanged steps reuse their outputs."""
    parser.add_argument(
        "--enable-cache",
        action=argparse.BooleanOptionalAction,
        default=default,
        help="reuse the outputs of steps whose inputs and settings are unchanged; a rerun then "
        "trains, evaluates and pushes nothing new, and a preempted Trainer rerun resumes "
        "(default: %(default)s)",
    )


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
    data_root = absolute(args.data_root)
    schema = args.schema and absolute(args.schema)
    if schema is None and data_root == configs.DATA_ROOT:
        schema = configs.SCHEMA_PATH
    with flag_errors(parser):
        layout = output_layout(args.output_dir, args.metadata_path)
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
            comparison=comparison_spec(args),
            enable_cache=args.enable_cache,
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


def output_layout(output_dir: str, metadata_path: str | None = None) -> OutputLayout:
    """The layout of `--output-dir` and `--metadata-path`, local paths made absolute."""
    return OutputLayout(absolute(output_dir), metadata_path and absolute(metadata_path))


def is_uri(path: str) -> bool:
    """Whether `path` is a URI (gs://, s3://, hdfs://, ...) rather than a local path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def absolute(path: str) -> str:
    """A local path made absolute; a URI as it is."""
    return path if is_uri(path) else os.path.abspath(path)
