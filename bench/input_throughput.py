"""Does the Trainer's input pipeline keep the demo model fed? Images/s, side by side.

The demo model (`pipelines.configs.TRAINING`: the ResNet with GSAM, batch 64) trains with
Keras's `fit` on

- `pipeline`: the Trainer's own input, `trainer.inputs.data.make_dataset` through TFX's
  DataAccessor on ExampleGen's output (gzipped TFRecords, PNG decode, shuffle, batches);
- `augmented`: the same with every training augmentation (`--augment crop,flip,brightness`,
  `trainer.inputs.augment`);
- `in_memory`: a few of the `pipeline` batches, decoded once and held as tensors, repeated;

in interleaved rounds, the same compiled model for all. A round times `steps` steps after
`warmup_steps` untimed ones (the iterator's start, tracing). The ratio pipeline / in-memory
is the median of the per-round ratios: near 1, the input keeps up; below, the model waits.
`augment_ratio` is augmented / pipeline: what augmentation costs the training steps.
`cpu_ratio` and `augment_cpu_ratio` are the same for images per process CPU second (decoding
and augmenting included, on tf.data's threads): what the input pipeline costs the process,
which other processes' load on a shared machine barely moves.

Example:

    examples = examples_of_run("out/metadata.sqlite")
    print(measure(examples, steps=20, rounds=3)["ratio"])
"""

from __future__ import annotations

import statistics
import time

import keras
import tensorflow as tf
from tfx.components.trainer import fn_args_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs

from pipelines import configs
from pipelines.local import summary
from trainer.config import AUGMENTATIONS
from trainer.inputs import data
from trainer.inputs.augment import ImageAugmentation
from trainer.models import builtin
from trainer.training import fit

IN_MEMORY_BATCHES = 8


def examples_of_run(metadata_path: str) -> standard_artifacts.Examples:
    """The one Examples artifact (ExampleGen's output) in the store at `metadata_path`."""
    found = summary.read_only_store(metadata_path).get_artifacts_by_type("Examples")
    if len(found) != 1:
        raise ValueError(
            f"Expected one Examples artifact in {metadata_path} (a single run's ExampleGen), "
            f"found {len(found)}."
        )
    examples = standard_artifacts.Examples()
    examples.set_mlmd_artifact(found[0])
    return examples


class _StepClock(keras.callbacks.Callback):
    """Wall and process CPU seconds from the end of step `skip` to the end of training."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip = skip
        self.start = None
        self.seconds = None

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.skip:
            self.start = (time.perf_counter(), time.process_time())

    def on_train_end(self, logs=None):
        wall, cpu = self.start
        self.seconds = (time.perf_counter() - wall, time.process_time() - cpu)


def images_per_second(
    trained, dataset, batch_size: int, steps: int, warmup_steps: int
) -> tuple[float, float]:
    """Training images per wall second and per process CPU second over `steps` steps of
    `fit` on `dataset`, after `warmup_steps` untimed ones."""
    clock = _StepClock(warmup_steps)
    trained.fit(
        dataset,
        epochs=1,
        steps_per_epoch=warmup_steps + steps,
        shuffle=False,  # the datasets are shuffled already, or need not be
        verbose=0,
        callbacks=[clock],
    )
    wall, cpu = clock.seconds
    return steps * batch_size / wall, steps * batch_size / cpu


def in_memory_dataset(dataset: tf.data.Dataset, batches: int) -> tf.data.Dataset:
    """The first `batches` batches of `dataset`, decoded once and repeated from memory."""
    images, labels = zip(*dataset.take(batches))
    return tf.data.Dataset.from_tensor_slices((tf.stack(images), tf.stack(labels))).repeat()


def measure(
    examples: standard_artifacts.Examples,
    steps: int = 20,
    rounds: int = 3,
    warmup_steps: int = 5,
) -> dict:
    """Images/s of the demo model on the pipeline's input, augmented or not, and on in-memory
    batches.

    Returns the per-round images per wall and per CPU second of each (`pipeline`,
    `augmented`, `in_memory`), the wall medians, `ratio` and `cpu_ratio`, the medians of the
    per-round ratios pipeline / in-memory, and `augment_ratio` and `augment_cpu_ratio`, those
    of augmented / pipeline.
    """
    for name, value in (("steps", steps), ("rounds", rounds), ("warmup_steps", warmup_steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    config = configs.TRAINING
    fn_args = fn_args_utils.get_common_fn_args(
        {specs.EXAMPLES_KEY: [examples]}, {specs.TRAIN_ARGS_KEY: "{}", specs.EVAL_ARGS_KEY: "{}"}
    )
    schema = data.load_schema(configs.SCHEMA_PATH)
    pipeline_input, augmented_input = (
        data.make_dataset(
            fn_args.train_files,
            fn_args.data_accessor,
            schema,
            config,
            training=True,
            shuffle_seed=0,
            augment=augment,
        )
        for augment in (None, ImageAugmentation(AUGMENTATIONS, seed=0))
    )
    inputs = {
        "pipeline": pipeline_input,
        "augmented": augmented_input,
        "in_memory": in_memory_dataset(pipeline_input, IN_MEMORY_BATCHES),
    }
    model = builtin.build_model(
        config, data.resolve_num_classes(config, schema), data.model_input_shape(config, schema)
    )
    trained = fit.compile_for_training(model, config, steps_per_epoch=steps)
    rates = {name: [] for name in inputs}
    cpu_rates = {name: [] for name in inputs}
    for round_index in range(rounds):
        # Alternating the order evens out the load drifting while a round runs.
        order = list(inputs) if round_index % 2 == 0 else list(reversed(inputs))
        for name in order:
            wall, cpu = images_per_second(
                trained, inputs[name], config.batch_size, steps, warmup_steps
            )
            rates[name].append(wall)
            cpu_rates[name].append(cpu)
    return {
        "images_per_second_rounds": rates,
        "images_per_cpu_second_rounds": cpu_rates,
        "images_per_second": {name: statistics.median(values) for name, values in rates.items()},
        "ratio": _median_ratio(rates, "pipeline", "in_memory"),
        "cpu_ratio": _median_ratio(cpu_rates, "pipeline", "in_memory"),
        "augment_ratio": _median_ratio(rates, "augmented", "pipeline"),
        "augment_cpu_ratio": _median_ratio(cpu_rates, "augmented", "pipeline"),
        "settings": {
            "model": config.model,
            "optimizer": config.optimizer,
            "batch_size": config.batch_size,
            "steps": steps,
            "warmup_steps": warmup_steps,
            "rounds": rounds,
            "in_memory_batches": IN_MEMORY_BATCHES,
            "augmentations": list(AUGMENTATIONS),
        },
    }


def _median_ratio(rates: dict[str, list[float]], numerator: str, denominator: str) -> float:
    return statistics.median(
        top / bottom for top, bottom in zip(rates[numerator], rates[denominator])
    )
