"""What paired seeds can tell apart: the power of the comparison's paired t-test.

A comparison tests each method's per-seed differences d_1..d_n against another method's with a
two-sided paired t-test at the 5% level. With the differences' sample standard deviation `s`
taken as their true spread sigma, this module answers two questions exactly:

* the **detectable difference**: the smallest true mean difference the n seeds detect with
  80% power (`detectable_difference`);
* the **seeds needed**: the fewest seeds that detect a given difference with 80% power
  (`seeds_needed`).

Under a true mean difference delta, the paired t statistic follows the noncentral t
distribution with n - 1 degrees of freedom and noncentrality delta * sqrt(n) / sigma, so the
power is P(|T| > t(0.975, n - 1)) under `scipy.stats.nct`, both tails counted. The noncentrality
that gives 80% power depends on n alone, which makes the detectable difference
`noncentrality(n) * s / sqrt(n)`. For large n this tends to the textbook normal form
(z(0.975) + z(0.80)) * s / sqrt(n) = 2.80 * s / sqrt(n); at the few seeds a comparison has the
noncentral t is larger (3 seeds: 5.65 * s / sqrt(3) rather than 2.80 * s / sqrt(3); 10 seeds:
3.15 rather than 2.80), which is why it is used throughout rather than the normal
approximation.

Both numbers take `s` as the true spread. With few seeds `s` is itself uncertain (with 3 seeds
the 95% interval of sigma is 0.52 s to 6.3 s), so they are estimates; they say what the seeds
*at their observed spread* can tell apart. One seed has no spread: then neither can be computed.

Example:

>>> power = Power.of(std=0.0155, seeds=3, target_difference=0.01)
>>> round(power.detectable_difference, 4), power.seeds_needed, power.powered
(0.0506, 21, False)
>>> Power.of(std=None, seeds=1, target_difference=0.01).detectable_difference is None
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from scipy import optimize, stats

SIGNIFICANCE_LEVEL = 0.05
POWER = 0.80
DEFAULT_TARGET_DIFFERENCE = 0.01
# Spreads this small are zero but for float rounding: every difference is then detected.
ROUNDING = 1e-12


def check_target_difference(value) -> float:
    """`value` as the target difference, a fraction of accuracy in (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(
            f"target_difference must be an accuracy difference in (0, 1), e.g. 0.01 for one "
            f"point, got {value!r}."
        )
    return float(value)


def paired_t_power(noncentrality: float, seeds: int) -> float:
    """The power of the two-sided paired t-test at 5% on `seeds` pairs whose true mean
    difference is `noncentrality` * sigma / sqrt(seeds)."""
    freedom = seeds - 1
    critical = stats.t.ppf(1 - SIGNIFICANCE_LEVEL / 2, freedom)
    # The lower tail P(T < -critical) as P(T > critical) at -noncentrality: scipy's nct.cdf
    # returns NaN far out in the lower tail (e.g. 1 degree of freedom, noncentrality 8).
    return float(
        stats.nct.sf(critical, freedom, noncentrality)
        + stats.nct.sf(critical, freedom, -noncentrality)
    )


def noncentrality(seeds: int) -> float:
    """The noncentrality at which the paired t-test on `seeds` pairs has 80% power."""
    if seeds < 2:
        raise ValueError(f"seeds must be at least 2 for a paired t-test, got {seeds}.")
    high = 4.0
    while paired_t_power(high, seeds) < POWER:
        high *= 2
    return optimize.brentq(
        lambda nc: paired_t_power(nc, seeds) - POWER, 0.0, high, xtol=1e-12, rtol=1e-12
    )


def detectable_difference(std: float, seeds: int) -> float:
    """The smallest mean paired difference that `seeds` pairs with spread `std` detect with
    80% power (two-sided paired t-test at 5%)."""
    if std <= ROUNDING:
        return 0.0
    return noncentrality(seeds) * std / math.sqrt(seeds)


def seeds_needed(std: float, difference: float) -> int:
    """The fewest pairs (at least 2) with spread `std` whose paired t-test detects a mean
    difference of `difference` with 80% power."""
    if std <= ROUNDING:
        return 2

    def enough(seeds: int) -> bool:
        return paired_t_power(difference * math.sqrt(seeds) / std, seeds) >= POWER

    # Power grows with the seeds: double until enough, then bisect.
    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


@dataclasses.dataclass(frozen=True)
class Power:
    """What `seeds` paired seeds with spread `std` can tell apart.

    Args:
        seeds: the number of paired seeds.
        std: the sample standard deviation (ddof=1) of the paired differences; `None` for
            one seed.
        target_difference: the difference the user wants to tell apart, in (0, 1).
        detectable_difference: see `detectable_difference`; `None` for one seed.
        seeds_needed: the seeds that would detect `target_difference` (see `seeds_needed`);
            `None` for one seed.
    """

    seeds: int
    std: float | None
    target_difference: float
    detectable_difference: float | None
    seeds_needed: int | None

    @classmethod
    def of(cls, std: float | None, seeds: int, target_difference: float) -> "Power":
        target_difference = check_target_difference(target_difference)
        if seeds < 2 or std is None:
            return cls(seeds, None, target_difference, None, None)
        return cls(
            seeds,
            std,
            target_difference,
            detectable_difference(std, seeds),
            seeds_needed(std, target_difference),
        )

    @property
    def powered(self) -> bool | None:
        """Whether the seeds detect the target difference with 80% power; `None` for one
        seed."""
        return None if self.seeds_needed is None else self.seeds_needed <= self.seeds

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "powered": self.powered,
            "power": POWER,
            "significance_level": SIGNIFICANCE_LEVEL,
        }
