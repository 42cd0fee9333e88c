"""When GSAM runs the perturbed pass under `perturb_every="auto"`: the decision rule.

A step that skips the perturbed pass reuses the flatness direction `u` stored by the last
step that ran it (`formulas.reused_gsam_direction`). That direction was measured at the clean
gradient of that step, `g_ref`; the further the current clean gradient `g` has turned away
from it, the less `u` is likely to describe the current step. The rule runs the perturbed
pass when the direction looks staler than usual, within a budget:

- staleness: `s = 1 - cos(g, g_ref)`, free on every step (the clean pass computes `g`
  anyway; `g_ref` is kept as a unit vector);
- credit: every step earns `budget` and every step that ran the perturbed pass costs 1;
  credit never exceeds `MAX_CREDIT`;
- the next step perturbs when the credit has reached `MAX_CREDIT` (the direction is
  refreshed at least every `MAX_CREDIT / budget` steps), or when the credit is at least 1
  and this step, which reused `u`, found it staler than the running mean of the staleness of
  such steps (decay `1 - budget`: a memory of about one perturbation cycle). A step whose
  perturbed pass was not finite stored nothing: the next one perturbs again.

So over a run the perturbed pass runs on `budget` of the steps (the credit is conserved and
bounded), at the steps where the stored direction is staler than usual. The decision for
step t + 1 is taken at the end of step t, from scalars that every replica holds alike (the
cosine is averaged over replicas first), so replicas decide alike.

Example (one step's update, eagerly):

```python
import tensorflow as tf
from trainer.gsam import schedule

perturb_next, credit, mean = schedule.next_decision(
    perturbed=tf.constant(False), finite=tf.constant(True), cosine=tf.constant(0.2),
    credit=tf.constant(1.0), staleness_mean=tf.constant(0.5), budget=0.1)
# staleness 0.8 > 0.5 with credit 1.1: the next step perturbs.
```
"""

import tensorflow as tf

# Credit at which the next step perturbs whatever the staleness: the longest gap between
# perturbing steps is about MAX_CREDIT / budget steps.
MAX_CREDIT = 2.0


def next_decision(perturbed, finite, cosine, credit, staleness_mean, budget):
    """The rule's state after a step, and whether the next step runs the perturbed pass.

    Args:
        perturbed: scalar bool, whether this step ran the perturbed pass.
        finite: scalar bool, whether this step's gradients were finite (on every replica).
        cosine: scalar float32, the cosine between this step's clean gradient and the clean
            gradient of the last step that stored the flatness direction.
        credit: scalar float32, the credit before this step.
        staleness_mean: scalar float32, the running mean of `1 - cosine` over the steps that
            reused the stored direction.
        budget: the fraction of steps that may run the perturbed pass, in (0, 1].

    Returns:
        `(perturb_next, credit, staleness_mean)`: a scalar bool and the two new float32
        values.
    """
    budget = tf.cast(budget, tf.float32)
    staleness = 1.0 - tf.cast(cosine, tf.float32)
    credit = tf.minimum(credit - tf.cast(perturbed, tf.float32) + budget, MAX_CREDIT)
    reused = tf.logical_not(perturbed)
    staler_than_usual = tf.logical_and(reused, staleness > staleness_mean)
    staleness_mean = tf.where(
        reused, staleness_mean + budget * (staleness - staleness_mean), staleness_mean
    )
    perturb_next = tf.logical_or(
        tf.logical_and(perturbed, tf.logical_not(finite)),
        tf.logical_or(
            credit >= MAX_CREDIT,
            tf.logical_and(credit >= 1.0, staler_than_usual),
        ),
    )
    return perturb_next, credit, staleness_mean
