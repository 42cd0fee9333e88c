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

from components.sharpness_probe import ProbeSettings
from pipelines import configs, pipeline
from pipelines.comparison import BUDGETS, ComparisonSpec
from trainer.config import BASE_OPTIMIZERS, LR_SCHEDULES, MODELS, OPTIMIZERS, TrainingConfig
from trainer.model import MLP_UNITS, RESNET_WIDTHS
from trainer.search_space import ALGORITHMS, OBJECTIVES, SearchSpace

# Flag -> TrainingConfig field, for the flags that map one to one.
TRAINING_FLAGS = {
    "--model": "model",
    "--model-widths": "model_widths",
    "--epochs": "epochs",
    "--batch-size": "batch_size",
    "--learning-rate": "learning_rate",
    "--lr-schedule": "lr_schedule",
    "--base-optimizer": "base_optimizer",
    "--optimizer": "optimizer",
    "--rho-max": "rho_max",
    "--rho-min": "rho_min",
    "--alpha": "alpha",
    "--perturb-every": "perturb_every",
    "--reuse-scale": "reuse_scale",
    "--train-steps-per-epoch": "train_steps_per_epoch",
    "--label-key": "label_key",
    "--num-classes": "num_classes",
    "--image-key": "image_key",
    "--image-shape": "image_shape",
    "--input-size": "input_size",
}
# Flag -> SearchSpace field; each flag needs --tune.
TUNING_FLAGS = {
    "--tune-rho-max": "rho_max_range",
    "--tune-rho-min-fraction": "rho_min_fraction_range",
    "--tune-alpha": "alpha_range",
    "--tune-learning-rate": "learning_rate_range",
    "--tune-methods": "method_choices",
    "--tune-perturb-every": "perturb_every_choices",
    "--tune-algorithm": "algorithm",
    "--tune-trials": "max_trials",
    "--tune-epochs": "epochs_per_trial",
    "--tune-objective": "objective",
    "--tune-seed": "search_seed",
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
    "parallel_trials": "--parallel-trials",
    "max_top_eigenvalue": "--max-top-eigenvalue",
    "max_sharpness_increase": "--max-sharpness-increase",
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

    @property
    def logs_dir(self) -> str:
        """Run logs, appended to as a run goes: under the output folder, or beside ML
        Metadata's file when the output folder is a URI."""
        local = os.path.dirname(self.metadata_path) if is_uri(self.output_dir) else self.output_dir
        return os.path.join(local, "logs")

    def log_path(self, run_id: str) -> str:
        """The full log of the run `run_id`."""
        return os.path.join(self.logs_dir, f"{run_id}.log")


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
    group.add_argument(
        "--model-widths",
        type=model_widths,
        default=None,
        metavar="W1,W2,...",
        help="resnet: channels per stage; mlp: units per hidden layer (default: %s for resnet, "
        "%s for mlp)" % (",".join(map(str, RESNET_WIDTHS)), ",".join(map(str, MLP_UNITS))),
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
        "--perturb-every",
        type=int,
        default=defaults.perturb_every,
        help="sam/gsam: run the perturbed pass every K steps and reuse its flatness direction "
        "in between, LookSAM-style (default: %(default)s, exact)",
    )
    group.add_argument(
        "--reuse-scale",
        type=float,
        help="with --perturb-every > 1: LookSAM's fixed coefficient of the reused direction "
        "(default: adaptive, at the angle the last perturbed pass measured)",
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
        help="default: from the schema's label domain, else the label's largest value + 1 "
        "in the statistics",
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
        help="height, width and channels (1, 3 or 4) of the data's images; the validation gate "
        "stops a run on an image of another shape (default: %s)"
        % "x".join(map(str, defaults.image_shape)),
    )
    group.add_argument(
        "--input-size",
        type=input_size,
        default=None,
        metavar="HxW",
        help="resize the images to this height and width for the model, e.g. 14x14 for a "
        "quarter of the compute (default: --image-shape's)",
    )


def image_shape(text: str) -> tuple[int, ...]:
    """`--image-shape` as `(height, width, channels)`, from e.g. `32x32x3`."""
    if not re.fullmatch(r"\d+x\d+x\d+", text):
        raise argparse.ArgumentTypeError(
            f"must be HEIGHTxWIDTHxCHANNELS, e.g. 32x32x3, got {text!r}"
        )
    return tuple(int(size) for size in text.split("x"))


def input_size(text: str) -> tuple[int, ...]:
    """`--input-size` as `(height, width)`, from e.g. `14x14`."""
    if not re.fullmatch(r"\d+x\d+", text):
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH, e.g. 14x14, got {text!r}")
    return tuple(int(size) for size in text.split("x"))


def model_widths(text: str) -> tuple[int, ...]:
    """`--model-widths` as a tuple, from e.g. `8,16,32`."""
    if not re.fullmatch(r"\d+(,\d+)*", text):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, e.g. 8,16,32, got {text!r}"
        )
    return tuple(int(width) for width in text.split(","))


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
        help=f"comma-separated, from {', '.join(OPTIMIZERS)}, or sam-kN / gsam-kN "
        "(perturbed pass every N steps) (default: %(default)s)",
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


def add_tuning_arguments(parser: argparse.ArgumentParser) -> None:
    space = SearchSpace()
    group = parser.add_argument_group(
        "tuning",
        "--tune adds a Tuner (KerasTuner) before the Trainer, which trains with the best "
        "values it finds",
    )
    group.add_argument("--tune", action="store_true", help="search the values below first")

    def add_range(flag, what):
        low, high = getattr(space, TUNING_FLAGS[flag])
        group.add_argument(
            flag,
            nargs=2,
            type=float,
            metavar=("LOW", "HIGH"),
            help=f"{what} (default: {low} {high}; LOW = HIGH fixes the value)",
        )

    add_range("--tune-rho-max", "rho_max, log-uniform")
    add_range("--tune-rho-min-fraction", "rho_min as a fraction of rho_max")
    add_range("--tune-alpha", "GSAM's alpha")
    add_range("--tune-learning-rate", "peak learning rate, log-uniform")
    group.add_argument(
        "--tune-methods",
        nargs="+",
        choices=OPTIMIZERS,
        help="methods to choose from (default: --optimizer's)",
    )
    group.add_argument(
        "--tune-perturb-every",
        nargs="+",
        type=int,
        metavar="K",
        help="values of --perturb-every to choose from, for sam and gsam (default: "
        "--perturb-every's)",
    )
    group.add_argument("--tune-algorithm", choices=ALGORITHMS, help=f"default: {space.algorithm}")
    group.add_argument("--tune-trials", type=int, help=f"default: {space.max_trials}")
    group.add_argument(
        "--tune-epochs", type=int, help=f"epochs per trial (default: {space.epochs_per_trial})"
    )
    group.add_argument(
        "--tune-objective", choices=tuple(OBJECTIVES), help=f"default: {space.objective}"
    )
    group.add_argument("--tune-seed", type=int, help="seeds the search (default: random)")


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


def add_sharpness_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sharpness")
    group.add_argument(
        "--sharpness",
        action="store_true",
        help="measure the candidate's (and the baseline's) sharpness after the Evaluator: "
        "top Hessian eigenvalue, Hessian trace, surrogate gap, worst-case loss",
    )
    group.add_argument(
        "--max-top-eigenvalue",
        type=float,
        default=None,
        help="with --sharpness: push only if the candidate's top Hessian eigenvalue is at "
        "most this (default: no limit)",
    )
    group.add_argument(
        "--max-sharpness-increase",
        type=float,
        default=None,
        help="with --sharpness: push only if the top eigenvalue exceeds the last blessed "
        "model's by at most this fraction, e.g. 0.2 (default: no limit)",
    )


def sharpness_settings(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> ProbeSettings | None:
    """The SharpnessProbe's settings, or None without --sharpness."""
    limits = {
        "max_top_eigenvalue": args.max_top_eigenvalue,
        "max_sharpness_increase": args.max_sharpness_increase,
    }
    if not args.sharpness:
        given = [OTHER_FLAGS[name] for name, value in limits.items() if value is not None]
        if given:
            parser.error(f"{', '.join(given)} gates the SharpnessProbe: add --sharpness.")
        return None
    with flag_errors(parser):
        return ProbeSettings(**limits)


def add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        dest="beam_args",
        help="a Beam pipeline argument for the data components, repeatable "
        f"(default: {' '.join(configs.BEAM_PIPELINE_ARGS)}; README, \"Performance\", says "
        "when another mode is faster)",
    )


def local_parser(description: str) -> argparse.ArgumentParser:
    """The flags of the runners that run here: local and Beam."""
    parser = argparse.ArgumentParser(description=description)
    add_data_arguments(parser, configs.DATA_ROOT)
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
    add_training_arguments(parser)
    add_tuning_arguments(parser)
    add_comparison_arguments(parser)
    add_blessing_arguments(parser)
    add_sharpness_arguments(parser)
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
    values = {field: flag_value(args, flag) for flag, field in TRAINING_FLAGS.items()}
    if values["alpha"] is None:
        values["alpha"] = configs.TRAINING.alpha if args.optimizer == "gsam" else None
    if values["model"] is None:
        values["model"] = "mlp" if data_format == "csv" else "resnet"
    return dataclasses.replace(configs.TRAINING, adaptive=args.adaptive, **values)


def search_space(args: argparse.Namespace) -> SearchSpace | None:
    """The search space of the --tune flags; `None` without --tune."""
    given = {flag: flag_value(args, flag) for flag in TUNING_FLAGS}
    given = {flag: value for flag, value in given.items() if value is not None}
    if not args.tune:
        if given:
            raise ValueError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --tune.")
        return None
    return SearchSpace(**{TUNING_FLAGS[flag]: value for flag, value in given.items()})


def flag_value(args: argparse.Namespace, flag: str):
    return getattr(args, flag[2:].replace("-", "_"))


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
            tuning=search_space(args),
            accuracy_threshold=args.accuracy_threshold,
            max_accuracy_drop=args.max_accuracy_drop,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                layout.metadata_path
            ),
            beam_pipeline_args=args.beam_args or configs.BEAM_PIPELINE_ARGS,
            comparison=comparison_spec(args),
            sharpness=sharpness_settings(args, parser),
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
    flags = {field: flag for flag, field in {**TRAINING_FLAGS, **TUNING_FLAGS}.items()}
    flags |= OTHER_FLAGS
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
