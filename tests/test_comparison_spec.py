"""ComparisonSpec: which runs a comparison trains, and its argument checks."""

import pytest

from pipelines.stages.comparison import ComparisonSpec, run_name
from trainer.config import TrainingConfig


def test_equal_epochs_runs_every_method_and_seed_with_the_same_schedule():
    base = TrainingConfig(epochs=4, optimizer="gsam", alpha=0.05, learning_rate=0.01)
    runs = ComparisonSpec(methods=("plain", "sam", "gsam"), seeds=2).training_configs(base)
    assert list(runs) == [(m, s) for m in ("plain", "sam", "gsam") for s in (1, 2)]
    for (method, seed), config in runs.items():
        assert (config.optimizer, config.seed, config.epochs) == (method, seed, 4)
        assert config.learning_rate == 0.01
    assert runs[("gsam", 1)].effective_alpha == 0.05
    assert runs[("sam", 1)].effective_alpha == 0.0
    assert runs[("plain", 2)].alpha is None


def test_a_first_seed_shifts_every_methods_seeds_and_keeps_their_configs():
    base = TrainingConfig(epochs=2)
    fresh = ComparisonSpec(methods=("plain", "gsam"), seeds=3, first_seed=4)
    runs = fresh.training_configs(base)
    assert list(runs) == [(m, s) for m in ("plain", "gsam") for s in (4, 5, 6)]
    assert [config.seed for config in runs.values()] == [4, 5, 6, 4, 5, 6]
    # Seed 4 trains as it would in a comparison of seeds 1..6.
    six = ComparisonSpec(methods=("plain", "gsam"), seeds=6).training_configs(base)
    assert runs[("gsam", 4)] == six[("gsam", 4)]


def test_equal_compute_gives_plain_twice_the_epochs():
    runs = ComparisonSpec(methods=("plain", "gsam"), seeds=1, budget="equal-compute")
    configs = runs.training_configs(TrainingConfig(epochs=5))
    assert configs[("plain", 1)].epochs == 10
    assert configs[("gsam", 1)].epochs == 5
    passes = {run: c.forward_backward_passes(c.epochs * 7) for run, c in configs.items()}
    assert passes[("plain", 1)] == passes[("gsam", 1)]


def test_lookahead_methods_perturb_every_k_steps_and_pay_for_it_in_the_budget():
    spec = ComparisonSpec(methods=("plain", "gsam", "gsam-k5"), seeds=1, budget="equal-compute")
    configs = spec.training_configs(TrainingConfig(epochs=6))
    looked = configs[("gsam-k5", 1)]
    assert (looked.optimizer, looked.perturb_every, looked.method) == ("gsam", 5, "gsam-k5")
    assert configs[("gsam", 1)].perturb_every == 1
    assert [configs[(m, 1)].epochs for m in ("plain", "gsam", "gsam-k5")] == [12, 6, 10]


def test_the_reuse_coefficient_reaches_the_lookahead_methods_only():
    spec = ComparisonSpec(methods=("plain", "gsam", "gsam-k5"), seeds=1)
    configs = spec.training_configs(TrainingConfig(reuse_scale=0.25))
    assert configs[("gsam-k5", 1)].reuse_scale == 0.25
    # The exact methods' configs are those of a comparison without it (so a cache can hit).
    assert configs[("gsam", 1)] == spec.training_configs(TrainingConfig())[("gsam", 1)]
    assert configs[("plain", 1)].reuse_scale is None


def test_auto_methods_get_the_budget_and_pay_for_it_in_the_equal_compute_budget():
    spec = ComparisonSpec(methods=("plain", "gsam", "gsam-auto"), seeds=1, budget="equal-compute")
    configs = spec.training_configs(TrainingConfig(epochs=8, perturb_budget=0.25))
    auto = configs[("gsam-auto", 1)]
    assert (auto.perturb_every, auto.perturb_budget, auto.method) == ("auto", 0.25, "gsam-auto")
    # 8 epochs of exact GSAM's 2 passes per step, at 1.25: 12.8, so 13 epochs.
    assert [configs[(m, 1)].epochs for m in ("plain", "gsam", "gsam-auto")] == [16, 8, 13]
    # Only the auto method carries the budget: the others' configs are unchanged.
    assert configs[("gsam", 1)] == spec.training_configs(TrainingConfig(epochs=8))[("gsam", 1)]
    with pytest.raises(ValueError, match="got plain-auto"):
        ComparisonSpec(methods=("plain-auto", "gsam"))


def test_equal_compute_without_plain_changes_nothing():
    configs = ComparisonSpec(methods=("sam", "gsam"), seeds=1, budget="equal-compute")
    assert {c.epochs for c in configs.training_configs(TrainingConfig(epochs=3)).values()} == {3}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(methods=("plain", "adam")), "methods must each be one of plain, sam, gsam, or sam-kN"),
        (dict(methods=("plain-k5", "gsam")), "got plain-k5"),
        (dict(methods=("gsam-k0", "gsam")), "got gsam-k0"),
        (dict(methods=("gsam",)), "methods must name at least two different methods"),
        (dict(methods=("gsam", "gsam")), "methods must name at least two different methods"),
        (dict(seeds=0), "seeds must be an integer >= 1"),
        (dict(budget="equal-time"), "budget must be one of equal-epochs, equal-compute"),
        (dict(label_noise=1.0), r"label_noise must be a number in \[0, 1\)"),
        (dict(label_noise_seed=-1), "label_noise_seed must be an integer >= 0"),
        (dict(target_difference=0), "target_difference must be an accuracy difference in"),
        (dict(first_seed=-1), "first_seed must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        ComparisonSpec(**arguments)


def test_run_names_carry_method_and_seed():
    assert run_name("gsam", 1) == "gsam.seed1"
