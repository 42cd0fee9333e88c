"""The flag groups the runners share: data, training, tuning, comparison, blessing, sharpness,
Beam and the cache."""

from __future__ import annotations

import argparse

from pipelines import configs
from pipelines.flags.parsing import (
    TUNING_FLAGS,
    augmentations,
    class_names,
    class_weights,
    image_shape,
    input_size,
    model_widths,
    perturb_every,
)
from pipelines.flags.presets import PRESETS
from pipelines.stages.comparison import BUDGETS, ComparisonSpec
from pipelines.stages.data import DATA_FORMATS
from trainer.config import (
    AUGMENTATIONS,
    BASE_OPTIMIZERS,
    DEFAULT_PERTURB_BUDGET,
    LR_SCHEDULES,
    MODELS,
    OPTIMIZERS,
)
from trainer.models.builtin import MLP_UNITS, RESNET_WIDTHS
from trainer.search_space import ALGORITHMS, OBJECTIVES, SearchSpace


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
        choices=("auto",) + DATA_FORMATS,
        default="auto",
        help=f"auto: {auto_format}",
    )
    group.add_argument(
        "--schema",
        default=None,
        help="curated schema.pbtxt (default: the sample's own for the sample, "
        "else inferred by SchemaGen)",
    )
    group.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="hold this share of the training examples out as the Trainers' validation split "
        "(val_loss, --early-stopping, --lr-schedule plateau), so the eval split the Evaluator "
        "scores stays unseen (default: %(default)s, validate on the eval split)",
    )
    group.add_argument(
        "--max-bad-records",
        type=int,
        default=0,
        metavar="N",
        help="leave up to N records the record check finds bad (an image that does not "
        "decode to --image-shape, a NaN float; all splits together) out of statistics, "
        "training and evaluation, and go on; more stop the run before the Trainer "
        "(default: %(default)s, any bad record stops it)",
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
        help="cosine decay after the warmup, constant, or plateau: lowered when val_loss "
        "stalls, as Keras's ReduceLROnPlateau (default: %(default)s)",
    )
    group.add_argument(
        "--warmup-epochs",
        type=float,
        default=defaults.warmup_epochs,
        help="linear learning rate warmup, in epochs (default: %(default)s)",
    )
    group.add_argument(
        "--plateau-factor",
        type=float,
        default=defaults.plateau_factor,
        help="plateau: each reduction multiplies the learning rate by this (default: "
        "%(default)s)",
    )
    group.add_argument(
        "--plateau-patience",
        type=int,
        default=defaults.plateau_patience,
        help="plateau: epochs without a lower val_loss before a reduction (default: "
        "%(default)s)",
    )
    group.add_argument(
        "--min-learning-rate",
        type=float,
        default=None,
        help="plateau: the learning rate's floor, where rho reaches --rho-min (default: the "
        "learning rate x %s)" % defaults.lr_min_ratio,
    )
    group.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop when val_loss has not improved for PATIENCE epochs and keep the best "
        "epoch's weights (default: train every epoch)",
    )
    group.add_argument(
        "--augment",
        type=augmentations,
        default=defaults.augment,
        metavar="NAME,...",
        help=f"augment the training images only: any of {', '.join(AUGMENTATIONS)} (random "
        "crop after padding 1/8 of each side, horizontal flip, brightness +-0.5), or none "
        "(default: none)",
    )
    group.add_argument(
        "--class-weights",
        type=class_weights,
        default=None,
        metavar="balanced|W0,W1,...",
        help="weight the loss per class: balanced (n / (classes x count) from the training "
        "split) or one weight per class (default: unweighted)",
    )
    group.add_argument(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="cross-entropy label smoothing, in [0, 1) (default: %(default)s)",
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="decoupled weight decay of the base optimizer (w -= lr x decay x w each step) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--base-optimizer",
        choices=BASE_OPTIMIZERS,
        default=defaults.base_optimizer,
        help="the optimizer SAM and GSAM wrap: sgd (momentum 0.9) or adam (default: %(default)s)",
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
        type=perturb_every,
        default=defaults.perturb_every,
        metavar="{K,auto}",
        help="sam/gsam: run the perturbed pass every K steps and reuse its flatness direction "
        "in between, LookSAM-style; auto: GSAM decides when, within --perturb-budget "
        "(default: %(default)s, exact)",
    )
    group.add_argument(
        "--perturb-budget",
        type=float,
        help="with --perturb-every auto: the fraction of steps that run the perturbed pass, on "
        f"average (default: {DEFAULT_PERTURB_BUDGET})",
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
        "--min-train-steps",
        type=int,
        default=defaults.min_train_steps,
        metavar="N",
        help="without --train-steps-per-epoch, an epoch is one pass over the data but at least "
        "N / epochs steps, so that small data trains long enough; 0 for one pass "
        "(default: %(default)s)",
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
    names = group.add_mutually_exclusive_group()
    names.add_argument(
        "--class-names",
        type=class_names,
        default=None,
        metavar="NAME,NAME,...",
        help="the label's class names in class order, recorded with the model (default: the "
        "sample's labels.txt for the sample; else none, classes shown as numbers)",
    )
    names.add_argument(
        "--class-names-file",
        default=None,
        metavar="PATH",
        help="a file of the label's class names, one a line, in class order",
    )
    group.add_argument(
        "--module-file",
        default=None,
        metavar="PATH",
        help="your module file (a local .py, or gs://...) defining preprocessing_fn "
        "(tf.Transform: a Transform step runs before the Trainer) and/or build_model(feature_"
        "specs, num_classes[, hp]) (your Keras model, trained with GSAM); README, \"Your own "
        "model and preprocessing\"",
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
        default = getattr(space, TUNING_FLAGS[flag])
        default = "not searched" if default is None else " ".join(map(str, default))
        group.add_argument(
            flag,
            nargs=2,
            type=float,
            metavar=("LOW", "HIGH"),
            help=f"{what} (default: {default}; LOW = HIGH fixes the value)",
        )

    add_range("--tune-rho-max", "rho_max, log-uniform")
    add_range("--tune-rho-min-fraction", "rho_min as a fraction of rho_max")
    add_range("--tune-alpha", "GSAM's alpha")
    add_range("--tune-learning-rate", "peak learning rate, log-uniform")
    add_range("--tune-label-smoothing", "label smoothing")
    add_range("--tune-weight-decay", "weight decay, log-uniform (LOW > 0)")
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
    add_range("--tune-perturb-budget", "with --perturb-every auto: --perturb-budget, log-uniform")
    group.add_argument("--tune-algorithm", choices=ALGORITHMS, help=f"default: {space.algorithm}")
    group.add_argument("--tune-trials", type=int, help=f"default: {space.max_trials}")
    group.add_argument(
        "--tune-epochs", type=int, help=f"epochs per trial (default: {space.epochs_per_trial})"
    )
    group.add_argument(
        "--tune-objective", choices=tuple(OBJECTIVES), help=f"default: {space.objective}"
    )
    group.add_argument("--tune-seed", type=int, help="seeds the search (default: random)")


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ComparisonSpec()
    group = parser.add_argument_group(
        "comparison",
        "--compare trains every method with every seed on the same data, reports them side "
        "by side, and releases the winner",
    )
    group.add_argument("--compare", action="store_true", help="run the comparison pipeline")
    group.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="keras-gsam: keras-gsam's comparison protocol (implies --compare): plain / SAM / "
        "GSAM, 3 seeds, equal compute (plain up to 200 epochs, SAM and GSAM up to 100), crop "
        "and brightness augmentation, Adam 1e-3, plateau 0.5 / 3, early stopping 10 with the "
        "best weights, rho 0.05, GSAM alpha 0.005, batch 128, a 10%% validation split; flags "
        "given explicitly win (README, \"Does sharpness-aware training help on my data?\")",
    )
    group.add_argument(
        "--methods",
        default=",".join(defaults.methods),
        help=f"comma-separated, from {', '.join(OPTIMIZERS)}, or sam-kN / gsam-kN "
        "(perturbed pass every N steps), sam-auto / gsam-auto (--perturb-every auto) "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--seeds", type=int, default=defaults.seeds, help="runs per method (default: %(default)s)"
    )
    group.add_argument(
        "--first-seed",
        type=int,
        default=defaults.first_seed,
        help="the first run's seed; the runs take the next --seeds seeds. A comparison "
        "planned from another's 'seeds to tell apart' runs on fresh seeds, e.g. --first-seed 4 "
        "after seeds 1-3 (default: %(default)s)",
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
    group.add_argument(
        "--target-difference",
        type=float,
        default=defaults.target_difference,
        help="the accuracy difference the report says how many seeds would tell apart (80%% "
        "power, paired t-test at 5%%), as a fraction: 0.005 is half a point "
        "(default: %(default)s)",
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


def add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=None,
        dest="beam_args",
        help="a Beam pipeline argument for the data components, repeatable "
        f'(default: {" ".join(configs.BEAM_PIPELINE_ARGS)}; README, "Performance", says '
        "when another mode is faster)",
    )


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
