"""How the runners read their flags: the command line, presets, value types, and errors that
name the flag.

`command_line` reads `$GSAM_TFX_ARGS` before the command line (the tfx CLI runs a runner file
with no arguments); `FlagParser` applies a `--preset`'s values as defaults (explicit flags win);
`flag_errors` turns a `ValueError` from a settings object into a usage error that names the
flags behind the fields it mentions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys

from pipelines.flags.presets import PRESETS

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
    "--perturb-budget": "perturb_budget",
    "--reuse-scale": "reuse_scale",
    "--train-steps-per-epoch": "train_steps_per_epoch",
    "--min-train-steps": "min_train_steps",
    "--label-key": "label_key",
    "--num-classes": "num_classes",
    "--image-key": "image_key",
    "--image-shape": "image_shape",
    "--input-size": "input_size",
    "--class-names": "class_names",
    "--warmup-epochs": "warmup_epochs",
    "--plateau-factor": "plateau_factor",
    "--plateau-patience": "plateau_patience",
    "--min-learning-rate": "min_learning_rate",
    "--early-stopping": "early_stopping",
    "--augment": "augment",
    "--class-weights": "class_weights",
    "--label-smoothing": "label_smoothing",
    "--weight-decay": "weight_decay",
}

# Flag -> SearchSpace field; each flag needs --tune.
TUNING_FLAGS = {
    "--tune-rho-max": "rho_max_range",
    "--tune-rho-min-fraction": "rho_min_fraction_range",
    "--tune-alpha": "alpha_range",
    "--tune-learning-rate": "learning_rate_range",
    "--tune-methods": "method_choices",
    "--tune-perturb-every": "perturb_every_choices",
    "--tune-label-smoothing": "label_smoothing_range",
    "--tune-weight-decay": "weight_decay_range",
    "--tune-perturb-budget": "perturb_budget_range",
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
    "serving_model_dir": "--serving-model-dir",
    "data_format": "--data-format",
    "max_bad_records": "--max-bad-records",
    "output_dir": "--output-dir",
    "metadata_path": "--metadata-path",
    "accuracy_threshold": "--accuracy-threshold",
    "max_accuracy_drop": "--max-accuracy-drop",
    "methods": "--methods",
    "seeds": "--seeds",
    "first_seed": "--first-seed",
    "budget": "--budget",
    "label_noise": "--label-noise",
    "label_noise_seed": "--label-noise-seed",
    "target_difference": "--target-difference",
    "parallel_trials": "--parallel-trials",
    "max_top_eigenvalue": "--max-top-eigenvalue",
    "max_sharpness_increase": "--max-sharpness-increase",
    "module_file": "--module-file",
    "class_names_file": "--class-names-file",
    "validation_fraction": "--validation-split",
}


ARGS_VARIABLE = "GSAM_TFX_ARGS"


def command_line(argv: list[str] | None = None) -> list[str]:
    """The runner's flags: $GSAM_TFX_ARGS, then the command line's (which win).

    The tfx CLI runs a runner file with no arguments; $GSAM_TFX_ARGS is how flags reach it.
    """
    return shlex.split(os.environ.get(ARGS_VARIABLE, "")) + list(
        sys.argv[1:] if argv is None else argv
    )


class FlagParser(argparse.ArgumentParser):
    """The runners' parser: `--preset NAME` (`presets.PRESETS`) sets the defaults of the flags
    it names before parsing, so a flag given explicitly, before or after it, wins."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        probe = argparse.ArgumentParser(add_help=False)
        probe.add_argument("--preset")
        preset = probe.parse_known_args(args)[0].preset
        if preset in PRESETS:  # another value: the --preset flag's choices name the error
            self.set_defaults(**PRESETS[preset])
        return super().parse_known_args(args, namespace)


def flag_value(args: argparse.Namespace, flag: str):
    return getattr(args, flag[2:].replace("-", "_"))


@contextlib.contextmanager
def flag_errors(parser: argparse.ArgumentParser, fields: dict[str, str] | None = None):
    """Turns a ValueError from building the pipeline into a usage error naming the flags;
    `fields` (field -> flag) names those of the settings built inside instead."""
    try:
        yield
    except ValueError as error:
        parser.error(name_flags(str(error), fields))


def name_flags(message: str, fields: dict[str, str] | None = None) -> str:
    flags = fields
    if flags is None:
        flags = {field: flag for flag, field in {**TRAINING_FLAGS, **TUNING_FLAGS}.items()}
        flags |= OTHER_FLAGS
    named = [flag for field, flag in flags.items() if re.search(rf"\b{field}\b", message)]
    return f"{message} (flag: {', '.join(named)})" if named else message


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


def perturb_every(text: str) -> int | str:
    """`--perturb-every` as an integer, or `"auto"`."""
    if text == "auto":
        return text
    if not re.fullmatch(r"\d+", text):
        raise argparse.ArgumentTypeError(f"must be an integer K >= 1 or auto, got {text!r}")
    return int(text)


def model_widths(text: str) -> tuple[int, ...]:
    """`--model-widths` as a tuple, from e.g. `8,16,32`."""
    if not re.fullmatch(r"\d+(,\d+)*", text):
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, e.g. 8,16,32, got {text!r}"
        )
    return tuple(int(width) for width in text.split(","))


def augmentations(text: str) -> tuple[str, ...]:
    """`--augment` as a tuple, from e.g. `crop,flip`; `none` for none."""
    if text == "none":
        return ()
    return tuple(name.strip() for name in text.split(","))


def class_weights(text: str) -> str | tuple[float, ...]:
    """`--class-weights`: `balanced`, or comma-separated weights in class order."""
    if text == "balanced":
        return text
    try:
        return tuple(float(weight) for weight in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be balanced or comma-separated weights, e.g. 1,2.5,1, got {text!r}"
        ) from None


def class_names(text: str) -> tuple[str, ...]:
    """`--class-names` as a tuple, from e.g. `benign,malignant`."""
    names = tuple(name.strip() for name in text.split(","))
    if len(names) < 2 or not all(names):
        raise argparse.ArgumentTypeError(
            f"must be two or more comma-separated names, e.g. cat,dog, got {text!r}"
        )
    return names


def is_uri(path: str) -> bool:
    """Whether `path` is a URI (gs://, s3://, hdfs://, ...) rather than a local path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def absolute(path: str) -> str:
    """A local path made absolute; a URI as it is."""
    return path if is_uri(path) else os.path.abspath(path)
