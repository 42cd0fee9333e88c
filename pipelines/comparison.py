"""What a comparison run trains: methods x seeds, the compute budget, and the label noise.

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

from trainer.config import OPTIMIZERS, TrainingConfig

BUDGETS = ("equal-epochs", "equal-compute")
# A method: an optimizer, and for sam/gsam optionally `-kN`, the perturbed pass every N steps.
METHOD = re.compile(r"^(plain|sam|gsam)(?:-k([1-9][0-9]*))?$")


@dataclasses.dataclass(frozen=True)
class ComparisonSpec:
    """The runs of a comparison.

    Args:
        methods: training methods to compare, each one of `trainer.config.OPTIMIZERS`
            (`plain`, `sam`, `gsam`), or `sam-kN` / `gsam-kN` for the perturbed pass every N
            steps (`perturb_every`); at least two, no repeats. The first is the reference that
            gains are measured against when `plain` is absent.
        seeds: runs per method, seeded 1..seeds (initialization and data order).
        budget: `"equal-epochs"` or `"equal-compute"` (see the module docstring).
        label_noise: fraction of training labels flipped to another class before training,
            in [0, 1); 0 trains on the data as it is.
        label_noise_seed: the seed that picks the flipped labels.
    """

    methods: tuple[str, ...] = ("plain", "sam", "gsam")
    seeds: int = 3
    budget: str = "equal-epochs"
    label_noise: float = 0.0
    label_noise_seed: int = 0

    def __post_init__(self):
        methods = tuple(self.methods)
        unknown = [m for m in methods if not isinstance(m, str) or not _parse_method(m)]
        if unknown:
            raise ValueError(
                f"methods must each be one of {', '.join(OPTIMIZERS)}, or sam-kN / gsam-kN, got "
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

    def training_configs(self, base: TrainingConfig) -> dict[tuple[str, int], TrainingConfig]:
        """The config of every run, keyed by (method, seed), in training order."""
        by_method = {method: self.method_config(base, method) for method in self.methods}
        most_passes = max(config.passes_per_step for config in by_method.values())
        runs = {}
        for method, config in by_method.items():
            if self.budget == "equal-compute":
                epochs = math.ceil(base.epochs * most_passes / config.passes_per_step - 1e-9)
                config = dataclasses.replace(config, epochs=epochs)
            for seed in range(1, self.seeds + 1):
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
            reuse_scale=base.reuse_scale if perturb_every > 1 else None,
        )


def _parse_method(method: str) -> tuple[str, int] | None:
    """(optimizer, perturb_every) of a method name, or None when it names none."""
    match = METHOD.match(method)
    if match is None or (match.group(1) == "plain" and match.group(2)):
        return None
    return match.group(1), int(match.group(2) or 1)


def run_name(method: str, seed: int) -> str:
    """The suffix of a run's component ids, e.g. `Trainer.gsam.seed1`."""
    return f"{method}.seed{seed}"
