"""From parsed flags to the validated settings objects the DAG builder takes."""

from __future__ import annotations

import argparse
import dataclasses

from tfx.dsl.io import fileio

from components.sharpness.probe import ProbeSettings
from components.vertex.push import VertexPushSettings
from pipelines import configs
from pipelines.flags.parsing import (
    OTHER_FLAGS,
    TRAINING_FLAGS,
    TUNING_FLAGS,
    flag_errors,
    flag_value,
)
from pipelines.stages.comparison import ComparisonSpec
from pipelines.stages.release import ReleaseSettings
from trainer.config import TrainingConfig
from trainer.search_space import SearchSpace
from trainer.user_module import ModuleFile


def training_config(
    args: argparse.Namespace, data_format: str, class_names_file: str | None = None
) -> TrainingConfig:
    """The Trainer's config from the training flags; class names from `--class-names`, else
    `--class-names-file`, else `class_names_file` (the sample's, for the sample)."""
    values = {field: flag_value(args, flag) for flag, field in TRAINING_FLAGS.items()}
    if values["alpha"] is None:
        values["alpha"] = configs.TRAINING.alpha if args.optimizer == "gsam" else None
    if values["model"] is None:
        values["model"] = "mlp" if data_format == "csv" else "resnet"
    if values["class_names"] is None:
        path = args.class_names_file or class_names_file
        values["class_names"] = None if path is None else read_class_names(path)
    return dataclasses.replace(configs.TRAINING, adaptive=args.adaptive, **values)


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names from a file, one a line; blank lines are skipped."""
    if not fileio.exists(path):
        raise ValueError(f"class_names_file does not exist: {path}")
    with fileio.open(path) as file:
        text = file.read()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def module_file(args: argparse.Namespace) -> ModuleFile | None:
    """The `--module-file`, read (a local file's source, a gs:// path as is), or `None`."""
    return None if args.module_file is None else ModuleFile.read(args.module_file)


def search_space(args: argparse.Namespace) -> SearchSpace | None:
    """The search space of the --tune flags; `None` without --tune."""
    given = {flag: flag_value(args, flag) for flag in TUNING_FLAGS}
    given = {flag: value for flag, value in given.items() if value is not None}
    if not args.tune:
        if given:
            raise ValueError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --tune.")
        return None
    return SearchSpace(**{TUNING_FLAGS[flag]: value for flag, value in given.items()})


def comparison_spec(args: argparse.Namespace) -> ComparisonSpec | None:
    """The comparison the flags ask for, or `None` without --compare."""
    if not args.compare:
        return None
    return ComparisonSpec(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        seeds=args.seeds,
        first_seed=args.first_seed,
        budget=args.budget,
        label_noise=args.label_noise,
        label_noise_seed=args.label_noise_seed,
        target_difference=args.target_difference,
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


def release_settings(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    serving_model_dir: str,
    baseline: str = "before-candidate",
    push: VertexPushSettings | None = None,
) -> ReleaseSettings:
    """Blessing and pushing, from the blessing and sharpness flags; `push` as the Vertex AI
    runner's --push-to flags say (`pipelines.flags.vertex.push_settings`)."""
    return ReleaseSettings(
        serving_model_dir=serving_model_dir,
        accuracy_threshold=args.accuracy_threshold,
        max_accuracy_drop=args.max_accuracy_drop,
        sharpness=sharpness_settings(args, parser),
        baseline=baseline,
        push=push,
    )
