"""components/comparison/power.py: what paired seeds can tell apart, against independent forms.

The module computes power with scipy's noncentral t. The checks here do not: the power of the
paired t-test is also the closed-form integral

    P(|T| > c) = E[Phi(nc - c * sqrt(V / df)) + Phi(-nc - c * sqrt(V / df))],  V ~ chi2(df),

(T = (Z + nc) / sqrt(V / df), Z standard normal), computed below by quadrature over V; for
many seeds the detectable difference tends to the textbook normal form
(z(0.975) + z(0.80)) * s / sqrt(n); and the seeds needed match the published sample sizes of
the one-sample/paired t-test (R's pwr.t.test, Cohen 1988): 34 pairs for an effect of half a
standard deviation, 15 for 0.8, 10 for 1.
"""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from components.comparison import power as power_module
from components.comparison.power import Power, detectable_difference, seeds_needed
from components.comparison.stats import RunResult, compare

HISTORY = {"epochs": [{"epoch": 1, "seconds": 1.0, "passes": 10}]}


def integral_power(difference, std, seeds):
    """The two-sided paired t-test's power at 5%, by quadrature (no noncentral t)."""
    freedom = seeds - 1
    critical = stats.t.ppf(0.975, freedom)
    shift = difference * math.sqrt(seeds) / std

    def integrand(v):
        scale = critical * math.sqrt(v / freedom)
        return (stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale)) * stats.chi2.pdf(
            v, freedom
        )

    # chi2 with 1 degree of freedom has an integrable pole at 0: split there.
    head, _ = integrate.quad(integrand, 0, 1, limit=200, epsabs=1e-13)
    tail, _ = integrate.quad(integrand, 1, np.inf, limit=200, epsabs=1e-13)
    return head + tail


def synthetic_runs(differences, method="gsam"):
    """plain and `method` runs whose per-seed differences are exactly `differences`."""
    runs = []
    for seed, difference in enumerate(differences, start=1):
        base = 0.6 + 0.01 * (seed % 5)
        runs += [
            RunResult("plain", seed, base, {}, HISTORY),
            RunResult(method, seed, base + difference, {}, HISTORY),
        ]
    return runs


def differences_with_std(mean, std, seeds):
    """`seeds` values with exactly this mean and sample standard deviation (ddof=1)."""
    z = np.arange(seeds, dtype=float)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + std * z)


@pytest.mark.parametrize("seeds", [2, 3, 5, 10, 30])
def test_the_reported_detectable_difference_is_the_closed_forms(seeds):
    std = 0.0155
    comparison = compare(synthetic_runs(differences_with_std(0.002, std, seeds)))
    reported = comparison.methods[1].gain.power
    assert reported.seeds == seeds
    assert reported.std == pytest.approx(std, rel=1e-9)
    closed_form = optimize.brentq(
        lambda d: integral_power(d, std, seeds) - 0.80, 1e-6, 1.0, xtol=1e-12
    )
    # In accuracy points (x 100), to 1e-3; in fact far closer.
    assert abs(reported.detectable_difference - closed_form) * 100 < 1e-3
    assert reported.detectable_difference == pytest.approx(closed_form, rel=1e-6)
    assert integral_power(reported.detectable_difference, std, seeds) == pytest.approx(
        0.80, abs=1e-7
    )


def test_many_seeds_approach_the_normal_form_and_few_seeds_do_not():
    normal = stats.norm.ppf(0.975) + stats.norm.ppf(0.80)  # 2.8016
    std = 0.02
    for seeds in (2000, 20000):
        exact = detectable_difference(std, seeds)
        assert exact == pytest.approx(normal * std / math.sqrt(seeds), rel=1e-3)
    # 3 seeds need about twice the normal form's difference: why the noncentral t is used.
    assert detectable_difference(std, 3) / (normal * std / math.sqrt(3)) > 2.0


@pytest.mark.parametrize("effect, published", [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_needed_are_the_published_paired_t_sample_sizes(effect, published):
    std = 0.02
    target = effect * std
    comparison = compare(
        synthetic_runs(differences_with_std(0.0, std, 4)), target_difference=target
    )
    reported = comparison.methods[1].gain.power
    assert reported.seeds_needed == published
    assert integral_power(target, std, published) >= 0.80
    assert integral_power(target, std, published - 1) < 0.80


def test_seeds_needed_is_the_fewest_with_80_percent_power():
    # The example: GSAM - SAM per seed +1.33, -0.02, -1.76 points.
    differences = [0.0133, -0.0002, -0.0176]
    power = compare(synthetic_runs(differences)).methods[1].gain.power
    std = float(np.std(differences, ddof=1))
    assert power.std == pytest.approx(std, rel=1e-12)
    needed = power.seeds_needed
    assert integral_power(0.01, std, needed) >= 0.80 > integral_power(0.01, std, needed - 1)
    assert power.seeds_needed > power.seeds and power.powered is False
    assert power.detectable_difference > 0.01


def test_one_seed_has_no_detectable_difference():
    comparison = compare(synthetic_runs([0.03]))
    power = comparison.methods[1].gain.power
    assert (power.seeds, power.std, power.detectable_difference, power.seeds_needed) == (
        1,
        None,
        None,
        None,
    )
    assert power.powered is None
    assert power.to_dict()["detectable_difference"] is None


def test_equal_differences_tell_apart_any_difference():
    # 0.64 - 0.60 and 0.65 - 0.61 differ by float rounding only.
    power = compare(synthetic_runs([0.04, 0.04])).methods[1].gain.power
    assert (power.detectable_difference, power.seeds_needed, power.powered) == (0.0, 2, True)


def test_the_power_grows_with_the_difference_and_the_seeds():
    std = 0.01
    assert detectable_difference(std, 5) < detectable_difference(std, 4)
    assert seeds_needed(std, 0.005) > seeds_needed(std, 0.01) > seeds_needed(std, 0.02)
    # Large spreads against small targets need many seeds, computed without overflow.
    assert seeds_needed(0.1, 0.0001) > 7_000_000


@pytest.mark.parametrize("value", [0, 1, -0.01, 1.5, True, "0.01", float("nan")])
def test_a_bad_target_difference_is_named(value):
    with pytest.raises(ValueError, match="target_difference must be an accuracy difference"):
        compare(synthetic_runs([0.01, 0.02]), target_difference=value)
    with pytest.raises(ValueError, match="target_difference"):
        Power.of(0.01, 3, value)


def test_results_json_fields_of_the_power():
    power = compare(synthetic_runs([0.01, 0.03, 0.02])).methods[1].gain.power.to_dict()
    assert set(power) == {
        "seeds",
        "std",
        "target_difference",
        "detectable_difference",
        "seeds_needed",
        "powered",
        "power",
        "significance_level",
    }
    assert (power["power"], power["significance_level"]) == (
        power_module.POWER,
        power_module.SIGNIFICANCE_LEVEL,
    )


def simulated_error_rates(pilot, spread, cap, draws, seed=0):
    """How often a paired t-test at 5% rejects when the methods do not differ, under three
    ways of choosing the seeds: the differences are normal with std `spread` (in units of the
    target difference); a pilot of `pilot` seeds gives M = seeds_needed (at most `cap`).

    * fresh: M new seeds, tested alone (a new comparison with --first-seed past the pilot);
    * reuse: the pilot's seeds and M - pilot more, tested together;
    * peeking: add seeds one at a time up to `cap`, stopping once p < 5%.
    """
    rng = np.random.default_rng(seed)
    thresholds = {n: math.sqrt(n) / power_module.noncentrality(n) for n in range(2, cap + 1)}

    def needed(ratio):
        seeds = np.full(ratio.shape, cap)
        for n in range(cap, 1, -1):
            seeds[ratio <= thresholds[n]] = n
        return seeds

    def rejects(differences, seeds):
        rejected = np.zeros(len(differences), bool)
        for n in np.unique(seeds):
            chosen = seeds == n
            sample = differences[chosen, :n]
            t = sample.mean(1) / (sample.std(1, ddof=1) / math.sqrt(n))
            rejected[chosen] = np.abs(t) > stats.t.ppf(0.975, n - 1)
        return rejected

    differences = rng.standard_normal((draws, 2 * cap)) * spread
    seeds = needed(differences[:, :pilot].std(1, ddof=1))
    peeked = np.zeros(draws, bool)
    for n in range(pilot, cap + 1):
        peeked |= rejects(differences, np.full(draws, n))
    return {
        "fresh": rejects(differences[:, cap:], seeds).mean(),
        "reuse": rejects(differences, np.maximum(seeds, pilot)).mean(),
        "peeking": peeked.mean(),
    }


def test_the_thresholds_of_the_simulation_are_seeds_needed():
    for ratio in (0.3, 0.7, 1.0, 1.7):
        n = seeds_needed(ratio, 1.0)
        assert ratio <= math.sqrt(n) / power_module.noncentrality(n)
        assert ratio > math.sqrt(n - 1) / power_module.noncentrality(n - 1) or n == 2


def test_only_fresh_seeds_keep_the_planned_comparison_at_5_percent():
    # Why the README plans a new comparison on fresh seeds (--first-seed) from the seeds
    # needed, and why there is no --seeds-until: 3 pilot seeds, differences spread as much as
    # the target difference. 40,000 draws: a rate's standard error is about 0.0011 at 5%.
    rates = simulated_error_rates(pilot=3, spread=1.0, cap=40, draws=40_000)
    assert abs(rates["fresh"] - 0.05) < 0.004
    assert rates["reuse"] > 0.075
    assert rates["peeking"] > 0.25
