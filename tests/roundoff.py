"""Tolerances for tests that compare two computations of the same values in floating point.

Two graphs that compute the same quantities in a different order round differently. oneDNN's
kernels (on by default on CPUs with AVX-512 VNNI/BF16 or AMX; `TF_ENABLE_ONEDNN_OPTS=1` turns
them on on any x86 CPU, `=0` off), XLA and the branch of a `tf.cond` may fuse, reorder or
vectorize the sums. Each rounding moves a result by at most the unit roundoff `u` of its dtype,
relative to its size, so such a test allows a stated number of roundings at the size of the
values compared (`roundoff_tolerance`), and keeps a negative control: the bug the test exists
for must still lie far outside that tolerance.

Bit-for-bit equality is right only where both sides run the same compiled graph (a
save/restore round trip, replicas or workers running one program) or where the arithmetic is
exact (multiplying by 1, adding 0); such tests say so.

Example:

>>> roundoff_tolerance([np.array([0.5, -2.0])], roundoffs=8) == 8 * 2.0**-24 * 2.0
True
"""

import numpy as np

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# How many roundings of the weights' size one training step of the tests' small models may
# differ by between two graphs: a step rounds the gradient's sums (batches and layers of about
# 8), GSAM's global norms and inner products (about 100 parameters) and the update. Measured:
# 1 to 7 per comparison on an Intel Xeon with AMX, oneDNN on and off, and 5 on an AMD EPYC
# (test_gsam_lookahead.py's exact-GSAM test, 2.8e-7 at weights of about 1).
ROUNDOFFS_PER_STEP = 16


def largest_magnitude(values) -> float:
    """The largest absolute value in a list of arrays (or numbers)."""
    return max(float(np.max(np.abs(np.asarray(value, np.float64)))) for value in values)


def roundoff_tolerance(reference, roundoffs: float, dtype: str = "float32") -> float:
    """`roundoffs` roundings, in `dtype`, of the largest value in `reference` (a list of
    arrays or numbers)."""
    return roundoffs * UNIT_ROUNDOFF[dtype] * largest_magnitude(reference)


def largest_difference(actual, expected) -> float:
    """The largest absolute difference between two lists of arrays (or numbers)."""
    assert len(actual) == len(expected)
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(e, np.float64))))
        for a, e in zip(actual, expected)
    )


def float_values(variables) -> list[np.ndarray]:
    """The values of the floating-point variables among `variables` (seed generators' integer
    states left out, since roundoff does not apply to them)."""
    values = [np.asarray(variable.numpy()) for variable in variables]
    return [value for value in values if np.issubdtype(value.dtype, np.floating)]
