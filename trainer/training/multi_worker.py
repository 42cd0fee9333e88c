"""Multi-worker training: a distributed custom loop around the model's own `train_step`.

Keras 3's `Model.fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585; on TF 2.21 / Keras 3.15 it fails in `_maybe_symbolic_build` with a
PerReplica conversion error). This loop calls the very same per-replica step that `fit` would,
`model.train_step` (for `GSAM`, `sharpness_aware_gradients` and
`apply_sharpness_aware_gradients`), through `strategy.run` in a `tf.function`. So each replica
perturbs along its own shard's gradient, the optimizer averages the descent directions over
every replica of every worker, and all replicas apply the same update. Non-trainable state
(BatchNormalization statistics) is averaged across replicas after every epoch.

Example (run in each worker process, with TF_CONFIG set; without it, one local worker):

```python
import tensorflow as tf
from trainer.config import TrainingConfig
from trainer.gsam import GSAM
from trainer.models.builtin import build_model
from trainer.training.multi_worker import fit

def dataset_fn(input_context):  # this worker's shard of random 28x28 images
    images = tf.random.uniform((256, 28, 28, 1))
    labels = tf.random.uniform((256,), maxval=10, dtype=tf.int64)
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        .batch(input_context.get_per_replica_batch_size(32))
        .repeat()
    )

strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = GSAM(build_model(TrainingConfig(), 10, (28, 28, 1)), rho=0.05, alpha=0.01)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
history = fit(model, dataset_fn, strategy=strategy, epochs=2, steps_per_epoch=3)
```
"""

from __future__ import annotations

import json
import os
from typing import Callable

import tensorflow as tf


def cluster_workers(tf_config: str | None = None) -> int:
    """How many training tasks (chief and workers) `TF_CONFIG` names; 0 without one."""
    cluster = _read_tf_config(tf_config).get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(tf_config: str | None = None) -> bool:
    """Whether this task writes the outputs: the chief, or worker 0 when there is no chief."""
    config = _read_tf_config(tf_config)
    task = config.get("task", {})
    if task.get("type") == "chief":
        return True
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return not has_chief and task.get("type", "worker") == "worker" and task.get("index", 0) == 0


def _read_tf_config(tf_config: str | None) -> dict:
    """`tf_config`, or the TF_CONFIG variable when it is None, parsed."""
    text = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {text!r}") from None


def fit(
    model,
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    *,
    strategy: tf.distribute.Strategy,
    epochs: int,
    steps_per_epoch: int,
    log: Callable[[str], None] = print,
    backup=None,
) -> list[dict[str, float]]:
    """Trains `model` (built and compiled under `strategy.scope()`) with `strategy.run`.

    Args:
        dataset_fn: builds one input pipeline's dataset of per-replica batches that repeats,
            as for `strategy.distribute_datasets_from_function`.
        epochs, steps_per_epoch: how long to train.
        log: receives one line per epoch.
        backup: a `trainer.training.resume.WorkerCheckpoints`: training resumes from its latest
            checkpoint and saves one after every epoch; `None` for none.

    Returns:
        Per epoch, the logs of its last step (loss and metrics are means over the epoch),
        those of the epochs before a resume included.
    """
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    def replica_step(batch):
        # Identity gives every log (`rho` reads a variable) this replica's device, which
        # `strategy.reduce` needs across workers.
        return {name: tf.identity(value) for name, value in model.train_step(batch).items()}

    @tf.function
    def train_step(iterator):
        logs = strategy.run(replica_step, args=(next(iterator),))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            for name, value in logs.items()
        }

    # Each replica updates statistics such as BatchNormalization's moving mean from its own
    # batches; averaging them after every epoch keeps the workers' models identical.
    state = [
        variable for variable in model.non_trainable_variables if variable.dtype.startswith("float")
    ]

    @tf.function
    def average_state():
        def replica_average():
            replica = tf.distribute.get_replica_context()
            for variable, mean in zip(
                state,
                replica.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v) for v in state]),
            ):
                variable.assign(mean)

        strategy.run(replica_average)

    history = [] if backup is None else backup.restore()
    if history:
        log(f"resuming from epoch {len(history)} of {epochs}")
    for epoch in range(len(history), epochs):
        model.reset_metrics()
        for _ in range(steps_per_epoch):
            logs = train_step(iterator)
        average_state()
        history.append({name: float(value) for name, value in logs.items()})
        log(
            f"epoch {epoch + 1}/{epochs}: "
            + ", ".join(f"{name}={value:.4g}" for name, value in history[-1].items())
        )
        if backup is not None:
            backup.save(history)
    return history


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has called it: an all-reduce over all replicas."""
    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
