"""From parsed flags to the validated settings objects the DAG builder takes."""

from __future__ import annotations

import argparse
import dataclasses

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
