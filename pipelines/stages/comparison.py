"""The comparison stage: what a comparison trains (methods x seeds, the compute budget, the
label noise), and the components that train, evaluate and report every run.

The comparison pipeline (`pipeline.create_pipeline(..., comparison=ComparisonSpec(...))`)
trains one model per method and seed. The methods differ only in the optimizer wrapper: the
model, data, schedule and epochs are the base `TrainingConfig`'s. With
`budget="equal-compute"`, every method gets as many forward-backward passes as the most
expensive one: plain training (one pass per step) trains twice the epochs of SAM and GSAM
(two passes), as keras-gsam's own comparison did (200 against 100 epochs).

Example:

>>> spec = ComparisonSpec(methods=("plain", "gsam"), seeds=2, budget="equal-compute")
>>> configs = spec.training_configs(TrainingConfig(epochs=5))
>>> [(run, config.epochs) for run, config in configs.items()]
[(('plain', 1), 10), (('plain', 2), 10), (('gsam', 1), 5), (('gsam', 2), 5)]
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from components.comparison.label_noise import LabelNoise
from components.comparison.power import DEFAULT_TARGET_DIFFERENCE, check_target_difference
from components.comparison.report import comparison_report
from components.sharpness.probe import ProbeSettings, probe_component
from pipelines.stages.data import DataStage
from pipelines.stages.release import eval_config, evaluator_component
from pipelines.stages.training import TrainingInputs, trainer_component, tuner_component
from trainer.config import AUTO, OPTIMIZERS, TrainingConfig
from trainer.search_space import SearchSpace

BUDGETS = ("equal-epochs", "equal-compute")
# A method: an optimizer, and for sam/gsam optionally `-kN`, the perturbed pass every N steps,
# or `-auto`, when GSAM decides.
METHOD = re.compile(r"^(plain|sam|gsam)(?:-k([1-9][0-9]*)|-(auto))?$")


@dataclasses.dataclass(frozen=True)
class ComparisonSpec:
    """The runs of a comparison.

    Args:
        methods: training methods to compare, each one of `trainer.config.OPTIMIZERS`
            (`plain`, `sam`, `gsam`), or `sam-kN` / `gsam-kN` for the perturbed pass every N
            steps (`perturb_every`), or `sam-auto` / `gsam-auto` for `perturb_every="auto"`
            (within the base config's `perturb_budget`, which only these methods get); at least
            two, no repeats. The first is the reference that
            gains are measured against when `plain` is absent.
        seeds: runs per method, seeded first_seed..first_seed + seeds - 1 (initialization and
            data order).
        budget: `"equal-epochs"` or `"equal-compute"` (see the module docstring).
        label_noise: fraction of training labels flipped to another class before training,
            in [0, 1); 0 trains on the data as it is.
        label_noise_seed: the seed that picks the flipped labels.
        target_difference: the accuracy difference, in (0, 1), that the report says how many
            seeds would tell apart (0.01: one point; see `components/comparison/power.py`).
        first_seed: the first run's seed. A comparison planned from another's seeds needed
            runs on fresh seeds (e.g. `first_seed=4` after seeds 1..3): testing the seeds it
            was planned from again would raise the 5% error rate.
    """

    methods: tuple[str, ...] = ("plain", "sam", "gsam")
    seeds: int = 3
    budget: str = "equal-epochs"
    label_noise: float = 0.0
    label_noise_seed: int = 0
    target_difference: float = DEFAULT_TARGET_DIFFERENCE
    first_seed: int = 1

    def __post_init__(self):
        methods = tuple(self.methods)
        unknown = [m for m in methods if not isinstance(m, str) or not _parse_method(m)]
        if unknown:
            raise ValueError(
                f"methods must each be one of {', '.join(OPTIMIZERS)}, or sam-kN / gsam-kN / "
                f"sam-auto / gsam-auto, got "
                f"{', '.join(map(str, unknown))}."
            )
        if len(methods) < 2 or len(set(methods)) != len(methods):
            raise ValueError(f"methods must name at least two different methods, got {methods}.")
        object.__setattr__(self, "methods", methods)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}.")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}.")
        noise = self.label_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
            raise ValueError(f"label_noise must be a number in [0, 1), got {noise!r}.")
        seed = self.label_noise_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"label_noise_seed must be an integer >= 0, got {seed!r}.")
        check_target_difference(self.target_difference)
        first = self.first_seed
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ValueError(f"first_seed must be an integer >= 0, got {first!r}.")

    def training_configs(self, base: TrainingConfig) -> dict[tuple[str, int], TrainingConfig]:
        """The config of every run, keyed by (method, seed), in training order."""
        by_method = {method: self.method_config(base, method) for method in self.methods}
        most_passes = max(config.passes_per_step for config in by_method.values())
        runs = {}
        for method, config in by_method.items():
            if self.budget == "equal-compute":
                epochs = math.ceil(base.epochs * most_passes / config.passes_per_step - 1e-9)
                config = dataclasses.replace(config, epochs=epochs)
            for seed in range(self.first_seed, self.first_seed + self.seeds):
                runs[(method, seed)] = dataclasses.replace(config, seed=seed)
        return runs

    @staticmethod
    def method_config(base: TrainingConfig, method: str) -> TrainingConfig:
        """`base` trained with `method`: only the optimizer wrapper (its alpha and how often it
        perturbs) change."""
        optimizer, perturb_every = _parse_method(method)
        return dataclasses.replace(
            base,
            optimizer=optimizer,
            alpha=base.alpha if optimizer == "gsam" else None,
            perturb_every=perturb_every,
            perturb_budget=base.perturb_budget if perturb_every == AUTO else None,
            reuse_scale=base.reuse_scale if perturb_every != 1 else None,
        )


def epochs_line(spec: ComparisonSpec, training: TrainingConfig) -> str:
    """The report's line on each method's epochs: the budget's, and early stopping's."""
    runs = spec.training_configs(training)
    epochs = {method: config.epochs for (method, _), config in runs.items()}
    line = ", ".join(f"{method} {count}" for method, count in epochs.items())
    if training.early_stopping is None:
        return line
    return (
        f"at most {line}: every method stops early after {training.early_stopping} epochs "
        f"without a lower val_loss and keeps its best epoch's weights"
    )


def validation_line(inputs: TrainingInputs, training: TrainingConfig) -> str:
    """The report's line on what the Trainers validate on, and how it is kept apart from the
    eval split that eval accuracy is measured on."""
    watching = [
        name
        for name, used in (
            ("early stopping", training.early_stopping is not None),
            ("the learning rate plateau", training.lr_schedule == "plateau"),
        )
        if used
    ]
    uses = f"val_loss{''.join(', ' + name for name in watching)}"
    if inputs.eval_split == "eval":
        return (
            f"the Trainers validate ({uses}) on the eval split, the one the Evaluator scores: "
            f"hold a validation split out with --validation-split to keep them apart"
        )
    return (
        f"the Trainers validate ({uses}) on '{inputs.eval_split}', "
        f"{inputs.validation_fraction:.0%} of the train split held out by a hash of each "
        f"example's content (ValidationSplit) and never trained on; eval accuracy is the "
        f"Evaluator's on the eval split, which no Trainer reads"
    )


def _parse_method(method: str) -> tuple[str, int | str] | None:
    """(optimizer, perturb_every) of a method name, or None when it names none."""
    match = METHOD.match(method)
    if match is None or (match.group(1) == "plain" and (match.group(2) or match.group(3))):
        return None
    return match.group(1), match.group(3) or int(match.group(2) or 1)


def run_name(method: str, seed: int) -> str:
    """The suffix of a run's component ids, e.g. `Trainer.gsam.seed1`."""
    return f"{method}.seed{seed}"


@dataclasses.dataclass(frozen=True)
class ComparisonStage:
    """Label noise (optional), a Trainer and an Evaluator per run, and the report: the
    winner's model and its run's `history.json` (`best_model_run`)."""

    components: list
    best_model: Any
    best_model_run: Any


def comparison_stage(
    data: DataStage,
    inputs: TrainingInputs,
    training: TrainingConfig,
    spec: ComparisonSpec,
    vertex_training: dict[str, Any] | None = None,
    tuning: SearchSpace | None = None,
    parallel_trials: int = 1,
    sharpness: ProbeSettings | None = None,
) -> ComparisonStage:
    """Trains every (method, seed) run of `spec` on the same examples, evaluates each on the
    eval split, and reports. The Trainers do not depend on one another, so orchestrators that
    can run them in parallel do. With `tuning`, each method is tuned once, on its first seed's
    config (plain training searches the learning rate alone), and all its seeds train with
    the tuned values. With `sharpness`, a SharpnessProbe per run (`SharpnessProbe.gsam.seed1`,
    ...) measures its model with those settings, its limits left out: the report shows the
    measures per method, and only the release stage gates. The runs train on `inputs` (the
    examples, or Transform's, with any label noise applied to them) and are evaluated on the
    data stage's raw examples."""
    components = []
    if spec.label_noise > 0:
        noise = LabelNoise(
            examples=inputs.examples,
            schema=data.schema,
            noise_rate=spec.label_noise,
            seed=spec.label_noise_seed,
            label_key=training.label_key,
        )
        components.append(noise)
        inputs = inputs.with_examples(noise.outputs["noisy_examples"])
    run_config = eval_config(training.label_key, accuracy_threshold=0.0, max_accuracy_drop=None)
    run_probe = (
        None
        if sharpness is None
        else dataclasses.replace(sharpness, max_top_eigenvalue=None, max_sharpness_increase=None)
    )
    runs = {}
    tuned = {}
    for (method, seed), config in spec.training_configs(training).items():
        if tuning is not None and method not in tuned:
            tuner = tuner_component(
                inputs,
                config,
                tuning,
                vertex_training,
                parallel_trials,
                component_id=f"Tuner.{method}",
            )
            components.append(tuner)
            tuned[method] = tuner.outputs["best_hyperparameters"]
        name = run_name(method, seed)
        trainer = trainer_component(
            inputs,
            config,
            vertex_training,
            component_id=f"Trainer.{name}",
            hyperparameters=tuned.get(method),
        )
        evaluator = evaluator_component(
            data.examples, trainer.outputs["model"], run_config, component_id=f"Evaluator.{name}"
        )
        components += [trainer, evaluator]
        runs[(method, seed)] = {
            "model": trainer.outputs["model"],
            "model_run": trainer.outputs["model_run"],
            "evaluation": evaluator.outputs["evaluation"],
        }
        if run_probe is not None:
            probe = probe_component(
                trainer.outputs["model"], data.examples, config, run_probe
            ).with_id(f"SharpnessProbe.{name}")
            components.append(probe)
            runs[(method, seed)]["sharpness"] = probe.outputs["sharpness"]
    settings = {
        "methods": list(spec.methods),
        "seeds": spec.seeds,
        "first_seed": spec.first_seed,
        "budget": spec.budget,
        "epochs": epochs_line(spec, training),
        "validation": validation_line(inputs, training),
        "label_noise": spec.label_noise,
        "label_noise_seed": spec.label_noise_seed,
        "target_difference": spec.target_difference,
        "training": training.to_dict(),
    }
    if run_probe is not None:
        settings["sharpness"] = {"split": run_probe.split, **run_probe.measure_arguments()}
    report = comparison_report(
        runs,
        settings=settings,
        label_key=training.label_key,
        target_difference=spec.target_difference,
    )
    return ComparisonStage(
        components=[*components, report],
        best_model=report.outputs["best_model"],
        best_model_run=report.outputs["best_model_run"],
    )
