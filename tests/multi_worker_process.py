"""One worker of tests/test_multi_worker.py.

TF_CONFIG=... python -m tests.multi_worker_process loop OUTPUT.npz  # training.multi_worker.fit
TF_CONFIG=... python -m tests.multi_worker_process run_fn OUTPUT_DIR  # the TFX Trainer's run_fn
TF_CONFIG=... python -m tests.multi_worker_process resume BACKUP_DIR  # the loop, backed up
TF_CONFIG=... python -m tests.multi_worker_process fail OUTPUT        # fails at once (exit 1)
"""

import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tests import trainer_examples
from trainer.config import TrainingConfig
from trainer.gsam import GSAM
from trainer.training import multi_worker, resume

LEARNING_RATE, RHO, ALPHA = 0.1, 0.05, 0.3
BATCH, STEPS, WORKERS = 8, 3, 2
RESUMED_EPOCHS = 4
# Long enough after each epoch's backup for the test to kill the workers before the next.
EPOCH_PAUSE_SECONDS = 1.5
FAILURE = "this worker fails on purpose"


def build_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(3),
        ]
    )


def compile_gsam(model: keras.Model) -> GSAM:
    gsam = GSAM(model, rho=RHO, alpha=ALPHA)
    gsam.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return gsam


def shard(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Worker `index`'s examples, STEPS batches of BATCH; the shards differ."""
    random = np.random.RandomState(100 + index)
    x = random.randn(STEPS * BATCH, 4).astype("float32")
    y = random.randint(0, 3, STEPS * BATCH).astype("int64")
    return x, y


def train_with_the_loop(output_path: str) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        gsam = compile_gsam(build_model())

    def dataset_fn(context):
        return (
            tf.data.Dataset.from_tensor_slices(shard(context.input_pipeline_id))
            .batch(BATCH)
            .repeat()
        )

    history = multi_worker.fit(gsam, dataset_fn, strategy=strategy, epochs=1, steps_per_epoch=STEPS)
    np.savez(
        output_path,
        loss=history[-1]["loss"],
        *[variable.numpy() for variable in gsam.model.weights],
    )


def train_with_backups(backup_dir: str) -> None:
    """The loop for RESUMED_EPOCHS epochs, backed up in `backup_dir`; prints the weights."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        gsam = compile_gsam(build_model())
    backup = resume.WorkerCheckpoints(
        gsam,
        backup_dir,
        chief=multi_worker.is_chief(),
        task_id=strategy.cluster_resolver.task_id,
    )

    def dataset_fn(context):
        return (
            tf.data.Dataset.from_tensor_slices(shard(context.input_pipeline_id))
            .batch(BATCH)
            .repeat()
        )

    def log(line):
        print(line, flush=True)
        time.sleep(EPOCH_PAUSE_SECONDS)

    history = multi_worker.fit(
        gsam,
        dataset_fn,
        strategy=strategy,
        epochs=RESUMED_EPOCHS,
        steps_per_epoch=STEPS,
        log=log,
        backup=backup,
    )
    weights = [variable.numpy().ravel().tolist() for variable in gsam.model.weights]
    print("RESULT " + json.dumps({"epochs": len(history), "weights": weights}), flush=True)


def train_with_run_fn(output_dir: str) -> None:
    """The Trainer executor, as every worker of a Vertex job runs it: the same examples and
    schema (which the test wrote: no TF op may run before run_fn's MultiWorkerMirroredStrategy
    exists), the same output folder."""
    logging.set_verbosity(logging.INFO)
    config = TrainingConfig(optimizer="gsam", epochs=2, batch_size=16, train_steps_per_epoch=2)
    output = Path(output_dir)
    trainer_examples.run_trainer(
        output,
        config,
        ["train", "eval"],
        None,
        examples_root=output.parent / "examples",
        schema_root=output.parent / "schema",
    )


def fail(output: str) -> None:
    """A worker that crashes before its peers can reach it."""
    raise RuntimeError(FAILURE)


if __name__ == "__main__":
    modes = {
        "loop": train_with_the_loop,
        "run_fn": train_with_run_fn,
        "resume": train_with_backups,
        "fail": fail,
    }
    modes[sys.argv[1]](sys.argv[2])
